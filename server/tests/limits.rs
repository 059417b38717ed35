//! Every bound a client can reach (docs/limits.md), over a real socket: the
//! request, subscription or connection past the limit gets the documented
//! code, and nothing else on the socket or the server is disturbed. Also
//! `/metrics` (counters move; not served on the main listener with auth on).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Payload, ServerMsg, close};
use durable_session_server::auth::Right;
use durable_session_server::auth::jwt::Keys;
use durable_session_server::config::{AuthMode, Limits, ServerConfig};
use reqwest::StatusCode;

const SECRET: &[u8] = b"a limits test secret, 32 bytes long";

fn with_limits(limits: Limits) -> ServerConfig {
    ServerConfig {
        long_poll_timeout: Duration::from_secs(20),
        limits,
        ..ServerConfig::default()
    }
}

async fn create(s: &TestServer, path: &str) {
    let res = s
        .client
        .put(s.url(path))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "create {path}: {}", res.status());
}

async fn append(s: &TestServer, path: &str, body: &str) {
    s.append_json(path, body).await;
}

fn subscribe(sub: &str, path: &str) -> ClientMsg {
    ClientMsg::Subscribe {
        sub: sub.into(),
        path: path.into(),
        offset: "-1".into(),
    }
}

fn append_frame(req: &str, path: &str, data: &str) -> ClientMsg {
    ClientMsg::Append {
        req: req.into(),
        path: path.into(),
        payload: Some(Payload::Json(data.into())),
        producer: None,
        close: false,
    }
}

/// The server's metrics, as `/metrics` would serve them.
async fn metrics(s: &TestServer) -> String {
    s.metrics.encode()
}

/// The value of one series (`name{labels}` exactly as exposed).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls `/metrics` until `series` has value `want` (10 s at most).
async fn wait_metric(s: &TestServer, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(s).await;
        let got = value(&text, series);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stayed {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next frame about subscription `sub`.
async fn next_for_sub(c: &mut Client, sub: &str) -> ServerMsg {
    loop {
        let msg = c.next().await;
        match &msg {
            ServerMsg::Events { sub: s, .. } | ServerMsg::Error { sub: Some(s), .. } if s == sub => return msg,
            _ => {}
        }
    }
}

#[tokio::test]
async fn subscriptions_past_the_limit_are_refused_and_the_socket_keeps_working() {
    let s = TestServer::start_with(with_limits(Limits {
        ws_subscriptions: 3,
        ..Limits::default()
    }))
    .await;
    create(&s, "a").await;
    let mut c = Client::connect(&s.base).await;
    for i in 0..3 {
        let sub = format!("s{i}");
        c.send(subscribe(&sub, "a")).await;
        assert!(matches!(next_for_sub(&mut c, &sub).await, ServerMsg::Events { .. }));
    }
    c.send(subscribe("s3", "a")).await;
    match next_for_sub(&mut c, "s3").await {
        ServerMsg::Error { code, req: None, .. } => assert_eq!(code, ErrorCode::TooManySubscriptions),
        other => panic!("expected too_many_subscriptions, got {other:?}"),
    }
    // The socket and the other subscriptions go on: an append on it is
    // acknowledged and delivered to all three.
    c.send(append_frame("r1", "a", r#"{"n":1}"#)).await;
    let mut acked = false;
    let mut delivered = 0;
    while !acked || delivered < 3 {
        match c.next().await {
            ServerMsg::Ack { req, .. } if req == "r1" => acked = true,
            ServerMsg::Events { messages, .. } if !messages.is_empty() => delivered += 1,
            ServerMsg::Events { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // A place freed by unsubscribing can be taken again.
    c.send(ClientMsg::Unsubscribe { sub: "s0".into() }).await;
    assert_eq!(c.next().await, ServerMsg::Unsubscribed { sub: "s0".into() });
    c.send(subscribe("s3", "a")).await;
    assert!(matches!(next_for_sub(&mut c, "s3").await, ServerMsg::Events { .. }));
    let text = metrics(&s).await;
    assert_eq!(
        value(
            &text,
            r#"durable_session_limit_hits_total{code="too_many_subscriptions"}"#
        ),
        1.0
    );
    assert_eq!(value(&text, "durable_session_ws_subscriptions"), 3.0);
}

#[tokio::test]
async fn subscriptions_that_ended_do_not_count_and_missing_streams_leave_nothing_behind() {
    let s = TestServer::start_with(with_limits(Limits {
        ws_subscriptions: 5,
        ..Limits::default()
    }))
    .await;
    let mut c = Client::connect(&s.base).await;
    // Far more subscriptions to missing streams than the limit, one after
    // another: each ends with not_found and frees its place.
    for i in 0..200 {
        let sub = format!("m{i}");
        c.send(subscribe(&sub, &format!("missing/{i}"))).await;
        match next_for_sub(&mut c, &sub).await {
            ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::NotFound, "{sub}"),
            other => panic!("expected not_found, got {other:?}"),
        }
    }
    // Long-polls and SSE reads of missing streams: 404, nothing kept.
    for mode in ["long-poll", "sse"] {
        let res = s
            .client
            .get(format!("{}?offset=-1&live={mode}", s.url("missing/http")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{mode}");
    }
    // No change-hub entry is left for any of them.
    wait_metric(&s, "durable_session_watched_streams", 0.0).await;
    wait_metric(&s, "durable_session_ws_subscriptions", 0.0).await;
    create(&s, "a").await;
    c.send(subscribe("live", "a")).await;
    assert!(matches!(next_for_sub(&mut c, "live").await, ServerMsg::Events { .. }));
    wait_metric(&s, "durable_session_watched_streams", 1.0).await;
}

#[tokio::test]
async fn websockets_per_ip_past_the_limit_get_429() {
    let s = TestServer::start_with(with_limits(Limits {
        ws_per_ip: 2,
        ..Limits::default()
    }))
    .await;
    let mut a = Client::connect(&s.base).await;
    let b = Client::connect(&s.base).await;
    let url = format!("{}/v1/ws", s.base.replacen("http://", "ws://", 1));
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 429);
            assert!(res.headers().contains_key("retry-after"));
            let body = String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("too_many_connections"), "{body}");
        }
        Ok(_) => panic!("a third WebSocket from one address was accepted"),
        Err(e) => panic!("expected HTTP 429, got {e}"),
    }
    // The open sockets are untouched.
    a.send(ClientMsg::Ping { t: Some(7) }).await;
    assert_eq!(a.next().await, ServerMsg::Pong { t: Some(7) });
    // HTTP is not counted.
    create(&s, "h").await;
    let text = metrics(&s).await;
    assert_eq!(
        value(
            &text,
            r#"durable_session_limit_hits_total{code="too_many_connections"}"#
        ),
        1.0
    );
    // A socket that closes frees its place.
    drop(b);
    wait_metric(&s, r#"durable_session_connections{kind="ws"}"#, 1.0).await;
    let mut c = Client::connect(&s.base).await;
    c.send(ClientMsg::Ping { t: Some(8) }).await;
    assert_eq!(c.next().await, ServerMsg::Pong { t: Some(8) });
}

/// Opens a WebSocket that says it was forwarded for `forwarded_for`: its
/// HTTP status (101 when accepted), the socket kept open while it lives.
async fn ws_forwarded_for(
    s: &TestServer,
    forwarded_for: &str,
) -> (
    u16,
    Option<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/v1/ws", s.base.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, res)) => (res.status().as_u16(), Some(socket)),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => (res.status().as_u16(), None),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_websockets_count_by_the_forwarded_client() {
    let one_each = Limits {
        ws_per_ip: 1,
        ..Limits::default()
    };
    let behind_proxy = TestServer::start_with(ServerConfig {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..with_limits(one_each.clone())
    })
    .await;
    let (status, _a) = ws_forwarded_for(&behind_proxy, "203.0.113.1").await;
    assert_eq!(status, 101);
    let (status, _b) = ws_forwarded_for(&behind_proxy, "203.0.113.2").await;
    assert_eq!(
        status, 101,
        "another client behind the same proxy has a place of its own"
    );
    let (status, _) = ws_forwarded_for(&behind_proxy, "6.6.6.6, 203.0.113.1").await;
    assert_eq!(status, 429, "the same client again, whatever it wrote to the left");

    // Without --trusted-proxy the header is anyone's to forge: ignored.
    let direct = TestServer::start_with(with_limits(one_each)).await;
    let (status, _a) = ws_forwarded_for(&direct, "203.0.113.1").await;
    assert_eq!(status, 101);
    let (status, _) = ws_forwarded_for(&direct, "203.0.113.2").await;
    assert_eq!(status, 429, "one address, whatever the header says");
}

#[tokio::test]
async fn websockets_per_principal_past_the_limit_are_closed_with_4004() {
    let keys = Keys::hs256("k", SECRET).unwrap();
    let s = TestServer::start_with(ServerConfig {
        auth: AuthMode::Jwt(Arc::new(Keys::hs256("k", SECRET).unwrap())),
        limits: Limits {
            ws_per_principal: 1,
            ..Limits::default()
        },
        ..ServerConfig::default()
    })
    .await;
    let token = |sub: &str| {
        keys.mint(None, sub, &[("sessions/*".to_owned(), vec![Right::Read])], 600)
            .unwrap()
    };
    let auth = |sub: &str| ClientMsg::Auth {
        req: Some("a".into()),
        token: token(sub),
    };
    let mut ada = Client::connect(&s.base).await;
    ada.send(auth("ada")).await;
    assert!(matches!(ada.next().await, ServerMsg::Authed { .. }));
    // A fresh token on the same connection is not another connection.
    ada.send(auth("ada")).await;
    assert!(matches!(ada.next().await, ServerMsg::Authed { .. }));
    let mut again = Client::connect(&s.base).await;
    again.send(auth("ada")).await;
    assert_eq!(again.closed().await, Some(close::TOO_MANY_CONNECTIONS));
    // Another principal, and ada's first connection, are untouched.
    let mut bob = Client::connect(&s.base).await;
    bob.send(auth("bob")).await;
    assert!(matches!(bob.next().await, ServerMsg::Authed { .. }));
    ada.send(ClientMsg::Ping { t: Some(1) }).await;
    assert_eq!(ada.next().await, ServerMsg::Pong { t: Some(1) });
    // Once ada's connection is gone (only bob's is left), she may connect again.
    drop((ada, again));
    wait_metric(&s, r#"durable_session_connections{kind="ws"}"#, 1.0).await;
    let mut retry = Client::connect(&s.base).await;
    retry.send(auth("ada")).await;
    assert!(matches!(retry.next().await, ServerMsg::Authed { .. }));
}

/// A client that pipelines appends faster than they become durable is not
/// read past the in-flight limit; every append is still acknowledged, in
/// order, and the socket answers pings.
#[tokio::test]
async fn inflight_appends_past_the_limit_stop_the_reading_not_the_socket() {
    let s = TestServer::start_with(with_limits(Limits {
        ws_inflight_appends: 2,
        ..Limits::default()
    }))
    .await;
    create(&s, "p").await;
    let mut c = Client::connect(&s.base).await;
    const N: usize = 300;
    for i in 0..N {
        c.send(append_frame(&format!("r{i}"), "p", &format!(r#"{{"i":{i}}}"#)))
            .await;
    }
    c.send(ClientMsg::Ping { t: Some(9) }).await;
    let mut acks = Vec::new();
    let mut ponged = false;
    while acks.len() < N || !ponged {
        match c.next().await {
            ServerMsg::Ack { req, .. } => acks.push(req),
            ServerMsg::Pong { t: Some(9) } => ponged = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_eq!(acks, expected, "every append acknowledged, in order");
    let text = metrics(&s).await;
    assert!(
        value(&text, "durable_session_ws_backpressure_total") > 0.0,
        "the server stopped reading at least once"
    );
    assert_eq!(value(&text, "durable_session_appends_total"), N as f64);
}

#[tokio::test]
async fn http_live_readers_past_the_limit_get_503_and_others_go_on() {
    let s = TestServer::start_with(with_limits(Limits {
        http_readers_per_stream: 2,
        ..Limits::default()
    }))
    .await;
    create(&s, "r").await;
    create(&s, "other").await;
    let live = |path: &str, mode: &str| {
        let url = format!("{}?offset=now&live={mode}", s.url(path));
        let client = s.client.clone();
        tokio::spawn(async move { client.get(url).send().await.unwrap() })
    };
    let poll_1 = live("r", "long-poll");
    let poll_2 = live("r", "long-poll");
    wait_metric(&s, r#"durable_session_connections{kind="long_poll"}"#, 2.0).await;
    for mode in ["long-poll", "sse"] {
        let res = live("r", mode).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{mode}");
        assert!(res.headers().contains_key("retry-after"));
        assert!(res.text().await.unwrap().contains("too_many_readers"));
    }
    // Other streams, and plain reads of this one, are not affected.
    let sse = live("other", "sse").await.unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let res = s.client.get(format!("{}?offset=-1", s.url("r"))).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The waiting readers get their data.
    append(&s, "r", r#"{"x":1}"#).await;
    for poll in [poll_1, poll_2] {
        let res = poll.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await.unwrap(), r#"[{"x":1}]"#);
    }
    // Their places are free again.
    wait_metric(&s, r#"durable_session_connections{kind="long_poll"}"#, 0.0).await;
    let res = s
        .client
        .get(format!("{}?offset=-1&live=long-poll", s.url("r")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = metrics(&s).await;
    assert_eq!(
        value(&text, r#"durable_session_limit_hits_total{code="too_many_readers"}"#),
        2.0
    );
    assert_eq!(value(&text, r#"durable_session_connections{kind="sse"}"#), 1.0);
    drop(sse);
}

#[tokio::test]
async fn recent_appends_stay_within_their_byte_bound() {
    let s = TestServer::start_with(with_limits(Limits {
        recent_append_bytes_per_stream: 100_000,
        recent_append_bytes: 150_000,
        ..Limits::default()
    }))
    .await;
    let big = format!(r#"{{"pad":"{}"}}"#, "z".repeat(60_000));
    let mut c = Client::connect(&s.base).await;
    for path in ["a", "b", "c"] {
        create(&s, path).await;
        c.send(subscribe(path, path)).await;
        assert!(matches!(next_for_sub(&mut c, path).await, ServerMsg::Events { .. }));
    }
    for round in 0..5 {
        for path in ["a", "b", "c"] {
            append(&s, path, &big).await;
            // Live readers get every append, from memory or from the store.
            match next_for_sub(&mut c, path).await {
                ServerMsg::Events { messages, .. } => assert_eq!(messages.len(), 1, "{path} round {round}"),
                other => panic!("{other:?}"),
            }
        }
        let held = value(&metrics(&s).await, "durable_session_recent_append_bytes");
        assert!(held <= 150_000.0, "recent appends hold {held} bytes");
        assert!(held > 0.0, "some are kept");
    }
}

#[tokio::test]
async fn metrics_count_connections_appends_and_latency() {
    let s = TestServer::start().await;
    // Served on the main listener without auth, in the Prometheus text format.
    let res = s.client.get(format!("{}/metrics", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "Prometheus text format"
    );
    let before = res.text().await.unwrap();
    for series in [
        r#"durable_session_connections{kind="ws"}"#,
        r#"durable_session_connections{kind="sse"}"#,
        r#"durable_session_connections{kind="long_poll"}"#,
        "durable_session_ws_subscriptions",
        "durable_session_ws_queued_bytes",
        "durable_session_appends_total",
        "durable_session_append_duration_seconds_count",
    ] {
        assert_eq!(value(&before, series), 0.0, "{series} starts at 0");
    }
    let commits = value(&before, "durable_session_sqlite_commit_duration_seconds_count");
    create(&s, "m").await;
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("s", "m")).await;
    assert!(matches!(next_for_sub(&mut c, "s").await, ServerMsg::Events { .. }));
    for i in 0..5 {
        append(&s, "m", &format!(r#"{{"i":{i}}}"#)).await;
    }
    let text = metrics(&s).await;
    assert_eq!(value(&text, r#"durable_session_connections{kind="ws"}"#), 1.0);
    assert_eq!(value(&text, "durable_session_ws_subscriptions"), 1.0);
    assert_eq!(value(&text, "durable_session_appends_total"), 5.0);
    assert_eq!(value(&text, "durable_session_append_bytes_total"), 35.0);
    assert_eq!(value(&text, "durable_session_append_duration_seconds_count"), 5.0);
    assert!(value(&text, "durable_session_sqlite_commit_duration_seconds_count") >= commits + 6.0);
    assert!(value(&text, "durable_session_sqlite_commit_duration_seconds_sum") > 0.0);
    assert!(text.contains("# TYPE durable_session_sqlite_commit_duration_seconds histogram"));
    drop(c);
    wait_metric(&s, r#"durable_session_connections{kind="ws"}"#, 0.0).await;
    wait_metric(&s, "durable_session_ws_subscriptions", 0.0).await;
    wait_metric(&s, "durable_session_ws_queued_bytes", 0.0).await;
}

#[tokio::test]
async fn metrics_are_not_on_the_main_listener_with_auth_on() {
    let s = TestServer::start_with(ServerConfig {
        auth: AuthMode::Jwt(Arc::new(Keys::hs256("k", SECRET).unwrap())),
        ..ServerConfig::default()
    })
    .await;
    let res = s.client.get(format!("{}/metrics", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// The binary: `--metrics-listen` serves `/metrics` on a listener of its own,
/// while with `--auth jwt` the main listener does not.
#[tokio::test]
async fn metrics_listen_serves_metrics_on_their_own_listener() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, SECRET).unwrap();
    /// Stops the server however the test ends.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_durable-session-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--jwt-key")
        .arg(format!("hs256:k:file:{}", key.display()))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _server = Kill(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut url = || {
        let line = lines.next().unwrap().unwrap();
        line.split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned()
    };
    let (main, metrics) = (url(), url());
    assert!(metrics.ends_with("/metrics"), "{metrics}");
    let client = reqwest::Client::new();
    let res = client.get(&metrics).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("durable_session_appends_total 0"));
    let res = client.get(format!("{main}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}
