//! Readers skip what they cannot read (`docs/protocol.md` §11): a session
//! holding messages that are no session event — written by any other
//! writer, or stored by a server from before the depth limit — is read past
//! by the SDK (counted in `skipped`) and by the agents, and the subscription
//! never ends on them.

use std::time::{Duration, Instant};

use durable_session_agent::AgentConfig;
use durable_session_protocol::session::RunStatus;
use durable_session_server::Server;
use durable_session_server::config::ServerConfig;
use durable_sessions::core::chat::{ChatItem, RunState};
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::core::session::SessionModel;
use durable_sessions::native::{Client, NativeOptions};
use tokio::sync::oneshot;

const SESSION: &str = "sessions/poisoned";
/// Stored through HTTP, then replaced in the database by [`deep`]: what a
/// server from before the depth limit accepted (issue 12).
const PLACEHOLDER: &str = r#"{"placeholder":"deep"}"#;

/// 100,000 nested arrays: deeper than any reader's parser breaks down.
fn deep() -> String {
    "[".repeat(100_000) + &"]".repeat(100_000)
}

/// Messages a raw HTTP writer may append to a JSON stream that are no
/// session event this version reads; the last is replaced by [`deep`].
fn unreadable() -> Vec<String> {
    let at_depth_limit = r#"{"a":"#.repeat(64) + "1" + &"}".repeat(64);
    vec![
        r#"{"type":5}"#.into(),
        r#""just a string""#.into(),
        "[1,2]".into(),
        "null".into(),
        r#"{"type":"user_message"}"#.into(),
        r#"{"type":"from_a_later_version","x":1}"#.into(),
        at_depth_limit,
        PLACEHOLDER.into(),
    ]
}

struct Running {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn serve(dir: &std::path::Path) -> Running {
    let server = Server::open(dir, ServerConfig::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Running { base, _stop: stop }
}

async fn http(base: &str, method: reqwest::Method, body: String) -> u16 {
    reqwest::Client::new()
        .request(method, format!("{base}/v1/stream/{SESSION}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A session whose history holds every kind of unreadable message, the
/// deepest from an old database, then a user message: a server restarted
/// on that database.
async fn poisoned_session(dir: &std::path::Path) -> Running {
    {
        let old = serve(dir).await;
        let batch = format!("[{}]", unreadable().join(","));
        assert_eq!(http(&old.base, reqwest::Method::PUT, batch).await, 201);
    }
    // The old server is stopped; its database gets the message it once
    // accepted.
    let db = rusqlite::Connection::open(dir.join("streams.sqlite3")).unwrap();
    let changed = db
        .execute(
            "UPDATE chunks SET data = ?1 WHERE data = ?2",
            (deep().as_bytes(), PLACEHOLDER.as_bytes()),
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let s = serve(dir).await;
    let question = r#"{"type":"user_message","id":"m1","author":"ada","text":"still there?"}"#;
    assert_eq!(http(&s.base, reqwest::Method::POST, question.into()).await, 204);
    s
}

fn client(base: &str) -> Client {
    Client::connect(NativeOptions::new(format!("{}/v1/ws", base.replacen("http", "ws", 1))))
}

/// Folds the session until `done` holds (10 s at most).
async fn read_until(base: &str, what: &str, done: impl Fn(&SessionModel) -> bool) -> SessionModel {
    let client = client(base);
    let mut sub = client.subscribe(SESSION, SubscribeOptions::default()).await;
    let mut model = SessionModel::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&model) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(e @ (SubscriptionEvent::Messages(_) | SubscriptionEvent::UpToDate { .. }))) => {
                model.apply(e);
            }
            Ok(Some(other)) => panic!("unexpected {other:?} while waiting for {what}"),
            Ok(None) => panic!("subscription ended while waiting for {what}"),
            Err(_) => panic!(
                "timed out waiting for {what}: {} received, {} skipped",
                model.received(),
                model.skipped()
            ),
        }
    }
    client.close();
    model
}

#[tokio::test]
async fn the_sdk_skips_and_counts_what_it_cannot_read_and_reads_on() {
    let dir = tempfile::tempdir().unwrap();
    let s = poisoned_session(dir.path()).await;
    let n = unreadable().len() as u64;
    let model = read_until(&s.base, "the user message", |m| {
        m.view().items().iter().any(|i| matches!(i, ChatItem::User(_)))
    })
    .await;
    // The event of a later version's type is not skipped: the transcript
    // passes it through, where it was (§11).
    assert_eq!((model.received(), model.skipped()), (n + 1, n - 1));
    let [ChatItem::Event(later), ChatItem::User(m)] = model.view().items() else {
        panic!("{:?}", model.view().items())
    };
    assert_eq!(later.event_type, "from_a_later_version");
    assert_eq!(m.text, "still there?");
    // The skipped messages are still delivered, in order, with their text.
    let snapshot = model.snapshot().unwrap();
    assert!(snapshot.contains(r#""just a string""#) && snapshot.len() > 200_000);
}

#[tokio::test]
async fn the_agent_skips_what_it_cannot_read_and_answers_the_message_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = poisoned_session(dir.path()).await;
    let mut config = AgentConfig::new(format!("{}/v1/ws", s.base.replacen("http", "ws", 1)));
    config.token_interval = Duration::from_millis(5);
    config.answer_tokens = 10;
    let (stop, stopped) = oneshot::channel::<()>();
    let agent = tokio::spawn(durable_session_agent::run(config, async {
        let _ = stopped.await;
    }));
    let model = read_until(&s.base, "the agent's answer", |m| {
        m.view()
            .items()
            .iter()
            .any(|i| matches!(i, ChatItem::Run(r) if r.state != RunState::Streaming))
    })
    .await;
    let run = model
        .view()
        .items()
        .iter()
        .find_map(|i| match i {
            ChatItem::Run(r) => Some(r),
            ChatItem::User(_) | ChatItem::Event(_) => None,
        })
        .unwrap();
    assert_eq!(
        (run.in_reply_to.as_str(), run.state),
        ("m1", RunState::from(RunStatus::Completed))
    );
    let _ = stop.send(());
    agent.await.unwrap().unwrap();
}
