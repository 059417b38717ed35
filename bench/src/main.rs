//! `durable-session-bench`: the load generator of `npm run bench`.
//!
//! Each subcommand runs one benchmark against one server (ours or a peer) on
//! loopback and prints one JSON object with its figures. Every loop is
//! bounded by a count and by a time limit.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use durable_session_protocol::json;
use durable_session_protocol::ws::{ClientMsg, Message, Payload, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::sync::Mutex;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[derive(Parser)]
#[command(
    name = "durable-session-bench",
    version,
    about = "Load generator for the server benchmarks"
)]
struct Args {
    /// The server's base URL, e.g. http://127.0.0.1:4437.
    #[arg(long, global = true, default_value = "http://127.0.0.1:4437")]
    url: String,
    /// Upper bound on the benchmark's duration, in seconds.
    #[arg(long, global = true, default_value_t = 30.0)]
    seconds: f64,
    /// Further nodes of the same cluster (servers on one Redis), besides
    /// `--url`: `append` spreads its producers over all of them, `fanout`
    /// its subscribers (the writer stays on `--url`). Repeatable.
    #[arg(long = "node", global = true)]
    nodes: Vec<String>,
    /// Processes whose CPU time (user + system, from /proc/PID/stat) `append`
    /// and `fanout` report over their measured part. Repeatable.
    #[arg(long = "cpu-pid", global = true)]
    cpu_pids: Vec<u32>,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Clone, Copy, ValueEnum)]
enum Live {
    Sse,
    Ws,
}

#[derive(Subcommand)]
enum Bench {
    /// Appends of 100-byte JSON messages: sequential (1 producer) or
    /// concurrent, the producers spread over `--url` and the `--node`s.
    Append {
        #[arg(long, default_value_t = 1)]
        producers: usize,
        /// Appends in all.
        #[arg(long, default_value_t = 5_000)]
        count: usize,
    },
    /// Reads a stream of `messages` messages from -1 to the tail.
    Catchup {
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
    },
    /// One writer at `rate` messages/s (on `--url`), `subscribers` live
    /// readers (spread over `--url` and the `--node`s).
    Fanout {
        #[arg(long, value_enum, default_value_t = Live::Sse)]
        mode: Live,
        #[arg(long, default_value_t = 1_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Messages to write.
        #[arg(long, default_value_t = 500)]
        count: usize,
    },
    /// Resident memory of the server process `pid` holding idle live subscriptions.
    Idle {
        #[arg(long, value_enum, default_value_t = Live::Sse)]
        mode: Live,
        #[arg(long, default_value_t = 10_000)]
        subscriptions: usize,
        #[arg(long)]
        pid: u32,
    },
    /// Soak: `subscribers` live WebSocket subscribers over `streams` streams
    /// and steady appends at `rate` per second for `duration` seconds; the
    /// server's RSS (process `pid`) sampled every second.
    Soak {
        #[arg(long, default_value_t = 2_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Appends per second, over all streams.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Seconds of steady appends (RSS is sampled over them).
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Appends per stream before the measured part, once the subscribers
        /// are connected: the server's caches of recent appends (64 per
        /// stream) and SQLite's page caches fill, so the slope measures the
        /// steady state.
        #[arg(long, default_value_t = 64)]
        warmup: usize,
        #[arg(long)]
        pid: u32,
    },
    /// Fills the JSON stream `path` with `count` text_delta events (for the browser benchmarks).
    Fill {
        #[arg(long)]
        path: String,
        #[arg(long, default_value_t = 100_000)]
        count: usize,
    },
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn unique(prefix: &str) -> String {
    format!("bench/{prefix}-{:x}", now_micros())
}

/// A 100-byte JSON message carrying its send time.
fn message(i: usize) -> String {
    let head = format!(r#"{{"type":"bench","i":{i},"t":{},"pad":""#, now_micros());
    let pad = 100usize.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

async fn create(client: &reqwest::Client, base: &str, path: &str) -> Result<(), String> {
    let res = client
        .put(format!("{base}/v1/stream/{path}"))
        .header("content-type", "application/json")
        .send()
        .await
        .map_err(|e| format!("create {path}: {e}"))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("create {path}: HTTP {}", res.status()))
    }
}

async fn append(client: &reqwest::Client, base: &str, path: &str, body: String) -> Result<(), String> {
    let res = client
        .post(format!("{base}/v1/stream/{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("append: {e}"))?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(format!("append: HTTP {}", res.status()))
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()
        .expect("an HTTP client")
}

/// CPU time (user + system, all threads) of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("pid {pid}: {e}"))?;
    // The command name (field 2) may hold spaces: fields count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("no ')' in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15: 12 and 13 after the name.
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        return Err(format!("pid {pid}: no utime/stime"));
    };
    Ok((user + system) as f64 / clock_ticks())
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux if that fails).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The CPU time of some processes over a stretch of a benchmark.
struct CpuClock {
    started: Instant,
    at_start: Vec<(u32, f64)>,
}

impl CpuClock {
    fn start(pids: &[u32]) -> Result<Self, String> {
        let at_start = pids
            .iter()
            .map(|&p| Ok((p, cpu_seconds(p)?)))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            started: Instant::now(),
            at_start,
        })
    }

    /// `[{ pid, cpu_seconds, utilization }]` since `start`; utilization is
    /// CPU seconds per wall-clock second (1.0 = one core busy).
    fn stop(&self) -> Result<serde_json::Value, String> {
        let wall = self.started.elapsed().as_secs_f64();
        let mut out = Vec::new();
        for &(pid, before) in &self.at_start {
            let used = cpu_seconds(pid)? - before;
            out.push(json!({ "pid": pid, "cpu_seconds": used, "utilization": used / wall }));
        }
        Ok(json!(out))
    }
}

/// `--url` followed by the `--node`s.
fn cluster(base: &str, nodes: &[String]) -> Vec<String> {
    std::iter::once(base.to_owned())
        .chain(nodes.iter().map(|n| n.trim_end_matches('/').to_owned()))
        .collect()
}

async fn bench_append(
    nodes: &[String],
    producers: usize,
    count: usize,
    cpu_pids: &[u32],
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let client = http_client();
    let prefix = unique("append");
    for p in 0..producers {
        create(&client, &nodes[p % nodes.len()], &format!("{prefix}-{p}")).await?;
    }
    let deadline = Instant::now() + limit;
    let cpu = CpuClock::start(cpu_pids)?;
    let started = Instant::now();
    let per_producer = count.div_ceil(producers);
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (client, base, path) = (client.clone(), nodes[p % nodes.len()].clone(), format!("{prefix}-{p}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_producer);
            for i in 0..per_producer {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                append(&client, &base, &path, message(i)).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, String>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.map_err(|e| e.to_string())??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.stop()?;
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "producers": producers,
        "nodes": nodes.len(),
        "cpu": cpu,
        "messages": latencies.len(),
        "seconds": seconds,
        "rate": latencies.len() as f64 / seconds,
        "p50_ms": percentile(&latencies, 0.5),
        "p99_ms": percentile(&latencies, 0.99),
    }))
}

async fn fill(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    count: usize,
    event: impl Fn(usize) -> String,
) -> Result<(), String> {
    const BATCH: usize = 1_000;
    let mut i = 0;
    while i < count {
        let n = BATCH.min(count - i);
        let items: Vec<String> = (i..i + n).map(&event).collect();
        append(client, base, path, json::array(items.iter().map(String::as_str))).await?;
        i += n;
    }
    Ok(())
}

async fn bench_catchup(base: &str, messages: usize, limit: Duration) -> Result<serde_json::Value, String> {
    let client = http_client();
    let path = unique("catchup");
    create(&client, base, &path).await?;
    let filled = Instant::now();
    fill(&client, base, &path, messages, message).await?;
    let fill_seconds = filled.elapsed().as_secs_f64();
    let deadline = Instant::now() + limit;
    let started = Instant::now();
    let mut offset = "-1".to_owned();
    let mut read = 0usize;
    let mut requests = 0usize;
    while read < messages && Instant::now() < deadline {
        let res = client
            .get(format!("{base}/v1/stream/{path}?offset={offset}"))
            .send()
            .await
            .map_err(|e| format!("read: {e}"))?;
        let next = res
            .headers()
            .get("stream-next-offset")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or("read: no Stream-Next-Offset")?;
        let body = res.text().await.map_err(|e| format!("read: {e}"))?;
        let items = json::parse(&body).map_err(|e| format!("read: {e}"))?;
        let n = items.array().map_or(0, <[_]>::len);
        requests += 1;
        if n == 0 {
            break;
        }
        read += n;
        offset = next;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "messages": read,
        "requests": requests,
        "seconds": seconds,
        "rate": read as f64 / seconds,
        "fill_seconds": fill_seconds,
    }))
}

/// The send time (`t`, µs) of every message in a JSON text (a message or an array).
fn send_times(text: &str, out: &mut Vec<u64>) {
    let Ok(v) = json::parse(text) else { return };
    match v.array() {
        Some(items) => out.extend(items.iter().filter_map(|m| m.get("t").and_then(json::Json::u64))),
        None => out.extend(v.get("t").and_then(json::Json::u64)),
    }
}

/// One SSE subscriber: reports latencies (ms) of data events until `stop`.
async fn sse_subscriber(
    client: reqwest::Client,
    url: String,
    latencies: Arc<Mutex<Vec<f64>>>,
    ready: tokio::sync::mpsc::Sender<()>,
    deadline: Instant,
) -> Result<(), String> {
    let res = client.get(url).send().await.map_err(|e| format!("sse: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("sse: HTTP {}", res.status()));
    }
    let _ = ready.send(()).await;
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(chunk))) = tokio::time::timeout(left, stream.next()).await else {
            break;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if event.contains("event: data") || event.contains("event:data") {
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|l| l.strip_prefix(' ').unwrap_or(l))
                    .collect();
                let mut times = Vec::new();
                send_times(&data.join("\n"), &mut times);
                lock(&latencies).extend(latencies_ms(&times));
            }
        }
    }
    Ok(())
}

/// A socket to our `/v1/ws` with one subscription to `path` from `now`.
async fn ws_subscribe(base: &str, path: String) -> Result<Socket, String> {
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(base).as_str())
        .await
        .map_err(|e| format!("ws: {e}"))?;
    let sub = ClientMsg::Subscribe {
        sub: "s".into(),
        path,
        offset: "now".into(),
    };
    socket
        .send(WsMessage::text(sub.to_json()))
        .await
        .map_err(|e| format!("ws: {e}"))?;
    Ok(socket)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One WebSocket subscriber of our `/v1/ws`, subscribed to `path` from
/// `now`: hands the messages of each `events` frame to `on_events`, answers
/// heartbeats, and stops at `deadline`. `ready` hears once, at the first
/// `events` frame (the subscription is live from then on).
async fn ws_subscriber(
    base: String,
    path: String,
    ready: tokio::sync::mpsc::Sender<()>,
    deadline: Instant,
    mut on_events: impl FnMut(Vec<Message>) + Send,
) -> Result<(), String> {
    let mut socket = ws_subscribe(&base, path).await?;
    let mut announced = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(frame))) = tokio::time::timeout(left, socket.next()).await else {
            break;
        };
        let WsMessage::Text(text) = frame else { continue };
        match ServerMsg::parse(text.as_str()) {
            Ok(ServerMsg::Events { messages, .. }) => {
                if !announced {
                    announced = true;
                    let _ = ready.send(()).await;
                }
                on_events(messages);
            }
            Ok(ServerMsg::Ping { t }) => {
                let _ = socket.send(WsMessage::text(ClientMsg::Pong { t }.to_json())).await;
            }
            Ok(ServerMsg::Error { code, message, .. }) => {
                return Err(format!("ws subscriber: {}: {message}", code.as_str()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Delivery latencies (ms, now minus each message's send time) of a batch.
fn latencies_ms(times: &[u64]) -> impl Iterator<Item = f64> + '_ {
    let now = now_micros();
    times.iter().map(move |&t| now.saturating_sub(t) as f64 / 1000.0)
}

/// The guarded value; a panicked holder's data is still good for figures.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ws_url(base: &str) -> String {
    format!("{}/v1/ws", base.replacen("http://", "ws://", 1))
}

/// The fan-out's settings (see `Bench::Fanout`).
struct Fanout {
    mode: Live,
    subscribers: usize,
    rate: u32,
    count: usize,
}

/// One writer on `nodes[0]`; the subscribers spread round-robin over `nodes`.
async fn bench_fanout(
    nodes: &[String],
    fanout: Fanout,
    cpu_pids: &[u32],
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let Fanout {
        mode,
        subscribers,
        rate,
        count,
    } = fanout;
    let base = nodes[0].as_str();
    let client = http_client();
    let path = unique("fanout");
    create(&client, base, &path).await?;
    // Latencies (ms) of the subscribers on each node.
    let latencies: Vec<Arc<Mutex<Vec<f64>>>> = nodes.iter().map(|_| Arc::default()).collect();
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(subscribers.max(1));
    // Subscribers run until the benchmark's limit (they are stopped once the
    // last messages had time to arrive). The writer writes its `count`
    // messages at up to `rate` per second, one append at a time, with the
    // same limit less a few seconds for the last deliveries: on a busy
    // machine an append can take tens of milliseconds, and the count is the
    // load runs are compared by.
    let overall = Instant::now() + limit;
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let node = &nodes[i % nodes.len()];
        let (latencies, ready) = (latencies[i % nodes.len()].clone(), ready_tx.clone());
        tasks.push(match mode {
            Live::Sse => tokio::spawn(sse_subscriber(
                client.clone(),
                format!("{node}/v1/stream/{path}?offset=now&live=sse"),
                latencies,
                ready,
                overall,
            )),
            Live::Ws => tokio::spawn(ws_subscriber(
                node.clone(),
                path.clone(),
                ready,
                overall,
                move |messages| {
                    let mut times = Vec::new();
                    for m in messages {
                        if let Payload::Json(raw) = m.payload {
                            send_times(&raw, &mut times);
                        }
                    }
                    lock(&latencies).extend(latencies_ms(&times));
                },
            )),
        });
    }
    drop(ready_tx);
    let mut connected = 0;
    while connected < subscribers
        && tokio::time::timeout(
            Duration::from_secs(30).min(overall.saturating_duration_since(Instant::now())),
            ready.recv(),
        )
        .await
        .ok()
        .flatten()
        .is_some()
    {
        connected += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deadline = overall.checked_sub(Duration::from_secs(5)).unwrap_or(overall);
    let cpu = CpuClock::start(cpu_pids)?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    let mut written = 0;
    for i in 0..count {
        if Instant::now() >= deadline {
            break;
        }
        tick.tick().await;
        append(&client, base, &path, message(i)).await?;
        written += 1;
    }
    // Let the last messages arrive, then stop the subscribers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.stop()?;
    for t in &tasks {
        t.abort();
    }
    let summary = |mut sorted: Vec<f64>| {
        sorted.sort_by(f64::total_cmp);
        (
            sorted.len(),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.99),
            sorted.last().copied(),
        )
    };
    let per_node: Vec<serde_json::Value> = nodes
        .iter()
        .zip(&latencies)
        .enumerate()
        .map(|(i, (url, l))| {
            let (received, p50, p99, _) = summary(lock(l).clone());
            let subscribers = subscribers / nodes.len() + usize::from(i < subscribers % nodes.len());
            json!({ "url": url, "subscribers": subscribers, "received": received, "p50_ms": p50, "p99_ms": p99 })
        })
        .collect();
    let (received, p50, p99, max) = summary(latencies.iter().flat_map(|l| lock(l).clone()).collect());
    Ok(json!({
        "mode": match mode { Live::Sse => "sse", Live::Ws => "ws" },
        "subscribers": subscribers,
        "connected": connected,
        "written": written,
        "received": received,
        "expected": written * connected,
        "seconds": seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max.unwrap_or(f64::NAN),
        "nodes": per_node,
        "cpu": cpu,
    }))
}

fn rss_kb(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("pid {pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".to_owned())
}

async fn bench_idle(
    base: &str,
    mode: Live,
    subscriptions: usize,
    pid: u32,
    limit: Duration,
) -> Result<serde_json::Value, String> {
    let client = http_client();
    let path = unique("idle");
    create(&client, base, &path).await?;
    append(&client, base, &path, message(0)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kb(pid)?;
    let deadline = Instant::now() + limit;
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(subscriptions);
    let mut opened = 0;
    // Open in waves of 500 so the server's accept queue keeps up.
    while opened < subscriptions && Instant::now() < deadline {
        let wave = 500.min(subscriptions - opened);
        let mut pending = Vec::with_capacity(wave);
        for _ in 0..wave {
            let (client, base, path) = (client.clone(), base.to_owned(), path.clone());
            pending.push(tokio::spawn(async move {
                match mode {
                    Live::Sse => {
                        let res = client
                            .get(format!("{base}/v1/stream/{path}?offset=now&live=sse"))
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok::<Box<dyn std::any::Any + Send>, String>(Box::new(res))
                    }
                    Live::Ws => {
                        let socket = ws_subscribe(&base, path).await?;
                        Ok::<Box<dyn std::any::Any + Send>, String>(Box::new(socket))
                    }
                }
            }));
        }
        for p in pending {
            // A server that stops accepting must not hold the benchmark
            // past its limit: what connected by then is what is measured.
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(joined) = tokio::time::timeout(left, p).await else {
                break;
            };
            held.push(joined.map_err(|e| e.to_string())??);
            opened += 1;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(pid)?;
    let per = (after.saturating_sub(before)) as f64 / opened.max(1) as f64;
    drop(held);
    Ok(json!({
        "mode": match mode { Live::Sse => "sse", Live::Ws => "ws" },
        "subscriptions": opened,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_subscription": per,
    }))
}

/// Least-squares slope of `y` over `x`.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let var: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    cov / var
}

/// The soak's settings (see `Bench::Soak`).
struct Soak {
    subscribers: usize,
    streams: usize,
    rate: u32,
    duration: Duration,
    warmup: usize,
    pid: u32,
}

async fn bench_soak(base: &str, soak: Soak, limit: Duration) -> Result<serde_json::Value, String> {
    let Soak {
        subscribers,
        streams,
        rate,
        duration,
        warmup,
        pid,
    } = soak;
    let client = http_client();
    let streams = streams.clamp(1, subscribers.max(1));
    let prefix = unique("soak");
    let paths: Vec<String> = (0..streams).map(|i| format!("{prefix}-{i}")).collect();
    for path in &paths {
        create(&client, base, path).await?;
    }
    let rss_before = rss_kb(pid)?;
    let deadline = Instant::now() + limit.min(duration + Duration::from_secs(60));
    let received: Arc<std::sync::atomic::AtomicU64> = Arc::default();
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(subscribers.max(1));
    let mut tasks = Vec::with_capacity(subscribers);
    // Connect in waves of 250 so the server's accept queue keeps up.
    let mut connected = 0;
    for wave in (0..subscribers).collect::<Vec<_>>().chunks(250) {
        for &i in wave {
            let (received, ready) = (received.clone(), ready_tx.clone());
            let path = paths[i % streams].clone();
            tasks.push(tokio::spawn(ws_subscriber(
                base.to_owned(),
                path,
                ready,
                deadline,
                move |messages| {
                    received.fetch_add(messages.len() as u64, std::sync::atomic::Ordering::Relaxed);
                },
            )));
        }
        for _ in wave {
            match tokio::time::timeout(Duration::from_secs(30), ready.recv()).await {
                Ok(Some(())) => connected += 1,
                _ => return Err(format!("soak: only {connected} of {subscribers} subscribers connected")),
            }
        }
    }
    drop(ready_tx);
    let rss_connected = rss_kb(pid)?;
    // Warm-up: `warmup` appends per stream, 16 writers at once.
    let mut writers = Vec::new();
    for w in 0..16.min(streams) {
        let (client, base, paths) = (client.clone(), base.to_owned(), paths.clone());
        writers.push(tokio::spawn(async move {
            for path in paths.iter().skip(w).step_by(16) {
                for i in 0..warmup {
                    if Instant::now() >= deadline {
                        return Err("soak: the warm-up ran out of time".to_owned());
                    }
                    append(&client, &base, path, message(i)).await?;
                }
            }
            Ok::<_, String>(())
        }));
    }
    for w in writers {
        w.await.map_err(|e| e.to_string())??;
    }
    let subscribers_of = |i: usize| (subscribers / streams + usize::from(i < subscribers % streams)) as u64;
    let warmed: u64 = (0..streams).map(|i| subscribers_of(i) * warmup as u64).sum();
    let settle = Instant::now() + Duration::from_secs(10);
    while received.load(std::sync::atomic::Ordering::Relaxed) < warmed && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    received.store(0, std::sync::atomic::Ordering::Relaxed);
    let rss_warm = rss_kb(pid)?;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut samples = Vec::new();
    let mut written = 0usize;
    let mut expected = 0u64;
    while started.elapsed() < duration && Instant::now() < deadline {
        tokio::select! {
            _ = second.tick() => {
                samples.push(json!({
                    "t": started.elapsed().as_secs_f64().round(),
                    "rss_kb": rss_kb(pid)?,
                    "written": written,
                    "received": received.load(std::sync::atomic::Ordering::Relaxed),
                }));
            }
            _ = tick.tick() => {
                let i = written % streams;
                append(&client, base, &paths[i], message(written)).await?;
                written += 1;
                expected += subscribers_of(i);
            }
        }
    }
    let last = json!({
        "t": started.elapsed().as_secs_f64().round(),
        "rss_kb": rss_kb(pid)?,
        "written": written,
        "received": received.load(std::sync::atomic::Ordering::Relaxed),
    });
    if samples.last().is_some_and(|s| s["t"] == last["t"]) {
        samples.pop();
    }
    samples.push(last);
    let seconds = started.elapsed().as_secs_f64();
    // Let the last appends arrive, bounded.
    let settle = Instant::now() + Duration::from_secs(5);
    while received.load(std::sync::atomic::Ordering::Relaxed) < expected && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered = received.load(std::sync::atomic::Ordering::Relaxed);
    for t in &tasks {
        t.abort();
    }
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s["t"].as_f64()?, s["rss_kb"].as_f64()?)))
        .collect();
    // The slope over the second half too: the first seconds include the
    // allocator settling and the store's caches filling.
    let half: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0 >= seconds / 2.0).collect();
    Ok(json!({
        "subscribers": subscribers,
        "connected": connected,
        "streams": streams,
        "rate": rate,
        "seconds": seconds,
        "written": written,
        "expected": expected,
        "delivered": delivered,
        "rss_before_kb": rss_before,
        "rss_connected_kb": rss_connected,
        "warmup_appends": warmup * streams,
        "rss_warm_kb": rss_warm,
        "samples": samples,
        "slope_kb_per_s": slope(&points),
        "slope_second_half_kb_per_s": slope(&half),
    }))
}

async fn bench_fill(base: &str, path: &str, count: usize) -> Result<serde_json::Value, String> {
    let client = http_client();
    create(&client, base, path).await?;
    let started = Instant::now();
    fill(&client, base, path, count, |i| {
        format!(r#"{{"type":"text_delta","run_id":"bench","agent":"bench","delta":" word{i}"}}"#)
    })
    .await?;
    Ok(json!({ "path": path, "events": count, "seconds": started.elapsed().as_secs_f64() }))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let limit = Duration::from_secs_f64(args.seconds.max(0.1));
    let base = args.url.trim_end_matches('/').to_owned();
    let nodes = cluster(&base, &args.nodes);
    let result = match args.bench {
        Bench::Append { producers, count } => {
            bench_append(&nodes, producers.max(1), count, &args.cpu_pids, limit).await
        }
        Bench::Catchup { messages } => bench_catchup(&base, messages, limit).await,
        Bench::Fanout {
            mode,
            subscribers,
            rate,
            count,
        } => {
            let fanout = Fanout {
                mode,
                subscribers,
                rate,
                count,
            };
            bench_fanout(&nodes, fanout, &args.cpu_pids, limit).await
        }
        Bench::Idle {
            mode,
            subscriptions,
            pid,
        } => bench_idle(&base, mode, subscriptions, pid, limit).await,
        Bench::Soak {
            subscribers,
            streams,
            rate,
            duration,
            warmup,
            pid,
        } => {
            let soak = Soak {
                subscribers,
                streams,
                rate,
                duration: Duration::from_secs(duration),
                warmup,
                pid,
            };
            bench_soak(&base, soak, limit).await
        }
        Bench::Fill { path, count } => bench_fill(&base, &path, count).await,
    };
    match result {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("durable-session-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
