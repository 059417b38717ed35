//! The chat view: session events folded into what a chat UI renders —
//! messages and runs, not raw events.
//!
//! The fold is deterministic: the view is a function of the events in the
//! stream's order and of nothing else, so a tab that joins late and replays
//! the session from the beginning ends with exactly the view of a tab that
//! watched it live, however the events were batched.
//!
//! It follows the reading rules of `docs/protocol.md` §11:
//!
//! - **The first counts.** A `user_message` whose `id` was seen before is
//!   ignored; so is a `run_started` for a run that already had one, and a
//!   `cancel` after the run's first (its `by` is kept).
//! - **Nothing after the end.** The first `run_finished` ends a run; every
//!   later event for it — a second `run_finished` included — is ignored.
//! - **Only agents make runs.** A run appears at the first event an agent
//!   writes for it (`run_started`, `text_delta`, `progress`, `steer_applied`,
//!   `reasoning_delta`, `tool_call`, `tool_result` or `run_finished`;
//!   normally its `run_started`). A `cancel` or `steer`
//!   for a run that has not appeared never creates one: it is held, and
//!   applied in order when the run appears (so a run's content is the fold
//!   of its own events in stream order); if the run never appears, neither
//!   does it.
//! - **Who wrote what.** A run's [`Run::agent`] is the agent of its
//!   `run_started`, and until that arrives the first agent seen writing for
//!   it. That agent's deltas are [`Run::text`]; other agents write into
//!   [`Run::lanes`]; `progress` always goes to its writer's lane.
//! - **Reasoning and tools.** `reasoning_delta`s (any agent's) are
//!   [`Run::reasoning`]; a `tool_call` adds a [`ToolCall`] to
//!   [`Run::tool_calls`] (a repeated `call_id` is ignored), and the first
//!   `tool_result` for a call gives it its output (one for no call, or
//!   after the first, changes nothing).
//! - A `steer_applied` marks the oldest not yet applied [`Steer`] of the run
//!   with the same text; one that matches none (a duplicate) changes
//!   nothing. `text_delta`, `progress` and `steer` have no identity: each
//!   one in the stream is folded.
//! - **Other types pass through.** An event whose `type` is not one of the
//!   session events above — an app's own, or a later version's — is an item
//!   of its own ([`ChatItem::Event`]), in stream order, unchanged. An event
//!   this version cannot read (a known type without a field it needs) and a
//!   message that is no event at all (not JSON, not an object with a string
//!   `type`, nested too deep: any writer may append anything) are skipped,
//!   counted in [`ChatView::events_skipped`], and change nothing else. The
//!   fold never stops on one. Every message is counted in
//!   [`ChatView::events_seen`].
//!
//! Folding one event costs time independent of the session's length (hash
//! lookups, no scan of the transcript).
//!
//! ```
//! use durable_sessions::core::chat::{ChatView, RunState};
//! let mut view = ChatView::default();
//! for e in [
//!     r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#,
//!     r#"{"type":"run_started","run_id":"r1","agent":"sim","in_reply_to":"m1"}"#,
//!     r#"{"type":"text_delta","run_id":"r1","agent":"sim","delta":"Hello"}"#,
//!     r#"{"type":"text_delta","run_id":"r1","agent":"sim","delta":" there"}"#,
//! ] {
//!     view.apply_json(e);
//! }
//! let run = view.run("r1").unwrap();
//! assert_eq!(run.text, "Hello there");
//! assert_eq!(run.state, RunState::Streaming);
//! ```

use std::collections::HashMap;

use durable_session_protocol::json::{self, Json, Obj};
use durable_session_protocol::session::{RunStatus, SessionEvent};

/// A run's lifecycle as the UI shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunState {
    Streaming,
    Completed,
    Cancelled,
    Failed,
}

impl RunState {
    /// The name used in the JS API and in `data-run-status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Streaming => "streaming",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

impl From<RunStatus> for RunState {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Completed => Self::Completed,
            RunStatus::Cancelled => Self::Cancelled,
            RunStatus::Failed => Self::Failed,
        }
    }
}

/// A person's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserMessage {
    pub id: String,
    pub author: String,
    pub text: String,
}

/// A steer asked for during a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steer {
    pub text: String,
    pub by: String,
    /// The agent confirmed it (`steer_applied`).
    pub applied: bool,
}

/// What one sub-agent contributed to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub agent: String,
    pub text: String,
    pub progress: Vec<String>,
}

/// A tool call of a run (`tool_call`), with its result once a
/// `tool_result` for it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub call_id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as the model wrote them (JSON text, normally).
    pub arguments: String,
    /// The tool's output (`None` until its result arrives).
    pub output: Option<String>,
    /// The tool failed, and why.
    pub error: Option<String>,
}

/// An agent's answer, streaming or finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub run_id: String,
    /// The agent that started the run (the orchestrator in multi-agent mode).
    /// Before its `run_started` arrives: the first agent seen writing for it
    /// (empty if none yet).
    pub agent: String,
    /// The message answered (empty before the run's `run_started`).
    pub in_reply_to: String,
    /// Text written by `agent` (what was written before `run_started` named
    /// another agent stays here).
    pub text: String,
    pub state: RunState,
    /// Why it ended, when it says.
    pub reason: Option<String>,
    /// Who asked to cancel it, if anyone.
    pub cancel_requested_by: Option<String>,
    pub steers: Vec<Steer>,
    /// Other agents writing into this run, in order of first appearance.
    pub lanes: Vec<Lane>,
    /// The model's reasoning (`reasoning_delta` events), shown apart from
    /// the answer.
    pub reasoning: String,
    /// The run's tool calls, in order (the first `tool_call` with a
    /// `call_id` counts, and the first `tool_result` for it).
    pub tool_calls: Vec<ToolCall>,
}

impl Run {
    /// A run that just appeared: no agent, no text, streaming.
    fn new(run_id: &str) -> Self {
        Self {
            run_id: run_id.into(),
            agent: String::new(),
            in_reply_to: String::new(),
            text: String::new(),
            state: RunState::Streaming,
            reason: None,
            cancel_requested_by: None,
            steers: Vec::new(),
            lanes: Vec::new(),
            reasoning: String::new(),
            tool_calls: Vec::new(),
        }
    }
}

/// An event of a type the view does not fold — an app's own, or a later
/// version's — passed through where it appeared in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherEvent {
    /// Its `type`.
    pub event_type: String,
    /// The event as JSON text, as stored.
    pub json: String,
}

/// One entry of the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatItem {
    User(UserMessage),
    Run(Run),
    /// An event the view passes through (see [`OtherEvent`]).
    Event(OtherEvent),
}

impl ChatItem {
    /// The item as JSON (see [`ChatView::items_json`]).
    pub fn to_json(&self) -> String {
        let mut o = Obj::new();
        match self {
            ChatItem::Event(e) => {
                o.str("kind", "event").raw("event", &e.json);
            }
            ChatItem::User(u) => {
                o.str("kind", "user")
                    .str("id", &u.id)
                    .str("author", &u.author)
                    .str("text", &u.text);
            }
            ChatItem::Run(r) => {
                let steers: Vec<String> = r
                    .steers
                    .iter()
                    .map(|s| {
                        let mut so = Obj::new();
                        so.str("text", &s.text).str("by", &s.by).bool("applied", s.applied);
                        so.finish()
                    })
                    .collect();
                let lanes: Vec<String> = r
                    .lanes
                    .iter()
                    .map(|l| {
                        let progress: Vec<String> = l
                            .progress
                            .iter()
                            .map(|p| {
                                let mut out = String::new();
                                json::push_str(&mut out, p);
                                out
                            })
                            .collect();
                        let mut lo = Obj::new();
                        lo.str("agent", &l.agent)
                            .str("text", &l.text)
                            .raw("progress", &json::array(progress.iter().map(String::as_str)));
                        lo.finish()
                    })
                    .collect();
                o.str("kind", "run")
                    .str("runId", &r.run_id)
                    .str("agent", &r.agent)
                    .str("inReplyTo", &r.in_reply_to)
                    .str("text", &r.text)
                    .str("state", r.state.as_str());
                match &r.reason {
                    Some(reason) => o.str("reason", reason),
                    None => o.raw("reason", "null"),
                };
                match &r.cancel_requested_by {
                    Some(by) => o.str("cancelRequestedBy", by),
                    None => o.raw("cancelRequestedBy", "null"),
                };
                let tool_calls: Vec<String> = r
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let mut co = Obj::new();
                        co.str("callId", &c.call_id)
                            .str("name", &c.name)
                            .str("arguments", &c.arguments);
                        for (key, value) in [("output", &c.output), ("error", &c.error)] {
                            match value {
                                Some(v) => co.str(key, v),
                                None => co.raw(key, "null"),
                            };
                        }
                        co.finish()
                    })
                    .collect();
                o.raw("steers", &json::array(steers.iter().map(String::as_str)))
                    .raw("lanes", &json::array(lanes.iter().map(String::as_str)))
                    .str("reasoning", &r.reasoning)
                    .raw("toolCalls", &json::array(tool_calls.iter().map(String::as_str)));
            }
        }
        o.finish()
    }
}

/// What folding one event did to a [`ChatView`]: the one item it added or
/// changed, so a binding re-renders that item only — the work per event
/// does not grow with the length of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folded {
    /// An event this view cannot read (counted, otherwise ignored).
    Skipped,
    /// Understood, and no item changed: a duplicate message, or a control
    /// event held until its run appears.
    Unchanged,
    /// The item at this index was added (the last one) or changed.
    Item(usize),
}

/// Messages and runs of a session, in the order they appeared.
///
/// See the [module documentation](self) for the rules of the fold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatView {
    items: Vec<ChatItem>,
    events: u64,
    /// What the fold knows about each id it met: message ids and run ids
    /// (two namespaces, one map: one lookup per event, and a smaller Wasm
    /// than a map per kind).
    ids: HashMap<String, Seen>,
    skipped: u64,
}

/// What the fold knows about one id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    /// A `user_message` with this id is in the transcript.
    message: bool,
    /// The run with this id.
    run: RunSlot,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum RunSlot {
    /// No event names a run with this id.
    #[default]
    Unseen,
    /// Only `cancel` / `steer` events so far, held in stream order until an
    /// agent writes for the run.
    Held(Vec<SessionEvent>),
    /// In the transcript.
    Appeared(RunFold),
}

/// How a run's `agent` was decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum AgentFrom {
    /// Not yet: no `run_started`, nobody wrote text or progress.
    #[default]
    Nobody,
    /// The first agent seen writing, until `run_started` says.
    FirstWriter,
    /// The run's (first) `run_started`.
    RunStarted,
}

/// The fold's bookkeeping for a run in the transcript.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct RunFold {
    /// Where the run is in `ChatView::items`.
    item: usize,
    agent_from: AgentFrom,
    /// Indexes in `Run::steers` of the steers not applied yet, oldest first
    /// (a `steer_applied` looks only at these, not at every steer).
    unapplied: Vec<usize>,
}

impl RunFold {
    /// Folds one event of this run into `run`.
    fn apply(&mut self, run: &mut Run, event: &SessionEvent) {
        if run.state != RunState::Streaming {
            return; // Nothing after the end.
        }
        match event {
            SessionEvent::RunStarted { agent, in_reply_to, .. } => {
                if self.agent_from != AgentFrom::RunStarted {
                    self.agent_from = AgentFrom::RunStarted;
                    run.agent = agent.clone();
                    run.in_reply_to = in_reply_to.clone();
                }
            }
            SessionEvent::TextDelta { agent, delta, .. } => {
                self.writer(run, agent);
                if run.agent == *agent {
                    run.text.push_str(delta);
                } else {
                    lane(run, agent).text.push_str(delta);
                }
            }
            SessionEvent::Progress { agent, text, .. } => {
                self.writer(run, agent);
                lane(run, agent).progress.push(text.clone());
            }
            SessionEvent::Cancel { by, .. } => {
                run.cancel_requested_by.get_or_insert_with(|| by.clone());
            }
            SessionEvent::Steer { text, by, .. } => {
                self.unapplied.push(run.steers.len());
                run.steers.push(Steer {
                    text: text.clone(),
                    by: by.clone(),
                    applied: false,
                });
            }
            SessionEvent::SteerApplied { text, .. } => {
                if let Some(k) = self.unapplied.iter().position(|&i| run.steers[i].text == *text) {
                    run.steers[self.unapplied.remove(k)].applied = true;
                }
            }
            SessionEvent::RunFinished { status, reason, .. } => {
                run.state = (*status).into();
                run.reason = reason.clone();
                self.unapplied = Vec::new(); // Nothing will be folded into this run again.
            }
            SessionEvent::ReasoningDelta { agent, delta, .. } => {
                self.writer(run, agent);
                run.reasoning.push_str(delta);
            }
            SessionEvent::ToolCall {
                agent,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.writer(run, agent);
                if !run.tool_calls.iter().any(|c| c.call_id == *call_id) {
                    run.tool_calls.push(ToolCall {
                        call_id: call_id.clone(),
                        name: name.clone(),
                        arguments: arguments.clone(),
                        output: None,
                        error: None,
                    });
                }
            }
            SessionEvent::ToolResult {
                call_id, output, error, ..
            } => {
                let call = run.tool_calls.iter_mut().find(|c| c.call_id == *call_id);
                if let Some(call) = call.filter(|c| c.output.is_none() && c.error.is_none()) {
                    call.output = Some(output.clone());
                    call.error = error.clone();
                }
            }
            SessionEvent::UserMessage { .. } => {}
        }
    }

    /// `agent` wrote for the run: it is the run's agent if none is known.
    fn writer(&mut self, run: &mut Run, agent: &str) {
        if self.agent_from == AgentFrom::Nobody {
            self.agent_from = AgentFrom::FirstWriter;
            run.agent = agent.to_owned();
        }
    }
}

/// The lane of `agent` in `run`, added if new (a run has a lane per agent
/// writing into it: a handful, never the session's length).
fn lane<'r>(run: &'r mut Run, agent: &str) -> &'r mut Lane {
    let i = match run.lanes.iter().position(|l| l.agent == agent) {
        Some(i) => i,
        None => {
            run.lanes.push(Lane {
                agent: agent.into(),
                text: String::new(),
                progress: Vec::new(),
            });
            run.lanes.len() - 1
        }
    };
    &mut run.lanes[i]
}

impl ChatView {
    /// The transcript.
    pub fn items(&self) -> &[ChatItem] {
        &self.items
    }

    /// A run by id (`None` until an agent wrote for it).
    pub fn run(&self, run_id: &str) -> Option<&Run> {
        let Some(Seen {
            run: RunSlot::Appeared(fold),
            ..
        }) = self.ids.get(run_id)
        else {
            return None;
        };
        match self.items.get(fold.item) {
            Some(ChatItem::Run(r)) => Some(r),
            _ => None,
        }
    }

    /// Runs still streaming.
    pub fn streaming_runs(&self) -> impl Iterator<Item = &Run> {
        self.items.iter().filter_map(|i| match i {
            ChatItem::Run(r) if r.state == RunState::Streaming => Some(r),
            _ => None,
        })
    }

    /// The transcript as JSON, in the shape of the JS API's `ChatItem[]`:
    /// `{"kind":"user",id,author,text}`, `{"kind":"run",runId,agent,
    /// inReplyTo,text,state,reason,cancelRequestedBy,steers,lanes,reasoning,
    /// toolCalls}` and
    /// `{"kind":"event",event}`.
    pub fn items_json(&self) -> String {
        let items: Vec<String> = self.items.iter().map(ChatItem::to_json).collect();
        json::array(items.iter().map(String::as_str))
    }

    /// Number of messages folded in (events of other types and skipped
    /// ones included).
    pub fn events_seen(&self) -> u64 {
        self.events
    }

    /// Number of messages skipped because this version cannot read them:
    /// known types without a field they need, and anything that is no event
    /// (not JSON, not an object with a string `type`, nested too deep).
    /// Events of other types are not skipped: they pass through.
    ///
    /// ```
    /// use durable_sessions::core::chat::{ChatView, Folded};
    /// let mut view = ChatView::default();
    /// assert_eq!(view.apply_json(r#"{"type":5}"#), Folded::Skipped);
    /// assert_eq!(view.apply_json(r#""just a string""#), Folded::Skipped);
    /// view.apply_json(r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#);
    /// view.apply_json(r#"{"type":"app.vote"}"#);
    /// assert_eq!((view.events_seen(), view.events_skipped(), view.items().len()), (4, 2, 2));
    /// ```
    pub fn events_skipped(&self) -> u64 {
        self.skipped
    }

    /// Folds one event given as JSON text. An event of another type (an
    /// app's own, a newer writer's) becomes an item of its own,
    /// [`ChatItem::Event`]; one this version cannot read is counted and
    /// otherwise ignored: [`Folded::Skipped`].
    ///
    /// ```
    /// use durable_sessions::core::chat::{ChatItem, ChatView, Folded};
    /// let mut view = ChatView::default();
    /// let hi = r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#;
    /// assert_eq!(view.apply_json(hi), Folded::Item(0));
    /// assert_eq!(view.apply_json(hi), Folded::Unchanged, "a duplicate");
    /// assert_eq!(view.apply_json(r#"{"type":"vote","choice":2}"#), Folded::Item(1));
    /// assert!(matches!(&view.items()[1], ChatItem::Event(e) if e.event_type == "vote"));
    /// assert_eq!(view.apply_json(r#"{"type":"cancel"}"#), Folded::Skipped, "no run_id");
    /// ```
    pub fn apply_json(&mut self, json: &str) -> Folded {
        let Ok(v) = json::parse(json) else {
            self.events += 1;
            self.skipped += 1;
            return Folded::Skipped;
        };
        if let Ok(e) = SessionEvent::from_json(&v) {
            return self.apply(&e);
        }
        self.events += 1;
        match v.get("type").and_then(Json::str) {
            Some(ty) if !SessionEvent::is_core_type(ty) => {
                self.items.push(ChatItem::Event(OtherEvent {
                    event_type: ty.to_owned(),
                    json: v.raw.to_owned(),
                }));
                Folded::Item(self.items.len() - 1)
            }
            _ => {
                self.skipped += 1;
                Folded::Skipped
            }
        }
    }

    /// Folds one event; says which item it added or changed.
    pub fn apply(&mut self, event: &SessionEvent) -> Folded {
        self.events += 1;
        let (id, control) = match event {
            SessionEvent::UserMessage { id, author, text, .. } => {
                let seen = seen(&mut self.ids, id);
                if seen.message {
                    return Folded::Unchanged;
                }
                seen.message = true;
                self.items.push(ChatItem::User(UserMessage {
                    id: id.clone(),
                    author: author.clone(),
                    text: text.clone(),
                }));
                return Folded::Item(self.items.len() - 1);
            }
            SessionEvent::Cancel { run_id, .. } | SessionEvent::Steer { run_id, .. } => (run_id, true),
            SessionEvent::RunStarted { run_id, .. }
            | SessionEvent::TextDelta { run_id, .. }
            | SessionEvent::Progress { run_id, .. }
            | SessionEvent::SteerApplied { run_id, .. }
            | SessionEvent::RunFinished { run_id, .. }
            | SessionEvent::ReasoningDelta { run_id, .. }
            | SessionEvent::ToolCall { run_id, .. }
            | SessionEvent::ToolResult { run_id, .. } => (run_id, false),
        };
        let slot = &mut seen(&mut self.ids, id).run;
        let held = match slot {
            RunSlot::Appeared(fold) => {
                if let Some(ChatItem::Run(run)) = self.items.get_mut(fold.item) {
                    fold.apply(run, event);
                }
                return Folded::Item(fold.item);
            }
            // Control events never create a run: held until an agent writes for it.
            RunSlot::Held(held) if control => {
                held.push(event.clone());
                return Folded::Unchanged;
            }
            RunSlot::Unseen if control => {
                *slot = RunSlot::Held(vec![event.clone()]);
                return Folded::Unchanged;
            }
            RunSlot::Held(held) => std::mem::take(held),
            RunSlot::Unseen => Vec::new(),
        };
        // The run appears here, its held control events first.
        let mut fold = RunFold {
            item: self.items.len(),
            ..RunFold::default()
        };
        let mut run = Run::new(id);
        for e in held.iter().chain([event]) {
            fold.apply(&mut run, e);
        }
        *slot = RunSlot::Appeared(fold);
        self.items.push(ChatItem::Run(run));
        Folded::Item(self.items.len() - 1)
    }
}

/// The entry of `id`, added if new (unlike `HashMap::entry`, the key is
/// allocated only then).
fn seen<'a>(ids: &'a mut HashMap<String, Seen>, id: &str) -> &'a mut Seen {
    if !ids.contains_key(id) {
        ids.insert(id.to_owned(), Seen::default());
    }
    ids.get_mut(id).expect("just inserted")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &[&str] = &[
        r#"{"type":"user_message","id":"m1","author":"ada","text":"plan a trip"}"#,
        r#"{"type":"run_started","run_id":"r1","agent":"orchestrator","in_reply_to":"m1"}"#,
        r#"{"type":"progress","run_id":"r1","agent":"flights","text":"searching"}"#,
        r#"{"type":"text_delta","run_id":"r1","agent":"flights","delta":"LH 400"}"#,
        r#"{"type":"text_delta","run_id":"r1","agent":"hotels","delta":"Hotel A"}"#,
        r#"{"type":"steer","run_id":"r1","text":"cheaper","by":"tab-b"}"#,
        r#"{"type":"steer_applied","run_id":"r1","text":"cheaper"}"#,
        r#"{"type":"text_delta","run_id":"r1","agent":"orchestrator","delta":"Done."}"#,
        r#"{"type":"some_future_type","x":1}"#,
        r#"{"type":"run_finished","run_id":"r1","status":"completed"}"#,
        r#"{"type":"user_message","id":"m2","author":"ada","text":"again"}"#,
        r#"{"type":"run_started","run_id":"r2","agent":"sim","in_reply_to":"m2"}"#,
        r#"{"type":"text_delta","run_id":"r2","agent":"sim","delta":"Sure"}"#,
        r#"{"type":"cancel","run_id":"r2","by":"tab-b"}"#,
        r#"{"type":"run_finished","run_id":"r2","status":"cancelled","reason":"cancelled by tab-b"}"#,
        r#"{"type":"text_delta","run_id":"r2","agent":"sim","delta":" late"}"#,
        r#"{"type":"run_finished","run_id":"r2","status":"completed"}"#,
    ];

    fn fold(events: &[&str]) -> ChatView {
        let mut v = ChatView::default();
        for e in events {
            v.apply_json(e);
        }
        v
    }

    #[test]
    fn folds_messages_runs_lanes_and_steers() {
        let v = fold(SESSION);
        assert_eq!(v.items().len(), 5);
        assert!(
            matches!(&v.items()[2], ChatItem::Event(e) if e.event_type == "some_future_type"),
            "an unknown type passes through where it appeared"
        );
        let r1 = v.run("r1").unwrap();
        assert_eq!(r1.state, RunState::Completed);
        assert_eq!(r1.text, "Done.");
        let lanes: Vec<_> = r1.lanes.iter().map(|l| (l.agent.as_str(), l.text.as_str())).collect();
        assert_eq!(lanes, [("flights", "LH 400"), ("hotels", "Hotel A")]);
        assert_eq!(r1.lanes[0].progress, ["searching"]);
        assert_eq!(
            r1.steers,
            [Steer {
                text: "cheaper".into(),
                by: "tab-b".into(),
                applied: true
            }]
        );
        let r2 = v.run("r2").unwrap();
        assert_eq!(r2.state, RunState::Cancelled, "the first ending counts");
        assert_eq!(r2.cancel_requested_by.as_deref(), Some("tab-b"));
        assert_eq!(r2.reason.as_deref(), Some("cancelled by tab-b"));
        assert_eq!(v.events_seen(), SESSION.len() as u64);
        assert_eq!(v.streaming_runs().count(), 0);
    }

    #[test]
    fn a_late_joiner_sees_what_an_early_joiner_sees() {
        let live = fold(SESSION);
        // The late joiner replays everything at once; the early one saw it
        // in many small deliveries. Same events, same order: same view.
        let mut early = ChatView::default();
        for chunk in SESSION.chunks(3) {
            for e in chunk {
                early.apply_json(e);
            }
        }
        assert_eq!(early, live);
    }

    #[test]
    fn items_json_has_the_js_shape() {
        let v = fold(SESSION);
        let items: serde_json::Value = serde_json::from_str(&v.items_json()).unwrap();
        assert_eq!(
            items[0],
            serde_json::json!({"kind":"user","id":"m1","author":"ada","text":"plan a trip"})
        );
        assert_eq!(items[1]["kind"], "run");
        assert_eq!(items[1]["runId"], "r1");
        assert_eq!(items[1]["state"], "completed");
        assert_eq!(items[1]["reason"], serde_json::Value::Null);
        assert_eq!(
            items[1]["lanes"][0],
            serde_json::json!({"agent":"flights","text":"LH 400","progress":["searching"]})
        );
        assert_eq!(items[1]["steers"][0]["applied"], true);
        assert_eq!(
            items[2],
            serde_json::json!({"kind":"event","event":{"type":"some_future_type","x":1}})
        );
        assert_eq!(items[4]["cancelRequestedBy"], "tab-b");
    }

    #[test]
    fn nothing_is_folded_after_the_first_run_finished() {
        // SESSION writes " late" and a second run_finished after r2 ended.
        let mut events = SESSION.to_vec();
        events.extend([
            r#"{"type":"progress","run_id":"r2","agent":"sub","text":"late"}"#,
            r#"{"type":"steer","run_id":"r2","text":"late","by":"ada"}"#,
            r#"{"type":"steer_applied","run_id":"r2","text":"late"}"#,
            r#"{"type":"cancel","run_id":"r1","by":"ada"}"#,
            r#"{"type":"run_started","run_id":"r2","agent":"other","in_reply_to":"m1"}"#,
            r#"{"type":"run_finished","run_id":"r2","status":"failed","reason":"again"}"#,
        ]);
        let v = fold(&events);
        let r2 = v.run("r2").unwrap();
        assert_eq!(r2.text, "Sure", "a delta after the end is ignored");
        assert_eq!(
            (r2.state, r2.reason.as_deref()),
            (RunState::Cancelled, Some("cancelled by tab-b"))
        );
        assert_eq!((r2.agent.as_str(), r2.in_reply_to.as_str()), ("sim", "m2"));
        assert!(r2.lanes.is_empty() && r2.steers.is_empty());
        assert_eq!(v.run("r1").unwrap().cancel_requested_by, None);
        assert_eq!(
            v.items(),
            fold(&events[..SESSION.len() - 2]).items(),
            "as if they were not there"
        );
    }

    #[test]
    fn control_events_for_an_unseen_run_create_no_run() {
        let v = fold(&[
            r#"{"type":"cancel","run_id":"ghost","by":"ada"}"#,
            r#"{"type":"steer","run_id":"ghost","text":"faster","by":"bob"}"#,
        ]);
        assert_eq!(v.run("ghost"), None);
        assert!(v.items().is_empty());
        assert_eq!(v.streaming_runs().count(), 0);
        assert_eq!(v.items_json(), "[]");
        assert_eq!(v.events_seen(), 2);
    }

    #[test]
    fn held_control_events_apply_when_the_run_appears() {
        let v = fold(&[
            r#"{"type":"cancel","run_id":"r","by":"bob"}"#,
            r#"{"type":"steer","run_id":"r","text":"short","by":"ada"}"#,
            r#"{"type":"user_message","id":"m","author":"ada","text":"hi"}"#,
            r#"{"type":"cancel","run_id":"r","by":"ada"}"#,
            r#"{"type":"run_started","run_id":"r","agent":"sim","in_reply_to":"m"}"#,
            r#"{"type":"steer_applied","run_id":"r","text":"short"}"#,
        ]);
        assert!(
            matches!(&v.items()[0], ChatItem::User(_)),
            "the run is where it started"
        );
        let r = v.run("r").unwrap();
        assert_eq!(r.cancel_requested_by.as_deref(), Some("bob"), "the first cancel counts");
        assert_eq!(
            r.steers,
            [Steer {
                text: "short".into(),
                by: "ada".into(),
                applied: true
            }]
        );
        assert_eq!(r.state, RunState::Streaming);
        // Held events come before the one that made the run appear: this
        // cancel was asked before the run ended.
        let v = fold(&[
            r#"{"type":"cancel","run_id":"r","by":"bob"}"#,
            r#"{"type":"run_finished","run_id":"r","status":"cancelled"}"#,
        ]);
        let r = v.run("r").unwrap();
        assert_eq!(
            (r.state, r.cancel_requested_by.as_deref()),
            (RunState::Cancelled, Some("bob"))
        );
    }

    #[test]
    fn a_cancel_before_the_run_does_not_take_its_text() {
        // The phantom run a cancel used to create had no agent, so the
        // agent's own text went into a lane of its own run.
        let v = fold(&[
            r#"{"type":"cancel","run_id":"r","by":"bob"}"#,
            r#"{"type":"text_delta","run_id":"r","agent":"sim","delta":"hi"}"#,
            r#"{"type":"run_started","run_id":"r","agent":"sim","in_reply_to":"m"}"#,
            r#"{"type":"text_delta","run_id":"r","agent":"sim","delta":"!"}"#,
        ]);
        let r = v.run("r").unwrap();
        assert_eq!((r.agent.as_str(), r.text.as_str()), ("sim", "hi!"));
        assert!(r.lanes.is_empty());
        assert_eq!(r.cancel_requested_by.as_deref(), Some("bob"));
    }

    #[test]
    fn a_repeated_user_message_is_shown_once() {
        let v = fold(&[
            r#"{"type":"user_message","id":"m","author":"ada","text":"hi"}"#,
            r#"{"type":"user_message","id":"m","author":"ada","text":"hi"}"#,
            r#"{"type":"user_message","id":"m","author":"bob","text":"other"}"#,
        ]);
        assert_eq!(
            v.items(),
            [ChatItem::User(UserMessage {
                id: "m".into(),
                author: "ada".into(),
                text: "hi".into()
            })]
        );
        assert_eq!(v.events_seen(), 3);
    }

    #[test]
    fn the_first_run_started_counts() {
        let v = fold(&[
            r#"{"type":"run_started","run_id":"r","agent":"sim","in_reply_to":"m1"}"#,
            r#"{"type":"text_delta","run_id":"r","agent":"sim","delta":"a"}"#,
            r#"{"type":"run_started","run_id":"r","agent":"other","in_reply_to":"m2"}"#,
            r#"{"type":"text_delta","run_id":"r","agent":"sim","delta":"b"}"#,
        ]);
        let r = v.run("r").unwrap();
        assert_eq!((r.agent.as_str(), r.in_reply_to.as_str()), ("sim", "m1"));
        assert_eq!(r.text, "ab");
        assert!(r.lanes.is_empty());
    }

    #[test]
    fn a_steer_applied_matching_no_steer_changes_nothing() {
        let v = fold(&[
            r#"{"type":"run_started","run_id":"r","agent":"sim","in_reply_to":"m"}"#,
            r#"{"type":"steer","run_id":"r","text":"short","by":"ada"}"#,
            r#"{"type":"steer","run_id":"r","text":"short","by":"bob"}"#,
            r#"{"type":"steer_applied","run_id":"r","text":"short"}"#,
            r#"{"type":"steer_applied","run_id":"r","text":"never asked"}"#,
        ]);
        let steers: Vec<_> = v
            .run("r")
            .unwrap()
            .steers
            .iter()
            .map(|s| (s.by.as_str(), s.applied))
            .collect();
        assert_eq!(steers, [("ada", true), ("bob", false)], "the oldest is marked");
        let v = fold(&[
            r#"{"type":"run_started","run_id":"r","agent":"sim","in_reply_to":"m"}"#,
            r#"{"type":"steer","run_id":"r","text":"short","by":"ada"}"#,
            r#"{"type":"steer_applied","run_id":"r","text":"short"}"#,
            r#"{"type":"steer_applied","run_id":"r","text":"short"}"#,
        ]);
        assert_eq!(
            v.run("r").unwrap().steers.len(),
            1,
            "a duplicate steer_applied adds no steer"
        );
    }

    #[test]
    fn unreadable_events_are_skipped_in_place() {
        let noise = [
            r#"{"type":"text_delta","run_id":"r1","agent":"orchestrator"}"#,
            r#"{"type":"run_finished","run_id":"r1"}"#,
            r#"{"type":"cancel","run_id":"r1","by":7}"#,
            r#"{"type":7}"#,
            r#"[1,2]"#,
            r#"not json"#,
        ];
        let mut events = Vec::new();
        for (i, e) in SESSION.iter().enumerate() {
            events.push(*e);
            events.push(noise[i % noise.len()]);
        }
        let mut v = ChatView::default();
        let understood = events.iter().filter(|e| v.apply_json(e) != Folded::Skipped).count();
        let known = SESSION
            .iter()
            .filter(|e| ChatView::default().apply_json(e) != Folded::Skipped)
            .count();
        assert_eq!(understood, known, "only SESSION's own events are understood");
        assert_eq!(v.events_seen(), events.len() as u64);
        assert_eq!(v.items(), fold(SESSION).items());
    }

    #[test]
    fn other_types_pass_through_in_order_and_unchanged() {
        let vote = r#"{"type":"vote","run_id":"r1","choice":{"n":2},"note":"é"}"#;
        let v = fold(&[
            r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#,
            vote,
            r#"{"type":"run_started","run_id":"r1","agent":"sim","in_reply_to":"m1"}"#,
            r#"{"type":"app.tool_progress","run_id":"r1","agent":"sim","name":"search"}"#,
            vote,
        ]);
        let kinds: Vec<&str> = v
            .items()
            .iter()
            .map(|i| match i {
                ChatItem::User(_) => "user",
                ChatItem::Run(_) => "run",
                ChatItem::Event(e) => e.event_type.as_str(),
            })
            .collect();
        assert_eq!(
            kinds,
            ["user", "vote", "run", "app.tool_progress", "vote"],
            "each one, where it was"
        );
        assert!(matches!(&v.items()[1], ChatItem::Event(e) if e.json == vote));
        assert_eq!(
            v.run("r1").unwrap(),
            fold(&[r#"{"type":"run_started","run_id":"r1","agent":"sim","in_reply_to":"m1"}"#])
                .run("r1")
                .unwrap(),
            "an event naming a run does not change the run"
        );
    }

    #[test]
    fn reasoning_and_tool_calls_are_folded_into_their_run() {
        let v = fold(&[
            r#"{"type":"reasoning_delta","run_id":"r1","agent":"model","delta":"The user "}"#,
            r#"{"type":"run_started","run_id":"r1","agent":"model","in_reply_to":"m1"}"#,
            r#"{"type":"reasoning_delta","run_id":"r1","agent":"model","delta":"asks."}"#,
            r#"{"type":"tool_result","run_id":"r1","call_id":"c1","output":"too early"}"#,
            r#"{"type":"tool_call","run_id":"r1","agent":"model","call_id":"c1","name":"weather","arguments":"{\"city\":\"Oslo\"}"}"#,
            r#"{"type":"tool_call","run_id":"r1","agent":"model","call_id":"c1","name":"again","arguments":"{}"}"#,
            r#"{"type":"tool_call","run_id":"r1","agent":"model","call_id":"c2","name":"fails","arguments":"{}"}"#,
            r#"{"type":"tool_result","run_id":"r1","call_id":"c1","output":"4 C"}"#,
            r#"{"type":"tool_result","run_id":"r1","call_id":"c1","output":"a second one"}"#,
            r#"{"type":"tool_result","run_id":"r1","call_id":"c2","output":"","error":"down"}"#,
            r#"{"type":"run_finished","run_id":"r1","status":"completed"}"#,
            r#"{"type":"reasoning_delta","run_id":"r1","agent":"model","delta":" late"}"#,
        ]);
        assert_eq!(v.items().len(), 1, "no item of their own");
        let r = v.run("r1").unwrap();
        assert_eq!(r.reasoning, "The user asks.");
        let calls: Vec<_> = r
            .tool_calls
            .iter()
            .map(|c| {
                (
                    c.call_id.as_str(),
                    c.name.as_str(),
                    c.output.as_deref(),
                    c.error.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                ("c1", "weather", Some("4 C"), None),
                ("c2", "fails", Some(""), Some("down"))
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&v.items_json()).unwrap();
        assert_eq!(json[0]["reasoning"], "The user asks.");
        assert_eq!(
            json[0]["toolCalls"][0],
            serde_json::json!({"callId": "c1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}", "output": "4 C", "error": null})
        );
    }

    #[test]
    fn deltas_before_run_started_are_kept() {
        let v = fold(&[
            r#"{"type":"text_delta","run_id":"r","agent":"sub","delta":"x"}"#,
            r#"{"type":"run_started","run_id":"r","agent":"orch","in_reply_to":"m"}"#,
        ]);
        let r = v.run("r").unwrap();
        assert_eq!((r.agent.as_str(), r.in_reply_to.as_str()), ("orch", "m"));
        assert_eq!(r.text, "x", "written by the first agent seen");
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "chat_tests.rs"]
mod properties;
