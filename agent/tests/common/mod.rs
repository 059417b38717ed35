//! What the agent tests share: a tab (a client subscribed to one session,
//! recording what it is sent) and an agent run in-process until stopped.

#![allow(dead_code)] // each test file uses part of it

use std::time::Duration;

use durable_session_agent::AgentConfig;
use durable_session_protocol::session::{RunMode, RunStatus, SessionEvent, session_path};
use durable_session_protocol::ws::Payload;
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::native::{Client, NativeOptions, Subscription};
use tokio::sync::oneshot;

/// The longest any wait of a test may take.
pub const BOUND: Duration = Duration::from_secs(30);

/// A client subscribed to a session (created if missing), recording every
/// message in delivery order.
pub struct Tab {
    pub client: Client,
    pub sub: Subscription,
    pub path: String,
    pub events: Vec<SessionEvent>,
    /// The offset delivered with each event.
    pub offsets: Vec<String>,
    /// The JSON text of each event.
    pub raw: Vec<String>,
    /// How many events had arrived at each up-to-date marker.
    pub up_to_date_at: Vec<usize>,
}

impl Tab {
    /// A tab on its own connection to `ws_url`.
    pub async fn open_at(ws_url: &str, session: &str) -> Self {
        Self::open_with(Client::connect(NativeOptions::new(ws_url)), session).await
    }

    /// A tab on `client`.
    pub async fn open_with(client: Client, session: &str) -> Self {
        let path = session_path(session);
        let opts = SubscribeOptions {
            create: true,
            ..Default::default()
        };
        let sub = client.subscribe(&path, opts).await;
        Self {
            client,
            sub,
            path,
            events: Vec::new(),
            offsets: Vec::new(),
            raw: Vec::new(),
            up_to_date_at: Vec::new(),
        }
    }

    /// Appends `event`; returns once it is acknowledged.
    pub async fn write(&self, event: SessionEvent) {
        self.client.append_event(&self.path, &event).await.expect("appended");
    }

    /// Asks a question (a single-agent `user_message` from `tester`).
    pub async fn ask(&self, id: &str, text: &str) {
        self.write(SessionEvent::UserMessage {
            id: id.into(),
            author: "tester".into(),
            text: text.into(),
            mode: RunMode::Single,
        })
        .await;
    }

    /// `(offset, JSON)` of every message so far: two tabs that saw the same
    /// log have equal ones.
    pub fn log(&self) -> Vec<(&str, &str)> {
        self.offsets
            .iter()
            .map(String::as_str)
            .zip(self.raw.iter().map(String::as_str))
            .collect()
    }

    /// Reads until `done` holds for the events so far ([`BOUND`] at most).
    pub async fn until(&mut self, what: &str, done: impl Fn(&[SessionEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + BOUND;
        while !done(&self.events) {
            match tokio::time::timeout_at(deadline, self.sub.next()).await {
                Ok(Some(SubscriptionEvent::Messages(ms))) => {
                    for m in ms {
                        let Payload::Json(raw) = m.payload else {
                            panic!("a JSON session")
                        };
                        self.events.push(SessionEvent::parse(&raw).expect("a session event"));
                        self.offsets.push(m.offset);
                        self.raw.push(raw);
                    }
                }
                Ok(Some(SubscriptionEvent::UpToDate { .. })) => self.up_to_date_at.push(self.events.len()),
                Ok(other) => panic!("unexpected {other:?} while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; events so far: {:#?}", self.events),
            }
        }
    }
}

impl Tab {
    /// The run answering `message`, once it started.
    pub async fn until_started(&mut self, message: &str) -> String {
        self.until(&format!("a run for {message}"), |e| run_of(e, message).is_some())
            .await;
        run_of(&self.events, message).unwrap()
    }

    /// Reads until a run answering `message` finished; returns its id.
    pub async fn until_finished(&mut self, message: &str) -> String {
        self.until(&format!("the answer to {message}"), |e| {
            run_of(e, message).is_some_and(|run| finish_of(e, &run).is_some())
        })
        .await;
        run_of(&self.events, message).unwrap()
    }
}

/// The run answering `message`, if one started.
pub fn run_of(events: &[SessionEvent], message: &str) -> Option<String> {
    events.iter().find_map(|e| match e {
        SessionEvent::RunStarted {
            run_id, in_reply_to, ..
        } if in_reply_to == message => Some(run_id.clone()),
        _ => None,
    })
}

/// How run `run` finished, if it did.
pub fn finish_of(events: &[SessionEvent], run: &str) -> Option<(RunStatus, Option<String>)> {
    events.iter().find_map(|e| match e {
        SessionEvent::RunFinished { run_id, status, reason } if run_id == run => Some((*status, reason.clone())),
        _ => None,
    })
}

/// Agents run in-process (`durable_session_agent::run`) until stopped.
pub struct RunningAgent {
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningAgent {
    pub fn start(config: AgentConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            durable_session_agent::run(config, async {
                let _ = stopped.await;
            })
            .await
            .expect("the agent runs");
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the agent and waits until it has.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}
