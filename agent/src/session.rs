//! What an agent knows about one session, folded from its events.

use std::collections::{HashMap, HashSet};

use durable_session_protocol::session::{RunMode, SessionEvent};

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
    Cancel { by: String },
    Steer { text: String },
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
            SessionEvent::TextDelta { .. } | SessionEvent::Progress { .. } | SessionEvent::SteerApplied { .. } => None,
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

    /// Runs by `agents` that are open in the history, excluding `running`.
    pub fn orphaned_runs(&self, agents: &[&str], running: &HashSet<String>) -> Vec<String> {
        let mut runs: Vec<String> = self
            .open_runs
            .iter()
            .filter(|(run, agent)| agents.contains(&agent.as_str()) && !running.contains(*run))
            .map(|(run, _)| run.clone())
            .collect();
        runs.sort();
        runs
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
    fn unfinished_runs_of_ours_are_orphans_after_a_restart() {
        let mut s = SessionState::default();
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r1","agent":"sim","in_reply_to":"m1"}"#,
        ));
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r2","agent":"other","in_reply_to":"m2"}"#,
        ));
        s.apply(&ev(
            r#"{"type":"run_started","run_id":"r3","agent":"sim","in_reply_to":"m3"}"#,
        ));
        s.apply(&ev(r#"{"type":"run_finished","run_id":"r3","status":"completed"}"#));
        assert_eq!(s.orphaned_runs(&["sim"], &HashSet::new()), ["r1"]);
        assert!(s.orphaned_runs(&["sim"], &HashSet::from(["r1".to_string()])).is_empty());
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
