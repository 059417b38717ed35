//! The webhook-woken agent (serverless mode) over real sockets on loopback:
//! a server with subscriptions, a webhook subscription on `sessions/*`, and
//! the agent's webhook listener — which holds no connection to the server
//! between wakes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use durable_session_agent::AgentConfig;
use durable_session_agent::webhook::{WebhookOptions, serve};
use durable_session_protocol::session::SessionEvent;
use durable_session_server::Server;
use durable_session_server::config::ServerConfig;
use durable_session_server::subscriptions::SubscriptionConfig;
use durable_session_server::subscriptions::signing::WebhookKeys;
use durable_session_server::subscriptions::target::TargetPolicy;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The server's webhook signing key (the test signs a genuine wake with it).
const SERVER_KEY: [u8; 32] = [9; 32];
const DEADLINE: Duration = Duration::from_secs(20);

struct World {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
}

impl World {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = WebhookKeys::from_keys(vec![SigningKey::from_bytes(&SERVER_KEY)]);
        let config = ServerConfig {
            subscriptions: Some(SubscriptionConfig {
                targets: TargetPolicy {
                    allow_hosts: vec![],
                    allow_loopback: true,
                },
                ..SubscriptionConfig::new(Arc::new(keys))
            }),
            ..ServerConfig::default()
        };
        let server = Server::open(dir.path(), config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            _dir: dir,
            _stop: stop,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/stream/{path}", self.base)
    }

    fn agent(&self) -> WebhookOptions {
        let ws = format!("{}/v1/ws", self.base.replace("http://", "ws://"));
        let mut agent = AgentConfig::new(ws);
        agent.token_interval = Duration::from_millis(5);
        agent.answer_tokens = 20;
        let mut options = WebhookOptions::new(agent, &self.base);
        options.heartbeat = Duration::from_millis(500);
        options
    }

    /// A session holding one user message, written over HTTP while no agent
    /// runs.
    async fn session_with_question(&self, session: &str, message_id: &str) {
        let path = format!("sessions/{session}");
        let created = self
            .http
            .put(self.url(&path))
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let message = json!({"type": "user_message", "id": message_id, "author": "ada", "text": "hello there"});
        let appended = self
            .http
            .post(self.url(&path))
            .header("content-type", "application/json")
            .body(message.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(appended.status(), 204);
    }

    /// The session's events; with `until`, waits (long-poll, bounded) until
    /// they satisfy it.
    async fn events(&self, session: &str, until: impl Fn(&[SessionEvent]) -> bool) -> Vec<SessionEvent> {
        let url = self.url(&format!("sessions/{session}"));
        let deadline = Instant::now() + DEADLINE;
        let (mut events, mut offset) = (Vec::new(), "-1".to_owned());
        loop {
            let live = if offset == "-1" { "" } else { "&live=long-poll" };
            let res = self
                .http
                .get(format!("{url}?offset={offset}{live}"))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "read: {}", res.status());
            offset = res.headers()["stream-next-offset"].to_str().unwrap().to_owned();
            if res.status() == 200 {
                let batch: Vec<Value> = res.json().await.unwrap();
                events.extend(batch.iter().filter_map(|v| SessionEvent::parse(&v.to_string()).ok()));
            }
            if until(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "timed out; events so far: {events:?}");
        }
    }

    async fn subscription(&self, id: &str) -> Value {
        let res = self
            .http
            .get(self.url(&format!("__ds/subscriptions/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Polls the subscription (every 20 ms, within the deadline) until `what`
    /// holds for it.
    async fn subscription_until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let sub = self.subscription(id).await;
            if done(&sub) {
                return sub;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {sub}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn tail(&self, session: &str) -> String {
        let res = self
            .http
            .head(self.url(&format!("sessions/{session}")))
            .send()
            .await
            .unwrap();
        res.headers()["stream-next-offset"].to_str().unwrap().to_owned()
    }
}

/// Starts the webhook-woken agent on `listener`; it stops when the sender
/// is dropped.
fn start_agent(listener: tokio::net::TcpListener, options: WebhookOptions) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, options, async {
        let _ = stopped.await;
    }));
    stop
}

fn answers(events: &[SessionEvent], message: &str) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::RunStarted { in_reply_to, .. } if in_reply_to == message))
        .count()
}

fn completed(events: &[SessionEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            SessionEvent::RunFinished {
                status: durable_session_protocol::session::RunStatus::Completed,
                ..
            }
        )
    })
}

fn deltas(events: &[SessionEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, SessionEvent::TextDelta { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_no_agent_runs_is_answered_once_the_webhook_wakes_it() {
    let world = World::start().await;
    // The agent's address, with nothing listening on it yet.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let created = world
        .http
        .put(world.url("__ds/subscriptions/agents"))
        .json(&json!({
            "type": "webhook",
            "pattern": "sessions/*",
            "webhook": { "url": format!("http://{addr}/wake") },
            "lease_ttl_ms": 5000,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    world.session_with_question("w1", "m1").await;
    // The server tries to wake the agent, which is not running: the
    // delivery fails and is retried with backoff.
    world
        .subscription_until("agents", "a failed delivery", |s| s["status"] == "failed")
        .await;
    let events = world.events("w1", |_| true).await;
    assert_eq!(events.len(), 1, "nobody answered yet: {events:?}");

    // The agent starts, with no connection to the server; the retried
    // webhook wakes it.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let _agent = start_agent(listener, world.agent());
    let events = world.events("w1", completed).await;
    assert_eq!(answers(&events, "m1"), 1);
    assert!(deltas(&events) > 0, "the answer has text: {events:?}");

    // The wake is acked (the agent's own events wake it once more; that
    // wake finds nothing to answer and is acked too): the cursor reaches
    // the session's tail, delivery is healthy, and m1 was answered once.
    let tail = world.tail("w1").await;
    let sub = world
        .subscription_until("agents", "the cursor at the tail", |s| {
            s["streams"][0]["acked_offset"] == tail.as_str() && s["status"] == "active"
        })
        .await;
    assert_eq!(sub["streams"][0]["path"], "sessions/w1");
    let events = world.events("w1", |_| true).await;
    assert_eq!(answers(&events, "m1"), 1, "answered once: {events:?}");
}

/// A wake for `session`, as the server would send it (the callback token
/// is not the server's: the final ack is refused, which changes nothing
/// here).
fn wake_body(world: &World, session: &str) -> Vec<u8> {
    json!({
        "subscription_id": "agents",
        "wake_id": "w_1",
        "generation": 1,
        "streams": [{
            "path": format!("sessions/{session}"),
            "link_type": "glob",
            "acked_offset": "-1",
            "tail_offset": "0000000000000001_0000000000000001",
            "has_pending": true,
        }],
        "callback_url": world.url("__ds/subscriptions/agents/callback"),
        "callback_token": "not-a-token",
    })
    .to_string()
    .into_bytes()
}

/// A `Webhook-Signature` made with `key` but naming the server's kid.
fn signature(key: &SigningKey, t: u64, body: &[u8]) -> String {
    let kid = WebhookKeys::from_keys(vec![SigningKey::from_bytes(&SERVER_KEY)])
        .kid()
        .to_owned();
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    let sig = URL_SAFE_NO_PAD.encode(key.sign(&signed).to_bytes());
    format!("t={t},kid={kid},ed25519={sig}")
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_webhook_is_refused_and_nothing_is_appended() {
    let world = World::start().await;
    world.session_with_question("f1", "m1").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/wake", listener.local_addr().unwrap());
    let _agent = start_agent(listener, world.agent());

    let body = wake_body(&world, "f1");
    let forger = SigningKey::from_bytes(&[66; 32]);
    let server_key = SigningKey::from_bytes(&SERVER_KEY);
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] = b'X';
    let forged: Vec<(&str, Option<String>, &[u8])> = vec![
        (
            "another key under the server's kid",
            Some(signature(&forger, now_s(), &body)),
            &body,
        ),
        (
            "the server's signature over another body",
            Some(signature(&server_key, now_s(), &body)),
            &tampered,
        ),
        (
            "a signature from ten minutes ago",
            Some(signature(&server_key, now_s() - 600, &body)),
            &body,
        ),
        ("no signature", None, &body),
        ("a malformed signature", Some("t=1,kid=x".into()), &body),
    ];
    for (what, signature, body) in forged {
        let mut req = world
            .http
            .post(&hook)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            req = req.header("webhook-signature", signature);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
    }
    // Refused before anything started: the session holds the question only.
    let events = world.events("f1", |_| true).await;
    assert_eq!(events.len(), 1, "nothing appended: {events:?}");

    // The same wake, genuinely signed, is answered (so the refusals above
    // are what kept the agent from answering).
    let res = world
        .http
        .post(&hook)
        .header("content-type", "application/json")
        .header("webhook-signature", signature(&server_key, now_s(), &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let events = world.events("f1", completed).await;
    assert_eq!(answers(&events, "m1"), 1);
}
