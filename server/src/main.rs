//! `durable-session-server`: the reference Durable Streams server on SQLite.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use durable_session_server::Server;
use durable_session_server::config::ServerConfig;
use tracing_subscriber::EnvFilter;

/// Durable Streams HTTP server for durable sessions, on embedded SQLite.
///
/// Streams are served at /v1/stream/{path}. Logs go to stderr; set RUST_LOG
/// (for example RUST_LOG=debug) for more detail.
#[derive(Parser, Debug)]
#[command(name = "durable-session-server", version)]
struct Args {
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

    /// Enable test hooks (POST /v1/test/drop-connections cuts every WebSocket
    /// like a network failure). Never in production.
    #[arg(long)]
    test_hooks: bool,

    /// Also serve the files of this directory at / (the demo app: one origin
    /// for the app, the HTTP API and /v1/ws).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
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

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig {
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
        "durable-session-server listening on http://{addr} (data dir: {})",
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
