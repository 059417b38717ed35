//! The chat view: session events folded into what a chat UI renders —
//! messages and runs, not raw events.
//!
//! The fold is deterministic, so a tab that joins late and replays the
//! session from the beginning ends with exactly the view of a tab that
//! watched it live.
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

use durable_session_protocol::json::{self, Obj};
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

/// An agent's answer, streaming or finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub run_id: String,
    /// The agent that started the run (the orchestrator in multi-agent mode).
    pub agent: String,
    pub in_reply_to: String,
    /// Text written by `agent`.
    pub text: String,
    pub state: RunState,
    /// Why it ended, when it says.
    pub reason: Option<String>,
    /// Who asked to cancel it, if anyone.
    pub cancel_requested_by: Option<String>,
    pub steers: Vec<Steer>,
    /// Other agents writing into this run, in order of first appearance.
    pub lanes: Vec<Lane>,
}

impl Run {
    fn new(run_id: &str, agent: &str, in_reply_to: &str) -> Self {
        Self {
            run_id: run_id.into(),
            agent: agent.into(),
            in_reply_to: in_reply_to.into(),
            text: String::new(),
            state: RunState::Streaming,
            reason: None,
            cancel_requested_by: None,
            steers: Vec::new(),
            lanes: Vec::new(),
        }
    }

    fn lane(&mut self, agent: &str) -> &mut Lane {
        let i = match self.lanes.iter().position(|l| l.agent == agent) {
            Some(i) => i,
            None => {
                self.lanes.push(Lane {
                    agent: agent.into(),
                    text: String::new(),
                    progress: Vec::new(),
                });
                self.lanes.len() - 1
            }
        };
        &mut self.lanes[i]
    }
}

/// One entry of the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatItem {
    User(UserMessage),
    Run(Run),
}

impl ChatItem {
    /// The item as JSON (see [`ChatView::items_json`]).
    pub fn to_json(&self) -> String {
        let mut o = Obj::new();
        match self {
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
                o.raw("steers", &json::array(steers.iter().map(String::as_str)))
                    .raw("lanes", &json::array(lanes.iter().map(String::as_str)));
            }
        }
        o.finish()
    }
}

/// Messages and runs of a session, in the order they appeared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatView {
    items: Vec<ChatItem>,
    events: u64,
}

impl ChatView {
    /// The transcript.
    pub fn items(&self) -> &[ChatItem] {
        &self.items
    }

    /// A run by id.
    pub fn run(&self, run_id: &str) -> Option<&Run> {
        match self.items.get(self.run_index(run_id)?) {
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
    /// `{"kind":"user",id,author,text}` and `{"kind":"run",runId,agent,
    /// inReplyTo,text,state,reason,cancelRequestedBy,steers,lanes}`.
    pub fn items_json(&self) -> String {
        let items: Vec<String> = self.items.iter().map(ChatItem::to_json).collect();
        json::array(items.iter().map(String::as_str))
    }

    /// Number of session events folded in (unknown types included).
    pub fn events_seen(&self) -> u64 {
        self.events
    }

    /// Folds one event given as JSON text. Unknown or malformed events are
    /// counted and otherwise ignored (newer writers may add types); returns
    /// whether the event was understood.
    pub fn apply_json(&mut self, json: &str) -> bool {
        match SessionEvent::parse(json) {
            Ok(e) => {
                self.apply(&e);
                true
            }
            Err(_) => {
                self.events += 1;
                false
            }
        }
    }

    /// Where run `run_id` is in the transcript (searched from the end, where
    /// live runs are).
    fn run_index(&self, run_id: &str) -> Option<usize> {
        self.items
            .iter()
            .rposition(|i| matches!(i, ChatItem::Run(r) if r.run_id == run_id))
    }

    fn run_mut(&mut self, run_id: &str, agent: &str) -> &mut Run {
        let i = match self.run_index(run_id) {
            Some(i) => i,
            None => {
                // A run seen before its run_started (e.g. a sub-agent was quicker).
                self.items.push(ChatItem::Run(Run::new(run_id, agent, "")));
                self.items.len() - 1
            }
        };
        match &mut self.items[i] {
            ChatItem::Run(r) => r,
            ChatItem::User(_) => unreachable!("run index points at a run"),
        }
    }

    /// Folds one event.
    pub fn apply(&mut self, event: &SessionEvent) {
        self.events += 1;
        match event {
            SessionEvent::UserMessage { id, author, text, .. } => {
                self.items.push(ChatItem::User(UserMessage {
                    id: id.clone(),
                    author: author.clone(),
                    text: text.clone(),
                }));
            }
            SessionEvent::RunStarted {
                run_id,
                agent,
                in_reply_to,
            } => {
                if let Some(i) = self.run_index(run_id) {
                    if let ChatItem::Run(r) = &mut self.items[i] {
                        r.agent = agent.clone();
                        r.in_reply_to = in_reply_to.clone();
                    }
                } else {
                    self.items.push(ChatItem::Run(Run::new(run_id, agent, in_reply_to)));
                }
            }
            SessionEvent::TextDelta { run_id, agent, delta } => {
                let run = self.run_mut(run_id, agent);
                if run.agent == *agent {
                    run.text.push_str(delta);
                } else {
                    run.lane(agent).text.push_str(delta);
                }
            }
            SessionEvent::Progress { run_id, agent, text } => {
                self.run_mut(run_id, agent).lane(agent).progress.push(text.clone());
            }
            SessionEvent::Cancel { run_id, by } => {
                let run = self.run_mut(run_id, "");
                run.cancel_requested_by.get_or_insert_with(|| by.clone());
            }
            SessionEvent::Steer { run_id, text, by } => {
                self.run_mut(run_id, "").steers.push(Steer {
                    text: text.clone(),
                    by: by.clone(),
                    applied: false,
                });
            }
            SessionEvent::SteerApplied { run_id, text } => {
                let run = self.run_mut(run_id, "");
                match run.steers.iter_mut().find(|s| !s.applied && s.text == *text) {
                    Some(s) => s.applied = true,
                    None => run.steers.push(Steer {
                        text: text.clone(),
                        by: String::new(),
                        applied: true,
                    }),
                }
            }
            SessionEvent::RunFinished { run_id, status, reason } => {
                let run = self.run_mut(run_id, "");
                // The first ending counts; nothing reopens a run.
                if run.state == RunState::Streaming {
                    run.state = (*status).into();
                    run.reason = reason.clone();
                }
            }
        }
    }
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
        assert_eq!(v.items().len(), 4);
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
        assert_eq!(items[3]["cancelRequestedBy"], "tab-b");
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
