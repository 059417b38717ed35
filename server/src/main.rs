//! `durable-session-server`: the reference Durable Streams server on SQLite.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use durable_session_server::Server;
use durable_session_server::auth::jwt::{Keys, parse_grant};
use durable_session_server::config::{AllowedOrigins, AuthMode, ServerConfig};
use tracing_subscriber::EnvFilter;

/// Durable Streams HTTP server for durable sessions, on embedded SQLite.
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

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (auth, allowed_origins) = auth_config(&args)?;
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
        ..ServerConfig::default()
    };
    let server = Server::open(&args.data_dir, config)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "durable-session-server listening on http://{addr} (data dir: {}, auth: {auth_mode})",
        args.data_dir.display()
    );
    std::io::stdout().flush()?;
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "listening");
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
