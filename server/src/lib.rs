//! # durable-session-server
//!
//! The reference server for durable sessions: the open
//! [Durable Streams](https://github.com/durable-streams/durable-streams) HTTP
//! protocol at `/v1/stream/{path}`, stored durably in an embedded SQLite
//! database.
//!
//! The crate is a library with a thin binary around it, so tests and other
//! programs can run the server in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use durable_session_server::{Server, config::ServerConfig};
//! let server = Server::open(std::path::Path::new(".data"), ServerConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! println!("listening on http://{}", listener.local_addr()?);
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! Layout: [`offset`] and [`cursor`] are pure protocol values; [`storage`]
//! holds the backend trait, the rules every backend applies, and the SQLite
//! backend; [`changes`] wakes live readers; [`http`] is the thin axum layer;
//! [`limits`] counts what clients hold and [`metrics`] reports it.

pub mod auth;
pub mod changes;
pub mod config;
pub mod cursor;
pub mod http;
pub mod limits;
pub mod live_read;
pub mod metrics;
pub mod offset;
pub mod session_index;
pub mod storage;
pub mod subscriptions;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use changes::ChangeHub;
use config::ServerConfig;
use metrics::Metrics;
use storage::sqlite::SqliteStorage;
use storage::{Storage, StoreError};

/// A configured server, ready to accept connections.
pub struct Server {
    state: http::AppState,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// A server on the SQLite store in `data_dir` (created if missing).
    pub fn open(data_dir: &Path, config: ServerConfig) -> Result<Self, StoreError> {
        let metrics = Metrics::new();
        let hub = ChangeHub::with_limits(config.limits.recent(), metrics.clone());
        let options = storage::sqlite::SqliteOptions {
            hub,
            metrics: metrics.clone(),
            max_readers: config.limits.sqlite_readers,
        };
        let storage = SqliteStorage::open_with(data_dir, options)?;
        Ok(Self::with_parts(Arc::new(storage), config, metrics))
    }

    /// A server on the Redis store: one node of several sharing that Redis.
    pub async fn open_redis(options: storage::redis::RedisOptions, config: ServerConfig) -> Result<Self, StoreError> {
        let metrics = Metrics::new();
        let hub = ChangeHub::with_limits(config.limits.recent(), metrics.clone());
        let storage = storage::redis::RedisStorage::connect(options, hub, metrics.clone()).await?;
        Ok(Self::with_parts(Arc::new(storage), config, metrics))
    }

    /// A server on any storage backend (whose own metrics, if any, are not
    /// in `/metrics`).
    pub fn with_storage(storage: Arc<dyn Storage>, config: ServerConfig) -> Self {
        Self::with_parts(storage, config, Metrics::new())
    }

    fn with_parts(storage: Arc<dyn Storage>, config: ServerConfig, metrics: Metrics) -> Self {
        let (stopping, shutdown) = tokio::sync::watch::channel(false);
        // With subscriptions, every create and append goes through them.
        let (storage, subscriptions) = match config.subscriptions.clone() {
            Some(sub_config) => match subscriptions::Subscriptions::new(storage.clone(), sub_config) {
                Ok(subs) => {
                    let observed: Arc<dyn Storage> =
                        Arc::new(subscriptions::observed::Observed::new(storage, subs.clone()));
                    (observed, Some(subs))
                }
                Err(e) => {
                    tracing::error!(error = %e, "subscriptions are disabled");
                    (storage, None)
                }
            },
            None => (storage, None),
        };
        Self {
            state: http::AppState {
                storage,
                occupancy: limits::Occupancy::new(&config.limits),
                config: Arc::new(config),
                shutdown,
                cut_connections: tokio::sync::broadcast::channel(1).0,
                stats: Arc::default(),
                ws_tasks: tokio_util::task::TaskTracker::new(),
                metrics,
                subscriptions,
            },
            stopping,
        }
    }

    /// The server's metrics, to serve on a listener of their own with
    /// [`http::metrics_router`].
    pub fn metrics(&self) -> Metrics {
        self.state.metrics.clone()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully: stops
    /// accepting; closes every WebSocket with code 1001 once the appends it
    /// had received are applied and acknowledged; ends SSE and long-poll
    /// reads; lets in-flight requests finish. Returns when all that is done,
    /// or after [`ServerConfig::shutdown_timeout`] at most.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        session_index::ensure(self.state.storage.as_ref())
            .await
            .map_err(std::io::Error::other)?;
        if let Some(subs) = &self.state.subscriptions {
            subs.start(self.state.shutdown.clone())
                .await
                .map_err(std::io::Error::other)?;
        }
        let mut stop_rx = self.state.shutdown.clone();
        let stopping = self.stopping;
        let timeout = self.state.config.shutdown_timeout;
        let ws_tasks = self.state.ws_tasks.clone();
        let app = http::router(self.state);
        // Small frames (acks, deltas, pongs) must leave at once: without
        // TCP_NODELAY, Nagle's algorithm holds them back until the peer's
        // delayed ACK (~40 ms).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        // The client's address counts WebSockets per IP (`--max-ws-per-ip`).
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stopping.send(true);
        });
        let drained = async move {
            server.await?;
            // Upgraded connections are not the HTTP server's any more.
            ws_tasks.close();
            ws_tasks.wait().await;
            Ok(())
        };
        let deadline = async move {
            let _ = stop_rx.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(timeout).await;
        };
        tokio::select! {
            result = drained => result,
            () = deadline => {
                tracing::warn!(?timeout, "shutdown timeout: stopping with requests still in flight");
                Ok(())
            }
        }
    }
}
