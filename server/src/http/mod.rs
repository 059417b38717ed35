//! The Durable Streams HTTP protocol at `/v1/stream/{path}`.
//!
//! Handlers are thin: they parse and validate the request ([`headers`]), call
//! [`Storage`], and shape the answer. Every response, errors included, carries
//! CORS and browser-security headers ([`common_headers`]).

pub mod access;
pub mod body;
pub mod client_ip;
mod error;
pub mod headers;
mod read;
mod subscriptions;
mod write;
mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub use error::ApiError;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::auth::{Access, Right};
use crate::config::{AllowedOrigins, AuthMode, ServerConfig};
use crate::limits::Occupancy;
use crate::metrics::Metrics;
use crate::storage::Storage;

/// Where streams are mounted.
pub const STREAM_PREFIX: &str = "/v1/stream/";

/// Longest stream path accepted, in bytes.
const MAX_PATH_BYTES: usize = 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub config: Arc<ServerConfig>,
    /// Becomes `true` when the server begins shutting down; WebSocket
    /// connections then close with code 1001.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Fired by the `drop-connections` test hook.
    pub cut_connections: tokio::sync::broadcast::Sender<()>,
    /// Counters (the `stats` test hook).
    pub stats: Arc<Stats>,
    /// The WebSocket connections' tasks: a shutdown waits for them (they
    /// outlive the HTTP connection they were upgraded from).
    pub ws_tasks: tokio_util::task::TaskTracker,
    /// Operational metrics (`/metrics`).
    pub metrics: Metrics,
    /// Connections and readers held, per client, principal and stream.
    pub occupancy: Occupancy,
    /// The subscriptions (`/v1/stream/__ds/…`), when enabled.
    pub subscriptions: Option<crate::subscriptions::Subscriptions>,
}

/// Completes once the server is shutting down ([`AppState::shutdown`]).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // Only the outcome matters (the borrow it returns is not `Send`).
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

/// Counters since the server started.
#[derive(Debug, Default)]
pub struct Stats {
    /// WebSocket connections accepted.
    pub ws_connections: AtomicU64,
}

/// The HTTP application: streams, a health check, and a plain 404 elsewhere.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use durable_session_server::{config::ServerConfig, http, limits::Occupancy, metrics::Metrics};
/// use durable_session_server::storage::sqlite::SqliteStorage;
/// let storage = Arc::new(SqliteStorage::open(std::path::Path::new(".data"))?);
/// let (_stop, shutdown) = tokio::sync::watch::channel(false);
/// let cut_connections = tokio::sync::broadcast::channel(1).0;
/// let (stats, ws_tasks, metrics) = (Default::default(), Default::default(), Metrics::new());
/// let config = Arc::new(ServerConfig::default());
/// let occupancy = Occupancy::new(&config.limits);
/// let app = http::router(http::AppState { storage, config, shutdown, cut_connections, stats, ws_tasks, metrics, occupancy, subscriptions: None });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4437").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/v1/stream/{*path}", any(stream))
        .route("/v1/ws", get(ws::upgrade));
    if state.config.test_hooks {
        router = router
            .route("/v1/test/drop-connections", axum::routing::post(drop_connections))
            .route("/v1/test/token", get(test_token))
            .route("/v1/test/stats", get(test_stats));
    }
    router = router.route("/healthz", get(|| async { "ok\n" }));
    if matches!(state.config.auth, AuthMode::None) {
        // Without access control everything here is open anyway; with it,
        // metrics are served only on the operator's own listener
        // (`--metrics-listen`, [`metrics_router`]).
        router = router.route("/metrics", get(metrics));
    }
    router = match &state.config.static_dir {
        Some(dir) => router.fallback_service(
            tower_http::services::ServeDir::new(dir)
                .append_index_html_on_directories(true)
                .not_found_service(axum::routing::any(not_found)),
        ),
        None => router.fallback(not_found),
    };
    let cors = cors(&state.config.allowed_origins);
    router
        .layer(middleware::from_fn(common_headers))
        .layer(cors)
        .layer(request_log())
        .with_state(state)
}

/// `/metrics` alone, for a listener of its own (`--metrics-listen`): an
/// address only the operator's monitoring reaches.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_session_server::{http, metrics::Metrics};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9464").await?;
/// axum::serve(listener, http::metrics_router(Metrics::new())).await?;
/// # Ok(()) }
/// ```
pub fn metrics_router(metrics: Metrics) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Metrics>| async move { metrics_response(&m) }),
        )
        .fallback(not_found)
        .with_state(metrics)
}

async fn metrics(State(state): State<AppState>) -> Response {
    metrics_response(&state.metrics)
}

fn metrics_response(metrics: &Metrics) -> Response {
    (
        [
            (header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics.encode(),
    )
        .into_response()
}

/// The request-logging layer.
type RequestLog = TraceLayer<SharedClassifier<ServerErrorsAsFailures>, fn(&Request<Body>) -> tracing::Span, ()>;

/// One log line per request (`RUST_LOG=tower_http=debug`): method, path,
/// status and latency. Never the query string or a header, so no token
/// reaches the logs.
fn request_log() -> RequestLog {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request<Body>) -> tracing::Span)
        .on_request(())
}

fn request_span(req: &Request<Body>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// CORS from the origin allowlist (`--allow-origin`).
fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let names = |list: &str| -> Vec<HeaderName> { list.split(',').filter_map(|h| h.trim().parse().ok()).collect() };
    let allow_origin = match origins {
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(names(headers::ALLOWED))
        .expose_headers(names(headers::EXPOSED))
        .max_age(Duration::from_secs(86_400))
}

/// Test hook: WebSocket connections accepted so far, as JSON.
async fn test_stats(State(state): State<AppState>) -> Response {
    let n = state.stats.ws_connections.load(Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{{\"ws_connections\":{n}}}"),
    )
        .into_response()
}

/// Test hook: mints a token with the server's first signing key:
/// `?sub=ada&grant=sessions/x:read,append&ttl_ms=3000`.
async fn test_token(State(state): State<AppState>, Query(query): Query<Vec<(String, String)>>) -> Response {
    let AuthMode::Jwt(keys) = &state.config.auth else {
        return ApiError::bad_request("the server runs with --auth none: no tokens").into_response();
    };
    let mut sub = None;
    let mut grants = Vec::new();
    let mut ttl_ms = 60_000u64;
    for (key, value) in &query {
        match key.as_str() {
            "sub" => sub = Some(value.as_str()),
            "grant" => match crate::auth::jwt::parse_grant(value) {
                Ok(g) => grants.push(g),
                Err(e) => return ApiError::bad_request(e).into_response(),
            },
            "ttl_ms" => match value.parse() {
                Ok(ms) => ttl_ms = ms,
                Err(_) => return ApiError::bad_request("ttl_ms must be an integer").into_response(),
            },
            _ => {}
        }
    }
    let Some(sub) = sub else {
        return ApiError::bad_request("sub is required").into_response();
    };
    match keys.mint(None, sub, &grants, ttl_ms.div_ceil(1000).max(1)) {
        Ok(token) => ([(header::CACHE_CONTROL, "no-store")], token).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Test hook: cuts every WebSocket connection without a close frame.
async fn drop_connections(State(state): State<AppState>) -> Response {
    let cut = state.cut_connections.send(()).unwrap_or(0);
    tracing::info!(connections = cut, "test hook: cutting WebSocket connections");
    (StatusCode::OK, format!("cut {cut} connections\n")).into_response()
}

async fn stream(State(state): State<AppState>, req: Request) -> Response {
    let decoded = match decode_path(req.uri().path().strip_prefix(STREAM_PREFIX).unwrap_or_default()) {
        Ok(path) => path,
        Err(e) => return e.into_response(),
    };
    if let Some(rest) = decoded.strip_prefix(RESERVED_SEGMENT).and_then(|r| r.strip_prefix('/')) {
        return subscriptions::handle(state, rest, req).await;
    }
    let result = async {
        let path = stream_path(req.uri().path())?;
        let method = req.method().clone();
        if method == Method::OPTIONS {
            // CORS preflights were answered by the CORS layer.
            return Ok((StatusCode::NO_CONTENT, [(header::ALLOW, ALLOWED_METHODS)]).into_response());
        }
        let access = access::of_headers(&state.config, req.headers())?;
        match method {
            Method::GET => {
                access.check(&path, Right::Read)?;
                read::get(state, path, req, &access).await
            }
            Method::HEAD => {
                access.check(&path, Right::Read)?;
                read::head(state, path).await
            }
            Method::PUT => write::put(state, path, req, &access).await,
            Method::POST => write::post(state, path, req, &access).await,
            Method::DELETE => {
                access.check(&path, Right::Delete)?;
                write::delete(state, path).await
            }
            other => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {other} is not supported on streams"),
            )
            .with_header(header::ALLOW, ALLOWED_METHODS)),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

const ALLOWED_METHODS: &str = "GET, HEAD, PUT, POST, DELETE, OPTIONS";

/// Whether reads by this request may be kept by shared caches.
pub(crate) fn shared_cacheable(access: &Access) -> bool {
    !access.is_enforced()
}

/// The stream path of a request URI (the part after `/v1/stream/`),
/// percent-decoded: the same string a WebSocket frame carries
/// (`durable_session_protocol::path`).
fn stream_path(uri_path: &str) -> Result<String, ApiError> {
    let path = decode_path(uri_path.strip_prefix(STREAM_PREFIX).unwrap_or_default())?;
    validate_path(&path)?;
    Ok(path)
}

fn decode_path(encoded: &str) -> Result<String, ApiError> {
    durable_session_protocol::path::decode(encoded).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The stream path named by a `Stream-Forked-From` header: a URL path on this
/// server (`/v1/stream/a/b`) or a stream path (`a/b`), percent-encoded.
pub(crate) fn source_path(value: &str) -> Result<String, ApiError> {
    let path = value
        .strip_prefix(STREAM_PREFIX)
        .or_else(|| value.strip_prefix('/'))
        .unwrap_or(value);
    let path = decode_path(path)?;
    validate_path(&path)?;
    Ok(path)
}

/// The first path segment of the Durable Streams control API
/// (PROTOCOL.md §6): never a stream.
const RESERVED_SEGMENT: &str = "__ds";

/// Whether `path` is under the reserved `__ds` prefix.
pub(crate) fn reserved(path: &str) -> bool {
    path.split('/').next() == Some(RESERVED_SEGMENT)
}

pub(crate) fn validate_path(path: &str) -> Result<(), ApiError> {
    if path.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no stream path given"));
    }
    if reserved(path) {
        return Err(ApiError::bad_request(
            "paths under __ds/ are reserved for the Durable Streams control API",
        ));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::bad_request(format!(
            "stream path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    // Stream paths are opaque keys, but a path that looks like traversal is
    // refused all the same.
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(ApiError::bad_request("stream path must not contain . or .. segments"));
    }
    Ok(())
}

/// Adds browser-security headers to every response.
async fn common_headers(req: Request<Body>, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_paths() {
        assert_eq!(stream_path("/v1/stream/sessions/abc").unwrap(), "sessions/abc");
        assert!(stream_path("/v1/stream/").is_err());
        for bad in ["/v1/stream/a/../b", "/v1/stream/./a", "/v1/stream/a/%2E%2e/b"] {
            assert_eq!(stream_path(bad).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(stream_path(&format!("/v1/stream/{}", "x".repeat(MAX_PATH_BYTES + 1))).is_err());
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(
            stream_path("/v1/stream/sessions/caf%C3%A9/%C3%9F").unwrap(),
            "sessions/café/ß"
        );
        assert_eq!(stream_path("/v1/stream/a%20b").unwrap(), "a b");
        assert_eq!(
            stream_path("/v1/stream/a/%FF").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(source_path("/v1/stream/caf%C3%A9").unwrap(), "café");
    }

    #[test]
    fn fork_sources() {
        assert_eq!(source_path("/v1/stream/a/b").unwrap(), "a/b");
        assert_eq!(source_path("a/b").unwrap(), "a/b");
        assert_eq!(source_path("/a").unwrap(), "a");
    }
}
