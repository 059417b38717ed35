//! Server settings.

use std::time::Duration;

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(30),
            max_body_bytes: 16 * 1024 * 1024,
            max_read_bytes: 1024 * 1024,
            sse_max_duration: Duration::from_secs(60),
            sse_keepalive: Duration::from_secs(15),
        }
    }
}
