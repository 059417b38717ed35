//! Access control over a real socket: tokens on every HTTP route and every
//! WebSocket frame, identity in sessions, the index, origins, key rotation
//! (docs/security.md).

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::TestServer;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Payload, ServerMsg, close};
use durable_session_server::auth::Right;
use durable_session_server::auth::jwt::{Claims, GrantClaim, Keys};
use durable_session_server::config::{AllowedOrigins, AuthMode, ServerConfig};
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use reqwest::{Method, StatusCode};

const SECRET_1: &[u8] = b"first secret, thirty-two bytes long";
const SECRET_2: &[u8] = b"second secret, thirty-two bytes long";
const APP_ORIGIN: &str = "http://app.example";

/// Ed25519 key pair as (private PEM, public PEM).
fn ed25519_pems(seed: u8) -> (String, String) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let private = sk.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
    let public = sk.verifying_key().to_public_key_pem(LineEnding::LF).unwrap();
    (private, public)
}

/// The server's keys: HS256 `k1` and `k2` (rotation), Ed25519 public `ed`.
fn server_keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = ed25519_pems(7);
    let (k1, k2, ed) = (dir.path().join("k1"), dir.path().join("k2"), dir.path().join("ed.pem"));
    std::fs::write(&k1, SECRET_1).unwrap();
    std::fs::write(&k2, [SECRET_2, b"\n"].concat()).unwrap();
    std::fs::write(&ed, public).unwrap();
    Keys::load(&[
        format!("hs256:k1:file:{}", k1.display()),
        format!("hs256:k2:file:{}", k2.display()),
        format!("ed25519:ed:file:{}", ed.display()),
    ])
    .unwrap()
}

/// The app backend's signing keys for the same kids.
fn minting_keys() -> Keys {
    let mut keys = Keys::hs256("k1", SECRET_1).unwrap();
    let (private, _) = ed25519_pems(7);
    keys.add_ed25519_pem("ed", private.as_bytes()).unwrap();
    keys
}

fn mint(kid: &str, sub: &str, grants: &[(&str, &[Right])], ttl_s: u64) -> String {
    let grants: Vec<(String, Vec<Right>)> = grants.iter().map(|(p, r)| (p.to_string(), r.to_vec())).collect();
    let keys = if kid == "k2" {
        Keys::hs256("k2", SECRET_2).unwrap()
    } else {
        minting_keys()
    };
    keys.mint(Some(kid), sub, &grants, ttl_s).unwrap()
}

/// A user token for one session.
fn user(sub: &str, session: &str) -> String {
    let path = format!("sessions/{session}");
    mint(
        "k1",
        sub,
        &[(&path, &[Right::Read, Right::Append, Right::Control, Right::Create])],
        600,
    )
}

fn agent() -> String {
    mint(
        "k1",
        "agent-1",
        &[
            ("sessions/*", &[Right::Read, Right::Create, Right::Agent, Right::Append]),
            ("_index/sessions", &[Right::Read]),
        ],
        600,
    )
}

fn operator() -> String {
    mint("k1", "ops", &[("*", &Right::ALL)], 600)
}

async fn start() -> TestServer {
    start_with(Duration::from_secs(30)).await
}

async fn start_with(grace: Duration) -> TestServer {
    TestServer::start_with(ServerConfig {
        long_poll_timeout: Duration::from_millis(300),
        auth: AuthMode::Jwt(Arc::new(server_keys())),
        allowed_origins: AllowedOrigins::List(vec![APP_ORIGIN.into()]),
        auth_grace: grace,
        ..ServerConfig::default()
    })
    .await
}

async fn call(
    s: &TestServer,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = s
        .client
        .request(method, format!("{}/v1/stream/{path_and_query}", s.base))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.body(body.to_owned());
    }
    req.send().await.unwrap()
}

async fn status(s: &TestServer, method: Method, path: &str, token: Option<&str>, body: &str) -> StatusCode {
    call(s, method, path, token, body).await.status()
}

/// Creates `sessions/{id}` with one message by `owner`.
async fn session_with_message(s: &TestServer, id: &str, owner: &str) {
    let t = user(owner, id);
    assert_eq!(
        status(s, Method::PUT, &format!("sessions/{id}"), Some(&t), "").await,
        StatusCode::CREATED
    );
    let msg = r#"{"type":"user_message","id":"m1","text":"hello"}"#;
    assert_eq!(
        status(s, Method::POST, &format!("sessions/{id}"), Some(&t), msg).await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn another_sessions_token_is_forbidden_on_every_http_route() {
    let s = start().await;
    session_with_message(&s, "abc", "ada").await;
    let eve = user("eve", "other");
    let p = "sessions/abc";
    let cancel = r#"{"type":"cancel","run_id":"r1"}"#;
    let message = r#"{"type":"user_message","id":"m9","text":"hi"}"#;
    for (method, path, body, what) in [
        (Method::GET, format!("{p}?offset=-1"), "", "read"),
        (Method::HEAD, p.to_owned(), "", "head"),
        (Method::GET, format!("{p}?offset=-1&live=long-poll"), "", "long-poll"),
        (Method::GET, format!("{p}?offset=-1&live=sse"), "", "sse"),
        (Method::POST, p.to_owned(), message, "append"),
        (Method::POST, p.to_owned(), cancel, "cancel"),
        (Method::DELETE, p.to_owned(), "", "delete"),
        (Method::PUT, p.to_owned(), "", "create"),
    ] {
        assert_eq!(
            status(&s, method.clone(), &path, Some(&eve), body).await,
            StatusCode::FORBIDDEN,
            "{what} with another session's token"
        );
        let res = call(&s, method, &path, None, body).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{what} without a token");
        assert_eq!(res.headers()["www-authenticate"], "Bearer", "{what}");
    }
    // Forks need read on the source.
    let res = s
        .client
        .put(s.url("sessions/fork"))
        .header("authorization", format!("Bearer {}", user("eve", "fork")))
        .header("stream-forked-from", p)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Nothing the refused requests sent was stored; the owner still reads it all.
    let res = call(
        &s,
        Method::GET,
        &format!("{p}?offset=-1"),
        Some(&user("ada", "abc")),
        "",
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["cache-control"].to_str().unwrap(),
        "private, max-age=60, stale-while-revalidate=300",
        "authorized reads are not for shared caches"
    );
    let body = res.text().await.unwrap();
    assert_eq!(
        body,
        r#"[{"author":"ada","type":"user_message","id":"m1","text":"hello"}]"#
    );
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let s = start().await;
    session_with_message(&s, "abc", "ada").await;
    let path = "sessions/abc?offset=-1";
    let grants = [("sessions/abc", &[Right::Read][..])];
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let payload = b64(r#"{"sub":"ada","exp":4102444800,"grants":[{"path":"sessions/abc","rights":["read"]}]}"#);

    let expired = minting_keys()
        .mint_claims(
            Some("k1"),
            &Claims {
                sub: "ada".into(),
                exp: 1_000_000,
                nbf: None,
                iat: None,
                grants: vec![GrantClaim {
                    path: "sessions/abc".into(),
                    rights: vec!["read".into()],
                }],
            },
        )
        .unwrap();
    let unknown_key = Keys::hs256("k1", b"not the server's secret, 32 bytes!")
        .unwrap()
        .mint(None, "ada", &[("sessions/abc".into(), vec![Right::Read])], 600)
        .unwrap();
    let unknown_kid = Keys::hs256("k9", SECRET_1)
        .unwrap()
        .mint(None, "ada", &[("sessions/abc".into(), vec![Right::Read])], 600)
        .unwrap();
    let alg_none = format!("{}.{payload}.", b64(r#"{"alg":"none","kid":"k1"}"#));
    // HS/EdDSA confusion: HMAC keyed with the Ed25519 public key, kid of the Ed25519 key.
    let (_, public_pem) = ed25519_pems(7);
    let confused = Keys::hs256("ed", public_pem.as_bytes())
        .unwrap()
        .mint(None, "ada", &[("sessions/abc".into(), vec![Right::Read])], 600)
        .unwrap();
    let good = mint("k1", "ada", &grants, 600);
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(r#"{"sub":"ada","exp":4102444800,"grants":[{"path":"*","rights":["read","delete"]}]}"#);
    parts[1] = &forged_payload;
    let tampered = parts.join(".");
    let not_before = minting_keys()
        .mint_claims(
            Some("k1"),
            &Claims {
                sub: "ada".into(),
                exp: 4_102_444_800,
                nbf: Some(4_000_000_000),
                iat: None,
                grants: vec![],
            },
        )
        .unwrap();
    for (what, token) in [
        ("expired", expired.as_str()),
        ("signed with another secret", &unknown_key),
        ("unknown kid", &unknown_kid),
        ("alg none", &alg_none),
        ("HS256 with the Ed25519 key", &confused),
        ("tampered payload", &tampered),
        ("not valid yet", &not_before),
        ("garbage", "a.b.c"),
    ] {
        assert_eq!(
            status(&s, Method::GET, path, Some(token), "").await,
            StatusCode::UNAUTHORIZED,
            "{what}"
        );
    }
    let res = s
        .client
        .get(s.url(path))
        .header("authorization", "Basic YWRhOnB3")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "not a bearer token");
    assert_eq!(status(&s, Method::GET, path, Some(&good), "").await, StatusCode::OK);
}

#[tokio::test]
async fn rotation_accepts_every_configured_key_and_eddsa() {
    let s = start().await;
    session_with_message(&s, "abc", "ada").await;
    let grants = [("sessions/abc", &[Right::Read][..])];
    for kid in ["k1", "k2", "ed"] {
        let t = mint(kid, "ada", &grants, 600);
        assert_eq!(
            status(&s, Method::GET, "sessions/abc?offset=-1", Some(&t), "").await,
            StatusCode::OK,
            "kid {kid}"
        );
    }
}

#[tokio::test]
async fn identity_comes_from_the_token_in_sessions() {
    let s = start().await;
    session_with_message(&s, "abc", "ada").await;
    let ada = user("ada", "abc");
    let p = "sessions/abc";
    // Another author, and a forged `by`.
    for body in [
        r#"{"type":"user_message","id":"m2","author":"bob","text":"hi"}"#,
        r#"{"type":"steer","run_id":"r1","text":"x","by":"bob"}"#,
        r#"[{"type":"user_message","id":"m3","text":"ok"},{"type":"cancel","run_id":"r1","by":"bob"}]"#,
    ] {
        assert_eq!(
            status(&s, Method::POST, p, Some(&ada), body).await,
            StatusCode::FORBIDDEN,
            "{body}"
        );
    }
    // Run events need the agent right.
    for body in [
        r#"{"type":"run_started","run_id":"r1","agent":"x","in_reply_to":"m1"}"#,
        r#"{"type":"text_delta","run_id":"r1","agent":"x","delta":"fake"}"#,
        r#"{"type":"run_finished","run_id":"r1","status":"completed"}"#,
    ] {
        assert_eq!(
            status(&s, Method::POST, p, Some(&ada), body).await,
            StatusCode::FORBIDDEN,
            "{body}"
        );
        assert_eq!(
            status(&s, Method::POST, p, Some(&agent()), body).await,
            StatusCode::NO_CONTENT,
            "{body}"
        );
    }
    // Matching or absent identity is accepted; the server fills it in.
    let cancel = r#"{"type":"cancel","run_id":"r1"}"#;
    assert_eq!(
        status(&s, Method::POST, p, Some(&ada), cancel).await,
        StatusCode::NO_CONTENT
    );
    let body = call(&s, Method::GET, &format!("{p}?offset=-1"), Some(&ada), "")
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains(r#"{"by":"ada","type":"cancel","run_id":"r1"}"#), "{body}");
    assert!(!body.contains("bob"), "{body}");
    // A session is a JSON stream; a fork into a session comes from a session.
    let res = s
        .client
        .put(s.url("sessions/text"))
        .header("authorization", format!("Bearer {}", user("ada", "text")))
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_index_is_for_agents_and_operators() {
    let s = start().await;
    session_with_message(&s, "abc", "ada").await;
    session_with_message(&s, "xyz", "bob").await;
    let index = "_index/sessions?offset=-1";
    assert_eq!(
        status(&s, Method::GET, index, Some(&user("ada", "abc")), "").await,
        StatusCode::FORBIDDEN
    );
    let listed = call(&s, Method::GET, index, Some(&agent()), "")
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("abc") && listed.contains("xyz"), "{listed}");
    assert_eq!(
        status(&s, Method::GET, index, Some(&operator()), "").await,
        StatusCode::OK
    );
    // Nobody writes it but the server, not even an operator.
    assert_eq!(
        status(
            &s,
            Method::POST,
            "_index/sessions",
            Some(&operator()),
            r#"{"type":"x"}"#
        )
        .await,
        StatusCode::FORBIDDEN
    );
}

async fn ws_connect(s: &TestServer, origin: Option<&str>) -> Result<Client, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("{}/v1/ws", s.base.replacen("http://", "ws://", 1))
        .into_client_request()
        .unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => {
            let mut c = Client { socket };
            assert!(matches!(c.next().await, ServerMsg::Hello { .. }));
            Ok(c)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn auth(c: &mut Client, token: &str) -> ServerMsg {
    c.send(ClientMsg::Auth {
        req: Some("a".into()),
        token: token.into(),
    })
    .await;
    c.next().await
}

fn append(req: &str, path: &str, json: &str) -> ClientMsg {
    ClientMsg::Append {
        req: req.into(),
        path: path.into(),
        payload: Some(Payload::json(json).unwrap()),
        producer: None,
        close: false,
    }
}

fn is_error(msg: &ServerMsg, code: ErrorCode, sub: Option<&str>, req: Option<&str>) -> bool {
    matches!(msg, ServerMsg::Error { code: c, sub: s, req: r, .. }
        if *c == code && s.as_deref() == sub && r.as_deref() == req)
}

#[tokio::test]
async fn websocket_origin_allowlist() {
    let s = start().await;
    assert_eq!(ws_connect(&s, Some("http://evil.example")).await.err(), Some(403));
    assert!(ws_connect(&s, Some(APP_ORIGIN)).await.is_ok());
    assert!(ws_connect(&s, Some(&s.base)).await.is_ok(), "the server's own origin");
    assert!(ws_connect(&s, None).await.is_ok(), "not a browser: the token decides");
    // CORS follows the same list.
    let res = s
        .client
        .request(Method::OPTIONS, s.url("sessions/abc"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    let res = s
        .client
        .request(Method::OPTIONS, s.url("sessions/abc"))
        .header("origin", APP_ORIGIN)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], APP_ORIGIN);
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
}

#[tokio::test]
async fn websocket_frames_are_checked_against_the_token() {
    let s = start().await;
    session_with_message(&s, "abc", "ada").await;
    let mut c = ws_connect(&s, None).await.unwrap();
    // Before auth: unauthorized, with the sub or req.
    c.send(ClientMsg::Subscribe {
        sub: "s0".into(),
        path: "sessions/abc".into(),
        offset: "-1".into(),
    })
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Unauthorized, Some("s0"), None));
    c.send(append(
        "r0",
        "sessions/abc",
        r#"{"type":"user_message","id":"x","text":"x"}"#,
    ))
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Unauthorized, None, Some("r0")));
    assert!(is_error(
        &auth(&mut c, "nope").await,
        ErrorCode::Unauthorized,
        None,
        Some("a")
    ));

    // Eve's token covers another session only.
    let reply = auth(&mut c, &user("eve", "other")).await;
    assert!(
        matches!(reply, ServerMsg::Authed { ref principal, .. } if principal == "eve"),
        "{reply:?}"
    );
    c.send(ClientMsg::Subscribe {
        sub: "s1".into(),
        path: "sessions/abc".into(),
        offset: "-1".into(),
    })
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Forbidden, Some("s1"), None));
    for (req, body) in [
        ("r1", r#"{"type":"user_message","id":"x","text":"x"}"#),
        ("r2", r#"{"type":"cancel","run_id":"r1"}"#),
        ("r3", r#"{"type":"steer","run_id":"r1","text":"x"}"#),
    ] {
        c.send(append(req, "sessions/abc", body)).await;
        assert!(
            is_error(&c.next().await, ErrorCode::Forbidden, None, Some(req)),
            "{req}"
        );
    }
    // In her own session: a forged author and a run event are refused.
    c.send(ClientMsg::Create {
        req: "c1".into(),
        path: "sessions/other".into(),
        content_type: None,
    })
    .await;
    assert!(matches!(c.next().await, ServerMsg::Ack { .. }));
    c.send(append(
        "r4",
        "sessions/other",
        r#"{"type":"user_message","id":"x","author":"ada","text":"x"}"#,
    ))
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Forbidden, None, Some("r4")));
    c.send(append(
        "r5",
        "sessions/other",
        r#"{"type":"text_delta","run_id":"r","agent":"a","delta":"x"}"#,
    ))
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Forbidden, None, Some("r5")));
    c.send(append(
        "r6",
        "sessions/other",
        r#"{"type":"user_message","id":"x","text":"mine"}"#,
    ))
    .await;
    assert!(matches!(c.next().await, ServerMsg::Ack { ref req, .. } if req == "r6"));
    c.send(ClientMsg::Subscribe {
        sub: "s2".into(),
        path: "sessions/other".into(),
        offset: "-1".into(),
    })
    .await;
    match c.next().await {
        ServerMsg::Events { messages, .. } => {
            assert_eq!(messages.len(), 1);
            assert_eq!(
                messages[0].payload,
                Payload::Json(r#"{"author":"eve","type":"user_message","id":"x","text":"mine"}"#.into())
            );
        }
        other => panic!("{other:?}"),
    }
    // A token of another principal cannot take over the socket.
    assert!(is_error(
        &auth(&mut c, &user("ada", "abc")).await,
        ErrorCode::Forbidden,
        None,
        Some("a")
    ));
    // The index is not readable with a user token.
    c.send(ClientMsg::Subscribe {
        sub: "s3".into(),
        path: "_index/sessions".into(),
        offset: "-1".into(),
    })
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Forbidden, Some("s3"), None));
}

#[tokio::test]
async fn a_fresh_token_keeps_subscriptions_and_a_narrower_one_ends_them() {
    let s = start().await;
    session_with_message(&s, "a", "ada").await;
    let both = mint(
        "k1",
        "ada",
        &[
            ("sessions/a", &[Right::Read]),
            ("sessions/b", &[Right::Read, Right::Create]),
        ],
        600,
    );
    let mut c = ws_connect(&s, None).await.unwrap();
    assert!(matches!(auth(&mut c, &both).await, ServerMsg::Authed { .. }));
    c.send(ClientMsg::Create {
        req: "c".into(),
        path: "sessions/b".into(),
        content_type: None,
    })
    .await;
    assert!(matches!(c.next().await, ServerMsg::Ack { .. }));
    for (sub, path) in [("sa", "sessions/a"), ("sb", "sessions/b")] {
        c.send(ClientMsg::Subscribe {
            sub: sub.into(),
            path: path.into(),
            offset: "-1".into(),
        })
        .await;
        assert!(matches!(c.next().await, ServerMsg::Events { .. }));
    }
    // Only `a` now: `sb` ends with forbidden, `sa` goes on.
    let only_a = mint("k1", "ada", &[("sessions/a", &[Right::Read])], 600);
    assert!(matches!(auth(&mut c, &only_a).await, ServerMsg::Authed { .. }));
    assert!(is_error(&c.next().await, ErrorCode::Forbidden, Some("sb"), None));
    let writer = user("ada", "a");
    let msg = r#"{"type":"user_message","id":"m2","text":"still live"}"#;
    assert_eq!(
        status(&s, Method::POST, "sessions/a", Some(&writer), msg).await,
        StatusCode::NO_CONTENT
    );
    match c.next().await {
        ServerMsg::Events { sub, messages, .. } => {
            assert_eq!(sub, "sa");
            assert!(matches!(&messages[0].payload, Payload::Json(j) if j.contains("still live")));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_for_new_work_and_the_socket_closes_4003() {
    let s = start_with(Duration::from_millis(1500)).await;
    session_with_message(&s, "a", "ada").await;
    let now = durable_session_server::auth::now_s;
    let exp = now() + 2;
    let short = minting_keys()
        .mint_claims(
            Some("k1"),
            &Claims {
                sub: "ada".into(),
                exp,
                nbf: None,
                iat: None,
                grants: vec![GrantClaim {
                    path: "sessions/a".into(),
                    rights: vec!["read".into()],
                }],
            },
        )
        .unwrap();
    let mut c = ws_connect(&s, None).await.unwrap();
    assert!(matches!(auth(&mut c, &short).await, ServerMsg::Authed { .. }));
    // Wait (by the clock the server uses) until it has expired.
    while now() < exp {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.send(ClientMsg::Subscribe {
        sub: "late".into(),
        path: "sessions/a".into(),
        offset: "-1".into(),
    })
    .await;
    assert!(is_error(&c.next().await, ErrorCode::Unauthorized, Some("late"), None));
    assert_eq!(c.closed().await, Some(close::TOKEN_EXPIRED));

    // A fresh token keeps a socket open past the old token's expiry and grace.
    let exp = now() + 1;
    let short = Keys::hs256("k1", SECRET_1)
        .unwrap()
        .mint_claims(
            None,
            &Claims {
                sub: "ada".into(),
                exp,
                nbf: None,
                iat: None,
                grants: vec![],
            },
        )
        .unwrap();
    let mut c = ws_connect(&s, None).await.unwrap();
    assert!(matches!(auth(&mut c, &short).await, ServerMsg::Authed { .. }));
    let fresh = mint("k1", "ada", &[("sessions/a", &[Right::Read])], 600);
    assert!(matches!(auth(&mut c, &fresh).await, ServerMsg::Authed { .. }));
    while now() < exp + 3 {
        c.send(ClientMsg::Ping { t: Some(1) }).await;
        assert_eq!(c.next().await, ServerMsg::Pong { t: Some(1) });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
