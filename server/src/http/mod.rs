//! The Durable Streams HTTP protocol at `/v1/stream/{path}`.
//!
//! Handlers are thin: they parse and validate the request ([`headers`]), call
//! [`Storage`], and shape the answer. Every response, errors included, carries
//! CORS and browser-security headers ([`common_headers`]).

mod error;
pub mod headers;
mod read;
mod write;
mod ws;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub use error::ApiError;

use crate::config::ServerConfig;
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
}

/// The HTTP application: streams, a health check, and a plain 404 elsewhere.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use durable_session_server::{config::ServerConfig, http, storage::sqlite::SqliteStorage};
/// let storage = Arc::new(SqliteStorage::open(std::path::Path::new(".data"))?);
/// let (_stop, shutdown) = tokio::sync::watch::channel(false);
/// let cut_connections = tokio::sync::broadcast::channel(1).0;
/// let app = http::router(http::AppState { storage, config: Arc::new(ServerConfig::default()), shutdown, cut_connections });
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:4437").await?;
/// axum::serve(listener, app).await?;
/// # Ok(()) }
/// ```
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/v1/stream/{*path}", any(stream))
        .route("/v1/ws", get(ws::upgrade));
    if state.config.test_hooks {
        router = router.route("/v1/test/drop-connections", axum::routing::post(drop_connections));
    }
    router = router.route("/healthz", get(|| async { "ok\n" }));
    router = match &state.config.static_dir {
        Some(dir) => router.fallback_service(
            tower_http::services::ServeDir::new(dir)
                .append_index_html_on_directories(true)
                .not_found_service(axum::routing::any(not_found)),
        ),
        None => router.fallback(not_found),
    };
    router.layer(middleware::from_fn(common_headers)).with_state(state)
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
    let result = match stream_path(req.uri().path()) {
        Err(e) => Err(e),
        Ok(path) => match req.method().clone() {
            Method::GET => read::get(state, path, req).await,
            Method::HEAD => read::head(state, path).await,
            Method::PUT => write::put(state, path, req).await,
            Method::POST => write::post(state, path, req).await,
            Method::DELETE => write::delete(state, path).await,
            Method::OPTIONS => Ok(preflight(&req)),
            other => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {other} is not supported on streams"),
            )
            .with_header(header::ALLOW, "GET, HEAD, PUT, POST, DELETE, OPTIONS")),
        },
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The stream path of a request URI (the part after `/v1/stream/`).
fn stream_path(uri_path: &str) -> Result<String, ApiError> {
    let path = uri_path.strip_prefix(STREAM_PREFIX).unwrap_or_default();
    validate_path(path)?;
    Ok(path.to_owned())
}

/// The stream path named by a `Stream-Forked-From` header: a URL path on this
/// server (`/v1/stream/a/b`) or a stream path (`a/b`).
pub(crate) fn source_path(value: &str) -> Result<String, ApiError> {
    let path = value
        .strip_prefix(STREAM_PREFIX)
        .or_else(|| value.strip_prefix('/'))
        .unwrap_or(value);
    validate_path(path)?;
    Ok(path.to_owned())
}

pub(crate) fn validate_path(path: &str) -> Result<(), ApiError> {
    if path.is_empty() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no stream path given"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::bad_request(format!(
            "stream path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    // Dots may arrive percent-encoded; stream paths are opaque keys, but a
    // path that looks like traversal is refused all the same.
    let dots = |seg: &str| {
        let seg = seg.replace("%2e", ".").replace("%2E", ".");
        seg == "." || seg == ".."
    };
    if path.split('/').any(dots) {
        return Err(ApiError::bad_request("stream path must not contain . or .. segments"));
    }
    Ok(())
}

fn preflight(req: &Request) -> Response {
    let allow_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .map(|requested| format!("{}, {requested}", headers::ALLOWED))
        .unwrap_or_else(|| headers::ALLOWED.to_owned());
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT, POST, DELETE, OPTIONS"),
    );
    if let Ok(v) = HeaderValue::from_str(&allow_headers) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    res
}

/// Adds CORS and browser-security headers to every response and logs it.
async fn common_headers(req: Request<Body>, next: Next) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let started = std::time::Instant::now();
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(headers::EXPOSED),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    tracing::debug!(%method, %uri, status = res.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
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
    fn fork_sources() {
        assert_eq!(source_path("/v1/stream/a/b").unwrap(), "a/b");
        assert_eq!(source_path("a/b").unwrap(), "a/b");
        assert_eq!(source_path("/a").unwrap(), "a");
    }
}
