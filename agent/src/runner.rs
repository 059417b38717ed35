//! The agent process: session discovery, one task per session, one task per
//! run.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use durable_session_protocol::session::{
    IndexEvent, RunMode, RunStatus, SESSION_INDEX_PATH, SessionEvent, session_path,
};
use durable_session_protocol::ws::{Payload, ProducerIds};
use durable_sessions::core::ClientError;
use durable_sessions::core::client::{SubscribeOptions, SubscriptionEvent};
use durable_sessions::native::{Client, NativeOptions, TokenProvider};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::model_run::{RunTarget, model_run};
use crate::openai::{OpenAiConfig, Provider};
use crate::session::{Control, OrphanWatch, Question, SessionState};
use crate::textgen::TextGen;

/// How the agents behave.
#[derive(Clone)]
pub struct AgentConfig {
    /// The server's WebSocket endpoint, `ws://HOST:PORT/v1/ws`.
    pub ws_url: String,
    /// More nodes of the same cluster (servers on one shared Redis), tried
    /// in turn after `ws_url` when a connection fails or drops: the agents'
    /// subscriptions resume from their offsets and unacknowledged appends
    /// are resent with their producer ids, so a run goes on through another
    /// node with no event lost or written twice
    /// ([`NativeOptions::fallback_urls`]).
    pub fallback_urls: Vec<String>,
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
    /// An open run under one of these agents' names that this process is
    /// not running, and on which nothing was written for this long, is
    /// closed as `failed`: whoever wrote it stopped (docs/protocol.md §11).
    /// Much longer than a pause between two tokens.
    pub orphan_after: Duration,
    /// The model: `None` for the simulated one ([`TextGen`]), or an
    /// OpenAI-compatible provider, which then answers every message under
    /// [`AgentConfig::name`] (multi-agent mode is the simulated model's).
    pub model: Option<OpenAiConfig>,
    /// How long a model's streamed pieces are gathered before they are
    /// written as one event.
    pub delta_window: Duration,
    /// The most characters of history sent to a model (the oldest messages
    /// are left out beyond it).
    pub max_history_chars: usize,
    /// A run still going after this long ends `failed`.
    pub max_run_time: Option<Duration>,
    /// A run that wrote more tokens than this (a model's streamed pieces,
    /// about one token each; the simulated model's tokens) ends `failed`.
    pub max_run_tokens: Option<u64>,
    /// How long a model run waits for the `tool_result` of each of its tool
    /// calls before it ends `failed`.
    pub tool_result_timeout: Duration,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("ws_url", &self.ws_url)
            .field("fallback_urls", &self.fallback_urls)
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<provider>"))
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Defaults for a server at `ws_url`: about 20 tokens per second, 240
    /// tokens per answer, runs quiet for 10 s taken for orphaned.
    ///
    /// ```
    /// let config = durable_session_agent::AgentConfig::new("ws://127.0.0.1:4437/v1/ws");
    /// assert_eq!(config.orphan_after, std::time::Duration::from_secs(10));
    /// ```
    pub fn new(ws_url: impl Into<String>) -> Self {
        Self {
            ws_url: ws_url.into(),
            fallback_urls: Vec::new(),
            name: "sim".into(),
            orchestrator: "orchestrator".into(),
            sub_agents: vec!["researcher".into(), "analyst".into(), "writer".into()],
            token_interval: Duration::from_millis(50),
            answer_tokens: 240,
            token: None,
            orphan_after: DEFAULT_ORPHAN_AFTER,
            model: None,
            delta_window: DEFAULT_DELTA_WINDOW,
            max_history_chars: DEFAULT_MAX_HISTORY_CHARS,
            max_run_time: None,
            max_run_tokens: None,
            tool_result_timeout: DEFAULT_TOOL_RESULT_TIMEOUT,
        }
    }

    /// A connection to the server (failing over to the other nodes), with
    /// the token provider.
    fn connect(&self) -> Client {
        let mut options = NativeOptions::new(&self.ws_url);
        options.fallback_urls = self.fallback_urls.clone();
        options.token = self.token.clone();
        Client::connect(options)
    }
}

/// Default of [`AgentConfig::orphan_after`].
pub const DEFAULT_ORPHAN_AFTER: Duration = Duration::from_secs(10);

/// Default of [`AgentConfig::delta_window`].
pub const DEFAULT_DELTA_WINDOW: Duration = Duration::from_millis(30);

/// Default of [`AgentConfig::tool_result_timeout`].
pub const DEFAULT_TOOL_RESULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of [`AgentConfig::max_history_chars`].
pub const DEFAULT_MAX_HISTORY_CHARS: usize = 100_000;

/// What a run may still spend.
#[derive(Debug)]
pub(crate) struct Budget {
    max_tokens: Option<u64>,
    tokens: u64,
}

impl Budget {
    fn new(config: &AgentConfig) -> Self {
        Self {
            max_tokens: config.max_run_tokens,
            tokens: 0,
        }
    }

    /// One more token written.
    pub(crate) fn token(&mut self) {
        self.tokens += 1;
    }

    /// Why the run must stop, once it wrote more than its tokens.
    pub(crate) fn exceeded(&self) -> Option<String> {
        let max = self.max_tokens?;
        (self.tokens > max).then(|| format!("the run exceeded its budget of {max} tokens (--max-run-tokens)"))
    }
}

/// How long a run waits to learn whose `run_started` was stored when its
/// claim came back as a duplicate (the stored event is on its way to the
/// session's subscription).
const CLAIM_VERDICT_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer ids that claim `message_id`: whoever appends its
/// `run_started` with them first answers; every later append with them is a
/// duplicate and stores nothing (docs/protocol.md §11).
///
/// ```
/// let ids = durable_session_agent::runner::claim_ids("m1");
/// assert_eq!((ids.id.as_str(), ids.epoch, ids.seq), ("claim-m1", 0, 0));
/// ```
pub fn claim_ids(message_id: &str) -> ProducerIds {
    ProducerIds {
        id: format!("claim-{message_id}"),
        epoch: 0,
        seq: 0,
    }
}

/// The producer ids of a run's `run_finished`: a run is finished once,
/// whoever closes it (its agent, or another process closing it as orphaned).
///
/// ```
/// let ids = durable_session_agent::runner::finish_ids("r1");
/// assert_eq!((ids.id.as_str(), ids.epoch, ids.seq), ("finish-r1", 0, 0));
/// ```
pub fn finish_ids(run_id: &str) -> ProducerIds {
    ProducerIds {
        id: format!("finish-{run_id}"),
        epoch: 0,
        seq: 0,
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

/// The model backend `config` asks for, if any (the simulated model needs
/// none).
fn provider_of(config: &AgentConfig) -> Result<Option<Arc<Provider>>, ClientError> {
    config
        .model
        .as_ref()
        .map(|model| {
            Provider::new(model.clone())
                .map(Arc::new)
                .map_err(|e| ClientError::new("model_failed", e.to_string()))
        })
        .transpose()
}

/// Runs the agents until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), ClientError> {
    let provider = provider_of(&config)?;
    if let Some(model) = &config.model {
        tracing::info!(base_url = %model.base_url, model = %model.model_name, api_key = model.api_key.is_some(), "answering with an OpenAI-compatible model");
    }
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
                            sessions.spawn(session_loop(
                                client.clone(),
                                config.clone(),
                                provider.clone(),
                                session_id,
                                false,
                            ));
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

/// How a run ended, as its `run_finished` says.
pub(crate) type Outcome = (RunStatus, Option<String>);

/// The outcome of a run that could not write to the session.
pub(crate) fn cannot_write(e: &ClientError) -> Outcome {
    (RunStatus::Failed, Some(format!("could not write to the session: {e}")))
}

/// Appends `event`; a failure is logged and returned.
pub(crate) async fn append(client: &Client, path: &str, event: SessionEvent) -> Result<(), ClientError> {
    client.append_event(path, &event).await.map(|_| ()).map_err(|e| {
        tracing::warn!(%path, error = %e, "append failed");
        e
    })
}

/// Appends the `run_finished` of a run (stored once, whoever sends it).
async fn finish(client: &Client, path: &str, run_id: &str, (status, reason): Outcome) {
    let event = SessionEvent::RunFinished {
        run_id: run_id.into(),
        status,
        reason,
    };
    if let Err(e) = client.append_event_as(path, &event, finish_ids(run_id)).await {
        tracing::warn!(%path, %run_id, error = %e, "could not finish the run");
    }
}

/// A claim waiting to learn whether the stored `run_started` is ours.
struct Claim {
    run_id: String,
    verdict: oneshot::Sender<bool>,
}

/// Answers the messages waiting in one session and returns once every run
/// it started has finished, closing its connection: the webhook-woken mode
/// ([`crate::webhook`]), which holds no connection between wakes.
pub async fn answer_pending(config: AgentConfig, session_id: String) {
    let provider = match provider_of(&config) {
        Ok(provider) => provider,
        Err(e) => {
            tracing::error!(%session_id, error = %e, "cannot answer: the model backend did not start");
            return;
        }
    };
    let config = Arc::new(config);
    let client = config.connect();
    session_loop(client.clone(), config, provider, session_id, true).await;
    client.close();
}

/// Follows one session, answering its messages; with `until_idle`, returns
/// once the history is read and no run of this process is open.
async fn session_loop(
    client: Client,
    config: Arc<AgentConfig>,
    provider: Option<Arc<Provider>>,
    session_id: String,
    until_idle: bool,
) {
    let path = session_path(&session_id);
    let mut sub = client.subscribe(&path, SubscribeOptions::default()).await;
    let ours = [config.name.clone(), config.orchestrator.clone()];
    let mut state = SessionState::default();
    let mut runs: HashMap<String, mpsc::UnboundedSender<Control>> = HashMap::new();
    // Claims by message id.
    let mut claims: HashMap<String, Claim> = HashMap::new();
    let mut orphans = OrphanWatch::new(config.orphan_after);
    let (finished_tx, mut finished) = mpsc::unbounded_channel::<String>();
    let mut caught_up = false;
    loop {
        // Nothing is judged quiet before the history is read.
        let orphan_due = orphans.next_due().filter(|_| caught_up);
        tokio::select! {
            event = sub.next() => match event {
                Some(SubscriptionEvent::Messages(messages)) => {
                    let now = Instant::now();
                    for m in messages {
                        let Payload::Json(raw) = m.payload else { continue };
                        let Some(event) = state.read(&raw) else { continue };
                        match &event {
                            SessionEvent::RunStarted { run_id, agent, in_reply_to } => {
                                if let Some(claim) = claims.remove(in_reply_to) {
                                    let _ = claim.verdict.send(claim.run_id == *run_id);
                                }
                                if ours.contains(agent) && !runs.contains_key(run_id) {
                                    orphans.watch(run_id, now);
                                }
                            }
                            SessionEvent::RunFinished { run_id, .. } => orphans.forget(run_id),
                            // Only what agents write shows a run is alive.
                            SessionEvent::Cancel { .. } | SessionEvent::Steer { .. } => {}
                            other => {
                                if let Some(run_id) = other.run_id() {
                                    orphans.heard(run_id, now);
                                }
                            }
                        }
                        if let Some((run_id, control)) = state.apply(&event)
                            && let Some(run) = runs.get(&run_id)
                        {
                            let _ = run.send(control);
                        }
                    }
                }
                Some(SubscriptionEvent::UpToDate { .. }) => caught_up = true,
                Some(SubscriptionEvent::Reset { .. }) => {
                    state = SessionState::default();
                    orphans.clear();
                    caught_up = false;
                }
                Some(SubscriptionEvent::Closed | SubscriptionEvent::Error(_)) | None => break,
            },
            Some(run_id) = finished.recv() => {
                runs.remove(&run_id);
                claims.retain(|_, claim| claim.run_id != run_id);
                // A run of ours that ended without its run_finished being
                // seen is watched like any other.
                if state.open_run_agent(&run_id).is_some() {
                    orphans.watch(&run_id, Instant::now());
                }
            }
            () = sleep_until_some(orphan_due) => {
                for run_id in orphans.take_due(Instant::now()) {
                    if state.open_run_agent(&run_id).is_none() || runs.contains_key(&run_id) {
                        continue;
                    }
                    tracing::info!(%session_id, %run_id, "closing a run whose agent stopped before finishing it");
                    let (client, path) = (client.clone(), path.clone());
                    tokio::spawn(async move {
                        let reason = "the agent stopped before finishing".to_owned();
                        finish(&client, &path, &run_id, (RunStatus::Failed, Some(reason))).await;
                    });
                }
            }
        }
        if caught_up {
            for question in state.take_questions() {
                let run_id = new_run_id(&question.id);
                let (control_tx, control) = mpsc::unbounded_channel();
                runs.insert(run_id.clone(), control_tx);
                let (verdict_tx, verdict) = oneshot::channel();
                claims.insert(
                    question.id.clone(),
                    Claim {
                        run_id: run_id.clone(),
                        verdict: verdict_tx,
                    },
                );
                let (client, config, path, done) = (client.clone(), config.clone(), path.clone(), finished_tx.clone());
                // The model is sent the conversation as the log has it now.
                let model = provider
                    .clone()
                    .map(|p| (p, state.transcript().history(&question.id, config.max_history_chars)));
                tokio::spawn(async move {
                    answer(&client, &config, model, &path, &run_id, &question, control, verdict).await;
                    let _ = done.send(run_id);
                });
            }
        }
        if until_idle && caught_up && runs.is_empty() {
            break;
        }
    }
}

/// Completes at `at`, or never.
pub(crate) async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Whether this process answers `question`: it appends the run's
/// `run_started` with the message's claim ids ([`claim_ids`]). Stored: ours.
/// A duplicate: a `run_started` was stored before — another process's, or
/// an earlier attempt of ours whose acknowledgement was lost — and the
/// first `run_started` for the message that the session delivers tells
/// which (`verdict`).
async fn claim(
    client: &Client,
    path: &str,
    run_id: &str,
    agent: &str,
    question: &Question,
    verdict: oneshot::Receiver<bool>,
) -> bool {
    let started = SessionEvent::RunStarted {
        run_id: run_id.into(),
        agent: agent.into(),
        in_reply_to: question.id.clone(),
    };
    match client.append_event_as(path, &started, claim_ids(&question.id)).await {
        Ok(ack) if !ack.duplicate => true,
        Ok(_) => {
            let ours = matches!(tokio::time::timeout(CLAIM_VERDICT_TIMEOUT, verdict).await, Ok(Ok(true)));
            if !ours {
                tracing::info!(%path, message = %question.id, "lost the claim: another agent answers this message");
            }
            ours
        }
        Err(e) => {
            tracing::warn!(%path, message = %question.id, error = %e, "could not claim the message");
            false
        }
    }
}

/// Claims `question` and, if this process won, answers it and finishes the
/// run — as `failed`, with the reason, when the run could not write.
#[allow(clippy::too_many_arguments)]
async fn answer(
    client: &Client,
    config: &AgentConfig,
    model: Option<(Arc<Provider>, Vec<serde_json::Value>)>,
    path: &str,
    run_id: &str,
    question: &Question,
    mut control: mpsc::UnboundedReceiver<Control>,
    verdict: oneshot::Receiver<bool>,
) {
    let agent = match (question.mode, &model) {
        (RunMode::Multi, None) => &config.orchestrator,
        _ => &config.name,
    };
    if !claim(client, path, run_id, agent, question, verdict).await {
        return;
    }
    tracing::info!(%path, %run_id, message = %question.id, %agent, model = model.is_some(), "run started");
    let mut budget = Budget::new(config);
    let work = async {
        match (model, question.mode) {
            (Some((provider, history)), _) => {
                let target = RunTarget {
                    client,
                    path,
                    run_id,
                    agent,
                };
                model_run(&target, config, &provider, history, &mut control, &mut budget).await
            }
            (None, RunMode::Single) => {
                single_run(client, config, path, run_id, question, &mut control, &mut budget).await
            }
            (None, RunMode::Multi) => multi_run(client, config, path, run_id, question, &mut control).await,
        }
    };
    // The run's time budget: past it, whatever the run was doing is dropped
    // (a model's request with it).
    let outcome = match config.max_run_time {
        Some(max) => tokio::time::timeout(max, work).await.unwrap_or_else(|_| {
            let reason = format!(
                "the run exceeded its budget of {} s (--max-run-seconds)",
                max.as_secs_f64()
            );
            (RunStatus::Failed, Some(reason))
        }),
        None => work.await,
    };
    if outcome.0 == RunStatus::Failed {
        tracing::warn!(%path, %run_id, reason = ?outcome.1, "the run failed");
    }
    tracing::info!(%path, %run_id, status = outcome.0.as_str(), "run finished");
    finish(client, path, run_id, outcome).await;
}

/// One agent answering: deltas at the configured pace until done, cancelled
/// or failed; steers change the text's direction.
async fn single_run(
    client: &Client,
    config: &AgentConfig,
    path: &str,
    run_id: &str,
    question: &Question,
    control: &mut mpsc::UnboundedReceiver<Control>,
    budget: &mut Budget,
) -> Outcome {
    let mut text = TextGen::new(&question.text);
    let mut written = 0;
    loop {
        if written >= config.answer_tokens {
            return (RunStatus::Completed, None);
        }
        tokio::select! {
            biased;
            ctl = control.recv() => match ctl {
                Some(Control::Cancel { by }) => return (RunStatus::Cancelled, Some(format!("cancelled by {by}"))),
                Some(Control::Steer { text: direction }) => {
                    text.steer(&direction);
                    let applied = SessionEvent::SteerApplied { run_id: run_id.into(), text: direction };
                    if let Err(e) = append(client, path, applied).await {
                        return cannot_write(&e);
                    }
                }
                Some(Control::ToolResult { .. }) => {} // no calls, no results
                None => return (RunStatus::Failed, Some("the agent stopped".into())),
            },
            () = tokio::time::sleep(config.token_interval) => {
                let delta = text.next().unwrap_or_default();
                let delta = SessionEvent::TextDelta { run_id: run_id.into(), agent: config.name.clone(), delta };
                if let Err(e) = append(client, path, delta).await {
                    return cannot_write(&e);
                }
                written += 1;
                budget.token();
                if let Some(reason) = budget.exceeded() {
                    return (RunStatus::Failed, Some(reason));
                }
            }
        }
    }
}

/// An orchestrator with sub-agents. Each sub-agent writes into the session
/// over its own connection; the orchestrator writes only the final result.
/// A sub-agent that cannot write stops the team and fails the run.
async fn multi_run(
    client: &Client,
    config: &AgentConfig,
    path: &str,
    run_id: &str,
    question: &Question,
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Outcome {
    let (orders, _) = broadcast::channel::<Control>(16);
    let mut team = JoinSet::new();
    let tokens = (config.answer_tokens / 3).max(1);
    for role in &config.sub_agents {
        let orders = orders.subscribe();
        let (role, path, run_id, prompt) = (role.clone(), path.to_owned(), run_id.to_owned(), question.text.clone());
        let (client, interval) = (config.connect(), config.token_interval);
        team.spawn(async move {
            let result = sub_agent(&client, &role, &path, &run_id, &prompt, tokens, interval, orders).await;
            client.close();
            result.map_err(|e| format!("{role} could not write to the session: {e}"))
        });
    }
    let stop = |by: &str| {
        let _ = orders.send(Control::Cancel { by: by.into() });
    };
    let mut ended: Option<Outcome> = None;
    loop {
        tokio::select! {
            ctl = control.recv() => match ctl {
                Some(Control::Cancel { by }) => {
                    stop(&by);
                    ended = Some((RunStatus::Cancelled, Some(format!("cancelled by {by}"))));
                    break;
                }
                Some(Control::Steer { text }) => {
                    let _ = orders.send(Control::Steer { text: text.clone() });
                    if let Err(e) = append(client, path, SessionEvent::SteerApplied { run_id: run_id.into(), text }).await {
                        stop("a failed write");
                        ended = Some(cannot_write(&e));
                        break;
                    }
                }
                Some(Control::ToolResult { .. }) => {}
                None => {
                    stop("agent shutdown");
                    ended = Some((RunStatus::Failed, Some("the agent stopped".into())));
                    break;
                }
            },
            joined = team.join_next() => match joined {
                None => break, // every sub-agent finished
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(reason))) => {
                    stop("a failed write");
                    ended = Some((RunStatus::Failed, Some(reason)));
                    break;
                }
                Some(Err(e)) => {
                    stop("a failed sub-agent");
                    ended = Some((RunStatus::Failed, Some(format!("a sub-agent failed: {e}"))));
                    break;
                }
            },
        }
    }
    // Sub-agents stop within one token; none writes after the run ends.
    while team.join_next().await.is_some() {}
    if let Some(outcome) = ended {
        return outcome;
    }
    let summary = format!(
        " Summary: {} sub-agents reported on “{}”.",
        config.sub_agents.len(),
        question.text
    );
    let summary = SessionEvent::TextDelta {
        run_id: run_id.into(),
        agent: config.orchestrator.clone(),
        delta: summary,
    };
    match append(client, path, summary).await {
        Ok(()) => (RunStatus::Completed, None),
        Err(e) => cannot_write(&e),
    }
}

/// A sub-agent writing its part until done or stopped; an append that
/// fails ends it with that error.
#[allow(clippy::too_many_arguments)]
async fn sub_agent(
    client: &Client,
    role: &str,
    path: &str,
    run_id: &str,
    prompt: &str,
    tokens: usize,
    interval: Duration,
    mut orders: broadcast::Receiver<Control>,
) -> Result<(), ClientError> {
    let note = |text: String| SessionEvent::Progress {
        run_id: run_id.into(),
        agent: role.into(),
        text,
    };
    append(client, path, note(format!("{role} is working on “{prompt}”"))).await?;
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
                Ok(Control::ToolResult { .. }) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
            },
            () = tokio::time::sleep(interval) => {
                let delta = text.next().unwrap_or_default();
                append(client, path, SessionEvent::TextDelta { run_id: run_id.into(), agent: role.into(), delta }).await?;
                written += 1;
            }
        }
    };
    append(client, path, note(format!("{role}: {outcome}"))).await
}
