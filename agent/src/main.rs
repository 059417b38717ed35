//! `durable-session-agent`: the demo agents (simulated LLM, orchestrator and
//! sub-agents, or an OpenAI-compatible model) as an ordinary client of a
//! durable-session server.

use std::time::Duration;

use clap::Parser;
use durable_session_agent::openai::OpenAiConfig;
use durable_session_agent::{AgentConfig, run};
use tracing_subscriber::EnvFilter;

/// Demo agents for durable sessions: answer every user message in every
/// session with a simulated, deterministic model (no network, no model
/// download), or with an OpenAI-compatible model (`--model
/// openai-compatible`). Honour `cancel` and `steer` events.
#[derive(Parser, Debug)]
#[command(name = "durable-session-agent", version)]
struct Args {
    /// The server to join: its HTTP base URL or its WebSocket URL. Give the
    /// nodes of a cluster (servers on one Redis) by repeating the flag or
    /// separating them with commas: the agents connect to the first and,
    /// when a connection fails or drops, go on through the next, round and
    /// round, resuming where they were (no event lost or written twice).
    #[arg(
        long,
        default_value = "http://127.0.0.1:4437",
        value_name = "URL",
        value_delimiter = ',',
        num_args = 1
    )]
    server: Vec<String>,

    /// Tokens per second written by each agent (the simulated model).
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    tokens_per_second: f64,

    /// Tokens in one answer of the simulated model (in multi-agent mode each of the three sub-agents writes a third).
    #[arg(long, default_value_t = 240, value_name = "N")]
    answer_tokens: usize,

    /// Name the single agent writes under.
    #[arg(long, default_value = "sim", value_name = "NAME")]
    name: String,

    /// A file holding the access token (for a server with --auth jwt). It is
    /// read again whenever a fresh token is needed, so whatever renews the
    /// file renews the agent's token. The token needs read and agent on
    /// sessions/* and read on _index/sessions (docs/security.md).
    #[arg(long, value_name = "PATH", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,

    /// A run under this agent's name that this process is not running and
    /// on which nothing was written for this long is closed as failed: its
    /// agent stopped (a crash, or a restart). Keep it well above the longest
    /// pause between two tokens.
    #[arg(long, default_value_t = durable_session_agent::runner::DEFAULT_ORPHAN_AFTER.as_millis() as u64, value_name = "MS")]
    orphan_after_ms: u64,

    /// The access token itself (prefer --token-file: an environment
    /// variable cannot be renewed while the agent runs).
    #[arg(long, env = "DURABLE_SESSION_TOKEN", hide_env_values = true, value_name = "JWT")]
    token: Option<String>,

    /// The model that answers: `simulated` (offline, deterministic) or
    /// `openai-compatible` (streaming Chat Completions: OpenAI, vLLM,
    /// Ollama, llama.cpp's server; needs --base-url and --model-name).
    #[arg(long, value_enum, default_value_t = ModelKind::Simulated)]
    model: ModelKind,

    /// The OpenAI-compatible API's base URL, up to the version (the agent
    /// posts to `{URL}/chat/completions`), e.g. `http://127.0.0.1:11434/v1`
    /// for Ollama.
    #[arg(long, value_name = "URL", required_if_eq("model", "openai-compatible"))]
    base_url: Option<String>,

    /// The model's name, sent as `model` (e.g. `llama3.2`).
    #[arg(long, value_name = "NAME", required_if_eq("model", "openai-compatible"))]
    model_name: Option<String>,

    /// The environment variable holding the provider's API key, sent as
    /// `Authorization: Bearer`; unset or empty: no key (local servers need
    /// none). The key is never logged.
    #[arg(long, default_value = "OPENAI_API_KEY", value_name = "VAR")]
    api_key_env: String,

    /// A model's streamed pieces are gathered this long and written as one
    /// `text_delta` / `reasoning_delta` event (fewer events than tokens).
    #[arg(long, default_value_t = durable_session_agent::runner::DEFAULT_DELTA_WINDOW.as_millis() as u64, value_name = "MS")]
    delta_window_ms: u64,

    /// A model request on which nothing arrives for this long (its response,
    /// or its next chunk) has stalled: the run ends failed.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    model_stall_timeout_ms: u64,

    /// How many times a model request answered `429 Too Many Requests` is
    /// retried (after its Retry-After) before the run ends failed.
    #[arg(long, default_value_t = 3, value_name = "N")]
    model_retries: u32,

    /// The longest Retry-After honoured; a provider asking to wait longer
    /// ends the run failed at once.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    model_max_retry_after_ms: u64,

    /// A JSON file with the tools offered to the model: an array of Chat
    /// Completions tool definitions (`{"type":"function","function":{…}}`).
    /// The agent runs no tool itself: it writes each call as a `tool_call`
    /// event and goes on once a `tool_result` for it is in the session.
    #[arg(long, value_name = "PATH")]
    tools: Option<std::path::PathBuf>,

    /// How long a model run waits for the `tool_result` of its tool calls
    /// before it ends failed.
    #[arg(long, default_value_t = durable_session_agent::runner::DEFAULT_TOOL_RESULT_TIMEOUT.as_millis() as u64, value_name = "MS")]
    tool_result_timeout_ms: u64,

    /// The most characters of conversation history sent to a model; the
    /// oldest messages are left out beyond it.
    #[arg(long, default_value_t = durable_session_agent::runner::DEFAULT_MAX_HISTORY_CHARS, value_name = "N")]
    max_history_chars: usize,

    /// A run still going after this many seconds ends failed (0: no limit).
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    max_run_seconds: f64,

    /// A run that writes more tokens than this ends failed (a model's
    /// streamed pieces, about a token each, or the simulated model's tokens;
    /// 0: no limit).
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_run_tokens: u64,

    /// Log lines as text (`key=value` fields) or as JSON objects, on stderr.
    /// `RUST_LOG` sets the level (default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(flatten)]
    webhook: WebhookArgs,
}

/// The model that answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ModelKind {
    Simulated,
    OpenaiCompatible,
}

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

/// The model configuration of the flags (`None`: the simulated model).
fn model_config(args: &Args) -> Result<Option<OpenAiConfig>, String> {
    if args.model != ModelKind::OpenaiCompatible {
        return Ok(None);
    }
    let (Some(base_url), Some(name)) = (args.base_url.clone(), args.model_name.clone()) else {
        return Err("--model openai-compatible needs --base-url and --model-name".into());
    };
    let mut model = OpenAiConfig::new(base_url, name);
    if let Some(path) = &args.tools {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --tools {}: {e}", path.display()))?;
        match serde_json::from_str(&text) {
            Ok(serde_json::Value::Array(tools)) => model.tools = tools,
            _ => {
                return Err(format!(
                    "--tools {}: not a JSON array of tool definitions",
                    path.display()
                ));
            }
        }
    }
    model.api_key = std::env::var(&args.api_key_env).ok().filter(|k| !k.is_empty());
    model.stall_timeout = Duration::from_millis(args.model_stall_timeout_ms.max(1));
    model.max_retries = args.model_retries;
    model.max_retry_after = Duration::from_millis(args.model_max_retry_after_ms);
    Ok(Some(model))
}

/// The webhook-woken mode (serverless agents): no connection to the server
/// while idle.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Webhook-woken mode")]
struct WebhookArgs {
    /// Instead of following every session, listen here for the webhooks of
    /// a Durable Streams subscription on sessions/* (docs/subscriptions.md):
    /// each signed wake is verified against the server's JWKS, its sessions'
    /// waiting messages are answered over a connection opened for that
    /// wake, and the wake is acked. A forged or stale signature gets 401.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<std::net::SocketAddr>,

    /// The server's webhook keys. Default: the first --server's
    /// /v1/stream/__ds/jwks.json.
    #[arg(long, value_name = "URL", requires = "webhook_listen")]
    jwks_url: Option<String>,

    /// Refuse (403) wakes of any other subscription id.
    #[arg(long, value_name = "ID", requires = "webhook_listen")]
    webhook_subscription: Option<String>,

    /// Interval of the callbacks that keep a wake's lease while answering;
    /// keep it well under the subscription's lease_ttl_ms.
    #[arg(long, default_value_t = 5_000, value_name = "MS")]
    webhook_heartbeat_ms: u64,

    /// Wakes answered at once; one more is answered 503 (the server retries).
    #[arg(long, default_value_t = 16, value_name = "N")]
    webhook_max_wakes: usize,
}

/// The token provider of the flags.
fn token_provider(args: &Args) -> Option<durable_sessions::native::TokenProvider> {
    use durable_sessions::core::ClientError;
    if let Some(path) = args.token_file.clone() {
        return Some(std::sync::Arc::new(move || {
            let path = path.clone();
            Box::pin(async move {
                std::fs::read_to_string(&path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| ClientError::new("token_failed", format!("cannot read {}: {e}", path.display())))
            })
        }));
    }
    let token = args.token.clone()?;
    Some(std::sync::Arc::new(move || {
        let token = token.clone();
        Box::pin(async move { Ok(token) })
    }))
}

/// `http://host:port` → `ws://host:port/v1/ws`; WebSocket URLs pass through.
fn ws_url(server: &str) -> String {
    if server.starts_with("ws://") || server.starts_with("wss://") {
        return server.to_owned();
    }
    let base = server.trim_end_matches('/');
    let base = base
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| base.strip_prefix("http://").map(|rest| format!("ws://{rest}")))
        .unwrap_or_else(|| format!("ws://{base}"));
    format!("{base}/v1/ws")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if !(args.tokens_per_second > 0.0 && args.tokens_per_second.is_finite()) {
        eprintln!("durable-session-agent: --tokens-per-second must be a positive number");
        return std::process::ExitCode::FAILURE;
    }
    if !(args.max_run_seconds >= 0.0 && args.max_run_seconds.is_finite()) {
        eprintln!("durable-session-agent: --max-run-seconds must be a number of seconds, 0 or more");
        return std::process::ExitCode::FAILURE;
    }
    let mut urls = args.server.iter().map(|s| ws_url(s.trim()));
    let Some(first) = urls.next() else {
        eprintln!("durable-session-agent: --server needs a URL");
        return std::process::ExitCode::FAILURE;
    };
    let mut config = AgentConfig::new(first);
    config.fallback_urls = urls.collect();
    config.token_interval = Duration::from_secs_f64(1.0 / args.tokens_per_second);
    config.answer_tokens = args.answer_tokens;
    config.token = token_provider(&args);
    config.name = args.name.clone();
    config.orphan_after = Duration::from_millis(args.orphan_after_ms);
    config.model = match model_config(&args) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("durable-session-agent: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    config.tool_result_timeout = Duration::from_millis(args.tool_result_timeout_ms);
    config.delta_window = Duration::from_millis(args.delta_window_ms);
    config.max_history_chars = args.max_history_chars;
    config.max_run_time = (args.max_run_seconds > 0.0).then(|| Duration::from_secs_f64(args.max_run_seconds));
    config.max_run_tokens = (args.max_run_tokens > 0).then_some(args.max_run_tokens);
    let nodes = std::iter::once(&config.ws_url).chain(&config.fallback_urls);
    let nodes: Vec<&str> = nodes.map(String::as_str).collect();
    println!(
        "durable-session-agent joining {} as {:?}",
        nodes.join(", "),
        config.name
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    if let Some(addr) = args.webhook.webhook_listen {
        let first = args.server.first().map_or("http://127.0.0.1:4437", String::as_str);
        return serve_webhooks(addr, config, &http_url(first), args.webhook).await;
    }
    match run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durable-session-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `ws://host:port/v1/ws` → `http://host:port`; HTTP URLs pass through.
fn http_url(server: &str) -> String {
    let base = server.trim().trim_end_matches('/');
    let base = base.strip_suffix("/v1/ws").unwrap_or(base);
    if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        base.to_owned()
    }
}

/// `--webhook-listen`: the webhook-woken agent until Ctrl-C.
async fn serve_webhooks(
    addr: std::net::SocketAddr,
    config: AgentConfig,
    server: &str,
    args: WebhookArgs,
) -> std::process::ExitCode {
    use durable_session_agent::webhook::{WebhookOptions, serve};
    let mut options = WebhookOptions::new(config, server);
    if let Some(url) = args.jwks_url {
        options.jwks_url = url;
    }
    options.subscription = args.webhook_subscription;
    options.heartbeat = Duration::from_millis(args.webhook_heartbeat_ms.max(1));
    options.max_wakes = args.webhook_max_wakes.max(1);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("durable-session-agent: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "durable-session-agent waiting for webhooks on http://{}",
        listener.local_addr().map_or(addr, |a| a)
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match serve(listener, options, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durable-session-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Args, ws_url};
    use clap::Parser;

    #[test]
    fn several_servers_repeated_or_comma_separated() {
        let args =
            Args::try_parse_from(["agent", "--server", "http://a:1,http://b:2", "--server", "ws://c/v1/ws"]).unwrap();
        assert_eq!(args.server, ["http://a:1", "http://b:2", "ws://c/v1/ws"]);
        let args = Args::try_parse_from(["agent"]).unwrap();
        assert_eq!(args.server, ["http://127.0.0.1:4437"]);
    }

    #[test]
    fn server_urls() {
        assert_eq!(ws_url("http://127.0.0.1:4437"), "ws://127.0.0.1:4437/v1/ws");
        assert_eq!(ws_url("http://h:1/"), "ws://h:1/v1/ws");
        assert_eq!(ws_url("https://h"), "wss://h/v1/ws");
        assert_eq!(ws_url("ws://h/v1/ws"), "ws://h/v1/ws");
        assert_eq!(super::http_url("ws://h:1/v1/ws"), "http://h:1");
        assert_eq!(super::http_url("wss://h/v1/ws"), "https://h");
        assert_eq!(super::http_url("http://h:1/"), "http://h:1");
    }
}
