//! `durable-session-server`: the reference Durable Streams server, on SQLite or Redis.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use durable_session_server::Server;
use durable_session_server::auth::jwt::{Keys, parse_grant};
use durable_session_server::config::{AllowedOrigins, AuthMode, Limits, ServerConfig};
use durable_session_server::storage::redis::RedisOptions;
use durable_session_server::subscriptions::SubscriptionConfig;
use durable_session_server::subscriptions::signing::{KeyOrigin, WebhookKeys};
use durable_session_server::subscriptions::target::TargetPolicy;
use tracing_subscriber::EnvFilter;

/// Durable Streams HTTP server for durable sessions, on embedded SQLite or a
/// Redis shared by several nodes.
///
/// Streams are served at /v1/stream/{path}. Logs go to stderr; set RUST_LOG
/// (for example RUST_LOG=debug) for more detail.
#[derive(Parser, Debug)]
#[command(name = "durable-session-server", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// How requests are authenticated: jwt (tokens minted by your app's
    /// backend, verified with --jwt-key; see docs/security.md) or none
    /// (anyone may do anything: local development and conformance runs
    /// only; refused on a non-loopback address without --insecure).
    #[arg(long, value_enum, default_value_t = AuthArg::Jwt)]
    auth: AuthArg,

    /// A key tokens may be signed with, as ALG:KID:SOURCE. ALG is hs256 (the
    /// secret, at least 32 bytes) or ed25519 (a PEM file: the public key to
    /// verify, the private key to mint); KID is the token header's kid;
    /// SOURCE is file:PATH or env:VAR. Repeat for key rotation: tokens of
    /// every listed key are accepted.
    #[arg(
        long = "jwt-key",
        value_name = "ALG:KID:SOURCE",
        env = "DURABLE_SESSION_JWT_KEYS",
        value_delimiter = ',',
        global = true
    )]
    jwt_keys: Vec<String>,

    /// A browser origin (scheme://host[:port]) allowed to use the API (CORS)
    /// and to open /v1/ws; repeat for several, or * for any. The server's
    /// own origin is always allowed. Default: * with --auth none, none with
    /// --auth jwt.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,

    /// A reverse proxy or load balancer (an address or CIDR range, e.g.
    /// 10.0.0.0/8) whose X-Forwarded-For header names the client: per-address
    /// limits then count the client's address, the rightmost one in the
    /// header that is not a trusted proxy. Repeat for several. Without it the
    /// header is ignored (anyone can send it).
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_proxy)]
    trusted_proxies: Vec<ipnet::IpNet>,

    /// How long a WebSocket whose token expired keeps its subscriptions
    /// while it may send a fresh token (auth frame); then it is closed with
    /// code 4003.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    auth_grace_ms: u64,

    /// Allow --auth none or --test-hooks on a non-loopback address (anyone who
    /// can reach the server can then read, write and delete every stream).
    #[arg(long)]
    insecure: bool,

    /// Address to listen on. Use 0.0.0.0:PORT to accept other devices on the network.
    #[arg(long, default_value = "127.0.0.1:4437", value_name = "ADDR")]
    listen: SocketAddr,

    /// Directory holding the SQLite database (created if missing).
    #[arg(long, default_value = ".data", value_name = "DIR")]
    data_dir: PathBuf,

    /// Where streams are stored: sqlite (a database in --data-dir, for one
    /// node) or redis://[USER:PASSWORD@]HOST:PORT/DB (a Redis shared by
    /// several nodes; it must run with appendonly yes, appendfsync always and
    /// maxmemory-policy noeviction, which is checked at start-up).
    #[arg(long, default_value = "sqlite", value_name = "STORE", value_parser = parse_store)]
    store: Store,

    /// With --store redis: transactions this node runs at once, each on a
    /// connection of its own (a stream's always use the same one).
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    redis_connections: u16,

    /// With --store redis: acknowledge an append only once N replicas have
    /// it too (Redis WAIT). One not replicated within
    /// --redis-wait-timeout-ms fails with 500 though the primary has it (an
    /// idempotent producer's retry is then a duplicate, not stored twice).
    #[arg(long, default_value_t = 0, value_name = "N")]
    redis_wait_replicas: u32,

    /// With --redis-wait-replicas: how long an append waits for its replicas.
    #[arg(long, default_value_t = 1_000, value_name = "MS")]
    redis_wait_timeout_ms: u64,

    /// With --store redis: start even if Redis does not fsync every write
    /// (appendfsync always) or may evict keys (maxmemory-policy other than
    /// noeviction). Acknowledged appends can then be lost.
    #[arg(long)]
    redis_allow_non_durable: bool,

    /// How long a long-poll read waits for new data before answering 204.
    #[arg(long, default_value_t = 30_000, value_name = "N")]
    long_poll_timeout_ms: u64,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = ServerConfig::default().max_body_bytes, value_name = "N")]
    max_body_bytes: usize,

    /// How long a graceful shutdown (SIGTERM, Ctrl-C) may take. The server
    /// stops accepting at once, closes WebSockets with code 1001 once their
    /// queued appends are applied and acknowledged, ends SSE and long-poll
    /// reads, lets in-flight requests finish, and exits after this long at
    /// most, whatever clients do.
    #[arg(long, default_value_t = ServerConfig::default().shutdown_timeout.as_millis() as u64, value_name = "MS")]
    shutdown_timeout_ms: u64,

    /// Enable test hooks: POST /v1/test/drop-connections cuts every WebSocket
    /// like a network failure; GET /v1/test/token?sub=…&grant=PATH:RIGHTS&ttl_ms=…
    /// mints a token with the first signing key; GET /v1/test/stats counts
    /// WebSocket connections. Never in production: refused off loopback
    /// without --insecure.
    #[arg(long)]
    test_hooks: bool,

    /// Also serve the files of this directory at / (the demo app: one origin
    /// for the app, the HTTP API and /v1/ws).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics, on a listener of
    /// their own for your monitoring only (unauthenticated: keep ADDR off
    /// the public network). With --auth none they are also at /metrics on
    /// --listen; with --auth jwt only here.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    limits: LimitArgs,

    #[command(flatten)]
    subscriptions: SubscriptionArgs,
}

/// Durable Streams subscriptions (PROTOCOL.md §6-7): webhooks and
/// pull-wake leases (docs/subscriptions.md).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Subscriptions")]
struct SubscriptionArgs {
    /// The Ed25519 key webhooks are signed with, a PKCS#8 PEM file; its
    /// public key is published at /v1/stream/__ds/jwks.json. If the file
    /// does not exist, a new key is generated and written there (mode 0600)
    /// with a warning: keep it, and give every node of a Redis deployment
    /// the same file. Repeat to also publish older keys (rotation: the first
    /// signs). Default: webhook-signing-key.pem in --data-dir.
    #[arg(long = "webhook-key-file", value_name = "PATH")]
    webhook_key_files: Vec<PathBuf>,

    /// A host webhooks may be sent to (exact name or IP); repeat for several.
    /// When given, no other host is allowed, and these are reached wherever
    /// they resolve (private networks included). Without it, any public
    /// https:// host is allowed and private, link-local and loopback
    /// addresses are refused (SSRF).
    #[arg(long = "webhook-allow-host", value_name = "HOST", value_delimiter = ',')]
    webhook_allow_hosts: Vec<String>,

    /// Development: allow webhooks to http:// and https:// on localhost,
    /// 127.0.0.x and ::1.
    #[arg(long)]
    webhook_allow_loopback: bool,

    /// How long one webhook request may take; a slower one counts as failed
    /// and is retried (backoff 1 s doubling to 60 s, ±20 %).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    webhook_timeout_ms: u64,

    /// The server's public base URL (https://api.example), used in the
    /// callback_url and jwks_url it hands out. Default: http:// and the
    /// request's Host.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,

    /// Subscriptions stored at once; one more is refused with 429
    /// TOO_MANY_SUBSCRIPTIONS.
    #[arg(long, default_value_t = 10_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_subscriptions: u64,

    /// Streams linked to one subscription; a request past it is refused with
    /// 400 TOO_MANY_STREAMS and a pattern links no more (logged).
    #[arg(long, default_value_t = 1_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_subscription_streams: u64,
}

impl SubscriptionArgs {
    /// The configuration, and the path to write a generated key to once the
    /// server is sure to start.
    fn config(&self, data_dir: &std::path::Path) -> Result<(SubscriptionConfig, Option<PathBuf>), String> {
        let files = if self.webhook_key_files.is_empty() {
            vec![data_dir.join("webhook-signing-key.pem")]
        } else {
            self.webhook_key_files.clone()
        };
        let (keys, origin) = WebhookKeys::load(&files)?;
        let generated = match origin {
            KeyOrigin::Generated(path) => Some(path),
            KeyOrigin::Loaded => None,
        };
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!("--public-url {url:?}: expected http(s)://host[:port][/path]"));
        }
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let config = SubscriptionConfig {
            max_subscriptions: n(self.max_subscriptions),
            max_streams: n(self.max_subscription_streams),
            targets: TargetPolicy {
                allow_hosts: self.webhook_allow_hosts.clone(),
                allow_loopback: self.webhook_allow_loopback,
            },
            webhook_timeout: Duration::from_millis(self.webhook_timeout_ms.max(1)),
            public_url: self.public_url.clone(),
            ..SubscriptionConfig::new(std::sync::Arc::new(keys))
        };
        Ok((config, generated))
    }
}

/// Writes the webhook key generated at start-up, with a warning.
fn save_generated_key(config: &SubscriptionConfig, path: &std::path::Path) -> Result<(), String> {
    config.keys.save_generated(path)?;
    tracing::warn!(path = %path.display(), kid = config.keys.kid(),
        "no webhook signing key: generated a new one. Keep this file (webhook receivers trust its key); \
         every node sharing a Redis store needs the same --webhook-key-file");
    Ok(())
}

/// Bounds on what clients may hold (docs/limits.md lists each with its error
/// code).
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Limits")]
struct LimitArgs {
    /// Live subscriptions one WebSocket may hold; one more is refused with
    /// error too_many_subscriptions (that subscription only).
    #[arg(long, default_value_t = Limits::default().ws_subscriptions as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_subscriptions_per_socket: u64,

    /// WebSockets open from one client IP address; one more is refused with
    /// 429 and Retry-After (too_many_connections). Behind a reverse proxy
    /// every client has the proxy's address unless the proxy is named with
    /// --trusted-proxy.
    #[arg(long, default_value_t = Limits::default().ws_per_ip as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_ws_per_ip: u64,

    /// WebSockets authenticated as one principal (the token's sub); the auth
    /// frame of one more closes its socket with code 4004
    /// (too_many_connections).
    #[arg(long, default_value_t = Limits::default().ws_per_principal as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_ws_per_principal: u64,

    /// Appends (and creates) of one WebSocket applied at once; at the limit
    /// the server stops reading that socket until one is acknowledged
    /// (backpressure: nothing is buffered).
    #[arg(long, default_value_t = Limits::default().ws_inflight_appends as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_inflight_appends_per_socket: u64,

    /// Long-poll and SSE readers of one stream at once; one more is answered
    /// 503 with Retry-After (too_many_readers).
    #[arg(long, default_value_t = Limits::default().http_readers_per_stream as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_http_readers_per_stream: u64,

    /// Bytes of recent appends kept in memory to serve live readers, and of
    /// each stream's latest batch serialized for its WebSocket subscribers,
    /// all streams together (older data is read from the store).
    #[arg(long, default_value_t = Limits::default().recent_append_bytes as u64, value_name = "BYTES")]
    recent_append_bytes: u64,

    /// The same, for one stream.
    #[arg(long, default_value_t = Limits::default().recent_append_bytes_per_stream as u64, value_name = "BYTES")]
    recent_append_bytes_per_stream: u64,

    /// SQLite reads run at once, each on a connection and a thread of its
    /// own; more wait their turn (bounds the threads and page caches a burst
    /// of reads can start).
    #[arg(long, default_value_t = Limits::default().sqlite_readers as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_sqlite_readers: u64,

    /// Bytes queued for one WebSocket client before its subscriptions pause;
    /// at twice this the socket is closed as a slow consumer (code 4002).
    #[arg(long, default_value_t = ServerConfig::default().ws_max_queued_bytes as u64, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..))]
    ws_max_queued_bytes: u64,

    /// How long paused subscriptions wait for a WebSocket client to catch up
    /// before it is closed as a slow consumer (code 4002).
    #[arg(long, default_value_t = ServerConfig::default().ws_slow_consumer_timeout.as_millis() as u64, value_name = "MS")]
    ws_slow_consumer_timeout_ms: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Limits {
            ws_subscriptions: n(self.max_subscriptions_per_socket),
            ws_per_ip: n(self.max_ws_per_ip),
            ws_per_principal: n(self.max_ws_per_principal),
            ws_inflight_appends: n(self.max_inflight_appends_per_socket),
            http_readers_per_stream: n(self.max_http_readers_per_stream),
            recent_append_bytes: n(self.recent_append_bytes),
            recent_append_bytes_per_stream: n(self.recent_append_bytes_per_stream),
            sqlite_readers: n(self.max_sqlite_readers),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mints a token with a configured key (--jwt-key) and prints it: for
    /// development and scripts. In production your app's backend mints
    /// tokens (docs/security.md).
    Token {
        /// The principal (the token's sub).
        #[arg(long)]
        sub: String,
        /// PATH:RIGHT[,RIGHT…], PATH exact or a prefix ending in /*; rights:
        /// read, append, control, create, delete, agent. Repeatable.
        #[arg(long = "grant", value_name = "PATH:RIGHTS")]
        grants: Vec<String>,
        /// Lifetime: a number with s, m, h or d (default 1h).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The key to sign with (default: the first that can sign).
        #[arg(long)]
        kid: Option<String>,
    },
}

/// The `--store` flag.
#[derive(Clone, Debug)]
enum Store {
    Sqlite,
    Redis(String),
}

fn parse_store(value: &str) -> Result<Store, String> {
    if value == "sqlite" {
        Ok(Store::Sqlite)
    } else if value.starts_with("redis://") {
        Ok(Store::Redis(value.to_owned()))
    } else {
        Err("expected sqlite or redis://HOST:PORT/DB".into())
    }
}

/// A Redis URL without its password, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AuthArg {
    Jwt,
    None,
}

/// `90s`, `15m`, `1h`, `30d` → seconds.
fn parse_ttl(ttl: &str) -> Result<u64, String> {
    let bad = || format!("--ttl {ttl:?}: expected a number with s, m, h or d (e.g. 1h)");
    let split = ttl.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = ttl[..split].parse().map_err(|_| bad())?;
    let unit = match &ttl[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).filter(|&s| s > 0).ok_or_else(bad)
}

fn mint(
    args: &Args,
    sub: &str,
    grants: &[String],
    ttl: &str,
    kid: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    if args.jwt_keys.is_empty() {
        return Err("token needs a key: --jwt-key hs256:KID:file:PATH (or DURABLE_SESSION_JWT_KEYS)".into());
    }
    let keys = Keys::load(&args.jwt_keys)?;
    let grants = grants.iter().map(|g| parse_grant(g)).collect::<Result<Vec<_>, _>>()?;
    println!("{}", keys.mint(kid, sub, &grants, parse_ttl(ttl)?)?);
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::Token { sub, grants, ttl, kid }) = &args.command {
        return match mint(&args, sub, grants, ttl, kid.as_deref()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("durable-session-server token: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("durable-session-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The authentication settings of the flags, or why they cannot be used.
fn auth_config(args: &Args) -> Result<(AuthMode, AllowedOrigins), String> {
    if args.test_hooks && !args.listen.ip().is_loopback() && !args.insecure {
        return Err(format!(
            "refusing --test-hooks on {}: they mint tokens and cut connections for anyone who asks. \
             Listen on 127.0.0.1, or add --insecure if you really mean it",
            args.listen
        ));
    }
    let auth = match args.auth {
        AuthArg::None => {
            if !args.listen.ip().is_loopback() && !args.insecure {
                return Err(format!(
                    "refusing --auth none on {}: anyone who can reach it could read, write and delete every \
                     stream. Use --auth jwt, listen on 127.0.0.1, or add --insecure if you really mean it",
                    args.listen
                ));
            }
            if !args.jwt_keys.is_empty() {
                return Err("--jwt-key is given but --auth is none: choose --auth jwt to use it".into());
            }
            AuthMode::None
        }
        AuthArg::Jwt => {
            if args.jwt_keys.is_empty() {
                return Err("--auth jwt (the default) needs at least one --jwt-key (see --help and \
                            docs/security.md); for local development without tokens use --auth none"
                    .into());
            }
            let keys = Keys::load(&args.jwt_keys)?;
            if !keys.can_verify() {
                return Err("no --jwt-key can verify tokens: give Ed25519 public keys (or hs256 secrets)".into());
            }
            AuthMode::Jwt(std::sync::Arc::new(keys))
        }
    };
    let any = args.allow_origins.iter().any(|o| o == "*");
    let origins = if any || (args.allow_origins.is_empty() && args.auth == AuthArg::None) {
        AllowedOrigins::Any
    } else {
        for o in &args.allow_origins {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(format!("--allow-origin {o:?}: expected scheme://host[:port], no path"));
            }
        }
        AllowedOrigins::List(args.allow_origins.clone())
    };
    Ok((auth, origins))
}

/// `--trusted-proxy`: a CIDR range, or one address.
fn parse_proxy(s: &str) -> Result<ipnet::IpNet, String> {
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR range (like 10.0.0.0/8)"))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (auth, allowed_origins) = auth_config(&args)?;
    let (subscriptions, generated_key) = args.subscriptions.config(&args.data_dir)?;
    let key_to_save = generated_key.map(|path| (subscriptions.clone(), path));
    let auth_mode = match &auth {
        AuthMode::None => "none",
        AuthMode::Jwt(_) => "jwt",
    };
    let config = ServerConfig {
        auth,
        allowed_origins,
        auth_grace: Duration::from_millis(args.auth_grace_ms),
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        long_poll_timeout: Duration::from_millis(args.long_poll_timeout_ms),
        max_body_bytes: args.max_body_bytes,
        test_hooks: args.test_hooks,
        static_dir: args.static_dir,
        limits: args.limits.limits(),
        trusted_proxies: args.trusted_proxies.clone(),
        ws_max_queued_bytes: usize::try_from(args.limits.ws_max_queued_bytes).unwrap_or(usize::MAX),
        ws_slow_consumer_timeout: Duration::from_millis(args.limits.ws_slow_consumer_timeout_ms),
        subscriptions: Some(subscriptions),
        ..ServerConfig::default()
    };
    let (server, store) = match &args.store {
        Store::Sqlite => (
            Server::open(&args.data_dir, config)?,
            format!("data dir: {}", args.data_dir.display()),
        ),
        Store::Redis(url) => {
            let options = RedisOptions {
                connections: args.redis_connections.into(),
                wait_replicas: args.redis_wait_replicas,
                wait_timeout: Duration::from_millis(args.redis_wait_timeout_ms),
                allow_non_durable: args.redis_allow_non_durable,
                ..RedisOptions::new(url.as_str())
            };
            (
                Server::open_redis(options, config).await?,
                format!("store: {}", redacted(url)),
            )
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    // The store opened and the address is ours: the server starts.
    if let Some((config, path)) = &key_to_save {
        save_generated_key(config, path)?;
    }
    let addr = listener.local_addr()?;
    println!("durable-session-server listening on http://{addr} ({store}, auth: {auth_mode})");
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (--metrics-listen): {e}"))?;
        let addr = listener.local_addr()?;
        println!("metrics on http://{addr}/metrics");
        let app = durable_session_server::http::metrics_router(server.metrics());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    std::io::stdout().flush()?;
    tracing::info!(%addr, "listening ({store})");
    server.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
