//! The agent process: session discovery, one task per session, one task per
//! run.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use durable_session_protocol::session::{
    IndexEvent, RunMode, RunStatus, SESSION_INDEX_PATH, SessionEvent, session_path,
};
use durable_session_protocol::ws::Payload;
use durable_sessions::core::ClientError;
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::native::{Client, NativeOptions, TokenProvider};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use crate::session::{Control, Question, SessionState};
use crate::textgen::TextGen;

/// How the agents behave.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's WebSocket endpoint, `ws://HOST:PORT/v1/ws`.
    pub ws_url: String,
    /// Name of the single agent (the `agent` field of its events).
    pub name: String,
    /// Name of the orchestrator in multi-agent mode.
    pub orchestrator: String,
    /// Names of the sub-agents in multi-agent mode.
    pub sub_agents: Vec<String>,
    /// Time between two tokens.
    pub token_interval: Duration,
    /// Tokens in a single agent's answer (each sub-agent writes a third).
    pub answer_tokens: usize,
    /// Access tokens for a server with access control: they need the
    /// `agent` right (with `read`) on `sessions/*` and `read` on
    /// `_index/sessions`.
    pub token: Option<TokenProvider>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("ws_url", &self.ws_url)
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<provider>"))
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Defaults for a server at `ws_url`: about 20 tokens per second, 240
    /// tokens per answer.
    pub fn new(ws_url: impl Into<String>) -> Self {
        Self {
            ws_url: ws_url.into(),
            name: "sim".into(),
            orchestrator: "orchestrator".into(),
            sub_agents: vec!["researcher".into(), "analyst".into(), "writer".into()],
            token_interval: Duration::from_millis(50),
            answer_tokens: 240,
            token: None,
        }
    }

    /// A connection to the server, with the token provider.
    fn connect(&self) -> Client {
        let mut options = NativeOptions::new(&self.ws_url);
        options.token = self.token.clone();
        Client::connect(options)
    }
}

/// A unique run id.
fn new_run_id(message_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!(
        "run-{message_id}-{:x}{:x}",
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the agents until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
    let config = Arc::new(config);
    let client = config.connect();
    let mut index = client.subscribe(SESSION_INDEX_PATH, SubscribeOptions::default()).await;
    let mut known = HashSet::new();
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            event = index.next() => match event {
                Some(SubscriptionEvent::Messages(messages)) => {
                    for m in messages {
                        let Payload::Json(raw) = m.payload else { continue };
                        let Some(IndexEvent::SessionCreated { session_id }) = IndexEvent::parse(&raw) else { continue };
                        if known.insert(session_id.clone()) {
                            tracing::info!(%session_id, "joining session");
                            sessions.spawn(session_loop(client.clone(), config.clone(), session_id));
                        }
                    }
                }
                Some(SubscriptionEvent::Error(e)) => break Err(e),
                Some(_) => {}
                None => break Ok(()),
            },
        }
    };
    sessions.abort_all();
    client.close();
    result
}

async fn append(client: &Client, path: &str, event: SessionEvent) -> bool {
    match client.append_event(path, &event).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(%path, error = %e, "append failed");
            false
        }
    }
}

async fn session_loop(client: Client, config: Arc<AgentConfig>, session_id: String) {
    let path = session_path(&session_id);
    let mut sub = client.subscribe(&path, SubscribeOptions::default()).await;
    let mut state = SessionState::default();
    let mut runs: HashMap<String, mpsc::UnboundedSender<Control>> = HashMap::new();
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<String>();
    let mut caught_up = false;
    loop {
        tokio::select! {
            event = sub.next() => match event {
                Some(SubscriptionEvent::Messages(messages)) => {
                    for m in messages {
                        let Payload::Json(raw) = m.payload else { continue };
                        let Some(event) = state.read(&raw) else { continue };
                        if let Some((run_id, control)) = state.apply(&event)
                            && let Some(run) = runs.get(&run_id)
                        {
                            let _ = run.send(control);
                        }
                    }
                }
                Some(SubscriptionEvent::UpToDate { .. }) if !caught_up => {
                    caught_up = true;
                    let running: HashSet<String> = runs.keys().cloned().collect();
                    let ours = [config.name.as_str(), config.orchestrator.as_str()];
                    for run_id in state.orphaned_runs(&ours, &running) {
                        tracing::info!(%session_id, %run_id, "closing a run left unfinished by an earlier agent");
                        let event = SessionEvent::RunFinished {
                            run_id,
                            status: RunStatus::Failed,
                            reason: Some("the agent restarted before finishing".into()),
                        };
                        append(&client, &path, event).await;
                    }
                }
                Some(SubscriptionEvent::Reset { .. }) => {
                    state = SessionState::default();
                    caught_up = false;
                }
                Some(SubscriptionEvent::Closed | SubscriptionEvent::Error(_)) | None => break,
                Some(_) => {}
            },
            Some(run_id) = finished.recv() => {
                runs.remove(&run_id);
            }
        }
        if caught_up {
            for question in state.take_questions() {
                let run_id = new_run_id(&question.id);
                let (control_tx, control) = mpsc::unbounded_channel();
                runs.insert(run_id.clone(), control_tx);
                let (client, config, path, done) = (client.clone(), config.clone(), path.clone(), finished_tx.clone());
                tokio::spawn(async move {
                    match question.mode {
                        RunMode::Single => single_run(&client, &config, &path, &run_id, &question, control).await,
                        RunMode::Multi => multi_run(&client, &config, &path, &run_id, &question, control).await,
                    }
                    let _ = done.send(run_id);
                });
            }
        }
    }
}

/// Writes `run_started` for `question`; `false` if that failed.
async fn start_run(client: &Client, path: &str, run_id: &str, agent: &str, question: &Question) -> bool {
    let started = SessionEvent::RunStarted {
        run_id: run_id.into(),
        agent: agent.into(),
        in_reply_to: question.id.clone(),
    };
    append(client, path, started).await
}

/// One agent answering: deltas at the configured pace until done, cancelled
/// or failed; steers change the text's direction.
async fn single_run(
    client: &Client,
    config: &AgentConfig,
    path: &str,
    run_id: &str,
    question: &Question,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    if !start_run(client, path, run_id, &config.name, question).await {
        return;
    }
    let mut text = TextGen::new(&question.text);
    let mut written = 0;
    let (status, reason) = loop {
        if written >= config.answer_tokens {
            break (RunStatus::Completed, None);
        }
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::Cancel { by }) => break (RunStatus::Cancelled, Some(format!("cancelled by {by}"))),
                Some(Control::Steer { text: direction }) => {
                    text.steer(&direction);
                    append(client, path, SessionEvent::SteerApplied { run_id: run_id.into(), text: direction }).await;
                }
                None => break (RunStatus::Failed, Some("the agent stopped".into())),
            },
            () = tokio::time::sleep(config.token_interval) => {
                let delta = text.next().unwrap_or_default();
                if !append(client, path, SessionEvent::TextDelta { run_id: run_id.into(), agent: config.name.clone(), delta }).await {
                    return;
                }
                written += 1;
            }
        }
    };
    append(
        client,
        path,
        SessionEvent::RunFinished {
            run_id: run_id.into(),
            status,
            reason,
        },
    )
    .await;
}

/// An orchestrator with sub-agents. Each sub-agent writes into the session
/// over its own connection; the orchestrator writes only the final result.
async fn multi_run(
    client: &Client,
    config: &AgentConfig,
    path: &str,
    run_id: &str,
    question: &Question,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    if !start_run(client, path, run_id, &config.orchestrator, question).await {
        return;
    }
    let (orders, _) = broadcast::channel::<Control>(16);
    let mut team = JoinSet::new();
    let tokens = (config.answer_tokens / 3).max(1);
    for role in &config.sub_agents {
        let orders = orders.subscribe();
        let (role, path, run_id, prompt) = (role.clone(), path.to_owned(), run_id.to_owned(), question.text.clone());
        let (client, interval) = (config.connect(), config.token_interval);
        team.spawn(async move { sub_agent(client, &role, &path, &run_id, &prompt, tokens, interval, orders).await });
    }
    let mut cancelled_by = None;
    loop {
        tokio::select! {
            ctl = control.recv() => match ctl {
                Some(Control::Cancel { by }) => {
                    let _ = orders.send(Control::Cancel { by: by.clone() });
                    cancelled_by = Some(by);
                    break;
                }
                Some(Control::Steer { text }) => {
                    let _ = orders.send(Control::Steer { text: text.clone() });
                    append(client, path, SessionEvent::SteerApplied { run_id: run_id.into(), text }).await;
                }
                None => {
                    let _ = orders.send(Control::Cancel { by: "agent shutdown".into() });
                    break;
                }
            },
            joined = team.join_next() => {
                if joined.is_none() {
                    break; // every sub-agent finished
                }
            }
        }
    }
    // Sub-agents stop within one token; none writes after the run ends.
    while team.join_next().await.is_some() {}
    let finished = match cancelled_by {
        Some(by) => SessionEvent::RunFinished {
            run_id: run_id.into(),
            status: RunStatus::Cancelled,
            reason: Some(format!("cancelled by {by}")),
        },
        None => {
            let summary = format!(
                " Summary: {} sub-agents reported on “{}”.",
                config.sub_agents.len(),
                question.text
            );
            append(
                client,
                path,
                SessionEvent::TextDelta {
                    run_id: run_id.into(),
                    agent: config.orchestrator.clone(),
                    delta: summary,
                },
            )
            .await;
            SessionEvent::RunFinished {
                run_id: run_id.into(),
                status: RunStatus::Completed,
                reason: None,
            }
        }
    };
    append(client, path, finished).await;
}

#[allow(clippy::too_many_arguments)]
async fn sub_agent(
    client: Client,
    role: &str,
    path: &str,
    run_id: &str,
    prompt: &str,
    tokens: usize,
    interval: Duration,
    mut orders: broadcast::Receiver<Control>,
) {
    let note = |text: String| SessionEvent::Progress {
        run_id: run_id.into(),
        agent: role.into(),
        text,
    };
    append(&client, path, note(format!("{role} is working on “{prompt}”"))).await;
    let mut text = TextGen::new(&format!("{role} {prompt}"));
    let mut written = 0;
    let outcome = loop {
        if written >= tokens {
            break "done";
        }
        tokio::select! {
            biased;
            order = orders.recv() => match order {
                Ok(Control::Cancel { .. }) | Err(broadcast::error::RecvError::Closed) => break "stopped",
                Ok(Control::Steer { text: direction }) => text.steer(&direction),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
            () = tokio::time::sleep(interval) => {
                let delta = text.next().unwrap_or_default();
                if !append(&client, path, SessionEvent::TextDelta { run_id: run_id.into(), agent: role.into(), delta }).await {
                    break "failed";
                }
                written += 1;
            }
        }
    };
    append(&client, path, note(format!("{role}: {outcome}"))).await;
    client.close();
}
