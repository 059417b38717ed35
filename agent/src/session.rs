//! What an agent knows about one session, folded from its events.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use durable_session_protocol::session::{RunMode, SessionEvent};

use crate::history::Transcript;

/// A user message waiting for an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub id: String,
    pub text: String,
    pub mode: RunMode,
}

/// A control event for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Cancel {
        by: String,
    },
    Steer {
        text: String,
    },
    /// The result of one of the run's tool calls (a model run waits for
    /// them; the simulated model makes no calls).
    ToolResult {
        call_id: String,
        output: String,
        error: Option<String>,
    },
}

/// The agent's view of a session.
#[derive(Debug, Default)]
pub struct SessionState {
    answered: HashSet<String>,
    waiting: Vec<Question>,
    /// Runs started (by any agent) and not finished, with their agent.
    open_runs: HashMap<String, String>,
    /// Messages skipped because they are no session event this agent can
    /// read.
    skipped: u64,
    /// What was said, for the history a model is sent.
    transcript: Transcript,
}

impl SessionState {
    /// Reads one delivered message as a session event. A message this agent
    /// cannot read — another writer's unknown type, a malformed event, a
    /// string, a value nested too deep — is skipped: counted, logged, and
    /// the session goes on.
    ///
    /// ```
    /// use durable_session_agent::session::SessionState;
    /// let mut s = SessionState::default();
    /// assert!(s.read(r#"{"type":5}"#).is_none());
    /// assert!(s.read(r#"{"type":"cancel","run_id":"r1","by":"ada"}"#).is_some());
    /// assert_eq!(s.skipped(), 1);
    /// ```
    pub fn read(&mut self, message: &str) -> Option<SessionEvent> {
        match SessionEvent::parse(message) {
            Ok(event) => Some(event),
            Err(e) => {
                self.skipped += 1;
                tracing::warn!(error = %e, skipped = self.skipped, "skipping a message that is no session event this agent can read");
                None
            }
        }
    }

    /// How many messages [`SessionState::read`] skipped.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Folds one event. Returns a control for a run, if the event is one.
    pub fn apply(&mut self, event: &SessionEvent) -> Option<(String, Control)> {
        self.transcript.apply(event);
        match event {
            SessionEvent::UserMessage { id, text, mode, .. } => {
                if !self.answered.contains(id) && !self.waiting.iter().any(|q| q.id == *id) {
                    self.waiting.push(Question {
                        id: id.clone(),
                        text: text.clone(),
                        mode: *mode,
                    });
                }
                None
            }
            SessionEvent::RunStarted {
                run_id,
                agent,
                in_reply_to,
            } => {
                self.mark_answered(in_reply_to);
                self.open_runs.insert(run_id.clone(), agent.clone());
                None
            }
            SessionEvent::RunFinished { run_id, .. } => {
                self.open_runs.remove(run_id);
                None
            }
            SessionEvent::Cancel { run_id, by } => Some((run_id.clone(), Control::Cancel { by: by.clone() })),
            SessionEvent::Steer { run_id, text, .. } => Some((run_id.clone(), Control::Steer { text: text.clone() })),
            SessionEvent::ToolResult {
                run_id,
                call_id,
                output,
                error,
            } => Some((
                run_id.clone(),
                Control::ToolResult {
                    call_id: call_id.clone(),
                    output: output.clone(),
                    error: error.clone(),
                },
            )),
            SessionEvent::TextDelta { .. }
            | SessionEvent::Progress { .. }
            | SessionEvent::SteerApplied { .. }
            | SessionEvent::ToolCall { .. }
            | SessionEvent::ReasoningDelta { .. } => None,
        }
    }

    /// Records that a question is being answered (before our own
    /// `run_started` comes back).
    pub fn mark_answered(&mut self, message_id: &str) {
        self.answered.insert(message_id.to_owned());
        self.waiting.retain(|q| q.id != message_id);
    }

    /// Questions without an answer, oldest first; they are marked answered.
    pub fn take_questions(&mut self) -> Vec<Question> {
        let questions = std::mem::take(&mut self.waiting);
        for q in &questions {
            self.answered.insert(q.id.clone());
        }
        questions
    }

    /// What was said in the session, from which the history a model is
    /// sent is built ([`Transcript::history`]).
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// The agent of a run that started and has not finished.
    pub fn open_run_agent(&self, run_id: &str) -> Option<&str> {
        self.open_runs.get(run_id).map(String::as_str)
    }
}

/// Open runs that this process is not running but that bear one of its
/// agents' names — started by an earlier process, or by another process of
/// the same agent — and when each was last heard of. One that stays quiet
/// for the whole quiet period is taken for orphaned (whoever wrote it
/// stopped) and is closed as `failed`; one that keeps writing is left alone.
#[derive(Debug)]
pub struct OrphanWatch {
    quiet: Duration,
    last_heard: HashMap<String, Instant>,
}

impl OrphanWatch {
    /// A watch that closes runs quiet for `quiet`.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use durable_session_agent::session::OrphanWatch;
    /// let mut w = OrphanWatch::new(Duration::from_secs(10));
    /// let t0 = Instant::now();
    /// w.watch("r1", t0);
    /// w.watch("r2", t0);
    /// w.heard("r2", t0 + Duration::from_secs(6)); // r2 is still being written
    /// assert_eq!(w.next_due(), Some(t0 + Duration::from_secs(10)));
    /// assert_eq!(w.take_due(t0 + Duration::from_secs(10)), ["r1"]);
    /// assert_eq!(w.next_due(), Some(t0 + Duration::from_secs(16)));
    /// ```
    pub fn new(quiet: Duration) -> Self {
        Self {
            quiet,
            last_heard: HashMap::new(),
        }
    }

    /// Starts watching `run_id` (heard of at `now`).
    pub fn watch(&mut self, run_id: &str, now: Instant) {
        self.last_heard.insert(run_id.to_owned(), now);
    }

    /// Something was written for `run_id` at `now`, if it is watched.
    pub fn heard(&mut self, run_id: &str, now: Instant) {
        if let Some(at) = self.last_heard.get_mut(run_id) {
            *at = now;
        }
    }

    /// Stops watching `run_id` (it finished).
    pub fn forget(&mut self, run_id: &str) {
        self.last_heard.remove(run_id);
    }

    /// Stops watching everything.
    pub fn clear(&mut self) {
        self.last_heard.clear();
    }

    /// When the next watched run will have been quiet long enough.
    pub fn next_due(&self) -> Option<Instant> {
        self.last_heard.values().min().map(|at| *at + self.quiet)
    }

    /// The runs quiet since `quiet` before `now`, oldest first; they are no
    /// longer watched.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<(Instant, String)> = self
            .last_heard
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= self.quiet)
            .map(|(run, at)| (*at, run.clone()))
            .collect();
        due.sort();
        for (_, run) in &due {
            self.last_heard.remove(run);
        }
        due.into_iter().map(|(_, run)| run).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(json: &str) -> SessionEvent {
        SessionEvent::parse(json).unwrap()
    }

    #[test]
    fn answered_messages_are_not_asked_again() {
        let mut s = SessionState::default();
        s.apply(&ev(r#"{"type":"user_message","id":"m1","author":"a","text":"one"}"#));
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r1","agent":"sim","in_reply_to":"m1"}"#,
        ));
        s.apply(&ev(r#"{"type":"user_message","id":"m2","author":"a","text":"two"}"#));
        let q = s.take_questions();
        assert_eq!(q.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(), ["m2"]);
        assert!(s.take_questions().is_empty());
        // Our own run_started for m2 coming back changes nothing.
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r2","agent":"sim","in_reply_to":"m2"}"#,
        ));
        assert!(s.take_questions().is_empty());
    }

    #[test]
    fn open_runs_know_their_agent() {
        let mut s = SessionState::default();
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r1","agent":"sim","in_reply_to":"m1"}"#,
        ));
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r3","agent":"sim","in_reply_to":"m3"}"#,
        ));
        s.apply(&ev(r#"{"type":"run_finished","run_id":"r3","status":"completed"}"#));
        assert_eq!(s.open_run_agent("r1"), Some("sim"));
        assert_eq!(s.open_run_agent("r3"), None);
    }

    #[test]
    fn a_quiet_run_is_due_and_a_written_one_is_not() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut w = OrphanWatch::new(secs(5));
        assert_eq!(w.next_due(), None);
        w.watch("quiet", t0);
        w.watch("busy", t0);
        w.watch("done", t0);
        w.forget("done");
        w.heard("unknown", t0); // not watched: ignored
        for t in 1..=9 {
            w.heard("busy", t0 + secs(t));
            let due = w.take_due(t0 + secs(t));
            assert_eq!(due, if t == 5 { vec!["quiet".to_string()] } else { vec![] }, "at {t} s");
        }
        assert_eq!(w.next_due(), Some(t0 + secs(14)));
        w.clear();
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn controls_are_routed_by_run() {
        let mut s = SessionState::default();
        assert_eq!(
            s.apply(&ev(r#"{"type":"cancel","run_id":"r1","by":"tab"}"#)),
            Some(("r1".into(), Control::Cancel { by: "tab".into() }))
        );
        assert_eq!(
            s.apply(&ev(r#"{"type":"steer","run_id":"r1","text":"shorter","by":"tab"}"#)),
            Some(("r1".into(), Control::Steer { text: "shorter".into() }))
        );
    }
}
