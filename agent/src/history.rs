//! The conversation a model is sent, rebuilt from the session log.
//!
//! The agent keeps no state of its own: whatever process answers a message
//! — the one that saw the conversation, or one started later — sends the
//! model the same history, folded from the session's events:
//!
//! - a `user_message` is a `user` message;
//! - a run's `text_delta`s are `assistant` messages;
//! - a `steer_applied` splits its run: the text before it, then the steer's
//!   text as a `user` message, then the text written after it (exactly what
//!   the model was sent when it continued after the steer);
//! - a `tool_call` with its `tool_result` is an assistant `tool_calls` entry
//!   followed by a `tool` message (a call without a result is left out: the
//!   Chat Completions API refuses one);
//! - `reasoning_delta`s, `progress` notes and events of other types are not
//!   sent.
//!
//! ```
//! use durable_session_agent::history::Transcript;
//! use durable_session_protocol::session::SessionEvent;
//! let mut t = Transcript::default();
//! for e in [
//!     r#"{"type":"user_message","id":"m1","author":"ada","text":"hi"}"#,
//!     r#"{"type":"run_started","run_id":"r1","agent":"model","in_reply_to":"m1"}"#,
//!     r#"{"type":"text_delta","run_id":"r1","agent":"model","delta":"Hello"}"#,
//!     r#"{"type":"user_message","id":"m2","author":"ada","text":"and?"}"#,
//! ] {
//!     t.apply(&SessionEvent::parse(e).unwrap());
//! }
//! let history = t.history("m2", 10_000);
//! assert_eq!(serde_json::Value::Array(history).to_string(),
//!     r#"[{"content":"hi","role":"user"},{"content":"Hello","role":"assistant"},{"content":"and?","role":"user"}]"#);
//! ```

use std::collections::{HashMap, HashSet};

use durable_session_protocol::session::SessionEvent;
use serde_json::{Value, json};

/// One entry of the transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    User { id: String, text: String },
    Run { parts: Vec<Part> },
}

/// What a run contributed, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Steer(String),
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    ToolResult {
        id: String,
        output: String,
        error: Option<String>,
    },
}

/// The conversation of one session, in stream order.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    entries: Vec<Entry>,
    /// Where each run is in `entries`.
    runs: HashMap<String, usize>,
    /// Ids of the user messages seen (the first counts).
    messages: HashSet<String>,
    /// Runs that finished: nothing after the end counts.
    finished: HashSet<String>,
}

impl Transcript {
    /// Folds one event.
    pub fn apply(&mut self, event: &SessionEvent) {
        if let SessionEvent::UserMessage { id, text, .. } = event {
            if self.messages.insert(id.clone()) {
                self.entries.push(Entry::User {
                    id: id.clone(),
                    text: text.clone(),
                });
            }
            return;
        }
        let part = match event {
            SessionEvent::TextDelta { delta, .. } => Part::Text(delta.clone()),
            SessionEvent::SteerApplied { text, .. } => Part::Steer(text.clone()),
            SessionEvent::ToolCall {
                call_id,
                name,
                arguments,
                ..
            } => Part::ToolCall {
                id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
            },
            SessionEvent::ToolResult {
                call_id, output, error, ..
            } => Part::ToolResult {
                id: call_id.clone(),
                output: output.clone(),
                error: error.clone(),
            },
            SessionEvent::RunStarted { run_id, .. } => {
                self.run(run_id);
                return;
            }
            SessionEvent::RunFinished { run_id, .. } => {
                self.finished.insert(run_id.clone());
                return;
            }
            _ => return,
        };
        let Some(run_id) = event.run_id() else { return };
        if self.finished.contains(run_id) {
            return;
        }
        let parts = self.run(run_id);
        match (parts.last_mut(), part) {
            (Some(Part::Text(text)), Part::Text(delta)) => text.push_str(&delta),
            (_, part) => parts.push(part),
        }
    }

    /// The parts of `run_id`, the run added if new.
    fn run(&mut self, run_id: &str) -> &mut Vec<Part> {
        let i = *self.runs.entry(run_id.to_owned()).or_insert_with(|| {
            self.entries.push(Entry::Run { parts: Vec::new() });
            self.entries.len() - 1
        });
        match &mut self.entries[i] {
            Entry::Run { parts } => parts,
            Entry::User { .. } => unreachable!("runs index run entries"),
        }
    }

    /// The Chat Completions `messages` for answering the user message
    /// `message_id`: everything up to and including it, the oldest left
    /// out when the history would exceed `max_chars` characters of text (the
    /// message itself is always sent). Empty if the message is unknown.
    pub fn history(&self, message_id: &str, max_chars: usize) -> Vec<Value> {
        let Some(end) = self
            .entries
            .iter()
            .position(|e| matches!(e, Entry::User { id, .. } if id == message_id))
        else {
            return Vec::new();
        };
        let mut messages = Vec::new();
        for entry in &self.entries[..=end] {
            match entry {
                Entry::User { text, .. } => messages.push(json!({"role": "user", "content": text})),
                Entry::Run { parts } => run_messages(parts, &mut messages),
            }
        }
        trim(messages, max_chars)
    }
}

/// An `assistant` message with `content` and the calls `(id, name,
/// arguments)`.
pub(crate) fn assistant_message<'a>(
    content: &str,
    calls: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Value {
    let mut message = json!({"role": "assistant", "content": content});
    let calls: Vec<Value> = calls
        .into_iter()
        .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
        .collect();
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    message
}

/// The `tool` message of a call's result.
pub(crate) fn tool_message(call_id: &str, output: &str, error: Option<&str>) -> Value {
    let content = match error {
        Some(error) => format!("error: {error}\n{output}"),
        None => output.to_owned(),
    };
    json!({"role": "tool", "tool_call_id": call_id, "content": content})
}

/// The messages of one run. A steer applied while tool calls waited for
/// their results is sent after the results, as the run sent it.
fn run_messages(parts: &[Part], out: &mut Vec<Value>) {
    let answered: HashSet<&str> = parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolResult { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    // Calls sent whose results are not in yet.
    let mut called: HashSet<&str> = HashSet::new();
    let mut deferred: Vec<&str> = Vec::new();
    let mut content = String::new();
    let mut calls: Vec<(&str, &str, &str)> = Vec::new();
    let flush = |content: &mut String, calls: &mut Vec<(&str, &str, &str)>, out: &mut Vec<Value>| {
        if !content.is_empty() || !calls.is_empty() {
            out.push(assistant_message(content, calls.drain(..)));
            content.clear();
        }
    };
    for part in parts {
        match part {
            Part::Text(text) => content.push_str(text),
            Part::Steer(text) if !called.is_empty() => deferred.push(text),
            Part::Steer(text) => {
                flush(&mut content, &mut calls, out);
                out.push(json!({"role": "user", "content": text}));
            }
            Part::ToolCall { id, name, arguments } if answered.contains(id.as_str()) && called.insert(id) => {
                calls.push((id, name, arguments));
            }
            Part::ToolCall { .. } => {}
            Part::ToolResult { id, output, error } if called.remove(id.as_str()) => {
                flush(&mut content, &mut calls, out);
                out.push(tool_message(id, output, error.as_deref()));
                if called.is_empty() {
                    out.extend(deferred.drain(..).map(|text| json!({"role": "user", "content": text})));
                }
            }
            Part::ToolResult { .. } => {}
        }
    }
    flush(&mut content, &mut calls, out);
    out.extend(deferred.drain(..).map(|text| json!({"role": "user", "content": text})));
}

/// The characters of text in a message.
fn chars(message: &Value) -> usize {
    message["content"].as_str().map_or(0, |c| c.chars().count())
        + message["tool_calls"]
            .as_array()
            .map_or(0, |calls| calls.iter().map(|c| c.to_string().len()).sum())
}

/// Leaves out the oldest messages until the rest fits in `max_chars`; the
/// last message stays. A `tool` message is never left without the assistant
/// message that called it: the history then starts after it.
fn trim(mut messages: Vec<Value>, max_chars: usize) -> Vec<Value> {
    let mut total: usize = messages.iter().map(chars).sum();
    let mut start = 0;
    while total > max_chars && start + 1 < messages.len() {
        total -= chars(&messages[start]);
        start += 1;
    }
    while start + 1 < messages.len() && messages[start]["role"] == "tool" {
        start += 1;
    }
    messages.drain(..start);
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcript(events: &[Value]) -> Transcript {
        let mut t = Transcript::default();
        for e in events {
            t.apply(&SessionEvent::parse(&e.to_string()).unwrap());
        }
        t
    }

    #[test]
    fn steers_split_the_run_and_tool_calls_pair_with_their_results() {
        let t = transcript(&[
            json!({"type": "user_message", "id": "m1", "author": "a", "text": "weather?"}),
            json!({"type": "run_started", "run_id": "r1", "agent": "model", "in_reply_to": "m1"}),
            json!({"type": "text_delta", "run_id": "r1", "agent": "model", "delta": "Let me "}),
            json!({"type": "text_delta", "run_id": "r1", "agent": "model", "delta": "look."}),
            json!({"type": "tool_call", "run_id": "r1", "agent": "model", "call_id": "c1", "name": "weather", "arguments": "{}"}),
            json!({"type": "tool_call", "run_id": "r1", "agent": "model", "call_id": "c2", "name": "never", "arguments": "{}"}),
            json!({"type": "tool_result", "run_id": "r1", "call_id": "c1", "output": "4 C"}),
            json!({"type": "steer", "run_id": "r1", "text": "in F", "by": "a"}),
            json!({"type": "steer_applied", "run_id": "r1", "text": "in F"}),
            json!({"type": "text_delta", "run_id": "r1", "agent": "model", "delta": "39 F"}),
            json!({"type": "run_finished", "run_id": "r1", "status": "completed"}),
            json!({"type": "text_delta", "run_id": "r1", "agent": "model", "delta": " late"}),
            json!({"type": "user_message", "id": "m2", "author": "a", "text": "thanks"}),
            json!({"type": "user_message", "id": "m3", "author": "a", "text": "later"}),
        ]);
        let expected = json!([
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "4 C"},
            {"role": "user", "content": "in F"},
            {"role": "assistant", "content": "39 F"},
            {"role": "user", "content": "thanks"},
        ]);
        assert_eq!(Value::Array(t.history("m2", 10_000)), expected);
        assert!(t.history("unknown", 10_000).is_empty());
    }

    #[test]
    fn the_oldest_messages_are_left_out_beyond_the_bound() {
        let t = transcript(&[
            json!({"type": "user_message", "id": "m1", "author": "a", "text": "0123456789"}),
            json!({"type": "user_message", "id": "m2", "author": "a", "text": "abcde"}),
            json!({"type": "user_message", "id": "m3", "author": "a", "text": "this one is long"}),
        ]);
        let texts = |h: Vec<Value>| {
            h.iter()
                .map(|m| m["content"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(t.history("m2", 15)), ["0123456789", "abcde"]);
        assert_eq!(texts(t.history("m2", 14)), ["abcde"]);
        assert_eq!(
            texts(t.history("m3", 1)),
            ["this one is long"],
            "the message itself is always sent"
        );
    }
}
