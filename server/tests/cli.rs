//! The binary refuses unsafe or unusable settings before it listens, saying
//! why; `token` mints a token the server accepts.

use std::process::Command;

fn server(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_durable-session-server"))
        .args(args)
        .output()
        .expect("run the server binary");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn refuses_open_access_and_test_hooks_off_loopback() {
    // Refused before binding: nothing listens on 0.0.0.0 in this test.
    let (ok, err) = server(&["--listen", "0.0.0.0:0", "--auth", "none"]);
    assert!(!ok && err.contains("refusing --auth none"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef").unwrap();
    let spec = format!("hs256:k:file:{}", key.display());
    let (ok, err) = server(&["--listen", "0.0.0.0:0", "--jwt-key", &spec, "--test-hooks"]);
    assert!(!ok && err.contains("refusing --test-hooks"), "{err}");
}

#[test]
fn auth_jwt_is_the_default_and_needs_a_key() {
    let (ok, err) = server(&["--listen", "127.0.0.1:0"]);
    assert!(!ok && err.contains("needs at least one --jwt-key"), "{err}");
    let (ok, err) = server(&[
        "--listen",
        "127.0.0.1:0",
        "--jwt-key",
        "hs256:k:env:DS_SURELY_UNSET_VARIABLE",
    ]);
    assert!(!ok && err.contains("DS_SURELY_UNSET_VARIABLE"), "{err}");
}

#[test]
fn token_mints_with_the_configured_key() {
    use durable_session_server::auth::{Right, jwt::Keys};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let spec = format!("hs256:dev:file:{}", key.display());
    let out = Command::new(env!("CARGO_BIN_EXE_durable-session-server"))
        .args([
            "token",
            "--jwt-key",
            &spec,
            "--sub",
            "ada",
            "--grant",
            "sessions/abc:read,append",
            "--ttl",
            "5m",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let ada = Keys::hs256("dev", b"0123456789abcdef0123456789abcdef")
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert_eq!(ada.sub, "ada");
    assert!(ada.allows("sessions/abc", Right::Append) && !ada.allows("sessions/abc", Right::Delete));
    assert!(ada.exp <= durable_session_server::auth::now_s() + 300);
    let (ok, err) = server(&[
        "token",
        "--jwt-key",
        &spec,
        "--sub",
        "ada",
        "--grant",
        "sessions/abc:fly",
    ]);
    assert!(!ok && err.contains("unknown right"), "{err}");
}
