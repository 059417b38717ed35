//! Operational metrics, served at `/metrics` in the Prometheus text format
//! (version 0.0.4).
//!
//! The crate is `prometheus-client`, the Prometheus project's own Rust
//! client, chosen for its footprint: it adds five crates to the build (its
//! derive macro, `dtoa`, `parking_lot` and `parking_lot_core`), where
//! `metrics` + `metrics-exporter-prometheus` (without their HTTP listener
//! and push gateway) add a recorder facade and `metrics-util`'s storage:
//! `quanta`, `sketches-ddsketch`, `crossbeam-epoch`, `hashbrown`,
//! `indexmap`, `rand_xoshiro` and more, for the same text. Metrics are plain
//! values held by the parts that change them (no global registry), so
//! several servers in one process — the tests — each count their own.
//!
//! Where `/metrics` is served is the operator's choice (`docs/limits.md`):
//! on its own listener (`--metrics-listen`), and on the main listener only
//! without access control (`--auth none`).

use std::sync::Arc;
use std::time::Duration;

use durable_session_protocol::ws::ErrorCode;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// One label, as the label sets of this module are.
type Label = [(&'static str, &'static str); 1];

/// What kind of live connection a [`Metrics::connection`] guard counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// A `/v1/ws` WebSocket.
    WebSocket,
    /// An SSE read (`live=sse`).
    Sse,
    /// A long-poll read (`live=long-poll`) while it waits.
    LongPoll,
}

impl ConnectionKind {
    fn label(self) -> Label {
        [(
            "kind",
            match self {
                Self::WebSocket => "ws",
                Self::Sse => "sse",
                Self::LongPoll => "long_poll",
            },
        )]
    }
}

/// The server's metrics. Cheap to clone; clones share the values.
///
/// ```
/// use durable_session_server::metrics::{ConnectionKind, Metrics};
/// let metrics = Metrics::new();
/// let open = metrics.connection(ConnectionKind::Sse);
/// assert!(metrics.encode().contains("durable_session_connections{kind=\"sse\"} 1"));
/// drop(open);
/// assert!(metrics.encode().contains("durable_session_connections{kind=\"sse\"} 0"));
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    connections: Family<Label, Gauge>,
    subscriptions: Gauge,
    ws_queued_bytes: Gauge,
    ws_backpressure: Counter,
    appends: Counter,
    append_bytes: Counter,
    append_seconds: Histogram,
    commit_seconds: Histogram,
    limit_hits: Family<Label, Counter>,
    watched_streams: Gauge,
    recent_append_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("durable_session");
        let connections = Family::<Label, Gauge>::default();
        registry.register(
            "connections",
            "Open live connections by kind: ws (WebSocket), sse, long_poll",
            connections.clone(),
        );
        // Every kind is shown from the start, at 0.
        for kind in [ConnectionKind::WebSocket, ConnectionKind::Sse, ConnectionKind::LongPoll] {
            let _ = connections.get_or_create(&kind.label());
        }
        let subscriptions = Gauge::default();
        registry.register(
            "ws_subscriptions",
            "Live WebSocket subscriptions",
            subscriptions.clone(),
        );
        let ws_queued_bytes = Gauge::default();
        registry.register(
            "ws_queued_bytes",
            "Bytes queued for WebSocket clients, not yet written to their sockets",
            ws_queued_bytes.clone(),
        );
        let ws_backpressure = Counter::default();
        registry.register(
            "ws_backpressure",
            "Times a WebSocket stopped being read because its in-flight appends reached the limit",
            ws_backpressure.clone(),
        );
        let appends = Counter::default();
        registry.register(
            "appends",
            "Appends made durable (HTTP and WebSocket; duplicates not counted)",
            appends.clone(),
        );
        let append_bytes = Counter::default();
        registry.register(
            "append_bytes",
            "Bytes of the appends made durable",
            append_bytes.clone(),
        );
        // 100 µs … ~3.3 s.
        let append_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "append_duration_seconds",
            "Time from an append request reaching storage to its durable commit",
            append_seconds.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "sqlite_commit_duration_seconds",
            "Time of one SQLite write transaction (group commit), fsync included",
            commit_seconds.clone(),
        );
        let limit_hits = Family::<Label, Counter>::default();
        registry.register(
            "limit_hits",
            "Requests, subscriptions and connections refused by a limit, by error code",
            limit_hits.clone(),
        );
        for code in [
            ErrorCode::TooManySubscriptions,
            ErrorCode::TooManyConnections,
            ErrorCode::TooManyReaders,
        ] {
            let _ = limit_hits.get_or_create(&[("code", code.as_str())]);
        }
        let watched_streams = Gauge::default();
        registry.register(
            "watched_streams",
            "Streams with at least one live reader waiting for changes",
            watched_streams.clone(),
        );
        let recent_append_bytes = Gauge::default();
        registry.register(
            "recent_append_bytes",
            "Bytes of recent appends kept in memory for live readers",
            recent_append_bytes.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                connections,
                subscriptions,
                ws_queued_bytes,
                ws_backpressure,
                appends,
                append_bytes,
                append_seconds,
                commit_seconds,
                limit_hits,
                watched_streams,
                recent_append_bytes,
            }),
        }
    }

    /// Counts an open connection until the guard is dropped.
    #[must_use = "the connection is counted while the guard lives"]
    pub fn connection(&self, kind: ConnectionKind) -> GaugeGuard {
        GaugeGuard::new(self.inner.connections.get_or_create(&kind.label()).clone())
    }

    /// Counts a live WebSocket subscription until the guard is dropped.
    #[must_use = "the subscription is counted while the guard lives"]
    pub fn subscription(&self) -> GaugeGuard {
        GaugeGuard::new(self.inner.subscriptions.clone())
    }

    /// The gauge of bytes queued for WebSocket clients.
    pub(crate) fn ws_queued_bytes(&self) -> Gauge {
        self.inner.ws_queued_bytes.clone()
    }

    /// A WebSocket stopped reading: its in-flight appends reached the limit.
    pub fn ws_backpressure(&self) {
        self.inner.ws_backpressure.inc();
    }

    /// A limit refused something, with this code.
    pub fn limit_hit(&self, code: ErrorCode) {
        self.inner.limit_hits.get_or_create(&[("code", code.as_str())]).inc();
    }

    /// An append of `bytes` was made durable, `took` after it reached storage.
    pub fn appended(&self, bytes: usize, took: Duration) {
        self.inner.appends.inc();
        self.inner.append_bytes.inc_by(bytes as u64);
        self.inner.append_seconds.observe(took.as_secs_f64());
    }

    /// One SQLite write transaction took this long.
    pub fn committed(&self, took: Duration) {
        self.inner.commit_seconds.observe(took.as_secs_f64());
    }

    /// The change hub's size: streams watched, and bytes of recent appends kept.
    pub(crate) fn hub_size(&self, watched: usize, recent_bytes: usize) {
        self.inner.watched_streams.set(watched as i64);
        self.inner.recent_append_bytes.set(recent_bytes as i64);
    }

    /// Every metric, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// Adds one to a gauge while it lives.
#[must_use = "the gauge counts one while the guard lives"]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
