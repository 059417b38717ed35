//! A run answered by an OpenAI-compatible model ([`crate::openai`]).
//!
//! - The model is sent the history rebuilt from the session
//!   ([`crate::history`]) and streams its answer; text and reasoning are
//!   written as `text_delta` / `reasoning_delta` events batched on
//!   [`AgentConfig::delta_window`] ([`crate::batch`]); complete tool calls
//!   as `tool_call` events. A model that asked for tool calls (the tools of
//!   `--tools`) is continued once a `tool_result` for each arrived —
//!   written by whoever runs the tools — with the calls and their results
//!   after the history; none within [`AgentConfig::tool_result_timeout`]:
//!   the run ends `failed`.
//! - `cancel`: the request is dropped at once (the provider sees the
//!   connection close), what was batched is written, and the run ends
//!   `cancelled`.
//! - `steer`: the request is dropped, what was batched is written,
//!   `steer_applied` is appended, and a new request continues the answer
//!   with the partial answer as an `assistant` message and the steer's text
//!   as a `user` message after the history (docs/agents.md, "Steering a
//!   model").
//! - A `429` is retried after its `Retry-After` (bounded) — it always comes
//!   before the request streamed anything, so nothing is written twice; any
//!   other error status, an error or break in the stream, and a stall end
//!   the run `failed` with the reason.

use std::time::Instant;

use durable_session_protocol::session::{RunStatus, SessionEvent};
use durable_sessions::native::Client;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::batch::{Batcher, Kind};
use crate::history::{assistant_message, tool_message};
use crate::openai::{ModelError, ModelStream, Piece, Provider};
use crate::runner::{AgentConfig, Budget, Outcome, append, cannot_write, sleep_until_some};
use crate::session::Control;

/// The session a run writes to.
pub(crate) struct RunTarget<'a> {
    pub client: &'a Client,
    pub path: &'a str,
    pub run_id: &'a str,
    pub agent: &'a str,
}

impl RunTarget<'_> {
    async fn write(&self, event: SessionEvent) -> Result<(), Outcome> {
        append(self.client, self.path, event)
            .await
            .map_err(|e| cannot_write(&e))
    }

    /// Writes a batch of text or reasoning.
    async fn write_batch(&self, batch: Option<(Kind, String)>) -> Result<(), Outcome> {
        let Some((kind, delta)) = batch else { return Ok(()) };
        let (run_id, agent) = (self.run_id.to_owned(), self.agent.to_owned());
        self.write(match kind {
            Kind::Text => SessionEvent::TextDelta { run_id, agent, delta },
            Kind::Reasoning => SessionEvent::ReasoningDelta { run_id, agent, delta },
        })
        .await
    }
}

/// The most bytes of a tool call's name and arguments (its `tool_call`
/// event must fit the server's frame limit, 1 MiB).
const MAX_TOOL_CALL_BYTES: usize = 256 * 1024;

/// Tool calls being streamed, by index.
#[derive(Default)]
struct ToolCalls(Vec<(u64, String, String, String)>);

impl ToolCalls {
    fn add(&mut self, index: u64, id: Option<String>, name: Option<String>, arguments: &str) {
        let i = match self.0.iter().position(|c| c.0 == index) {
            Some(i) => i,
            None => {
                self.0.push((index, String::new(), String::new(), String::new()));
                self.0.len() - 1
            }
        };
        let call = &mut self.0[i];
        if let Some(id) = id {
            call.1 = id;
        }
        if let Some(name) = name {
            call.2.push_str(&name);
        }
        call.3.push_str(arguments);
    }

    /// Why the calls cannot be written: one grew past
    /// [`MAX_TOOL_CALL_BYTES`].
    fn too_large(&self) -> Option<String> {
        let call = self.0.iter().find(|c| c.2.len() + c.3.len() > MAX_TOOL_CALL_BYTES)?;
        Some(format!(
            "the model's tool call {} is larger than {} KiB",
            call.2,
            MAX_TOOL_CALL_BYTES / 1024
        ))
    }

    /// Writes every call as a `tool_call` event; returns them.
    async fn write(self, target: &RunTarget<'_>) -> Result<Vec<Call>, Outcome> {
        let mut written = Vec::new();
        for (index, id, name, arguments) in self.0 {
            let call = Call {
                id: if id.is_empty() {
                    format!("{}-call-{index}", target.run_id)
                } else {
                    id
                },
                name,
                arguments,
            };
            target
                .write(SessionEvent::ToolCall {
                    run_id: target.run_id.into(),
                    agent: target.agent.into(),
                    call_id: call.id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                })
                .await?;
            written.push(call);
        }
        Ok(written)
    }
}

/// A complete tool call the model asked for.
struct Call {
    id: String,
    name: String,
    arguments: String,
}

/// What interrupts waiting for the provider.
enum Interrupt {
    Cancel(String),
    Steer(String),
    Stopped,
}

/// The next control event that interrupts a request (a tool result then is
/// for no call waiting: ignored).
async fn interrupt(control: &mut mpsc::UnboundedReceiver<Control>) -> Interrupt {
    loop {
        match control.recv().await {
            Some(Control::Cancel { by }) => return Interrupt::Cancel(by),
            Some(Control::Steer { text }) => return Interrupt::Steer(text),
            Some(Control::ToolResult { .. }) => {}
            None => return Interrupt::Stopped,
        }
    }
}

/// How a request ended.
enum Ended {
    /// The run is over.
    Run(Outcome),
    /// A steer: continue with a new request.
    Steered { partial: String, steer: String },
    /// The model asked for tool calls: continue once their results are in.
    ToolCalls { partial: String, calls: Vec<Call> },
}

/// Answers with the model: `history` ends with the message answered.
pub(crate) async fn model_run(
    target: &RunTarget<'_>,
    config: &AgentConfig,
    provider: &Provider,
    mut history: Vec<Value>,
    control: &mut mpsc::UnboundedReceiver<Control>,
    budget: &mut Budget,
) -> Outcome {
    loop {
        let stream = match open(provider, &history, control).await {
            Ok(stream) => stream,
            Err(Interrupt::Cancel(by)) => return cancelled(&by),
            Err(Interrupt::Steer(steer)) => {
                if let Err(outcome) = steer_applied(target, &steer).await {
                    return outcome;
                }
                history.push(json!({"role": "user", "content": steer}));
                continue;
            }
            Err(Interrupt::Stopped) => return stopped(),
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => return failed(&e.to_string(), provider),
        };
        match stream_answer(target, config, stream, control, budget).await {
            Ended::Run(outcome) => return outcome,
            Ended::Steered { partial, steer } => {
                if let Err(outcome) = steer_applied(target, &steer).await {
                    return outcome;
                }
                if !partial.is_empty() {
                    history.push(assistant_message(&partial, []));
                }
                history.push(json!({"role": "user", "content": steer}));
            }
            Ended::ToolCalls { partial, calls } => {
                let sent = calls
                    .iter()
                    .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()));
                history.push(assistant_message(&partial, sent));
                match tool_results(target, config, &calls, control).await {
                    Ok(messages) => history.extend(messages),
                    Err(outcome) => return outcome,
                }
            }
        }
    }
}

/// Waits for the result of every call (written by whoever runs the tools),
/// at most [`AgentConfig::tool_result_timeout`]; returns the `tool`
/// messages, and then a `user` message per steer applied meanwhile.
async fn tool_results(
    target: &RunTarget<'_>,
    config: &AgentConfig,
    calls: &[Call],
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<Vec<Value>, Outcome> {
    let deadline = tokio::time::Instant::now() + config.tool_result_timeout;
    let mut results: Vec<Option<Value>> = calls.iter().map(|_| None).collect();
    let mut steers = Vec::new();
    while let Some(waiting) = results.iter().position(Option::is_none) {
        let Ok(ctl) = tokio::time::timeout_at(deadline, control.recv()).await else {
            let call = &calls[waiting];
            let reason = format!(
                "no result for tool call {} ({}) within {} ms",
                call.id,
                call.name,
                config.tool_result_timeout.as_millis()
            );
            return Err((RunStatus::Failed, Some(reason)));
        };
        match ctl {
            Some(Control::ToolResult { call_id, output, error }) => {
                if let Some(i) = calls.iter().position(|c| c.id == call_id) {
                    results[i].get_or_insert_with(|| tool_message(&call_id, &output, error.as_deref()));
                }
            }
            Some(Control::Steer { text }) => {
                steer_applied(target, &text).await?;
                steers.push(json!({"role": "user", "content": text}));
            }
            Some(Control::Cancel { by }) => return Err(cancelled(&by)),
            None => return Err(stopped()),
        }
    }
    Ok(results.into_iter().flatten().chain(steers).collect())
}

fn cancelled(by: &str) -> Outcome {
    (RunStatus::Cancelled, Some(format!("cancelled by {by}")))
}

fn stopped() -> Outcome {
    (RunStatus::Failed, Some("the agent stopped".into()))
}

fn failed(reason: &str, provider: &Provider) -> Outcome {
    tracing::warn!(model = %provider.config().model_name, reason, "the model request failed");
    (RunStatus::Failed, Some(reason.to_owned()))
}

async fn steer_applied(target: &RunTarget<'_>, text: &str) -> Result<(), Outcome> {
    target
        .write(SessionEvent::SteerApplied {
            run_id: target.run_id.into(),
            text: text.into(),
        })
        .await
}

/// Starts a request, retrying a `429` as its `Retry-After` says (bounded).
/// A control event interrupts it at once (the request is dropped).
async fn open(
    provider: &Provider,
    history: &[Value],
    control: &mut mpsc::UnboundedReceiver<Control>,
) -> Result<Result<ModelStream, ModelError>, Interrupt> {
    let config = provider.config();
    let mut retries = 0;
    loop {
        let result = tokio::select! {
            biased;
            why = interrupt(control) => return Err(why),
            result = provider.start(history) => result,
        };
        let Err(ModelError::RateLimited { retry_after }) = result else {
            return Ok(result);
        };
        // No Retry-After: back off 0.5 s, 1 s, 2 s, …
        let wait = retry_after.unwrap_or(std::time::Duration::from_millis(500 << retries.min(6)));
        let error = if retries >= config.max_retries {
            format!("the model provider is rate limiting (429) after {retries} retries")
        } else if wait > config.max_retry_after {
            format!(
                "the model provider is rate limiting (429) and asks to retry after {} ms, more than the {} ms allowed (--model-max-retry-after-ms)",
                wait.as_millis(),
                config.max_retry_after.as_millis()
            )
        } else {
            String::new()
        };
        if !error.is_empty() {
            return Ok(Err(ModelError::GaveUp(error)));
        }
        retries += 1;
        tracing::info!(
            retry = retries,
            wait_ms = wait.as_millis() as u64,
            "the model provider is rate limiting: retrying"
        );
        tokio::select! {
            biased;
            why = interrupt(control) => return Err(why),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Streams one request's answer into the session until it ends, fails, is
/// cancelled or steered, or the run's budget runs out.
async fn stream_answer(
    target: &RunTarget<'_>,
    config: &AgentConfig,
    mut stream: ModelStream,
    control: &mut mpsc::UnboundedReceiver<Control>,
    budget: &mut Budget,
) -> Ended {
    let mut batcher = Batcher::new(config.delta_window);
    let mut partial = String::new();
    let mut calls = ToolCalls::default();
    // What ends the request; the stream is dropped (closing the request)
    // before anything else is written.
    let ended = loop {
        tokio::select! {
            biased;
            why = interrupt(control) => break match why {
                Interrupt::Cancel(by) => Ended::Run(cancelled(&by)),
                Interrupt::Steer(steer) => Ended::Steered { partial: std::mem::take(&mut partial), steer },
                Interrupt::Stopped => Ended::Run(stopped()),
            },
            () = sleep_until_some(batcher.due()) => {
                if let Err(outcome) = target.write_batch(batcher.take()).await {
                    break Ended::Run(outcome);
                }
            }
            next = stream.next() => match next {
                None => break Ended::Run((RunStatus::Completed, None)),
                Some(Err(e)) => break Ended::Run((RunStatus::Failed, Some(e.to_string()))),
                Some(Ok(pieces)) => {
                    let now = Instant::now();
                    let mut ready = Vec::new();
                    for piece in pieces {
                        match piece {
                            Piece::Text(t) => {
                                budget.token();
                                partial.push_str(&t);
                                ready.extend(batcher.push(Kind::Text, &t, now));
                            }
                            Piece::Reasoning(r) => {
                                budget.token();
                                ready.extend(batcher.push(Kind::Reasoning, &r, now));
                            }
                            Piece::ToolCall { index, id, name, arguments } => {
                                budget.token();
                                calls.add(index, id, name, &arguments);
                            }
                        }
                    }
                    ready.extend(batcher.full().then(|| batcher.take()).flatten());
                    for batch in ready {
                        if let Err(outcome) = target.write_batch(Some(batch)).await {
                            return Ended::Run(outcome);
                        }
                    }
                    if let Some(reason) = budget.exceeded().or_else(|| calls.too_large()) {
                        break Ended::Run((RunStatus::Failed, Some(reason)));
                    }
                }
            },
        }
    };
    drop(stream);
    if let Err(outcome) = target.write_batch(batcher.take()).await {
        return Ended::Run(outcome);
    }
    // Tool calls of a complete answer only (a cut one's may be partial);
    // the run goes on once their results are in.
    if matches!(ended, Ended::Run((RunStatus::Completed, _))) {
        match calls.write(target).await {
            Ok(calls) if calls.is_empty() => {}
            Ok(calls) => return Ended::ToolCalls { partial, calls },
            Err(outcome) => return Ended::Run(outcome),
        }
    }
    if let Ended::Run((RunStatus::Failed, Some(reason))) = &ended {
        tracing::warn!(path = %target.path, run_id = %target.run_id, reason, "the model stream ended the run");
    }
    ended
}
