//! Input limits over real sockets (`docs/protocol.md` §8): JSON nesting
//! depth on HTTP and WebSocket appends, and a `413` for an oversized body
//! that every client can read. Each refusal leaves the stream unchanged.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use common::ws::Client;
use durable_session_protocol::json::MAX_MESSAGE_DEPTH;
use durable_session_protocol::ws::{ClientMsg, ErrorCode, Payload, ServerMsg};
use durable_session_server::config::ServerConfig;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `levels` nested arrays around `1`.
fn nested(levels: usize) -> String {
    "[".repeat(levels) + "1" + &"]".repeat(levels)
}

/// An object nesting `levels` objects (`{"a":{"a":…1…}}`).
fn nested_object(levels: usize) -> String {
    r#"{"a":"#.repeat(levels) + "1" + &"}".repeat(levels)
}

async fn put(s: &TestServer, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> StatusCode {
    s.client
        .put(s.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn post(s: &TestServer, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    s.client
        .post(s.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The stream's body and tail.
async fn read(s: &TestServer, path: &str) -> (String, String) {
    let res = s.client.get(s.url(path)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let tail = res.headers()["stream-next-offset"].to_str().unwrap().to_owned();
    (res.text().await.unwrap(), tail)
}

/// Issue 12: 100,000 levels of nesting used to be stored (204), and then
/// every reader with a depth limit failed on the session.
#[tokio::test]
async fn deeply_nested_json_is_refused_over_http_and_nothing_is_stored() {
    let s = TestServer::start().await;
    assert_eq!(
        put(&s, "sessions/deep", "application/json", r#"[{"n":1}]"#).await,
        StatusCode::CREATED
    );
    let before = read(&s, "sessions/deep").await;
    let deep = nested(100_000);
    for body in [
        deep.clone(),
        format!(r#"[{{"n":2}},{deep}]"#),
        nested_object(MAX_MESSAGE_DEPTH + 1),
        format!("[{}]", nested(MAX_MESSAGE_DEPTH + 1)),
    ] {
        let started = Instant::now();
        let res = post(&s, "sessions/deep", "application/json", body.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{} bytes", body.len());
        assert!(res.text().await.unwrap().contains("nested too deep"));
        assert!(started.elapsed() < Duration::from_secs(2), "refused quickly");
        assert_eq!(read(&s, "sessions/deep").await, before, "nothing stored");
    }
    // PUT with an initial body: refused, and no stream is created.
    assert_eq!(
        put(&s, "sessions/deep-put", "application/json", deep).await,
        StatusCode::BAD_REQUEST
    );
    let res = s.client.head(s.url("sessions/deep-put")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // The limit itself is accepted: a message of MAX_MESSAGE_DEPTH levels,
    // alone or in a batch.
    let at_limit = nested_object(MAX_MESSAGE_DEPTH);
    let res = post(
        &s,
        "sessions/deep",
        "application/json",
        format!("[{at_limit},{at_limit}]"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = post(&s, "sessions/deep", "application/json", at_limit.clone()).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        read(&s, "sessions/deep").await.0,
        format!(r#"[{{"n":1}},{at_limit},{at_limit},{at_limit}]"#)
    );

    // Brackets in a byte stream are bytes, not nesting.
    assert_eq!(
        put(&s, "bytes", "application/octet-stream", nested(100_000)).await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn deeply_nested_json_is_refused_over_the_websocket_with_its_req() {
    let s = TestServer::start().await;
    assert_eq!(
        put(&s, "sessions/deep", "application/json", r#"[{"n":1}]"#).await,
        StatusCode::CREATED
    );
    let before = read(&s, "sessions/deep").await;
    let mut c = Client::connect(&s.base).await;
    let frames = [
        ("whole", nested(100_000)),
        ("in-batch", format!(r#"[{{"n":2}},{}]"#, nested(100_000))),
        ("one-over", nested_object(MAX_MESSAGE_DEPTH + 1)),
        ("batch-one-over", format!("[{}]", nested_object(MAX_MESSAGE_DEPTH + 1))),
    ];
    for (req, data) in &frames {
        let started = Instant::now();
        c.send_raw(&format!(
            r#"{{"op":"append","req":"{req}","path":"sessions/deep","data":{data}}}"#
        ))
        .await;
        match c.next().await {
            ServerMsg::Error {
                code,
                req: r,
                sub,
                message,
            } => {
                assert_eq!((code, r.as_deref(), sub), (ErrorCode::BadRequest, Some(*req), None));
                assert!(message.contains("nested too deep"), "{message}");
            }
            other => panic!("expected bad_request for {req}, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "refused quickly");
    }
    // The frame itself is bounded too, whatever field nests.
    c.send_raw(&format!(
        r#"{{"op":"subscribe","sub":"s1","path":"sessions/deep","x":{}}}"#,
        nested(100_000)
    ))
    .await;
    assert!(matches!(
        c.next().await,
        ServerMsg::Error { code: ErrorCode::BadRequest, sub: Some(s), .. } if s == "s1"
    ));
    // The socket goes on, and the limit itself is accepted.
    let at_limit = nested_object(MAX_MESSAGE_DEPTH);
    for (req, data) in [("ok", at_limit.clone()), ("ok-batch", format!("[{at_limit}]"))] {
        c.send(ClientMsg::Append {
            req: req.into(),
            path: "sessions/deep".into(),
            payload: Some(Payload::json(&data).unwrap()),
            producer: None,
            close: false,
        })
        .await;
        assert!(matches!(c.next().await, ServerMsg::Ack { req: r, .. } if r == req));
    }
    assert_eq!(
        read(&s, "sessions/deep").await.0,
        format!(r#"{},{at_limit},{at_limit}]"#, before.0.trim_end_matches(']'))
    );
}

const LIMIT: usize = 64 * 1024;
/// Far more than the socket buffers hold, so the client is still sending
/// when the server answers.
const OVERSIZED: usize = 8 * 1024 * 1024;

async fn small_limit_server() -> TestServer {
    let s = TestServer::start_with(ServerConfig {
        max_body_bytes: LIMIT,
        ..ServerConfig::default()
    })
    .await;
    assert_eq!(
        put(&s, "big", "application/octet-stream", "start").await,
        StatusCode::CREATED
    );
    s
}

/// Sends a whole request, and only then reads the answer (as Node's fetch
/// does with a streamed body): the status line, or the I/O error.
async fn send_then_read(s: &TestServer, head: &str, body: &[u8]) -> Result<String, std::io::Error> {
    let addr = s.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let request = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(body).await?;
        tcp.flush().await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    };
    tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("an answer within 20 s")
}

/// Issue 12: an oversized body used to get its connection reset mid-upload,
/// which a client reports as a network error (and retries).
#[tokio::test]
async fn an_oversized_body_gets_a_413_a_client_that_sends_first_can_read() {
    let s = small_limit_server().await;
    let before = read(&s, "big").await;
    let host = s.base.trim_start_matches("http://");

    let head = format!(
        "POST /v1/stream/big HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/octet-stream\r\ncontent-length: {OVERSIZED}\r\n\r\n"
    );
    let status = send_then_read(&s, &head, &vec![b'x'; OVERSIZED]).await;
    assert_eq!(status.unwrap(), "HTTP/1.1 413 Payload Too Large", "with Content-Length");

    let head = format!(
        "POST /v1/stream/big HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for _ in 0..OVERSIZED / 65536 {
        chunked.extend_from_slice(b"10000\r\n");
        chunked.extend_from_slice(&[b'x'; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let status = send_then_read(&s, &head, &chunked).await;
    assert_eq!(status.unwrap(), "HTTP/1.1 413 Payload Too Large", "chunked");

    assert_eq!(read(&s, "big").await, before, "nothing stored");
}

#[tokio::test]
async fn an_oversized_body_gets_a_readable_413_over_reqwest() {
    let s = small_limit_server().await;
    let before = read(&s, "big").await;
    let res = post(&s, "big", "application/octet-stream", vec![b'x'; OVERSIZED]).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "with Content-Length");
    assert_eq!(res.headers()["connection"], "close");
    assert!(res.text().await.unwrap().contains("larger than the limit"));

    let chunks = (0..OVERSIZED / 65536).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 65536]));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let res = post(&s, "big", "application/octet-stream", body).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE, "chunked");
    assert!(res.text().await.unwrap().contains("larger than the limit"));

    // At the limit: accepted.
    let res = post(&s, "big", "application/octet-stream", vec![b'y'; LIMIT]).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(read(&s, "big").await.0.len(), before.0.len() + LIMIT);
}

/// Found by tests/fuzz.rs: a frame past the hard limit (the larger of
/// `max_body_bytes` and `ws_max_frame_bytes`) ended the connection without
/// the close code 1009 that `docs/protocol.md` §3.1 promises.
#[tokio::test]
async fn a_frame_past_the_hard_limit_closes_the_socket_with_1009() {
    let s = TestServer::start_with(ServerConfig {
        max_body_bytes: LIMIT,
        ws_max_frame_bytes: LIMIT / 2,
        ..ServerConfig::default()
    })
    .await;
    let mut c = Client::connect(&s.base).await;
    c.send_raw(&format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(LIMIT)))
        .await;
    assert_eq!(
        c.closed().await,
        Some(durable_session_protocol::ws::close::MESSAGE_TOO_BIG)
    );
}
