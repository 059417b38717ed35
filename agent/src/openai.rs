//! An OpenAI-compatible model provider (OpenAI, vLLM, Ollama, llama.cpp's
//! server): streaming Chat Completions over server-sent events.
//!
//! [`Provider::start`] sends `POST {base_url}/chat/completions` with
//! `"stream": true` and checks the status; [`ModelStream::next`] reads the
//! answer chunk by chunk. Dropping a [`ModelStream`] (or the future of
//! `start`) closes the HTTP request at once: that is how a `cancel` stops
//! the provider, and its bill.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

/// How to reach the provider.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The API's base URL, up to the version: `https://api.openai.com/v1`,
    /// `http://127.0.0.1:11434/v1` (Ollama), `http://127.0.0.1:8000/v1`
    /// (vLLM).
    pub base_url: String,
    /// The `model` of each request.
    pub model_name: String,
    /// Sent as `Authorization: Bearer …` when set. Never logged, never
    /// printed by `Debug`.
    pub api_key: Option<String>,
    /// A stream on which nothing arrives for this long (the response
    /// headers, or the next chunk) has stalled: the run fails.
    pub stall_timeout: Duration,
    /// How many times a `429 Too Many Requests` is retried.
    pub max_retries: u32,
    /// The longest `Retry-After` honoured: a provider asking for more makes
    /// the run fail at once.
    pub max_retry_after: Duration,
    /// The tools offered to the model (`tools` of each request: Chat
    /// Completions tool definitions); none when empty.
    pub tools: Vec<Value>,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &self.base_url)
            .field("model_name", &self.model_name)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("stall_timeout", &self.stall_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_retry_after", &self.max_retry_after)
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl OpenAiConfig {
    /// A provider at `base_url` serving `model_name`, without a key; stalls
    /// after 30 s, three retries of a 429 of at most 30 s each.
    ///
    /// ```
    /// use durable_session_agent::openai::OpenAiConfig;
    /// let mut c = OpenAiConfig::new("http://127.0.0.1:11434/v1", "llama3.2");
    /// c.api_key = Some("sk-secret".into());
    /// assert!(!format!("{c:?}").contains("sk-secret"));
    /// ```
    pub fn new(base_url: impl Into<String>, model_name: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model_name: model_name.into(),
            api_key: None,
            stall_timeout: Duration::from_secs(30),
            max_retries: 3,
            max_retry_after: Duration::from_secs(30),
            tools: Vec::new(),
        }
    }
}

/// Why a request to the provider failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// `429 Too Many Requests`, with its `Retry-After` if it had one (in
    /// seconds). Nothing was streamed: retrying is safe.
    RateLimited { retry_after: Option<Duration> },
    /// Another error status, with the start of the body.
    Status { status: u16, body: String },
    /// Nothing arrived for the stall timeout.
    Stalled(Duration),
    /// The connection failed or broke.
    Transport(String),
    /// The provider sent an error in the stream, or a chunk that is not
    /// one.
    Provider(String),
    /// Retrying (a 429) would take more tries or longer than allowed.
    GaveUp(String),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RateLimited { .. } => f.write_str("the model provider is rate limiting (429 Too Many Requests)"),
            Self::Status { status, body } => write!(f, "the model provider answered {status}: {body}"),
            Self::Stalled(after) => write!(f, "the model sent nothing for {} ms", after.as_millis()),
            Self::Transport(e) => write!(f, "the connection to the model provider failed: {e}"),
            Self::Provider(e) => write!(f, "the model provider sent an error: {e}"),
            Self::GaveUp(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ModelError {}

/// One piece of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Answer text (`delta.content`).
    Text(String),
    /// Reasoning text (`delta.reasoning_content`, or `delta.reasoning`).
    Reasoning(String),
    /// A fragment of tool call number `index` (`delta.tool_calls[]`): the
    /// first carries its id and name, the arguments come in pieces.
    ToolCall {
        index: u64,
        id: Option<String>,
        name: Option<String>,
        arguments: String,
    },
}

/// The pieces of one Chat Completions chunk (its first choice).
///
/// ```
/// use durable_session_agent::openai::{Piece, pieces};
/// let chunk = r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}]}"#;
/// assert_eq!(pieces(chunk).unwrap(), [Piece::Text("Hi".into())]);
/// assert!(pieces(r#"{"error":{"message":"overloaded"}}"#).is_err());
/// ```
pub fn pieces(data: &str) -> Result<Vec<Piece>, ModelError> {
    let chunk: Value =
        serde_json::from_str(data).map_err(|e| ModelError::Provider(format!("a chunk that is not JSON: {e}")))?;
    if let Some(error) = chunk.get("error") {
        let message = error["message"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        return Err(ModelError::Provider(message));
    }
    let mut out = Vec::new();
    let Some(delta) = chunk["choices"].get(0).map(|c| &c["delta"]) else {
        return Ok(out); // e.g. a final usage chunk
    };
    let text = |key: &str| delta[key].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    if let Some(r) = text("reasoning_content").or_else(|| text("reasoning")) {
        out.push(Piece::Reasoning(r));
    }
    if let Some(t) = text("content") {
        out.push(Piece::Text(t));
    }
    for (i, call) in delta["tool_calls"].as_array().into_iter().flatten().enumerate() {
        out.push(Piece::ToolCall {
            index: call["index"].as_u64().unwrap_or(i as u64),
            id: call["id"].as_str().map(str::to_owned),
            name: call["function"]["name"].as_str().map(str::to_owned),
            arguments: call["function"]["arguments"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

/// The longest error body kept for a run's `reason`.
const ERROR_BODY_CHARS: usize = 300;

/// A connection to a provider.
#[derive(Debug, Clone)]
pub struct Provider {
    http: reqwest::Client,
    config: OpenAiConfig,
}

type SseStream = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// A streaming answer. Dropping it closes the request.
pub struct ModelStream {
    events: SseStream,
    stall: Duration,
    done: bool,
}

impl Provider {
    /// A provider with its HTTP client.
    pub fn new(config: OpenAiConfig) -> Result<Self, ModelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.stall_timeout)
            .build()
            .map_err(|e| ModelError::Transport(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// The configuration.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// Starts a streamed completion of `messages`; an error status is an
    /// error (a 429 one that may be retried).
    pub async fn start(&self, messages: &[Value]) -> Result<ModelStream, ModelError> {
        let url = format!("{}/chat/completions", self.config.base_url.trim_end_matches('/'));
        let mut body = json!({"model": self.config.model_name, "messages": messages, "stream": true});
        if !self.config.tools.is_empty() {
            body["tools"] = Value::Array(self.config.tools.clone());
        }
        let mut request = self.http.post(url).json(&body);
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key); // marked sensitive: never in logs
        }
        let stall = self.config.stall_timeout;
        let response = tokio::time::timeout(stall, request.send())
            .await
            .map_err(|_| ModelError::Stalled(stall))?
            .map_err(|e| ModelError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            return Err(ModelError::RateLimited { retry_after });
        }
        if !status.is_success() {
            return Err(ModelError::Status {
                status: status.as_u16(),
                body: error_body(response, stall, self.config.api_key.as_deref()).await,
            });
        }
        Ok(ModelStream {
            events: Box::pin(response.bytes_stream().eventsource()),
            stall,
            done: false,
        })
    }
}

/// The start of an error response's body (bounded, read for at most the
/// stall timeout), without the API key should the provider echo it.
async fn error_body(mut response: reqwest::Response, stall: Duration, key: Option<&str>) -> String {
    let mut bytes = Vec::new();
    let read = async {
        while bytes.len() < ERROR_BODY_CHARS * 4 {
            match response.chunk().await {
                Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(stall, read).await;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        text = text.replace(key, "<the API key>");
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    text.chars().take(ERROR_BODY_CHARS).collect()
}

impl ModelStream {
    /// The pieces of the next chunk; `None` once the answer is complete
    /// (`data: [DONE]`, or the end of the response).
    pub async fn next(&mut self) -> Option<Result<Vec<Piece>, ModelError>> {
        loop {
            if self.done {
                return None;
            }
            let event = match tokio::time::timeout(self.stall, self.events.next()).await {
                Err(_) => return Some(Err(ModelError::Stalled(self.stall))),
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some(Err(ModelError::Transport(e.to_string()))),
                Ok(Some(Ok(event))) => event,
            };
            if event.data.trim() == "[DONE]" {
                self.done = true;
                return None;
            }
            if event.data.trim().is_empty() {
                continue;
            }
            return Some(pieces(&event.data));
        }
    }
}
