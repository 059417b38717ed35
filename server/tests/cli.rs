//! The binary refuses unsafe or unusable settings before it listens, saying
//! why; `token` mints a token the server accepts.

mod common;

use std::process::Command;

use common::binary::Running;
use common::redis::RedisServer;

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

/// Request logging (tower-http's `TraceLayer`) names the method, path and
/// status, and never a token: not the `Authorization` header, not a query
/// string — at the most verbose level.
#[test]
fn request_logs_never_carry_tokens() {
    use std::io::{BufRead, BufReader, Read};

    use durable_session_server::auth::{Right, jwt::Keys};

    let dir = tempfile::tempdir().unwrap();
    let secret = "0123456789abcdef0123456789abcdef";
    let key = dir.path().join("key");
    std::fs::write(&key, secret).unwrap();
    let spec = format!("hs256:k:file:{}", key.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_durable-session-server"))
        .args(["--listen", "127.0.0.1:0", "--jwt-key", &spec, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Logs are read as they come, so the server never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = stderr.read_to_string(&mut logs);
        logs
    });
    let base = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.split("listening on ").nth(1)?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .expect("the server listens");

    let grants = [("sessions/*".to_owned(), vec![Right::Read, Right::Create])];
    let token = Keys::hs256("k", secret.as_bytes())
        .unwrap()
        .mint(None, "ada", &grants, 60)
        .unwrap();
    let url = format!("{base}/v1/stream/sessions/logged");
    let statuses = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = reqwest::Client::new();
        let put = client
            .put(format!("{url}?secret=QUERY-SECRET"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .send();
        let get = client
            .get(format!("{url}?offset=-1&token=QUERY-SECRET"))
            .bearer_auth(&token)
            .send();
        let forged = client.get(&url).bearer_auth("NOT-A-VALID-TOKEN").send();
        [
            put.await.unwrap().status(),
            get.await.unwrap().status(),
            forged.await.unwrap().status(),
        ]
    });
    assert_eq!(statuses.map(|s| s.as_u16()), [201, 200, 401]);
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = logs.join().unwrap();
    for status in ["201", "200", "401"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("path=/v1/stream/sessions/logged") && l.contains(&format!("status={status}"))),
            "a line for the {status}:\n{logs}"
        );
    }
    for secret in [token.as_str(), "QUERY-SECRET", "NOT-A-VALID-TOKEN", "Bearer", secret] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

/// Runs the server expecting it to refuse to start: returns its stderr.
/// Fails (instead of hanging) if it is still running after 10 s.
fn refused(args: &[&str]) -> String {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_durable-session-server"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the server binary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with {args:?}; it should have refused");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!status.success(), "{args:?}: {err}");
    err
}

#[test]
fn refuses_a_redis_that_may_lose_acknowledged_appends() {
    let (ok, err) = server(&["--listen", "127.0.0.1:0", "--auth", "none", "--store", "mysql://x"]);
    assert!(!ok && err.contains("expected sqlite or redis://"), "{err}");
    for setting in [
        ["--appendfsync", "everysec"],
        ["--appendonly", "no"],
        ["--maxmemory-policy", "allkeys-lru"],
    ] {
        let redis = RedisServer::start_with(&setting);
        let url = redis.url();
        let err = refused(&["--listen", "127.0.0.1:0", "--auth", "none", "--store", &url]);
        let name = setting[0].trim_start_matches("--");
        assert!(
            err.contains("may lose acknowledged appends") && err.contains(name),
            "{setting:?}: {err}"
        );
        // Allowed when asked for: it starts and listens.
        let dir = tempfile::tempdir().unwrap();
        let running = Running::start(dir.path(), &["--store", &url, "--redis-allow-non-durable"]);
        assert!(running.base.starts_with("http://127.0.0.1:"));
    }
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let running = Running::start(dir.path(), &["--store", &redis.url()]);
    assert!(
        running.base.starts_with("http://127.0.0.1:"),
        "a durable Redis is accepted"
    );
}

/// The webhook signing key: generated into --data-dir when the server
/// starts without one (and the same key served after a restart); a start
/// that is refused leaves no key file behind.
#[test]
fn a_missing_webhook_key_is_generated_only_by_a_server_that_starts() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("webhook-signing-key.pem");
    let data_dir = dir.path().to_str().unwrap();
    let unreachable = [
        "--listen",
        "127.0.0.1:0",
        "--auth",
        "none",
        "--data-dir",
        data_dir,
        "--store",
        "redis://127.0.0.1:1/0",
    ];
    let (ok, _) = server(&unreachable);
    assert!(!ok);
    assert!(!key.exists(), "a refused start wrote a key");

    let jwks = |base: &str| -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let res = reqwest::get(format!("{base}/v1/stream/__ds/jwks.json")).await.unwrap();
            assert_eq!(res.status(), 200);
            res.text().await.unwrap()
        })
    };
    let first = {
        let running = Running::start(dir.path(), &[]);
        assert!(key.exists(), "a started server keeps its key");
        jwks(&running.base)
    };
    let running = Running::start(dir.path(), &[]);
    assert_eq!(jwks(&running.base), first, "the same key after a restart");
}
