//! Graceful shutdown of the real binary: on SIGTERM it stops accepting,
//! answers the appends it already received, closes WebSockets with 1001,
//! ends SSE and long-poll reads cleanly, and exits 0 within
//! `--shutdown-timeout-ms`; every acknowledged append is on disk.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::binary::Running;
use common::ws::Client;
use durable_session_protocol::ws::{ClientMsg, Payload, ProducerIds, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Everything a test waits for happens within this.
const BOUND: Duration = Duration::from_secs(20);
/// Appends one WebSocket keeps unacknowledged (so some are always queued
/// in the server when the signal comes).
const PIPELINE: u64 = 32;

fn sigterm(server: &Running) {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits for the process to exit (within [`BOUND`]); its status and when.
fn wait_exit(server: &mut Running) -> (std::process::ExitStatus, Instant) {
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, Instant::now());
        }
        assert!(Instant::now() < deadline, "the server did not exit within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the appending socket saw: the seqs acknowledged, and how it closed.
struct Appended {
    acked: Vec<u64>,
    close_code: Option<u16>,
}

/// Appends `{"seq":N}` over `ws` as producer `ws-appender`, keeping
/// [`PIPELINE`] unacknowledged, until the server closes the socket.
async fn append_until_closed(ws: Client, progress: Arc<AtomicUsize>) -> Appended {
    let (mut tx, mut rx) = ws.socket.split();
    let (mut next, mut acked) = (0u64, Vec::new());
    let mut sending = true;
    loop {
        while sending && next < acked.len() as u64 + PIPELINE {
            let frame = ClientMsg::Append {
                req: format!("a{next}"),
                path: "graceful".into(),
                payload: Some(Payload::json(&format!(r#"{{"seq":{next}}}"#)).unwrap()),
                producer: Some(ProducerIds {
                    id: "ws-appender".into(),
                    epoch: 0,
                    seq: next,
                }),
                close: false,
            };
            sending = tx.send(Message::text(frame.to_json())).await.is_ok();
            next += 1;
        }
        let frame = tokio::time::timeout(BOUND, rx.next())
            .await
            .expect("a frame from the server");
        match frame {
            Some(Ok(Message::Text(text))) => match ServerMsg::parse(text.as_str()).unwrap() {
                ServerMsg::Ack { req, .. } => {
                    acked.push(req[1..].parse().unwrap());
                    progress.store(acked.len(), Ordering::Relaxed);
                }
                ServerMsg::Ping { .. } => {}
                other => panic!("unexpected {other:?}"),
            },
            Some(Ok(Message::Close(frame))) => {
                // Reading on answers the close frame.
                while let Ok(Some(Ok(_))) = tokio::time::timeout(BOUND, rx.next()).await {}
                return Appended {
                    acked,
                    close_code: frame.map(|f| u16::from(f.code)),
                };
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket error after {} acks: {e}", acked.len()),
            None => {
                return Appended {
                    acked,
                    close_code: None,
                };
            }
        }
    }
}

/// A server with `--shutdown-timeout-ms` set, a JSON stream created at
/// `name` on it, an HTTP client and the stream's URL (the temp dir lives as
/// long as the first element).
async fn with_stream(name: &str, timeout_ms: u64) -> (tempfile::TempDir, Running, reqwest::Client, String) {
    let dir = tempfile::tempdir().unwrap();
    let server = Running::start(dir.path(), &["--shutdown-timeout-ms", &timeout_ms.to_string()]);
    let http = reqwest::Client::new();
    let url = format!("{}/v1/stream/{name}", server.base);
    let res = http
        .put(&url)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    (dir, server, http, url)
}

/// Reads an SSE response to its end: `Ok(bytes)` if it ended cleanly.
async fn read_sse(res: reqwest::Response) -> Result<usize, reqwest::Error> {
    let mut res = res;
    let mut bytes = 0;
    while let Some(chunk) = res.chunk().await? {
        bytes += chunk.len();
    }
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_with_1001_answers_received_appends_and_exits_in_time() {
    const TIMEOUT_MS: u64 = 5_000;
    let (dir, mut server, http, url) = with_stream("graceful", TIMEOUT_MS).await;

    // A live WebSocket subscriber, an SSE reader, a long-poll reader.
    let mut subscriber = Client::connect(&server.base).await;
    subscriber
        .send(ClientMsg::Subscribe {
            sub: "s".into(),
            path: "graceful".into(),
            offset: "-1".into(),
        })
        .await;
    assert!(matches!(subscriber.next().await, ServerMsg::Events { .. }));
    let sse = http.get(format!("{url}?offset=-1&live=sse")).send().await.unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let sse = tokio::spawn(read_sse(sse));
    // (On a stream nobody writes to: it waits until the shutdown.)
    let quiet = format!("{}/v1/stream/quiet", server.base);
    let res = http
        .put(&quiet)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let long_poll = tokio::spawn(http.get(format!("{quiet}?offset=now&live=long-poll")).send());

    // An append stream, pipelined.
    let progress = Arc::new(AtomicUsize::new(0));
    let appender = tokio::spawn(append_until_closed(
        Client::connect(&server.base).await,
        progress.clone(),
    ));
    let deadline = Instant::now() + BOUND;
    while progress.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "appends are acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    sigterm(&server);
    let signalled = Instant::now();
    assert_eq!(subscriber.closed().await, Some(1001), "the subscriber hears 1001");
    while let Ok(Some(Ok(_))) = tokio::time::timeout(BOUND, subscriber.socket.next()).await {}
    let appended = appender.await.unwrap();
    assert_eq!(
        appended.close_code,
        Some(1001),
        "the appender hears 1001 after its acks"
    );
    let sse = sse.await.unwrap();
    assert!(sse.is_ok(), "the SSE response ends cleanly: {sse:?}");
    let long_poll = long_poll.await.unwrap().expect("the long-poll is answered");
    assert_eq!(long_poll.status(), StatusCode::NO_CONTENT);
    let (status, exited) = wait_exit(&mut server);
    assert!(status.success(), "exit status {status:?}");
    let took = exited - signalled;
    assert!(
        took < Duration::from_millis(TIMEOUT_MS),
        "exited in {took:?}, without needing the timeout"
    );

    // After a restart: every acknowledged append is there, and every
    // append stored was acknowledged (the server answered what it took).
    let mut server = Running::start(dir.path(), &[]);
    let url = format!("{}/v1/stream/graceful?offset=-1", server.base);
    let stored: Vec<serde_json::Value> =
        serde_json::from_str(&http.get(&url).send().await.unwrap().text().await.unwrap()).unwrap();
    let stored: Vec<u64> = stored.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
    let mut acked = appended.acked.clone();
    acked.sort_unstable();
    assert_eq!(stored, acked, "stored exactly the acknowledged appends, in order");
    println!(
        "SIGTERM: 1001 on both sockets, SSE ended, long-poll 204, exit 0 in {took:?}; {} appends acknowledged and stored",
        acked.len()
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_ends_does_not_hold_the_shutdown_past_its_timeout() {
    const TIMEOUT_MS: u64 = 1_000;
    let (_dir, mut server, http, url) = with_stream("stuck", TIMEOUT_MS).await;
    // An append whose body never comes in full.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/stream/stuck HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    stuck.write_all(head.as_bytes()).await.unwrap();
    stuck.flush().await.unwrap();
    // The server is serving it once a request on another connection is.
    assert_eq!(http.head(&url).send().await.unwrap().status(), StatusCode::OK);

    sigterm(&server);
    let signalled = Instant::now();
    let (status, exited) = wait_exit(&mut server);
    let took = exited - signalled;
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS - 100) && took < Duration::from_millis(TIMEOUT_MS + 2_000),
        "the stuck request held the shutdown for the timeout, no longer: {took:?}"
    );
    drop(stuck);
}
