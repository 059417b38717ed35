//! The agent with an OpenAI-compatible model (`--model openai-compatible`)
//! against a real server on loopback.
//!
//! The model provider cannot be reached from here (no network, no model):
//! a small OpenAI-compatible Chat Completions server written in this file,
//! on 127.0.0.1, stands in for it. It answers each request as the test
//! scripts it — an error status, a complete SSE stream, or a stream the
//! test writes chunk by chunk — records what it was sent, and observes when
//! the agent closes a request (its response body is dropped).

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
mod common;

use common::{BOUND, RunningAgent, Tab, finish_of, run_of};
use durable_session_agent::AgentConfig;
use durable_session_agent::openai::OpenAiConfig;
use durable_session_protocol::session::{RunStatus, SessionEvent};
use durable_session_server::Server;
use durable_session_server::config::ServerConfig;
use durable_sessions::core::chat::ChatView;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

// ---------------------------------------------------------------------------
// The stand-in for the model provider.

/// What the stand-in answers to one request.
enum Reply {
    /// An error status (with a `Retry-After` header when given) and a body.
    Status {
        status: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
    /// A complete stream: a `data:` event per chunk, then `data: [DONE]`.
    Chunks(Vec<Value>),
    /// A stream the test writes: every string is sent as it is, when it is.
    Live(mpsc::UnboundedReceiver<String>),
}

/// What the stand-in was sent.
#[derive(Debug, Clone)]
struct Request {
    authorization: Option<String>,
    body: Value,
}

#[derive(Default)]
struct ProviderState {
    replies: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<Request>>,
    /// The requests whose response body was dropped: finished, or closed by
    /// the client.
    closed: watch::Sender<BTreeSet<usize>>,
}

/// Sets request `.0`'s mark in `closed` when the response body is dropped.
struct ClosedGuard(usize, Arc<ProviderState>);

impl Drop for ClosedGuard {
    fn drop(&mut self) {
        self.1.closed.send_modify(|closed| {
            closed.insert(self.0);
        });
    }
}

struct FakeProvider {
    base_url: String,
    state: Arc<ProviderState>,
}

impl FakeProvider {
    async fn start() -> Self {
        let state = Arc::new(ProviderState::default());
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(chat_completions))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, state }
    }

    fn reply(&self, reply: Reply) {
        self.state.replies.lock().unwrap().push_back(reply);
    }

    /// A live stream for the next request; the sender writes it.
    fn live(&self) -> mpsc::UnboundedSender<String> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.reply(Reply::Live(rx));
        tx
    }

    fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Waits until the response to request `i` (0-based) was dropped.
    async fn wait_closed(&self, i: usize) {
        let mut closed = self.state.closed.subscribe();
        let seen = tokio::time::timeout(BOUND, closed.wait_for(|c| c.contains(&i))).await;
        assert!(matches!(seen, Ok(Ok(_))), "request {i} was never closed");
    }
}

async fn chat_completions(State(state): State<Arc<ProviderState>>, headers: HeaderMap, body: Bytes) -> Response {
    let request = Request {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let index = {
        let mut requests = state.requests.lock().unwrap();
        requests.push(request);
        requests.len() - 1
    };
    let reply = state.replies.lock().unwrap().pop_front();
    let sse = |body: Body| {
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    };
    match reply {
        None => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from("the test scripted no reply"))
            .unwrap(),
        Some(Reply::Status {
            status,
            retry_after,
            body,
        }) => {
            let mut response = Response::builder().status(status);
            if let Some(after) = retry_after {
                response = response.header("retry-after", after);
            }
            response.body(Body::from(body)).unwrap()
        }
        Some(Reply::Chunks(chunks)) => {
            let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
            text.push_str("data: [DONE]\n\n");
            sse(Body::from(text))
        }
        Some(Reply::Live(rx)) => {
            let guard = ClosedGuard(index, state.clone());
            let stream = futures_util::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Bytes::from(chunk)), (rx, guard)))
            });
            sse(Body::from_stream(stream))
        }
    }
}

/// A chunk with `delta`.
fn chunk(delta: Value) -> Value {
    json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
}

/// A chunk of answer text.
fn token(text: &str) -> Value {
    chunk(json!({"content": text}))
}

/// A chunk of answer text as the live stream sends it.
fn sse_token(text: &str) -> String {
    format!("data: {}\n\n", token(text))
}

// ---------------------------------------------------------------------------
// The server, the agent and a tab.

struct World {
    ws_url: String,
    base: String,
    provider: FakeProvider,
    _dir: tempfile::TempDir,
    _server_stop: oneshot::Sender<()>,
    agent: Option<RunningAgent>,
}

impl World {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server, a stand-in provider, and an agent configured by `tune`.
    async fn start_with(tune: impl FnOnce(&mut AgentConfig)) -> Self {
        let mut world = Self::without_agent().await;
        world.start_agent(tune);
        world
    }

    /// A server and a stand-in provider.
    async fn without_agent() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::open(dir.path(), ServerConfig::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            ws_url: format!("ws://{addr}/v1/ws"),
            base: format!("http://{addr}"),
            provider: FakeProvider::start().await,
            _dir: dir,
            _server_stop: stop,
            agent: None,
        }
    }

    fn start_agent(&mut self, tune: impl FnOnce(&mut AgentConfig)) {
        let mut config = AgentConfig::new(&self.ws_url);
        config.name = "model".into();
        let mut model = OpenAiConfig::new(&self.provider.base_url, "test-model");
        model.stall_timeout = Duration::from_secs(20);
        model.api_key = Some("sk-test".into());
        config.model = Some(model);
        tune(&mut config);
        self.agent = Some(RunningAgent::start(config));
    }

    async fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop().await;
        }
    }

    /// A tab on a new connection to this world's server.
    async fn tab(&self, session: &str) -> Tab {
        Tab::open_at(&self.ws_url, session).await
    }
}

/// The text deltas of `run`.
fn deltas<'a>(events: &'a [SessionEvent], run: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::TextDelta { run_id, delta, .. } if run_id == run => Some(delta.as_str()),
            _ => None,
        })
        .collect()
}

/// The `messages` of a request, as (role, content) pairs.
fn messages(request: &Request) -> Vec<(String, String)> {
    request.body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_owned(),
                m["content"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(r, c)| (r.to_string(), c.to_string())).collect()
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_lands_with_fewer_events_than_tokens() {
    const TOKENS: usize = 200;
    let world = World::start().await;
    let words: Vec<String> = (0..TOKENS).map(|i| format!(" w{i}")).collect();
    world
        .provider
        .reply(Reply::Chunks(words.iter().map(|w| token(w)).collect()));
    let mut tab = world.tab("stream").await;
    tab.ask("m1", "count for me").await;
    let run = tab.until_finished("m1").await;

    assert_eq!(finish_of(&tab.events, &run), Some((RunStatus::Completed, None)));
    let at_once = deltas(&tab.events, &run);
    assert_eq!(at_once.concat(), words.concat(), "the whole answer, in order");
    assert!(
        at_once.len() < TOKENS,
        "{} text_delta events for {TOKENS} tokens",
        at_once.len()
    );
    let requests = world.provider.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body["model"], "test-model");
    assert_eq!(requests[0].body["stream"], true);
    assert_eq!(requests[0].authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(messages(&requests[0]), pairs(&[("user", "count for me")]));
    let at_once = at_once.len();

    // A model streaming a token every 2 ms: a batch per 30 ms window.
    let stream = world.provider.live();
    tab.ask("m2", "count slowly").await;
    let run = tab.until_started("m2").await;
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    for w in &words {
        pace.tick().await;
        stream.send(sse_token(w)).unwrap();
    }
    stream.send("data: [DONE]\n\n".into()).unwrap();
    tab.until_finished("m2").await;
    let paced = deltas(&tab.events, &run);
    assert_eq!(paced.concat(), words.concat());
    assert!(
        paced.len() < TOKENS / 2,
        "{} text_delta events for {TOKENS} tokens",
        paced.len()
    );
    println!(
        "{TOKENS} tokens landed as {at_once} text_delta event(s) streamed at once, as {} streamed one per 2 ms (30 ms window)",
        paced.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_closes_the_upstream_request_within_one_chunk() {
    let world = World::start().await;
    let stream = world.provider.live();
    let mut tab = world.tab("cancel").await;
    tab.ask("m1", "write a long essay").await;
    let run = tab.until_started("m1").await;
    for w in ["Once", " upon", " a time"] {
        stream.send(sse_token(w)).unwrap();
    }
    tab.until("the first tokens", |e| deltas(e, &run).concat() == "Once upon a time")
        .await;
    tab.write(SessionEvent::Cancel {
        run_id: run.clone(),
        by: "tester".into(),
    })
    .await;
    tab.until("the run's end", |e| finish_of(e, &run).is_some()).await;
    // At most one more chunk: the request is closed, the provider sees it.
    let _ = stream.send(sse_token(" there was"));
    world.provider.wait_closed(0).await;
    assert!(
        stream.send(sse_token(" more")).is_err(),
        "the provider's response stream is gone"
    );
    assert_eq!(
        finish_of(&tab.events, &run),
        Some((RunStatus::Cancelled, Some("cancelled by tester".into())))
    );
    assert_eq!(deltas(&tab.events, &run).concat(), "Once upon a time");
    assert_eq!(world.provider.requests().len(), 1, "no request after the cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steer_continues_from_the_partial_answer_and_a_restarted_agent_sends_the_same_history() {
    let mut world = World::start().await;
    let first = world.provider.live();
    world
        .provider
        .reply(Reply::Chunks(vec![token("Boats"), token(" float.")]));
    let mut tab = world.tab("steer").await;
    tab.ask("m1", "tell me about trains").await;
    let run = tab.until_started("m1").await;
    for w in ["Trains", " are", " fast"] {
        first.send(sse_token(w)).unwrap();
    }
    tab.until("the first tokens", |e| deltas(e, &run).concat() == "Trains are fast")
        .await;
    tab.write(SessionEvent::Steer {
        run_id: run.clone(),
        text: "talk about boats instead".into(),
        by: "tester".into(),
    })
    .await;
    tab.until_finished("m1").await;
    world.provider.wait_closed(0).await; // the first request was dropped

    assert_eq!(finish_of(&tab.events, &run), Some((RunStatus::Completed, None)));
    assert_eq!(deltas(&tab.events, &run).concat(), "Trains are fastBoats float.");
    let applied = tab
        .events
        .iter()
        .position(|e| matches!(e, SessionEvent::SteerApplied { text, .. } if text == "talk about boats instead"))
        .expect("steer_applied");
    let boats = tab
        .events
        .iter()
        .position(|e| matches!(e, SessionEvent::TextDelta { delta, .. } if delta.contains("Boats")))
        .unwrap();
    assert!(applied < boats, "the steer is applied before the text that follows it");
    let requests = world.provider.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        messages(&requests[1]),
        pairs(&[
            ("user", "tell me about trains"),
            ("assistant", "Trains are fast"),
            ("user", "talk about boats instead"),
        ]),
        "the continuation is sent the partial answer and the steer"
    );

    // Another agent process (the first stopped) answers the next message
    // with the history rebuilt from the log alone.
    world.stop_agent().await;
    world.provider.reply(Reply::Chunks(vec![token("Yes.")]));
    world.start_agent(|_| {});
    tab.ask("m2", "and ships?").await;
    tab.until_finished("m2").await;
    let requests = world.provider.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(
        messages(&requests[2]),
        pairs(&[
            ("user", "tell me about trains"),
            ("assistant", "Trains are fast"),
            ("user", "talk about boats instead"),
            ("assistant", "Boats float."),
            ("user", "and ships?"),
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_429s_and_stalls_end_as_documented() {
    let world = World::start_with(|config| {
        let model = config.model.as_mut().unwrap();
        model.max_retries = 2;
        model.max_retry_after = Duration::from_secs(5);
        model.stall_timeout = Duration::from_millis(500);
    })
    .await;
    let provider = &world.provider;
    let mut tab = world.tab("errors").await;
    let mut asked = 0;
    let mut ask = async |tab: &mut Tab, what: &str| {
        asked += 1;
        let id = format!("m{asked}");
        tab.ask(&id, what).await;
        let run = tab.until_finished(&id).await;
        finish_of(&tab.events, &run).unwrap()
    };

    // A 500 fails the run with the status and the provider's words.
    provider.reply(Reply::Status {
        status: 500,
        retry_after: None,
        body: r#"{"error":{"message":"the GPU caught fire"}}"#,
    });
    let (status, reason) = ask(&mut tab, "one").await;
    assert_eq!(status, RunStatus::Failed);
    let reason = reason.unwrap();
    assert!(
        reason.contains("500") && reason.contains("the GPU caught fire"),
        "{reason}"
    );
    assert_eq!(provider.requests().len(), 1, "a 500 is not retried");

    // A 429, then success: retried after its Retry-After.
    provider.reply(Reply::Status {
        status: 429,
        retry_after: Some("0"),
        body: "slow down",
    });
    provider.reply(Reply::Chunks(vec![token("fine")]));
    assert_eq!(ask(&mut tab, "two").await, (RunStatus::Completed, None));
    assert_eq!(provider.requests().len(), 3);

    // 429 for ever: the retries run out.
    for _ in 0..3 {
        provider.reply(Reply::Status {
            status: 429,
            retry_after: Some("0"),
            body: "slow down",
        });
    }
    let (status, reason) = ask(&mut tab, "three").await;
    assert_eq!(status, RunStatus::Failed);
    let reason = reason.unwrap();
    assert!(reason.contains("429") && reason.contains("after 2 retries"), "{reason}");
    assert_eq!(provider.requests().len(), 6, "the first try and two retries");

    // A Retry-After longer than allowed: no wait, no retry.
    provider.reply(Reply::Status {
        status: 429,
        retry_after: Some("3600"),
        body: "come back in an hour",
    });
    let (status, reason) = ask(&mut tab, "four").await;
    assert_eq!(status, RunStatus::Failed);
    assert!(reason.unwrap().contains("--model-max-retry-after-ms"));
    assert_eq!(provider.requests().len(), 7);

    // A stream that stops sending: failed once the stall timeout passed,
    // with what was written before kept.
    let stalled = provider.live();
    stalled.send(sse_token("Half an")).unwrap();
    let (status, reason) = ask(&mut tab, "five").await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(reason.as_deref(), Some("the model sent nothing for 500 ms"));
    let run = run_of(&tab.events, "m5").unwrap();
    assert_eq!(deltas(&tab.events, &run).concat(), "Half an");
    provider.wait_closed(7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_and_tool_calls_become_events_and_the_run_goes_on_with_the_results() {
    let weather = json!({"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}});
    let tools = weather.clone();
    let world = World::start_with(move |config| {
        config.model.as_mut().unwrap().tools = vec![tools];
        config.tool_result_timeout = Duration::from_secs(1);
    })
    .await;
    world.provider.reply(Reply::Chunks(vec![
        chunk(json!({"role": "assistant", "reasoning_content": "The user wants "})),
        chunk(json!({"reasoning_content": "the weather."})),
        chunk(json!({"content": "Let me check."})),
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"ci"}}]})),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "ty\":\"Oslo\"}"}}]})),
        json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    ]));
    world.provider.reply(Reply::Chunks(vec![
        chunk(json!({"reasoning": "Easy."})),
        token("It is 4 °C."),
    ]));
    let mut tab = world.tab("tools").await;
    tab.ask("m1", "weather in Oslo?").await;
    let run = tab.until_started("m1").await;
    tab.until("the tool call", |e| {
        e.iter().any(|e| matches!(e, SessionEvent::ToolCall { .. }))
    })
    .await;
    let calls: Vec<&SessionEvent> = tab
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::ToolCall { .. }))
        .collect();
    assert_eq!(
        calls,
        [&SessionEvent::ToolCall {
            run_id: run.clone(),
            agent: "model".into(),
            call_id: "call_1".into(),
            name: "weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        }]
    );
    assert_eq!(world.provider.requests()[0].body["tools"], json!([weather]));
    // Whoever runs the tool writes its result; the run goes on with it.
    tab.write(SessionEvent::ToolResult {
        run_id: run.clone(),
        call_id: "call_1".into(),
        output: "4 °C".into(),
        error: None,
    })
    .await;
    tab.until_finished("m1").await;
    assert_eq!(finish_of(&tab.events, &run), Some((RunStatus::Completed, None)));
    let reasoning: String = tab
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::ReasoningDelta { delta, agent, .. } if agent == "model" => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasoning, "The user wants the weather.Easy.");
    assert_eq!(deltas(&tab.events, &run).concat(), "Let me check.It is 4 °C.");
    let with_results = json!([
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 °C"},
    ]);
    assert_eq!(world.provider.requests()[1].body["messages"], with_results);

    // The SDK's chat view folds it all into the run.
    let mut view = ChatView::default();
    for raw in &tab.raw {
        view.apply_json(raw);
    }
    let folded = view.run(&run).unwrap();
    assert_eq!(folded.reasoning, "The user wants the weather.Easy.");
    assert_eq!(folded.text, "Let me check.It is 4 °C.");
    assert_eq!(folded.tool_calls.len(), 1);
    assert_eq!(folded.tool_calls[0].output.as_deref(), Some("4 °C"));

    // The next question's history, rebuilt from the log, has the same.
    world.provider.reply(Reply::Chunks(vec![token("You are welcome.")]));
    tab.ask("m2", "thanks").await;
    tab.until_finished("m2").await;
    let mut expected = with_results.as_array().unwrap().clone();
    expected.push(json!({"role": "assistant", "content": "It is 4 °C."}));
    expected.push(json!({"role": "user", "content": "thanks"}));
    assert_eq!(world.provider.requests()[2].body["messages"], Value::Array(expected));

    // No result within the bound: the run fails, naming the call.
    world.provider.reply(Reply::Chunks(vec![
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]})),
    ]));
    tab.ask("m3", "and tomorrow?").await;
    let run = tab.until_finished("m3").await;
    assert_eq!(
        finish_of(&tab.events, &run),
        Some((
            RunStatus::Failed,
            Some("no result for tool call call_2 (weather) within 1000 ms".into())
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_over_their_budget_end_failed() {
    let world = World::start_with(|config| {
        config.max_run_tokens = Some(5);
        config.max_run_time = Some(Duration::from_millis(500));
    })
    .await;
    let mut tab = world.tab("budget").await;
    world
        .provider
        .reply(Reply::Chunks((0..50).map(|i| token(&format!(" t{i}"))).collect()));
    tab.ask("m1", "go on and on").await;
    let run = tab.until_finished("m1").await;
    assert_eq!(
        finish_of(&tab.events, &run),
        Some((
            RunStatus::Failed,
            Some("the run exceeded its budget of 5 tokens (--max-run-tokens)".into())
        ))
    );
    assert!(deltas(&tab.events, &run).concat().split_whitespace().count() <= 6);

    // A model that sends nothing (within its stall timeout) for longer than
    // the run may last.
    let _silent = world.provider.live();
    tab.ask("m2", "think hard").await;
    let run = tab.until_finished("m2").await;
    assert_eq!(
        finish_of(&tab.events, &run),
        Some((
            RunStatus::Failed,
            Some("the run exceeded its budget of 0.5 s (--max-run-seconds)".into())
        ))
    );
    world.provider.wait_closed(1).await;
}

/// The real binary: the key is sent to the provider and appears nowhere in
/// the agent's output, at the most verbose log level, nor in the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_sent_and_never_logged() {
    const KEY: &str = "sk-this-is-a-secret-0123456789";
    let world = World::without_agent().await;
    world.provider.reply(Reply::Chunks(vec![token("Hello")]));
    // A provider that echoes the key in an error.
    world.provider.reply(Reply::Status {
        status: 401,
        retry_after: None,
        body: "invalid key: sk-this-is-a-secret-0123456789",
    });
    let mut agent = Command::new(env!("CARGO_BIN_EXE_durable-session-agent"))
        .args([
            "--server",
            &world.base,
            "--name",
            "model",
            "--model",
            "openai-compatible",
        ])
        .args(["--base-url", &world.provider.base_url, "--model-name", "test-model"])
        .args(["--api-key-env", "DS_TEST_MODEL_KEY", "--log-format", "json"])
        .env("DS_TEST_MODEL_KEY", KEY)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    // Read while it runs (a full pipe would stop it).
    let readers = [
        read_all(agent.stdout.take().unwrap()),
        read_all(agent.stderr.take().unwrap()),
    ];
    let mut tab = world.tab("key").await;
    tab.ask("m1", "hi").await;
    let run = tab.until_finished("m1").await;
    assert_eq!(finish_of(&tab.events, &run), Some((RunStatus::Completed, None)));
    assert_eq!(deltas(&tab.events, &run).concat(), "Hello");
    // A failed request logs its reason and writes it into the session:
    // without the key.
    tab.ask("m2", "again").await;
    let run = tab.until_finished("m2").await;
    assert_eq!(
        finish_of(&tab.events, &run),
        Some((
            RunStatus::Failed,
            Some("the model provider answered 401: invalid key: <the API key>".into())
        ))
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
    let output: String = readers.into_iter().map(|r| r.join().unwrap()).collect();

    let requests = world.provider.requests();
    assert_eq!(
        requests[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(output.contains("test-model"), "the log is there: {output}");
    assert!(!output.contains(KEY), "the key is in the agent's output");
    assert!(
        !output.contains("0123456789"),
        "part of the key is in the agent's output"
    );
    let json_lines = output.lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines > 0, "JSON log lines");
}
