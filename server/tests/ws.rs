//! The `/v1/ws` extension over a real socket (see docs/protocol.md).

mod common;

use std::time::Duration;

use common::TestServer;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Message, Payload, ProducerIds, ServerMsg, close};
use durable_session_server::config::ServerConfig;
use reqwest::StatusCode;

async fn http_create(s: &TestServer, path: &str, content_type: &str, body: &str) {
    let res = s
        .client
        .put(s.url(path))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
}

async fn http_append(s: &TestServer, path: &str, body: &str) -> String {
    s.append_json(path, body).await
}

async fn http_read(s: &TestServer, path: &str) -> String {
    s.client.get(s.url(path)).send().await.unwrap().text().await.unwrap()
}

fn subscribe(sub: &str, path: &str, offset: &str) -> ClientMsg {
    ClientMsg::Subscribe {
        sub: sub.into(),
        path: path.into(),
        offset: offset.into(),
    }
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

fn json_of(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match &m.payload {
            Payload::Json(v) => v.clone(),
            other => panic!("expected JSON, got {other:?}"),
        })
        .collect()
}

/// Collects events of `sub` until `count` messages arrived.
async fn collect(c: &mut Client, sub: &str, count: usize) -> Vec<Message> {
    let mut out = Vec::new();
    while out.len() < count {
        match c.next().await {
            ServerMsg::Events { sub: s, messages, .. } if s == sub => out.extend(messages),
            other => panic!("unexpected frame {other:?}"),
        }
    }
    out
}

/// protocol.md §5.1: catch-up, then live, with no gap or duplicate; HTTP and
/// WebSocket appends land in the same stream with the same offsets.
#[tokio::test]
async fn catch_up_then_live_with_http_and_ws_appends() {
    let s = TestServer::start().await;
    http_create(&s, "sessions/a", "application/json", r#"[{"n":1},{"n":2},{"n":3}]"#).await;
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("s1", "sessions/a", "-1")).await;
    let ServerMsg::Events {
        messages,
        next,
        up_to_date,
        closed,
        ..
    } = c.next().await
    else {
        panic!("events")
    };
    assert_eq!(json_of(&messages), [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    assert!(up_to_date && !closed);
    assert_eq!(next, messages[2].offset);
    let offsets: Vec<_> = messages.iter().map(|m| m.offset.clone()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");

    // An HTTP append arrives live, right after the catch-up.
    let tail = http_append(&s, "sessions/a", r#"{"n":4}"#).await;
    let live = collect(&mut c, "s1", 1).await;
    assert_eq!(json_of(&live), [r#"{"n":4}"#]);
    assert_eq!(live[0].offset, tail);

    // A WebSocket append is acked with its offset and readable over HTTP.
    c.send(append("r1", "sessions/a", r#"{"n":5}"#)).await;
    let mut acked = None;
    let mut seen = Vec::new();
    while acked.is_none() || seen.is_empty() {
        match c.next().await {
            ServerMsg::Ack {
                req, offset, duplicate, ..
            } => {
                assert_eq!(req, "r1");
                assert!(!duplicate);
                acked = Some(offset);
            }
            ServerMsg::Events { messages, .. } => seen.extend(messages),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(Some(seen[0].offset.clone()), acked);
    assert_eq!(
        http_read(&s, "sessions/a").await,
        r#"[{"n":1},{"n":2},{"n":3},{"n":4},{"n":5}]"#
    );
}

/// protocol.md §2, §5.3: resuming from a delivered offset.
#[tokio::test]
async fn resuming_from_an_offset_has_no_gap_and_no_duplicate() {
    let s = TestServer::start().await;
    http_create(&s, "r", "application/json", "[]").await;
    let mut offsets = Vec::new();
    for i in 0..10 {
        offsets.push(http_append(&s, "r", &format!(r#"{{"i":{i}}}"#)).await);
    }
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("s", "r", &offsets[3])).await;
    let got = collect(&mut c, "s", 6).await;
    assert_eq!(got.first().map(|m| m.offset.clone()), Some(offsets[4].clone()));
    assert_eq!(json_of(&got).first().map(String::as_str), Some(r#"{"i":4}"#));
    assert_eq!(
        got.iter().map(|m| m.offset.clone()).collect::<Vec<_>>(),
        offsets[4..].to_vec()
    );
}

/// protocol.md §4.2: idempotent appends.
#[tokio::test]
async fn repeated_producer_append_is_acked_not_stored_twice() {
    let s = TestServer::start().await;
    http_create(&s, "p", "application/json", "[]").await;
    let mut c = Client::connect(&s.base).await;
    let msg = ClientMsg::Append {
        req: "a".into(),
        path: "p".into(),
        payload: Some(Payload::json(r#"{"once":true}"#).unwrap()),
        producer: Some(ProducerIds {
            id: "w".into(),
            epoch: 0,
            seq: 0,
        }),
        close: false,
    };
    c.send(msg.clone()).await;
    let ServerMsg::Ack {
        offset: first,
        duplicate: false,
        ..
    } = c.next().await
    else {
        panic!("ack")
    };
    c.send(msg).await;
    let ServerMsg::Ack {
        offset: second,
        duplicate: true,
        ..
    } = c.next().await
    else {
        panic!("duplicate ack")
    };
    assert_eq!(first, second);
    assert_eq!(http_read(&s, "p").await, r#"[{"once":true}]"#);
}

/// protocol.md §4.2 and §6: an append with an epoch older than the one the
/// producer already used is refused with `stale_epoch` (not `forbidden`,
/// which is about access rights), carrying its `req`; nothing is stored.
#[tokio::test]
async fn a_stale_producer_epoch_is_refused_with_stale_epoch() {
    let s = TestServer::start().await;
    http_create(&s, "e", "application/json", "[]").await;
    let mut c = Client::connect(&s.base).await;
    let append = |req: &str, epoch: u64, body: &str| ClientMsg::Append {
        req: req.into(),
        path: "e".into(),
        payload: Some(Payload::json(body).unwrap()),
        producer: Some(ProducerIds {
            id: "w".into(),
            epoch,
            seq: 0,
        }),
        close: false,
    };
    c.send(append("new", 1, r#"{"epoch":1}"#)).await;
    assert!(matches!(c.next().await, ServerMsg::Ack { req, .. } if req == "new"));
    c.send(append("old", 0, r#"{"epoch":0}"#)).await;
    match c.next().await {
        ServerMsg::Error { code, req, sub, .. } => {
            assert_eq!((code, req.as_deref(), sub), (ErrorCode::StaleEpoch, Some("old"), None));
        }
        other => panic!("expected stale_epoch, got {other:?}"),
    }
    assert_eq!(ErrorCode::StaleEpoch.as_str(), "stale_epoch");
    assert_eq!(http_read(&s, "e").await, r#"[{"epoch":1}]"#);
}

/// protocol.md §5.2: per-subscription errors; §4 unsubscribe.
#[tokio::test]
async fn subscription_errors_do_not_end_other_subscriptions() {
    let s = TestServer::start().await;
    http_create(&s, "good", "application/json", "[]").await;
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("ok", "good", "-1")).await;
    assert!(matches!(c.next().await, ServerMsg::Events { up_to_date: true, .. }));
    c.send(subscribe("missing", "nope", "-1")).await;
    assert!(
        matches!(c.next().await, ServerMsg::Error { sub: Some(s), code: ErrorCode::NotFound, .. } if s == "missing")
    );
    c.send(subscribe("badoffset", "good", "yesterday")).await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error {
            code: ErrorCode::BadOffset,
            ..
        }
    ));
    c.send(subscribe("ok", "good", "-1")).await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error {
            code: ErrorCode::DuplicateSub,
            ..
        }
    ));
    http_append(&s, "good", r#"{"still":"here"}"#).await;
    assert_eq!(json_of(&collect(&mut c, "ok", 1).await), [r#"{"still":"here"}"#]);

    c.send(ClientMsg::Unsubscribe { sub: "ok".into() }).await;
    assert!(matches!(c.next().await, ServerMsg::Unsubscribed { .. }));
    http_append(&s, "good", r#"{"after":"unsubscribe"}"#).await;
    c.send(ClientMsg::Ping { t: Some(7) }).await;
    assert_eq!(
        c.next().await,
        ServerMsg::Pong { t: Some(7) },
        "nothing delivered after unsubscribe"
    );
}

/// One path encoding: `café/ß` percent-encoded over HTTP and raw in a
/// WebSocket frame names one stream (they used to be two).
#[tokio::test]
async fn a_non_ascii_path_names_one_stream_on_both_transports() {
    let s = TestServer::start().await;
    let encoded = durable_session_protocol::path::encode("sessions/café/ß");
    assert_eq!(encoded, "sessions/caf%C3%A9/%C3%9F");
    http_create(&s, &encoded, "application/json", r#"{"via":"http"}"#).await;
    let mut c = Client::connect(&s.base).await;
    c.send(ClientMsg::Append {
        req: "r".into(),
        path: "sessions/café/ß".into(),
        payload: Some(Payload::json(r#"{"via":"ws"}"#).unwrap()),
        producer: None,
        close: false,
    })
    .await;
    assert!(
        matches!(c.next().await, ServerMsg::Ack { .. }),
        "the WebSocket finds the HTTP-created stream"
    );
    assert_eq!(http_read(&s, &encoded).await, r#"[{"via":"http"},{"via":"ws"}]"#);
}

/// protocol.md §6: a refusal for size names the request it ends, so a
/// client waiting for that ack hears it (it used to carry no `req`).
#[tokio::test]
async fn an_oversized_append_is_refused_with_its_req_and_later_appends_go_on() {
    let s = TestServer::start_with(ServerConfig {
        ws_max_frame_bytes: 4096,
        ..ServerConfig::default()
    })
    .await;
    http_create(&s, "j", "application/json", "").await;
    let mut c = Client::connect(&s.base).await;
    let big = format!(
        r#"{{"op":"append","req":"big","path":"j","data":"{}"}}"#,
        "x".repeat(5000)
    );
    c.send_raw(&big).await;
    let after = r#"{"op":"append","req":"small","path":"j","data":{"type":"cancel","run_id":"r"}}"#;
    c.send_raw(after).await;
    match c.next().await {
        ServerMsg::Error { code, req, sub, .. } => {
            assert_eq!((code, req.as_deref(), sub), (ErrorCode::TooLarge, Some("big"), None));
        }
        other => panic!("expected too_large, got {other:?}"),
    }
    assert!(matches!(c.next().await, ServerMsg::Ack { req, .. } if req == "small"));
    // A subscription frame padded past the limit names its sub.
    let padded = format!(
        r#"{{"op":"subscribe","sub":"s9","path":"j","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    c.send_raw(&padded).await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error { code: ErrorCode::TooLarge, sub: Some(s), .. } if s == "s9"
    ));
    assert_eq!(http_read(&s, "j").await, r#"[{"type":"cancel","run_id":"r"}]"#);
}

/// protocol.md §6, §8: bad input.
#[tokio::test]
async fn bad_frames_get_error_frames_and_change_nothing() {
    let s = TestServer::start_with(ServerConfig {
        ws_max_frame_bytes: 4096,
        ..ServerConfig::default()
    })
    .await;
    http_create(&s, "j", "application/json", r#"{"keep":1}"#).await;
    let before = http_read(&s, "j").await;
    let mut c = Client::connect(&s.base).await;
    let big = format!(
        r#"{{"op":"append","req":"big","path":"j","data":"{}"}}"#,
        "x".repeat(5000)
    );
    let cases: Vec<(String, ErrorCode)> = vec![
        ("not json".into(), ErrorCode::BadFrame),
        ("[1,2,3]".into(), ErrorCode::BadFrame),
        (r#"{"op":"teleport"}"#.into(), ErrorCode::UnknownOp),
        (r#"{"op":"subscribe","sub":5}"#.into(), ErrorCode::BadFrame),
        (r#"{"op":"append","req":"r","path":"j"}"#.into(), ErrorCode::BadRequest),
        (
            r#"{"op":"append","req":"r","path":"j","data":[]}"#.into(),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"append","req":"r","path":"j","text":"plain"}"#.into(),
            ErrorCode::Conflict,
        ),
        (
            r#"{"op":"append","req":"r","path":"missing","data":{}}"#.into(),
            ErrorCode::NotFound,
        ),
        (
            r#"{"op":"append","req":"r","path":"j","data":{},"producer":{"id":"p","epoch":0,"seq":4}}"#.into(),
            ErrorCode::SeqGap,
        ),
        (
            r#"{"op":"append","req":"r","path":"j","data":{},"producer":{"id":"p","epoch":-1,"seq":0}}"#.into(),
            ErrorCode::BadFrame,
        ),
        (r#"{"op":"unsubscribe","sub":"never"}"#.into(), ErrorCode::UnknownSub),
        (big, ErrorCode::TooLarge),
    ];
    for (frame, code) in &cases {
        c.send_raw(frame).await;
        match c.next().await {
            ServerMsg::Error { code: got, message, .. } => {
                assert_eq!(got, *code, "{frame}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{frame}: expected an error frame, got {other:?}"),
        }
    }
    c.socket
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![0xff, 0xfe, 0x00]))
        .await
        .unwrap();
    assert!(matches!(
        c.next().await,
        ServerMsg::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    // The connection is still up and nothing was written.
    c.send(ClientMsg::Ping { t: Some(1) }).await;
    assert_eq!(c.next().await, ServerMsg::Pong { t: Some(1) });
    assert_eq!(http_read(&s, "j").await, before);
}

use futures_util::SinkExt;

/// protocol.md §3: heartbeats, close code 4001.
#[tokio::test]
async fn silent_clients_are_closed_by_the_heartbeat() {
    let s = TestServer::start_with(ServerConfig {
        ws_heartbeat: Duration::from_millis(100),
        ws_heartbeat_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let mut c = Client::connect(&s.base).await;
    // Never answer the server's pings: the server must notice.
    assert_eq!(c.closed().await, Some(close::HEARTBEAT_TIMEOUT));
}

/// protocol.md §7: slow consumers, close code 4002, resume.
#[tokio::test]
async fn slow_consumers_are_closed_and_resume_from_their_offset() {
    let s = TestServer::start_with(ServerConfig {
        ws_max_queued_bytes: 256 * 1024,
        ws_slow_consumer_timeout: Duration::from_millis(500),
        max_read_bytes: 256 * 1024,
        ..ServerConfig::default()
    })
    .await;
    http_create(&s, "big", "application/json", "[]").await;
    let item = format!(r#"{{"pad":"{}"}}"#, "y".repeat(1000));
    let batch = format!("[{}]", vec![item.as_str(); 1000].join(","));
    const BATCHES: usize = 24; // ~24 MB, far more than socket buffers hold
    for _ in 0..BATCHES {
        http_append(&s, "big", &batch).await;
    }
    let mut c = Client::connect(&s.base).await;
    c.send(subscribe("s", "big", "-1")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // read nothing meanwhile
    // Drain: frames already queued arrive, then the close.
    let mut last_offset = None;
    let mut received = 0usize;
    let code = loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(20), c.socket.next())
            .await
            .expect("progress")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                if let ServerMsg::Events { messages, next, .. } = ServerMsg::parse(t.as_str()).unwrap() {
                    received += messages.len();
                    last_offset = Some(next);
                }
            }
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => {
                break f.map(|f| u16::from(f.code));
            }
            Some(Ok(_)) => {}
            other => panic!("unexpected end: {other:?}"),
        }
    };
    assert_eq!(code, Some(close::SLOW_CONSUMER));
    assert!(received < BATCHES * 1000, "closed before everything was delivered");
    // Resume on a new connection from the last offset: exactly the rest.
    let mut c = Client::connect(&s.base).await;
    let from = last_offset.unwrap_or_else(|| "-1".into());
    c.send(subscribe("s", "big", &from)).await;
    let rest = collect(&mut c, "s", BATCHES * 1000 - received).await;
    assert_eq!(received + rest.len(), BATCHES * 1000);
}

/// The `--test-hooks` cut: connections end with no close frame; off by default.
#[tokio::test]
async fn the_test_hook_cuts_connections_like_a_network_failure() {
    let plain = TestServer::start().await;
    let res = plain
        .client
        .post(format!("{}/v1/test/drop-connections", plain.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND, "off unless enabled");

    let s = TestServer::start_with(ServerConfig {
        test_hooks: true,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Client::connect(&s.base).await;
    let res = s
        .client
        .post(format!("{}/v1/test/drop-connections", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(c.closed().await, None, "no close frame");
}
