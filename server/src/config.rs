//! Server settings.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::jwt::Keys;

/// How requests are authenticated.
#[derive(Debug, Clone, Default)]
pub enum AuthMode {
    /// Everything is allowed and nobody is identified: local development
    /// and conformance runs only (the binary refuses it on a non-loopback
    /// address unless `--insecure`).
    #[default]
    None,
    /// JWTs signed with one of these keys (`docs/security.md`).
    Jwt(Arc<Keys>),
}

/// Which browser origins may call the API (CORS) and open `/v1/ws`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Any origin.
    #[default]
    Any,
    /// These origins (`scheme://host[:port]`), and the server's own.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a request with this `Origin` header, addressed to `host`,
    /// is allowed. Requests without an `Origin` (not from a browser) are.
    ///
    /// ```
    /// use durable_session_server::config::AllowedOrigins;
    /// let list = AllowedOrigins::List(vec!["https://app.example".into()]);
    /// assert!(list.allows(Some("https://app.example"), Some("api.example")));
    /// assert!(list.allows(Some("http://api.example:8080"), Some("api.example:8080")));
    /// assert!(!list.allows(Some("https://evil.example"), Some("api.example")));
    /// assert!(list.allows(None, Some("api.example")));
    /// ```
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => {
                let same_origin = host.is_some_and(|host| {
                    origin
                        .split_once("://")
                        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
                });
                same_origin || list.iter().any(|o| o.eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// Tunables of the HTTP layer. [`Default`] gives production values.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a long-poll read waits for data before answering `204`.
    pub long_poll_timeout: Duration,
    /// Largest request body accepted; larger ones get `413`.
    pub max_body_bytes: usize,
    /// Roughly how many bytes one read returns (at least one message).
    pub max_read_bytes: usize,
    /// An SSE response is ended after this long so clients reconnect (which
    /// lets caches collapse them).
    pub sse_max_duration: Duration,
    /// Interval of SSE keep-alive comments while no data flows.
    pub sse_keepalive: Duration,
    /// The WebSocket server pings this often and tells clients to send
    /// something at least this often.
    pub ws_heartbeat: Duration,
    /// A WebSocket peer that sent nothing for this long is closed with
    /// close code 4001.
    pub ws_heartbeat_timeout: Duration,
    /// Largest WebSocket frame handled; larger ones get a `too_large` error
    /// frame and the connection stays up. Frames past `max_body_bytes` close
    /// the connection (1009).
    pub ws_max_frame_bytes: usize,
    /// Unsent bytes queued for one WebSocket client. Past it, subscriptions
    /// pause until the client catches up; past twice it, the client is closed
    /// as a slow consumer (close code 4002).
    pub ws_max_queued_bytes: usize,
    /// How long subscriptions wait for a paused client to catch up before it
    /// is closed as a slow consumer (close code 4002).
    pub ws_slow_consumer_timeout: Duration,
    /// Enables `POST /v1/test/drop-connections`, which cuts every WebSocket
    /// without a close frame, as a network failure would. For tests only.
    pub test_hooks: bool,
    /// Serve the files of this directory at `/` (the demo app), so one
    /// origin serves the app, the HTTP API and `/v1/ws`.
    pub static_dir: Option<std::path::PathBuf>,
    /// How requests are authenticated.
    pub auth: AuthMode,
    /// Browser origins allowed by CORS and the WebSocket `Origin` check.
    pub allowed_origins: AllowedOrigins,
    /// How long a WebSocket whose token expired may go on (serving its
    /// existing subscriptions, refusing new work) before it is closed with
    /// code 4003, unless an `auth` frame brings a fresh token.
    pub auth_grace: Duration,
    /// How long a graceful shutdown (SIGTERM, Ctrl-C) may take: in-flight
    /// requests and WebSocket appends get this long to finish, then the
    /// server stops anyway.
    pub shutdown_timeout: Duration,
    /// Bounds on what clients may hold (`docs/limits.md`).
    pub limits: Limits,
    /// Reverse proxies (load balancers) whose `X-Forwarded-For` names the
    /// client, for per-address limits ([`crate::http::client_ip`]). Empty:
    /// the header is ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Durable Streams subscriptions (PROTOCOL.md §6–7); `None`: the
    /// `__ds/subscriptions` API answers `404`.
    pub subscriptions: Option<crate::subscriptions::SubscriptionConfig>,
}

/// Bounds on what clients may hold on the server, each with a flag, an error
/// code when hit, and a default sized for one node (`docs/limits.md`).
///
/// ```
/// use durable_session_server::config::{Limits, ServerConfig};
/// let config = ServerConfig {
///     limits: Limits { ws_subscriptions: 100, ..Limits::default() },
///     ..ServerConfig::default()
/// };
/// assert_eq!(config.limits.ws_subscriptions, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Live subscriptions one WebSocket may hold; one more is refused with
    /// `too_many_subscriptions` (that subscription only).
    pub ws_subscriptions: usize,
    /// WebSockets open from one client IP address; one more is refused at
    /// the upgrade with `429` (`too_many_connections`).
    pub ws_per_ip: usize,
    /// WebSockets authenticated as one principal (the token's `sub`); the
    /// `auth` frame of one more closes its connection with code 4004
    /// (`too_many_connections`).
    pub ws_per_principal: usize,
    /// Appends (and creates) of one WebSocket being applied at once. At the
    /// limit the server stops reading that socket until one is acknowledged
    /// (backpressure: the client's sends wait in TCP, not in server memory).
    pub ws_inflight_appends: usize,
    /// Long-poll and SSE readers of one stream at once; one more is
    /// answered `503` with `Retry-After` (`too_many_readers`).
    pub http_readers_per_stream: usize,
    /// Bytes of recent appends kept in memory for live readers, all streams
    /// together (older ones are read from the store).
    pub recent_append_bytes: usize,
    /// The same, for one stream.
    pub recent_append_bytes_per_stream: usize,
    /// SQLite reads run at once, each on its own connection and blocking
    /// thread; more wait their turn.
    pub sqlite_readers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let recent = crate::changes::RecentLimits::default();
        Self {
            ws_subscriptions: 10_000,
            ws_per_ip: 4_096,
            ws_per_principal: 256,
            ws_inflight_appends: 32,
            http_readers_per_stream: 10_000,
            recent_append_bytes: recent.total,
            recent_append_bytes_per_stream: recent.per_stream,
            sqlite_readers: crate::storage::sqlite::DEFAULT_MAX_READERS,
        }
    }
}

impl Limits {
    /// The bounds of the change hub's memory of recent appends.
    pub fn recent(&self) -> crate::changes::RecentLimits {
        crate::changes::RecentLimits {
            per_stream: self.recent_append_bytes_per_stream,
            total: self.recent_append_bytes,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(30),
            max_body_bytes: 16 * 1024 * 1024,
            max_read_bytes: 1024 * 1024,
            sse_max_duration: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
            ws_heartbeat: Duration::from_secs(15),
            ws_heartbeat_timeout: Duration::from_secs(45),
            ws_max_frame_bytes: 1024 * 1024,
            ws_max_queued_bytes: 8 * 1024 * 1024,
            ws_slow_consumer_timeout: Duration::from_secs(10),
            test_hooks: false,
            static_dir: None,
            auth: AuthMode::None,
            allowed_origins: AllowedOrigins::Any,
            auth_grace: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            trusted_proxies: Vec::new(),
            subscriptions: None,
        }
    }
}
