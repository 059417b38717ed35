//! The server's memory under hostile load stays within the bounds written in
//! docs/limits.md, and each client hears the documented codes. Runs the real
//! binary with its default limits and reads its resident memory (VmRSS in
//! /proc/PID/status) every 50 ms; the figure checked is the peak growth
//! over the RSS of the warmed-up server. Every loop is bounded in count and
//! time. The scenarios run one at a time so their figures do not mix.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_session_protocol::ws::{ClientMsg, ErrorCode, Payload, ServerMsg, close};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::binary::Running;

/// Peak RSS growth allowed, per scenario (docs/limits.md, "Memory").
const MISSING_BOUND_KB: u64 = 32 * 1024;
const SUBSCRIPTIONS_BOUND_KB: u64 = 64 * 1024;
const UNREAD_BOUND_KB: u64 = 48 * 1024;

/// One scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The real binary on its own data directory.
struct Server {
    running: Running,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Server {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.running
    }
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    Server {
        running: Running::start(dir.path(), &[]),
        _dir: dir,
    }
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Samples the RSS of `pid` every 50 ms until dropped; `peak()` is the most seen.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    pid: u32,
}

impl Sampler {
    fn new(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kb(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peak, stop, pid }
    }

    fn peak(&self) -> u64 {
        self.peak
            .fetch_max(rss_kb(self.pid), Ordering::Relaxed)
            .max(rss_kb(self.pid))
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn connect(base: &str) -> Socket {
    let url = format!("{}/v1/ws", base.replacen("http://", "ws://", 1));
    let (socket, _) = tokio_tungstenite::connect_async(url).await.expect("connect");
    socket
}

async fn http(base: &str, method: reqwest::Method, path: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// The value of one series of `/metrics`.
async fn metric(base: &str, series: &str) -> f64 {
    let text = http(base, reqwest::Method::GET, "/metrics", "")
        .await
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series}"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits (10 s at most) until `/metrics` shows `series` at `want`.
async fn wait_metric(base: &str, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(base, series).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} stayed {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A server with one stream, one WebSocket round trip and one append done:
/// what every scenario measures from.
async fn warmed_up() -> (Server, u64) {
    let server = start();
    let res = http(&server.base, reqwest::Method::PUT, "/v1/stream/warm", "").await;
    assert!(res.status().is_success());
    let res = http(&server.base, reqwest::Method::POST, "/v1/stream/warm", r#"{"warm":1}"#).await;
    assert!(res.status().is_success());
    let mut socket = connect(&server.base).await;
    socket
        .send(Message::text(ClientMsg::Ping { t: Some(1) }.to_json()))
        .await
        .unwrap();
    while let Some(Ok(m)) = socket.next().await {
        if let Message::Text(t) = m
            && matches!(ServerMsg::parse(t.as_str()), Ok(ServerMsg::Pong { .. }))
        {
            break;
        }
    }
    drop(socket);
    let baseline = rss_kb(server.child.id());
    (server, baseline)
}

/// Sends `total` subscribes (`frame(i)`) on one socket, at most `window`
/// unanswered at a time, and passes each answer to `answer`. Returns when
/// all are answered (or after `limit`, failing).
async fn subscribe_many(
    socket: &mut Socket,
    total: usize,
    window: usize,
    limit: Duration,
    frame: impl Fn(usize) -> ClientMsg,
    mut answer: impl FnMut(ServerMsg),
) {
    let deadline = Instant::now() + limit;
    let (mut sent, mut answered) = (0, 0);
    while answered < total {
        assert!(Instant::now() < deadline, "{answered} of {total} answered in {limit:?}");
        if sent < total && sent - answered < window {
            while sent < total && sent - answered < window {
                socket.feed(Message::text(frame(sent).to_json())).await.unwrap();
                sent += 1;
            }
            socket.flush().await.unwrap();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(left, socket.next()).await else {
            continue;
        };
        match ServerMsg::parse(t.as_str()).unwrap() {
            ServerMsg::Ping { .. } | ServerMsg::Hello { .. } => {}
            msg => {
                answered += 1;
                answer(msg);
            }
        }
    }
}

fn report(scenario: &str, baseline: u64, peak: u64, bound: u64) {
    let growth = peak.saturating_sub(baseline);

    eprintln!(
        "memory: {scenario}: baseline {} MiB, peak {} MiB, growth {:.1} MiB (bound {} MiB)",
        baseline / 1024,
        peak / 1024,
        growth as f64 / 1024.0,
        bound / 1024
    );
    assert!(
        growth <= bound,
        "{scenario}: RSS grew by {growth} KiB, more than the bound of {bound} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_subscribes_to_missing_streams() {
    let _one = SERIAL.lock().await;
    const TOTAL: usize = 50_000;
    let (server, baseline) = warmed_up().await;
    let sampler = Sampler::new(server.child.id());
    let mut socket = connect(&server.base).await;
    let mut not_found = 0;
    subscribe_many(
        &mut socket,
        TOTAL,
        1_000,
        Duration::from_secs(120),
        |i| ClientMsg::Subscribe {
            sub: format!("s{i}"),
            path: format!("missing/{i}"),
            offset: "-1".into(),
        },
        |msg| match msg {
            ServerMsg::Error {
                sub: Some(_),
                code: ErrorCode::NotFound,
                ..
            } => not_found += 1,
            other => panic!("expected not_found, got {other:?}"),
        },
    )
    .await;
    assert_eq!(not_found, TOTAL);
    report(
        "50,000 subscribes to missing streams",
        baseline,
        sampler.peak(),
        MISSING_BOUND_KB,
    );
    // Nothing of them is left: no subscription, no change-hub entry.
    wait_metric(&server.base, "durable_session_ws_subscriptions", 0.0).await;
    wait_metric(&server.base, "durable_session_watched_streams", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_subscriptions_on_one_socket() {
    let _one = SERIAL.lock().await;
    const TOTAL: usize = 100_000;
    const LIMIT: usize = 10_000; // the default --max-subscriptions-per-socket
    let (server, baseline) = warmed_up().await;
    let sampler = Sampler::new(server.child.id());
    let mut socket = connect(&server.base).await;
    let (mut live, mut refused) = (0, 0);
    subscribe_many(
        &mut socket,
        TOTAL,
        2_000,
        Duration::from_secs(180),
        |i| ClientMsg::Subscribe {
            sub: format!("s{i}"),
            path: "warm".into(),
            offset: "now".into(),
        },
        |msg| match msg {
            ServerMsg::Events { sub, .. } => {
                let i: usize = sub[1..].parse().unwrap();
                assert!(i < LIMIT, "{sub} was accepted past the limit");
                live += 1;
            }
            ServerMsg::Error {
                sub: Some(sub),
                code: ErrorCode::TooManySubscriptions,
                ..
            } => {
                let i: usize = sub[1..].parse().unwrap();
                assert!(i >= LIMIT, "{sub} was refused within the limit");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        },
    )
    .await;
    assert_eq!((live, refused), (LIMIT, TOTAL - LIMIT));
    assert_eq!(
        metric(&server.base, "durable_session_ws_subscriptions").await,
        LIMIT as f64
    );
    // The socket and its subscriptions go on: an append reaches them all.
    let res = http(&server.base, reqwest::Method::POST, "/v1/stream/warm", r#"{"n":2}"#).await;
    assert!(res.status().is_success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0;
    while delivered < LIMIT {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, socket.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerMsg::Events { messages, .. }) = ServerMsg::parse(t.as_str()) {
                    delivered += messages.len();
                }
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("{delivered} of {LIMIT} delivered, then {other:?}"),
        }
    }
    report(
        "100,000 subscriptions on one socket",
        baseline,
        sampler.peak(),
        SUBSCRIPTIONS_BOUND_KB,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_seconds_of_unread_60_kb_appends() {
    let _one = SERIAL.lock().await;
    /// Bounds the loop in count too (300 MB): a server that buffered every
    /// frame it was sent would hold all of it.
    const MAX_APPENDS: usize = 5_000;
    let (server, baseline) = warmed_up().await;
    let res = http(&server.base, reqwest::Method::PUT, "/v1/stream/big", "").await;
    assert!(res.status().is_success());
    let pad = "x".repeat(60 * 1024);
    let message = format!(r#"{{"pad":"{pad}"}}"#);
    // 24 MiB already there: more than the socket buffers and the reader's
    // queue hold, whatever the writer manages to add.
    let batch = format!("[{}]", vec![message.as_str(); 16].join(","));
    for _ in 0..25 {
        let res = http(&server.base, reqwest::Method::POST, "/v1/stream/big", &batch).await;
        assert!(res.status().is_success());
    }
    let baseline = baseline.max(rss_kb(server.child.id()));
    let sampler = Sampler::new(server.child.id());
    // A reader that subscribes and never reads: the slow-consumer path.
    let mut reader = connect(&server.base).await;
    let subscribe = ClientMsg::Subscribe {
        sub: "r".into(),
        path: "big".into(),
        offset: "-1".into(),
    };
    reader.send(Message::text(subscribe.to_json())).await.unwrap();
    // A writer that sends 60 KB appends for 8 s and reads nothing.
    let mut writer = connect(&server.base).await;
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(8) && sent < MAX_APPENDS {
        let append = ClientMsg::Append {
            req: format!("a{sent}"),
            path: "big".into(),
            payload: Some(Payload::Json(message.clone())),
            producer: None,
            close: false,
        };
        // Completes once the server reads it: at most the in-flight limit
        // ahead of what is durable, the rest waits in TCP.
        tokio::time::timeout(Duration::from_secs(30), writer.send(Message::text(append.to_json())))
            .await
            .expect("the server keeps reading as appends complete")
            .unwrap();
        sent += 1;
    }
    let writing = started.elapsed();
    let peak_while_unread = sampler.peak();
    // Every append is acknowledged, in order; none failed.
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked < sent {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, writer.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => match ServerMsg::parse(t.as_str()).unwrap() {
                ServerMsg::Ack { req, .. } => {
                    assert_eq!(req, format!("a{acked}"));
                    acked += 1;
                }
                ServerMsg::Ping { .. } | ServerMsg::Hello { .. } => {}
                other => panic!("unexpected {other:?}"),
            },
            Ok(Some(Ok(_))) => {}
            other => panic!("{acked} of {sent} acknowledged, then {other:?}"),
        }
    }
    // The reader that never read is cut as a slow consumer: its
    // subscription ends (what was queued for it is dropped) and, once it
    // reads again, it gets what the socket buffers held, then close 4002.
    wait_metric(&server.base, "durable_session_ws_subscriptions", 0.0).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            other => panic!("the unread subscriber was not closed: {other:?}"),
        }
    };
    assert_eq!(code, Some(close::SLOW_CONSUMER));
    eprintln!(
        "memory: unread appends: {sent} appends of 60 KiB ({} MiB) in {:.1} s; peak while unread {} MiB",
        sent * 60 / 1024,
        writing.as_secs_f64(),
        peak_while_unread / 1024
    );
    report("8 s of unread 60 KB appends", baseline, sampler.peak(), UNREAD_BOUND_KB);
}
