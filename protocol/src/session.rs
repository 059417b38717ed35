//! The session event schema.
//!
//! A session is a JSON-mode stream at `sessions/{session_id}`; each message
//! is one [`SessionEvent`]. Control (`cancel`, `steer`) travels in the same
//! stream as content, so it is durable, ordered and visible to every reader.
//!
//! ```
//! use durable_session_protocol::session::SessionEvent;
//! let e = SessionEvent::parse(r#"{"type":"cancel","run_id":"r1","by":"tab-b"}"#).unwrap();
//! assert_eq!(e, SessionEvent::Cancel { run_id: "r1".into(), by: "tab-b".into() });
//! assert_eq!(e.run_id(), Some("r1"));
//! assert_eq!(e.to_json(), r#"{"type":"cancel","run_id":"r1","by":"tab-b"}"#);
//! ```

use crate::json::{self, Json, Obj};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Completed,
    Cancelled,
    Failed,
}

impl RunStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    /// The status of a wire name. A status this version does not know (a
    /// later one, say `timed_out`) still ends the run: it reads as
    /// `Failed`, so no reader shows the run as streaming forever.
    ///
    /// ```
    /// use durable_session_protocol::session::RunStatus;
    /// assert_eq!(RunStatus::parse("cancelled"), RunStatus::Cancelled);
    /// assert_eq!(RunStatus::parse("timed_out"), RunStatus::Failed);
    /// ```
    pub fn parse(s: &str) -> Self {
        match s {
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            _ => Self::Failed,
        }
    }
}

/// Who answers a user message: one agent, or an orchestrator with sub-agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RunMode {
    #[default]
    Single,
    Multi,
}

impl RunMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Multi => "multi",
        }
    }
}

/// Why a JSON text is not a session event this version understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError(pub String);

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EventError {}

/// Every [`SessionEvent::type_name`].
const CORE_TYPES: [&str; 11] = [
    "user_message",
    "run_started",
    "text_delta",
    "progress",
    "cancel",
    "steer",
    "steer_applied",
    "run_finished",
    "tool_call",
    "tool_result",
    "reasoning_delta",
];

/// One event of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A person's message. Written by a client.
    UserMessage {
        id: String,
        author: String,
        text: String,
        /// `multi` asks for an orchestrator with sub-agents. Default `single`
        /// (and then not written).
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
        reason: Option<String>,
    },
    /// The model asked for a tool call (OpenAI's `tool_calls`), complete.
    ToolCall {
        run_id: String,
        agent: String,
        /// Names the call; its [`SessionEvent::ToolResult`] repeats it.
        call_id: String,
        /// The tool's name.
        name: String,
        /// The arguments as the model wrote them: JSON text (normally an
        /// object), kept as text because a model may write invalid JSON.
        arguments: String,
    },
    /// The result of a tool call, written by whoever ran the tool.
    ToolResult {
        run_id: String,
        call_id: String,
        /// The tool's output as text (what the model reads next).
        output: String,
        /// The tool failed, and why (`output` may then be empty).
        error: Option<String>,
    },
    /// A piece of the model's reasoning (OpenAI-compatible providers'
    /// `reasoning_content` / `reasoning`), shown apart from the answer.
    ReasoningDelta {
        run_id: String,
        agent: String,
        delta: String,
    },
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
            | Self::RunFinished { run_id, .. }
            | Self::ToolCall { run_id, .. }
            | Self::ToolResult { run_id, .. }
            | Self::ReasoningDelta { run_id, .. } => Some(run_id),
        }
    }

    /// The `type`s of this version's events ([`SessionEvent::type_name`]
    /// of each variant). An event of another type is an app's own or a
    /// later version's: readers pass it on or skip it, never fail on it.
    ///
    /// ```
    /// use durable_session_protocol::session::SessionEvent;
    /// assert!(SessionEvent::is_core_type("text_delta"));
    /// assert!(!SessionEvent::is_core_type("vote"));
    /// ```
    pub fn is_core_type(ty: &str) -> bool {
        CORE_TYPES.contains(&ty)
    }

    /// The event's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::UserMessage { .. } => "user_message",
            Self::RunStarted { .. } => "run_started",
            Self::TextDelta { .. } => "text_delta",
            Self::Progress { .. } => "progress",
            Self::Cancel { .. } => "cancel",
            Self::Steer { .. } => "steer",
            Self::SteerApplied { .. } => "steer_applied",
            Self::RunFinished { .. } => "run_finished",
            Self::ToolCall { .. } => "tool_call",
            Self::ToolResult { .. } => "tool_result",
            Self::ReasoningDelta { .. } => "reasoning_delta",
        }
    }

    /// The event as JSON text.
    pub fn to_json(&self) -> String {
        let mut o = Obj::new();
        o.str("type", self.type_name());
        match self {
            Self::UserMessage { id, author, text, mode } => {
                o.str("id", id).str("author", author).str("text", text);
                if *mode != RunMode::Single {
                    o.str("mode", mode.as_str());
                }
            }
            Self::RunStarted {
                run_id,
                agent,
                in_reply_to,
            } => {
                o.str("run_id", run_id)
                    .str("agent", agent)
                    .str("in_reply_to", in_reply_to);
            }
            Self::TextDelta { run_id, agent, delta } => {
                o.str("run_id", run_id).str("agent", agent).str("delta", delta);
            }
            Self::Progress { run_id, agent, text } => {
                o.str("run_id", run_id).str("agent", agent).str("text", text);
            }
            Self::Cancel { run_id, by } => {
                o.str("run_id", run_id).str("by", by);
            }
            Self::Steer { run_id, text, by } => {
                o.str("run_id", run_id).str("text", text).str("by", by);
            }
            Self::SteerApplied { run_id, text } => {
                o.str("run_id", run_id).str("text", text);
            }
            Self::RunFinished { run_id, status, reason } => {
                o.str("run_id", run_id)
                    .str("status", status.as_str())
                    .opt_str("reason", reason.as_deref());
            }
            Self::ToolCall {
                run_id,
                agent,
                call_id,
                name,
                arguments,
            } => {
                o.str("run_id", run_id)
                    .str("agent", agent)
                    .str("call_id", call_id)
                    .str("name", name)
                    .str("arguments", arguments);
            }
            Self::ToolResult {
                run_id,
                call_id,
                output,
                error,
            } => {
                o.str("run_id", run_id)
                    .str("call_id", call_id)
                    .str("output", output)
                    .opt_str("error", error.as_deref());
            }
            Self::ReasoningDelta { run_id, agent, delta } => {
                o.str("run_id", run_id).str("agent", agent).str("delta", delta);
            }
        }
        o.finish()
    }

    /// Parses an event from JSON text. Fields other than the type's own are
    /// ignored; an unknown `type` is an error (readers skip such events).
    pub fn parse(text: &str) -> Result<Self, EventError> {
        let v = json::parse(text).map_err(|e| EventError(format!("not JSON: {e}")))?;
        Self::from_json(&v)
    }

    /// An event from a parsed JSON value.
    pub fn from_json(v: &Json<'_>) -> Result<Self, EventError> {
        let ty = v
            .get("type")
            .and_then(Json::str)
            .ok_or_else(|| EventError("an event needs a string \"type\"".into()))?;
        let s = |key: &str| {
            v.get(key)
                .and_then(Json::str)
                .map(str::to_owned)
                .ok_or_else(|| EventError(format!("{ty} needs a string \"{key}\"")))
        };
        Ok(match ty {
            "user_message" => Self::UserMessage {
                id: s("id")?,
                author: s("author")?,
                text: s("text")?,
                mode: match v.get("mode").and_then(Json::str) {
                    Some("multi") => RunMode::Multi,
                    _ => RunMode::Single,
                },
            },
            "run_started" => Self::RunStarted {
                run_id: s("run_id")?,
                agent: s("agent")?,
                in_reply_to: s("in_reply_to")?,
            },
            "text_delta" => Self::TextDelta {
                run_id: s("run_id")?,
                agent: s("agent")?,
                delta: s("delta")?,
            },
            "progress" => Self::Progress {
                run_id: s("run_id")?,
                agent: s("agent")?,
                text: s("text")?,
            },
            "cancel" => Self::Cancel {
                run_id: s("run_id")?,
                by: s("by")?,
            },
            "steer" => Self::Steer {
                run_id: s("run_id")?,
                text: s("text")?,
                by: s("by")?,
            },
            "steer_applied" => Self::SteerApplied {
                run_id: s("run_id")?,
                text: s("text")?,
            },
            "run_finished" => Self::RunFinished {
                run_id: s("run_id")?,
                status: RunStatus::parse(&s("status")?),
                reason: v.get("reason").and_then(Json::str).map(str::to_owned),
            },
            "tool_call" => Self::ToolCall {
                run_id: s("run_id")?,
                agent: s("agent")?,
                call_id: s("call_id")?,
                name: s("name")?,
                arguments: s("arguments")?,
            },
            "tool_result" => Self::ToolResult {
                run_id: s("run_id")?,
                call_id: s("call_id")?,
                output: s("output")?,
                error: v.get("error").and_then(Json::str).map(str::to_owned),
            },
            "reasoning_delta" => Self::ReasoningDelta {
                run_id: s("run_id")?,
                agent: s("agent")?,
                delta: s("delta")?,
            },
            other => return Err(EventError(format!("unknown event type \"{other}\""))),
        })
    }
}

/// Events of the session index stream ([`SESSION_INDEX_PATH`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexEvent {
    /// The stream `sessions/{session_id}` was created.
    SessionCreated { session_id: String },
}

impl IndexEvent {
    /// The event as JSON text.
    ///
    /// ```
    /// use durable_session_protocol::session::IndexEvent;
    /// let e = IndexEvent::SessionCreated { session_id: "a".into() };
    /// assert_eq!(e.to_json(), r#"{"type":"session_created","session_id":"a"}"#);
    /// assert_eq!(IndexEvent::parse(&e.to_json()), Some(e));
    /// ```
    pub fn to_json(&self) -> String {
        let Self::SessionCreated { session_id } = self;
        let mut o = Obj::new();
        o.str("type", "session_created").str("session_id", session_id);
        o.finish()
    }

    /// Parses an index event; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let v = json::parse(text).ok()?;
        match v.get("type").and_then(Json::str)? {
            "session_created" => Some(Self::SessionCreated {
                session_id: v.get("session_id").and_then(Json::str)?.to_owned(),
            }),
            _ => None,
        }
    }
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
            SessionEvent::ToolCall {
                run_id: "r".into(),
                agent: "model".into(),
                call_id: "c1".into(),
                name: "weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            },
            SessionEvent::ToolResult {
                run_id: "r".into(),
                call_id: "c1".into(),
                output: "4 °C".into(),
                error: None,
            },
            SessionEvent::ReasoningDelta {
                run_id: "r".into(),
                agent: "model".into(),
                delta: "hm".into(),
            },
        ];
        let names: Vec<&str> = events.iter().map(SessionEvent::type_name).collect();
        assert_eq!(names, CORE_TYPES, "CORE_TYPES names every variant");
        for e in events {
            assert!(SessionEvent::is_core_type(e.type_name()));
            assert_eq!(SessionEvent::parse(&e.to_json()).unwrap(), e);
            // The JSON is what serde_json reads too.
            let value: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
            assert_eq!(value["type"], e.type_name());
        }
    }

    #[test]
    fn single_mode_is_the_default_and_omitted() {
        let json = r#"{"type":"user_message","id":"m","author":"a","text":"t"}"#;
        assert_eq!(SessionEvent::parse(json).unwrap().to_json(), json);
    }

    #[test]
    fn unknown_and_malformed_events_are_errors() {
        for bad in [
            "{}",
            r#"{"type":"future"}"#,
            r#"{"type":"cancel","run_id":"r"}"#,
            "[",
            r#"{"type":"run_finished","run_id":"r"}"#,
        ] {
            assert!(SessionEvent::parse(bad).is_err(), "{bad}");
        }
        // A later status still ends the run.
        let later = SessionEvent::parse(r#"{"type":"run_finished","run_id":"r","status":"timed_out"}"#).unwrap();
        assert!(matches!(
            later,
            SessionEvent::RunFinished {
                status: RunStatus::Failed,
                ..
            }
        ));
        let extra = r#"{"type":"cancel","run_id":"r","by":"b","extra":[1]}"#;
        assert!(SessionEvent::parse(extra).is_ok(), "unknown fields are ignored");
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
