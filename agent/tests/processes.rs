//! Agent processes (the real `durable-session-agent` binary) against a real
//! server on loopback: several processes on one session answer each
//! message exactly once, a run that cannot write ends as `failed`, and an
//! agent given two server nodes on one Redis finishes its answer through
//! the second when the first is SIGKILLed mid-answer.

#[allow(dead_code)] // restart(): the durability tests use it
#[path = "../../server/tests/common/redis.rs"]
mod redis;

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BOUND, Tab};
use durable_session_protocol::session::{RunMode, RunStatus, SessionEvent, session_path};
use durable_session_protocol::ws::{ClientMsg, Payload, ProducerIds};
use durable_session_server::Server;
use durable_session_server::config::ServerConfig;
use tokio::sync::oneshot;

/// Short answers, written fast.
const FAST: [&str; 4] = ["--tokens-per-second", "200", "--answer-tokens", "12"];

struct TestServer {
    base: String,
    ws_url: String,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

async fn start_server(config: ServerConfig) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::open(dir.path(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    TestServer {
        base: format!("http://{addr}"),
        ws_url: format!("ws://{addr}/v1/ws"),
        _dir: dir,
        _stop: stop,
    }
}

/// A running agent process and the lines of its log (stderr).
struct AgentProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl AgentProcess {
    fn start(server: &TestServer, args: &[&str]) -> Self {
        Self::start_on(&[&server.base], args)
    }

    /// An agent given the nodes `servers` (`--server` repeated).
    fn start_on(servers: &[&str], args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durable-session-agent"))
            .args(servers.iter().flat_map(|s| ["--server", s]))
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the agent");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, log }
    }

    fn logged(&self, needle: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits (at most [`BOUND`]) until the log has a line with `needle`.
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + BOUND;
        while self.logged(needle) == 0 {
            assert!(
                Instant::now() < deadline,
                "the agent never logged {needle:?}; its log: {:#?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn started(events: &[SessionEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::RunStarted {
                run_id, in_reply_to, ..
            } => Some((run_id.as_str(), in_reply_to.as_str())),
            _ => None,
        })
        .collect()
}

fn finished(events: &[SessionEvent]) -> Vec<(&str, RunStatus, Option<&str>)> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::RunFinished { run_id, status, reason } => Some((run_id.as_str(), *status, reason.as_deref())),
            _ => None,
        })
        .collect()
}

/// Every message asked has a finished run, and no run is still open.
fn all_answered(events: &[SessionEvent], asked: &[String]) -> bool {
    let started = started(events);
    let finished = finished(events);
    let answered = |m: &String| {
        started
            .iter()
            .any(|(run, reply)| reply == m && finished.iter().any(|(f, ..)| f == run))
    };
    asked.iter().all(answered) && started.len() == finished.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agent_processes_answer_each_message_exactly_once() {
    const MESSAGES: usize = 8;
    let server = start_server(ServerConfig::default()).await;
    let agents = [AgentProcess::start(&server, &FAST), AgentProcess::start(&server, &FAST)];
    let mut tab = Tab::open_at(&server.ws_url, "shared").await;
    // Both processes serve the session before anything is asked.
    for agent in &agents {
        agent.wait_for_log("joining session session_id=shared").await;
    }
    let t0 = Instant::now();
    let asked: Vec<String> = (0..MESSAGES).map(|i| format!("m{i}")).collect();
    for id in &asked {
        tab.ask(id, &format!("question {id} about trains")).await;
    }
    tab.until("every message answered", |e| all_answered(e, &asked)).await;
    let took = t0.elapsed();

    let started = started(&tab.events);
    let finished = finished(&tab.events);
    for id in &asked {
        let runs: Vec<&str> = started.iter().filter(|(_, m)| m == id).map(|(r, _)| *r).collect();
        assert_eq!(runs.len(), 1, "{id} is answered by exactly one run: {runs:?}");
        let ends: Vec<_> = finished.iter().filter(|(r, ..)| *r == runs[0]).collect();
        assert_eq!(ends.len(), 1, "{id}'s run finishes once: {ends:?}");
        assert_eq!(ends[0].1, RunStatus::Completed, "{id}: {ends:?}");
    }
    assert_eq!(started.len(), MESSAGES);
    // Not vacuous: both processes went for the same messages, and the
    // losers heard they lost.
    let deadline = Instant::now() + BOUND;
    while agents.iter().map(|a| a.logged("lost the claim")).sum::<usize>() == 0 {
        assert!(Instant::now() < deadline, "no process ever lost a claim");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost: Vec<usize> = agents.iter().map(|a| a.logged("lost the claim")).collect();
    println!(
        "two agent processes, {MESSAGES} messages: each answered once in {took:?}; claims lost per process: {lost:?}"
    );
}

/// `n` dotted capital Is: a word whose lowercase form, which the agent
/// writes back, is half as long again as itself (`İ` is 2 bytes, `i̇` 3).
fn growing_word(n: usize) -> String {
    "İ".repeat(n)
}

/// The length of the frame a client sends to append `event` (with the
/// largest request id and producer ids), as the SDK measures it.
fn frame_len(event: &SessionEvent) -> usize {
    ClientMsg::Append {
        req: format!("a{}", u64::MAX),
        path: session_path("too-large"),
        payload: Some(Payload::json(&event.to_json()).unwrap()),
        producer: Some(ProducerIds {
            id: format!("native-{:016x}", u64::MAX),
            epoch: u64::MAX,
            seq: u64::MAX,
        }),
        close: false,
    }
    .to_json()
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_cannot_append_finishes_as_failed_with_the_reason() {
    // The agent's answer repeats the word of the question, which is half as
    // long again in its answer: the server's frame limit lies between the
    // two, so the question is accepted and the delta that carries the word
    // is refused for good (too_large).
    let word = growing_word(40_000);
    let question = SessionEvent::UserMessage {
        id: "big".into(),
        author: "tester".into(),
        text: word.clone(),
        mode: RunMode::Single,
    };
    let delta = SessionEvent::TextDelta {
        run_id: "run-big-ffffffffffffffffffffffffffffffff".into(),
        agent: "sim".into(),
        delta: format!(" {}", word.to_lowercase()),
    };
    let limit = frame_len(&question) + 1_000;
    assert!(frame_len(&delta) > limit + 10_000, "the delta is well over the limit");
    let server = start_server(ServerConfig {
        ws_max_frame_bytes: limit,
        ..ServerConfig::default()
    })
    .await;
    let _agent = AgentProcess::start(&server, &FAST);
    let mut tab = Tab::open_at(&server.ws_url, "too-large").await;
    tab.client
        .append_event(&tab.path, &question)
        .await
        .expect("the question fits");
    tab.until("the run's end", |e| !finished(e).is_empty()).await;
    let (run, status, reason) = finished(&tab.events)[0];
    assert_eq!(started(&tab.events), [(run, "big")]);
    assert_eq!(status, RunStatus::Failed);
    let reason = reason.expect("a reason");
    assert!(reason.contains("too_large"), "the reason names the refusal: {reason}");
    println!("a run that could not append: run_finished failed, reason {reason:?}");

    // The agent goes on answering.
    tab.ask("small", "a small question").await;
    tab.until("the next run's end", |e| finished(e).len() == 2).await;
    assert_eq!(finished(&tab.events)[1].1, RunStatus::Completed);
    let run = started(&tab.events)[1].0.to_owned();
    // Nothing was written for the failed run after its end.
    let end = tab
        .events
        .iter()
        .position(|e| matches!(e, SessionEvent::RunFinished { .. }))
        .unwrap();
    assert!(
        tab.events[end + 1..]
            .iter()
            .filter(|e| !matches!(e, SessionEvent::UserMessage { .. }))
            .all(|e| e.run_id() == Some(run.as_str())),
        "after the failed run's end only the next run writes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_still_being_written_is_left_alone_and_one_whose_agent_died_is_closed() {
    // 60 tokens at 20 per second: a 3 s answer, a token every 50 ms; a run
    // quiet for 1 s is taken for orphaned.
    let slow = [
        "--tokens-per-second",
        "20",
        "--answer-tokens",
        "60",
        "--orphan-after-ms",
        "1000",
    ];
    let server = start_server(ServerConfig::default()).await;
    let first = AgentProcess::start(&server, &slow);
    let mut tab = Tab::open_at(&server.ws_url, "orphans").await;
    first.wait_for_log("joining session session_id=orphans").await;
    tab.ask("m1", "first question").await;
    let deltas = |e: &[SessionEvent]| e.iter().filter(|e| matches!(e, SessionEvent::TextDelta { .. })).count();
    tab.until("the first run under way", |e| deltas(e) >= 2).await;

    // A second process of the same agent joins mid-run: the run is not its,
    // but it is alive, so it is not closed.
    let second = AgentProcess::start(&server, &slow);
    second.wait_for_log("joining session session_id=orphans").await;
    tab.until("the first run's end", |e| !finished(e).is_empty()).await;
    assert_eq!(
        finished(&tab.events),
        [(started(&tab.events)[0].0, RunStatus::Completed, None)],
        "the live run finished by its own agent"
    );
    drop(second);

    // The only agent left dies mid-run; a new one closes the run once it
    // has been quiet for the orphan period.
    tab.ask("m2", "second question").await;
    tab.until("the second run under way", |e| started(e).len() == 2 && deltas(e) >= 62)
        .await;
    drop(first); // SIGKILL
    let killed = Instant::now();
    let _third = AgentProcess::start(&server, &slow);
    tab.until("the orphan closed", |e| finished(e).len() == 2).await;
    let run = started(&tab.events)[1].0;
    let (closed, status, reason) = finished(&tab.events)[1];
    assert_eq!((closed, status), (run, RunStatus::Failed));
    assert_eq!(reason, Some("the agent stopped before finishing"));
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(1),
        "closed only after the quiet period ({after:?})"
    );
    println!("an orphaned run was closed {after:?} after its agent was killed");
}

/// Names the Redis a [`server_node`] process serves from.
const NODE_REDIS_ENV: &str = "FAILOVER_TEST_NODE_REDIS";

/// A server node in a process of its own (this test binary run again as
/// [`server_node`]), on a shared Redis: it can be SIGKILLed like a crashed
/// node. Killed when dropped; it also exits when the test that started it
/// is gone (its stdin closes), so no node outlives a test.
struct Node {
    child: Child,
    base: String,
    ws_url: String,
}

impl Node {
    fn start(redis_url: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .args(["server_node", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(NODE_REDIS_ENV, redis_url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a server node");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        // Finds the address, then keeps the pipe drained.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // (After the test harness's "test server_node ... ".)
                if let Some((_, addr)) = line.split_once("node listening on http://") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let addr = rx.recv_timeout(BOUND).expect("the node prints its address");
        Self {
            child,
            base: format!("http://{addr}"),
            ws_url: format!("ws://{addr}/v1/ws"),
        }
    }

    /// SIGKILL: nothing is closed properly, as in a crash.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Open WebSocket connections, as the node's `/metrics` counts them.
    async fn ws_connections(&self) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("durable_session_connections{kind=\"ws\"} "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no WebSocket gauge in {text}"))
    }

    /// Waits (at most [`BOUND`]) until `ok` holds for its WebSocket count.
    async fn wait_for_ws(&self, what: &str, ok: impl Fn(u64) -> bool) {
        let deadline = Instant::now() + BOUND;
        loop {
            let n = self.ws_connections().await;
            if ok(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {n} WebSocket connections on {}",
                self.base
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of a [`Node`] process: a server on the Redis named by
/// [`NODE_REDIS_ENV`], on a loopback port, until its stdin closes. Run
/// alone (without that variable) it does nothing.
#[test]
#[ignore = "a server node process of the failover test, started by it"]
fn server_node() {
    let Ok(redis_url) = std::env::var(NODE_REDIS_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let options = durable_session_server::storage::redis::RedisOptions::new(redis_url);
        let server = Server::open_redis(options, ServerConfig::default())
            .await
            .expect("connect to Redis");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("node listening on http://{}", listener.local_addr().unwrap());
        let parent_gone = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()));
        server
            .serve(listener, async {
                let _ = parent_gone.await;
            })
            .await
            .expect("serve");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_two_nodes_finishes_its_answer_through_b_when_a_is_killed_mid_answer() {
    const TOKENS: usize = 80;
    let redis = redis::RedisServer::start();
    let mut a = Node::start(&redis.url());
    let b = Node::start(&redis.url());
    let agent = AgentProcess::start_on(
        &[&a.base, &b.base],
        &["--tokens-per-second", "40", "--answer-tokens", &TOKENS.to_string()],
    );
    // The agent is on A (its first node), the tab on B.
    a.wait_for_ws("the agent connected to A", |n| n >= 1).await;
    let mut tab = Tab::open_at(&b.ws_url, "failover").await;
    agent.wait_for_log("joining session session_id=failover").await;
    tab.ask("m1", "a question asked while node A still runs").await;
    let deltas = |e: &[SessionEvent]| e.iter().filter(|e| matches!(e, SessionEvent::TextDelta { .. })).count();
    tab.until("the answer under way", |e| deltas(e) >= 10).await;
    let at_kill = deltas(&tab.events);
    assert!(at_kill < TOKENS, "still answering when A is killed");

    a.kill();
    let killed = Instant::now();
    tab.until("the run's end", |e| !finished(e).is_empty()).await;
    let took = killed.elapsed();
    // The agent moved to B: the tab's connection and its own.
    b.wait_for_ws("the agent reconnected to B", |n| n >= 2).await;

    let started = started(&tab.events);
    assert_eq!(started.len(), 1, "one run: {started:?}");
    let run = started[0].0;
    assert_eq!(finished(&tab.events), [(run, RunStatus::Completed, None)]);
    let run_deltas = tab
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::TextDelta { run_id, .. } if run_id == run))
        .count();
    assert_eq!(run_deltas, TOKENS, "every token once: none lost, none written twice");
    assert!(
        tab.offsets.windows(2).all(|w| w[0] < w[1]),
        "offsets strictly increase: {:?}",
        tab.offsets
    );

    // The log, read over HTTP from B, is what the tab saw, event for event.
    let body = reqwest::get(format!("{}/v1/stream/{}?offset=-1", b.base, tab.path))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log: Vec<SessionEvent> = serde_json::from_str::<Vec<serde_json::Value>>(&body)
        .expect("a JSON array")
        .iter()
        .map(|v| SessionEvent::parse(&v.to_string()).expect("a session event"))
        .collect();
    assert_eq!(log, tab.events);
    println!(
        "node A SIGKILLed after {at_kill} of {TOKENS} tokens: the agent finished through node B {took:?} later, each event once"
    );
}
