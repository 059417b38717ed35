//! Sessions end to end over real sockets on loopback: a server, the demo
//! agents, and SDK clients as the "tabs".

use std::time::{Duration, Instant};

mod common;

use common::{RunningAgent, Tab};
use durable_session_agent::AgentConfig;
use durable_session_protocol::session::{RunMode, RunStatus, SessionEvent};
use durable_session_server::Server;
use durable_session_server::auth::Right;
use durable_session_server::auth::jwt::Keys;
use durable_session_server::config::{AuthMode, ServerConfig};
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::native::{Client, NativeOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

const TOKEN_INTERVAL: Duration = Duration::from_millis(10);
const ANSWER_TOKENS: usize = 80;
/// Lifetime of the agents' tokens in the access-control test: shorter than
/// a run, so the agents refresh while they write.
const AGENT_TOKEN_TTL_S: u64 = 2;
/// Tokens minted for agents (all tests of this binary).
static AGENT_TOKENS: AtomicUsize = AtomicUsize::new(0);

struct World {
    ws_url: String,
    /// With access control on: the keys tokens are minted with.
    keys: Option<Arc<Keys>>,
    _dir: tempfile::TempDir,
    _server_stop: oneshot::Sender<()>,
    agent: Option<RunningAgent>,
}

impl World {
    async fn start() -> Self {
        Self::start_with(None, TOKEN_INTERVAL).await
    }

    async fn start_with(keys: Option<Arc<Keys>>, token_interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            auth: keys.clone().map_or(AuthMode::None, AuthMode::Jwt),
            ..ServerConfig::default()
        };
        let server = Server::open(dir.path(), config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}/v1/ws", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        let mut w = Self {
            ws_url,
            keys,
            _dir: dir,
            _server_stop: stop,
            agent: None,
        };
        w.start_agent(token_interval);
        w
    }

    fn start_agent(&mut self, token_interval: Duration) {
        let mut config = AgentConfig::new(&self.ws_url);
        config.token_interval = token_interval;
        config.token = self.keys.clone().map(|keys| {
            let provider: durable_sessions::native::TokenProvider = Arc::new(move || {
                let grants = [
                    ("sessions/*".to_owned(), vec![Right::Read, Right::Agent]),
                    ("_index/sessions".to_owned(), vec![Right::Read]),
                ];
                let token = keys.mint(None, "agent", &grants, AGENT_TOKEN_TTL_S);
                AGENT_TOKENS.fetch_add(1, Ordering::Relaxed);
                Box::pin(async move { token.map_err(|e| durable_sessions::core::ClientError::new("token_failed", e)) })
            });
            provider
        });
        config.answer_tokens = ANSWER_TOKENS;
        self.agent = Some(RunningAgent::start(config));
    }

    async fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop().await;
        }
    }

    /// A tab on a new client of this world ([`World::client`]).
    async fn tab(&self, session: &str) -> Tab {
        Tab::open_with(self.client(), session).await
    }

    fn client(&self) -> Client {
        self.client_as("tester", "*")
    }

    /// A client whose tokens name `sub` and cover `sessions/{session}`.
    fn client_as(&self, sub: &str, session: &str) -> Client {
        let mut options = NativeOptions::new(&self.ws_url);
        options.core.backoff.min_ms = 20;
        if let Some(keys) = self.keys.clone() {
            let (sub, path) = (sub.to_owned(), format!("sessions/{session}"));
            options.token = Some(Arc::new(move || {
                let rights = vec![Right::Read, Right::Append, Right::Control, Right::Create];
                let token = keys.mint(None, &sub, &[(path.clone(), rights)], 600);
                Box::pin(async move { token.map_err(|e| durable_sessions::core::ClientError::new("token_failed", e)) })
            }));
        }
        Client::connect(options)
    }
}

/// Reads the whole session from a new tab and checks the agent wrote no
/// delta after its `run_finished`; returns the events.
async fn assert_no_delta_after_run_finished(world: &World, session: &str) -> Vec<SessionEvent> {
    let mut check = world.tab(session).await;
    check.until("history", |e| finished(e).is_some()).await;
    let events = check.events.clone();
    let end = events
        .iter()
        .position(|e| matches!(e, SessionEvent::RunFinished { .. }))
        .unwrap();
    assert!(
        events[end + 1..]
            .iter()
            .all(|e| !matches!(e, SessionEvent::TextDelta { .. })),
        "no delta after run_finished"
    );
    events
}

fn user_message(id: &str, text: &str, mode: RunMode) -> SessionEvent {
    SessionEvent::UserMessage {
        id: id.into(),
        author: "tester".into(),
        text: text.into(),
        mode,
    }
}

fn run_id_of(events: &[SessionEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        SessionEvent::RunStarted { run_id, .. } => Some(run_id.clone()),
        _ => None,
    })
}

fn deltas(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::TextDelta { .. }))
        .count()
}

fn finished(events: &[SessionEvent]) -> Option<RunStatus> {
    events.iter().find_map(|e| match e {
        SessionEvent::RunFinished { status, .. } => Some(*status),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_subscriber_resumes_with_exactly_what_an_uncut_one_got() {
    let world = World::start().await;
    let mut steady = world.tab("cut").await;
    let mut cut = world.tab("cut").await;
    steady
        .write(user_message("m1", "tell me about durable streams", RunMode::Single))
        .await;
    cut.until("some deltas", |e| deltas(e) >= 10).await;
    cut.client.drop_connection();
    cut.until("more deltas after the cut", |e| deltas(e) >= 30).await;
    cut.client.drop_connection();
    steady.until("run end", |e| finished(e).is_some()).await;
    cut.until("run end", |e| finished(e).is_some()).await;
    assert_eq!(finished(&steady.events), Some(RunStatus::Completed));
    assert_eq!(cut.log(), steady.log(), "same offsets and bodies: no gap, no duplicate");
    let offsets: Vec<&String> = cut.offsets.iter().collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(deltas(&cut.events), ANSWER_TOKENS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_earlier_deltas_then_live_ones_in_the_same_order() {
    let world = World::start().await;
    let mut early = world.tab("late").await;
    early
        .write(user_message("m1", "explain resumable logs", RunMode::Single))
        .await;
    early
        .until("a third of the answer", |e| deltas(e) >= ANSWER_TOKENS / 3)
        .await;
    let mut late = world.tab("late").await;
    late.until("catch-up", |e| !e.is_empty()).await;
    let caught_up_with = late.events.len();
    assert!(
        deltas(&late.events) >= ANSWER_TOKENS / 3 - 5,
        "catch-up carries the earlier deltas"
    );
    late.until("run end", |e| finished(e).is_some()).await;
    early.until("run end", |e| finished(e).is_some()).await;
    assert!(late.events.len() > caught_up_with, "then live deltas followed");
    assert_eq!(late.log(), early.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_another_tab_stops_the_run_fast() {
    let world = World::start().await;
    let mut a = world.tab("cancel").await;
    let b = world.tab("cancel").await;
    a.write(user_message("m1", "write a long essay", RunMode::Single)).await;
    a.until("deltas", |e| deltas(e) >= 5).await;
    let run_id = run_id_of(&a.events).unwrap();
    let sent = Instant::now();
    b.write(SessionEvent::Cancel {
        run_id: run_id.clone(),
        by: "tab-b".into(),
    })
    .await;
    a.until("run end", |e| finished(e).is_some()).await;
    let latency = sent.elapsed();
    println!("cancel latency (tab B append → run_finished cancelled in tab A): {latency:?}");
    assert!(latency < Duration::from_millis(250), "cancel took {latency:?}");
    assert_eq!(finished(&a.events), Some(RunStatus::Cancelled));
    // Nothing from the agent after its run_finished.
    tokio::time::sleep(TOKEN_INTERVAL * 10).await;
    let events = assert_no_delta_after_run_finished(&world, "cancel").await;
    assert!(deltas(&events) < ANSWER_TOKENS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_is_applied_and_the_run_continues() {
    let world = World::start().await;
    let mut a = world.tab("steer").await;
    let b = world.tab("steer").await;
    a.write(user_message("m1", "describe mountains", RunMode::Single)).await;
    a.until("deltas", |e| deltas(e) >= 10).await;
    let run_id = run_id_of(&a.events).unwrap();
    b.write(SessionEvent::Steer {
        run_id: run_id.clone(),
        text: "talk about oceans".into(),
        by: "tab-b".into(),
    })
    .await;
    a.until("run end", |e| finished(e).is_some()).await;
    let events = a.events.clone();
    assert_eq!(finished(&events), Some(RunStatus::Completed));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, SessionEvent::RunStarted { .. }))
            .count(),
        1,
        "not restarted"
    );
    let applied = events
        .iter()
        .position(|e| matches!(e, SessionEvent::SteerApplied { .. }))
        .expect("steer_applied");
    let text_after: String = events[applied..]
        .iter()
        .filter_map(|e| match e {
            SessionEvent::TextDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert!(text_after.starts_with(" Changing course:"), "{text_after}");
    assert!(text_after.contains("oceans"));
    assert!(
        !text_after.contains("mountains"),
        "the text changed direction: {text_after}"
    );
    assert_eq!(deltas(&events), ANSWER_TOKENS, "the run went on to its full length");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sub_agent_writes_into_the_one_session() {
    let world = World::start().await;
    let mut a = world.tab("team").await;
    a.write(user_message("m1", "plan a launch", RunMode::Multi)).await;
    a.until("run end", |e| finished(e).is_some()).await;
    let events = a.events.clone();
    assert_eq!(finished(&events), Some(RunStatus::Completed));
    for agent in ["researcher", "analyst", "writer"] {
        let wrote = events
            .iter()
            .any(|e| matches!(e, SessionEvent::TextDelta { agent: a, .. } if a == agent));
        let progressed = events
            .iter()
            .any(|e| matches!(e, SessionEvent::Progress { agent: a, .. } if a == agent));
        assert!(wrote && progressed, "{agent} wrote deltas and progress");
    }
    let orchestrator: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, SessionEvent::TextDelta { agent, .. } if agent == "orchestrator"))
        .collect();
    assert_eq!(orchestrator.len(), 1, "the orchestrator writes only the final result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_sub_agent() {
    let world = World::start().await;
    let mut a = world.tab("team-stop").await;
    a.write(user_message("m1", "plan a launch", RunMode::Multi)).await;
    a.until("sub-agent deltas", |e| deltas(e) >= 6).await;
    let run_id = run_id_of(&a.events).unwrap();
    a.write(SessionEvent::Cancel {
        run_id,
        by: "tab-a".into(),
    })
    .await;
    a.until("run end", |e| finished(e).is_some()).await;
    assert_eq!(finished(&a.events), Some(RunStatus::Cancelled));
    tokio::time::sleep(TOKEN_INTERVAL * 10).await;
    assert_no_delta_after_run_finished(&world, "team-stop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_tab_does_not_stop_the_run_and_a_restarted_agent_answers_once() {
    let mut world = World::start().await;
    let mut watcher = world.tab("restart").await;
    {
        let asker = world.tab("restart").await;
        asker.write(user_message("m1", "first question", RunMode::Single)).await;
        asker.client.close(); // closing a connection is never a cancel
    }
    watcher.until("run end", |e| finished(e).is_some()).await;
    assert_eq!(finished(&watcher.events), Some(RunStatus::Completed));

    world.stop_agent().await;
    world.start_agent(TOKEN_INTERVAL);
    watcher
        .write(user_message("m2", "second question", RunMode::Single))
        .await;
    watcher
        .until("second run end", |e| {
            e.iter()
                .filter(|e| matches!(e, SessionEvent::RunFinished { .. }))
                .count()
                == 2
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut check = world.tab("restart").await;
    check
        .until("history", |e| {
            e.iter()
                .filter(|e| matches!(e, SessionEvent::RunFinished { .. }))
                .count()
                == 2
        })
        .await;
    let started: Vec<String> = check
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::RunStarted { in_reply_to, .. } => Some(in_reply_to.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["m1", "m2"], "each message answered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_access_control_agents_refresh_tokens_and_identity_is_the_servers_word() {
    let keys = Arc::new(Keys::hs256("test", b"a secret of thirty-two bytes, at least").unwrap());
    // Each sub-agent writes 26 tokens at 150 ms: a 4 s answer, written with 2 s tokens.
    let world = World::start_with(Some(keys), Duration::from_millis(150)).await;
    let minted_before = AGENT_TOKENS.load(Ordering::Relaxed);
    let mut ada = Tab::open_with(world.client_as("ada", "secure"), "secure").await;
    // The client says "tester"; only the token's sub counts, so the server refuses it...
    let forged = ada
        .client
        .append_event(&ada.path, &user_message("m0", "hi", RunMode::Multi))
        .await;
    assert_eq!(forged.unwrap_err().code, "forbidden");
    // ...and accepts the message under its own name.
    let mine = SessionEvent::UserMessage {
        id: "m1".into(),
        author: "ada".into(),
        text: "tell me about tokens".into(),
        mode: RunMode::Multi,
    };
    ada.write(mine).await;
    let mut until = Instant::now() + Duration::from_secs(20);
    while finished(&ada.events).is_none() {
        ada.until("the team's answer", |e| finished(e).is_some()).await;
        assert!(Instant::now() < until);
    }
    assert_eq!(finished(&ada.events), Some(RunStatus::Completed));
    // Every sub-agent's tokens, and the orchestrator's result.
    assert_eq!(deltas(&ada.events), (ANSWER_TOKENS / 3) * 3 + 1);
    // The orchestrator and its three sub-agents each refreshed at least once.
    let minted = AGENT_TOKENS.load(Ordering::Relaxed) - minted_before;
    assert!(minted >= 8, "agent tokens minted during the run: {minted}");
    // A fresh reader sees exactly the same log: nothing lost across refreshes.
    let mut check = Tab::open_with(world.client_as("ada", "secure"), "secure").await;
    until = Instant::now() + Duration::from_secs(10);
    check.until("history", |e| finished(e).is_some()).await;
    assert!(Instant::now() < until);
    assert_eq!(check.log(), ada.log());
    // Another user cannot read the session.
    let eve = world.client_as("eve", "elsewhere");
    let mut sub = eve.subscribe("sessions/secure", SubscribeOptions::default()).await;
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(SubscriptionEvent::Error(e))) => assert_eq!(e.code, "forbidden"),
        other => panic!("expected forbidden, got {other:?}"),
    }
}
