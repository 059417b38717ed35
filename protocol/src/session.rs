//! The session event schema.
//!
//! A session is a JSON-mode stream at `sessions/{session_id}`; each message
//! is one [`SessionEvent`]. Control (`cancel`, `steer`) travels in the same
//! stream as content, so it is durable, ordered and visible to every reader.
//!
//! ```
//! use durable_session_protocol::session::SessionEvent;
//! let e: SessionEvent = serde_json::from_str(r#"{"type":"cancel","run_id":"r1","by":"tab-b"}"#).unwrap();
//! assert_eq!(e, SessionEvent::Cancel { run_id: "r1".into(), by: "tab-b".into() });
//! assert_eq!(e.run_id(), Some("r1"));
//! ```

use serde::{Deserialize, Serialize};

/// Stream path prefix of sessions.
pub const SESSIONS_PREFIX: &str = "sessions/";

/// The JSON stream the server appends a [`IndexEvent::SessionCreated`] to
/// whenever a session stream is created, so agents discover sessions without
/// a handshake.
pub const SESSION_INDEX_PATH: &str = "_index/sessions";

/// The stream path of a session.
///
/// ```
/// assert_eq!(durable_session_protocol::session::session_path("abc"), "sessions/abc");
/// ```
pub fn session_path(session_id: &str) -> String {
    format!("{SESSIONS_PREFIX}{session_id}")
}

/// The session id of a stream path, if it is a session (`sessions/{id}`,
/// one segment).
///
/// ```
/// use durable_session_protocol::session::session_id_of;
/// assert_eq!(session_id_of("sessions/abc"), Some("abc"));
/// assert_eq!(session_id_of("sessions/a/b"), None);
/// assert_eq!(session_id_of("other/abc"), None);
/// ```
pub fn session_id_of(path: &str) -> Option<&str> {
    path.strip_prefix(SESSIONS_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    Cancelled,
    Failed,
}

/// Who answers a user message: one agent, or an orchestrator with sub-agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    Single,
    Multi,
}

/// One event of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A person's message. Written by a client.
    UserMessage {
        id: String,
        author: String,
        text: String,
        /// `multi` asks for an orchestrator with sub-agents. Default `single`.
        #[serde(default, skip_serializing_if = "is_default")]
        mode: RunMode,
    },
    /// An agent starts answering `in_reply_to`.
    RunStarted {
        run_id: String,
        agent: String,
        in_reply_to: String,
    },
    /// A piece of an agent's answer.
    TextDelta {
        run_id: String,
        agent: String,
        delta: String,
    },
    /// A sub-agent's progress note.
    Progress {
        run_id: String,
        agent: String,
        text: String,
    },
    /// Stop the run. Written by any client.
    Cancel { run_id: String, by: String },
    /// Change the run's direction. Written by any client.
    Steer { run_id: String, text: String, by: String },
    /// The agent took a steer into account.
    SteerApplied { run_id: String, text: String },
    /// The run ended.
    RunFinished {
        run_id: String,
        status: RunStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl SessionEvent {
    /// The run this event belongs to, if any.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Self::UserMessage { .. } => None,
            Self::RunStarted { run_id, .. }
            | Self::TextDelta { run_id, .. }
            | Self::Progress { run_id, .. }
            | Self::Cancel { run_id, .. }
            | Self::Steer { run_id, .. }
            | Self::SteerApplied { run_id, .. }
            | Self::RunFinished { run_id, .. } => Some(run_id),
        }
    }

    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("session events always serialize")
    }
}

/// Events of the session index stream ([`SESSION_INDEX_PATH`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum IndexEvent {
    /// The stream `sessions/{session_id}` was created.
    SessionCreated { session_id: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let events = [
            SessionEvent::UserMessage {
                id: "m".into(),
                author: "a".into(),
                text: "t".into(),
                mode: RunMode::Multi,
            },
            SessionEvent::RunStarted {
                run_id: "r".into(),
                agent: "sim".into(),
                in_reply_to: "m".into(),
            },
            SessionEvent::TextDelta {
                run_id: "r".into(),
                agent: "sim".into(),
                delta: "x".into(),
            },
            SessionEvent::Progress {
                run_id: "r".into(),
                agent: "sub".into(),
                text: "p".into(),
            },
            SessionEvent::Cancel {
                run_id: "r".into(),
                by: "b".into(),
            },
            SessionEvent::Steer {
                run_id: "r".into(),
                text: "s".into(),
                by: "b".into(),
            },
            SessionEvent::SteerApplied {
                run_id: "r".into(),
                text: "s".into(),
            },
            SessionEvent::RunFinished {
                run_id: "r".into(),
                status: RunStatus::Cancelled,
                reason: Some("stop".into()),
            },
        ];
        for e in events {
            let back: SessionEvent = serde_json::from_str(&e.to_json()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn single_mode_is_the_default_and_omitted() {
        let json = r#"{"type":"user_message","id":"m","author":"a","text":"t"}"#;
        let e: SessionEvent = serde_json::from_str(json).unwrap();
        assert_eq!(e.to_json(), json);
    }

    #[test]
    fn wire_names() {
        let e = SessionEvent::RunFinished {
            run_id: "r".into(),
            status: RunStatus::Completed,
            reason: None,
        };
        assert_eq!(
            e.to_json(),
            r#"{"type":"run_finished","run_id":"r","status":"completed"}"#
        );
    }
}
