//! Reads: `HEAD`, and `GET` in catch-up, long-poll and SSE modes.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use durable_session_protocol::ws::ErrorCode;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::headers::{
    STREAM_CLOSED, STREAM_CURSOR, STREAM_EXPIRES_AT, STREAM_NEXT_OFFSET, STREAM_SSE_DATA_ENCODING, STREAM_TTL,
    STREAM_UP_TO_DATE,
};
use super::{ApiError, AppState};
use crate::auth::Access;
use crate::cursor::next_cursor;
use crate::limits::Slot;
use crate::live_read::LiveRead;
use crate::metrics::{ConnectionKind, GaugeGuard};
use crate::offset::{StartAt, format_offset, parse_start};
use crate::storage::{Chunk, Expiry, Read, StreamInfo, rules};

/// How long a reader refused for too many readers is asked to wait.
const READERS_RETRY_AFTER_SECS: u64 = 5;

/// A live reader's place among the stream's (`--max-http-readers-per-stream`),
/// and its count in the metrics, both held until the read ends.
struct LiveReader {
    _slot: Slot<String>,
    _open: GaugeGuard,
}

impl LiveReader {
    /// A place for a long-poll or SSE read of `path`, or `503` with
    /// `Retry-After` (`too_many_readers`) when the stream has as many as
    /// allowed: server-side capacity, so the client retries later.
    fn take(state: &AppState, path: &str, kind: ConnectionKind) -> Result<Self, ApiError> {
        let readers = &state.occupancy.http_readers_per_stream;
        match readers.try_take(path.to_owned()) {
            Some(slot) => Ok(Self {
                _slot: slot,
                _open: state.metrics.connection(kind),
            }),
            None => {
                state.metrics.limit_hit(ErrorCode::TooManyReaders);
                let message = format!(
                    "too_many_readers: this stream has {} live HTTP readers, the most allowed; retry later",
                    readers.max()
                );
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
                    .with_header(header::RETRY_AFTER, READERS_RETRY_AFTER_SECS))
            }
        }
    }
}

/// Cache policy for immutable historical data.
const CACHEABLE: &str = "public, max-age=60, stale-while-revalidate=300";
/// The same for authorized reads: only the browser's own cache may keep them.
const CACHEABLE_PRIVATE: &str = "private, max-age=60, stale-while-revalidate=300";

/// How a read may be cached and how long it may last.
#[derive(Clone, Copy)]
struct Policy {
    cacheable: &'static str,
    /// When the reader's token expires: live reads end then, so the client
    /// comes back with a fresh token.
    valid_until: Option<Instant>,
}

impl Policy {
    fn of(access: &Access) -> Self {
        let valid_until = access.principal().map(|p| {
            let now_ms = rules::now_ms().max(0) as u64;
            Instant::now() + std::time::Duration::from_millis((p.exp * 1000).saturating_sub(now_ms))
        });
        Self {
            cacheable: if super::shared_cacheable(access) {
                CACHEABLE
            } else {
                CACHEABLE_PRIVATE
            },
            valid_until,
        }
    }

    /// `deadline`, or the token's expiry if sooner.
    fn cap(&self, deadline: Instant) -> Instant {
        self.valid_until.map_or(deadline, |v| v.min(deadline))
    }
}

/// `live` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    CatchUp,
    LongPoll,
    Sse,
}

/// The query parameters of a read.
struct ReadQuery {
    offset: Option<StartAt>,
    live: Live,
    cursor: Option<u64>,
}

fn parse_query(query: Option<&str>) -> Result<ReadQuery, ApiError> {
    let mut offset = None;
    let mut live = None;
    let mut cursor = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "offset" => {
                if offset.is_some() {
                    return Err(ApiError::bad_request("offset is given more than once"));
                }
                offset = Some(parse_start(&value).map_err(|e| ApiError::bad_request(e.to_string()))?);
            }
            "live" => {
                if live.is_some() {
                    return Err(ApiError::bad_request("live is given more than once"));
                }
                live = Some(match value.as_ref() {
                    "long-poll" => Live::LongPoll,
                    "sse" => Live::Sse,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "live must be long-poll or sse, got {other:?}"
                        )));
                    }
                });
            }
            // A cursor is only an echo for caches; a malformed one is ignored.
            "cursor" => cursor = value.parse().ok(),
            _ => {}
        }
    }
    let live = live.unwrap_or(Live::CatchUp);
    if live != Live::CatchUp && offset.is_none() {
        return Err(ApiError::bad_request(
            "live reads need an offset (use -1 for the beginning)",
        ));
    }
    Ok(ReadQuery { offset, live, cursor })
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        h.insert(name, v);
    }
}

/// `Stream-TTL` / `Stream-Expires-At` describing a stream's expiry.
fn expiry_headers(h: &mut HeaderMap, expiry: Expiry) {
    match expiry {
        Expiry::Never => {}
        Expiry::Ttl(secs) => set(h, STREAM_TTL, secs.to_string()),
        Expiry::At(ms) => {
            let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .ok()
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
            if let Some(at) = at {
                set(h, STREAM_EXPIRES_AT, at);
            }
        }
    }
}

/// `HEAD`: metadata only, never cached.
pub(super) async fn head(state: AppState, path: String) -> Result<Response, ApiError> {
    let info = state.storage.head(&path).await?;
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    set(h, header::CONTENT_TYPE, &info.content_type);
    set(h, STREAM_NEXT_OFFSET, format_offset(info.tail));
    set(h, header::CACHE_CONTROL, "no-store");
    expiry_headers(h, info.expiry);
    if info.closed {
        set(h, STREAM_CLOSED, "true");
    }
    Ok(res)
}

/// `GET`: dispatches on the `live` parameter.
pub(super) async fn get(state: AppState, path: String, req: Request, access: &Access) -> Result<Response, ApiError> {
    let query = parse_query(req.uri().query())?;
    let from = query.offset.unwrap_or(StartAt::Beginning);
    let policy = Policy::of(access);
    match query.live {
        Live::CatchUp => catch_up(state, path, from, req.headers(), policy).await,
        Live::LongPoll => long_poll(state, path, from, query.cursor, policy).await,
        Live::Sse => sse(state, path, from, query.cursor, policy).await,
    }
}

/// The body of a chunk as one response: a JSON array, or the bytes.
fn body_of(chunk: &Chunk) -> Bytes {
    if chunk.info.is_json() {
        let len = chunk.pieces.iter().map(Bytes::len).sum::<usize>() + chunk.pieces.len() + 2;
        let mut out = BytesMut::with_capacity(len);
        out.put_u8(b'[');
        for (i, piece) in chunk.pieces.iter().enumerate() {
            if i > 0 {
                out.put_u8(b',');
            }
            out.put_slice(piece);
        }
        out.put_u8(b']');
        out.freeze()
    } else if chunk.pieces.len() == 1 {
        chunk.pieces[0].clone()
    } else {
        chunk.pieces.concat().into()
    }
}

/// Whether the reader has reached the end of a closed stream.
fn at_eof(chunk: &Chunk) -> bool {
    chunk.info.closed && chunk.up_to_date()
}

/// Headers shared by every data-carrying read response.
fn chunk_headers(h: &mut HeaderMap, chunk: &Chunk) {
    set(h, header::CONTENT_TYPE, &chunk.info.content_type);
    set(h, STREAM_NEXT_OFFSET, format_offset(chunk.next));
    if chunk.up_to_date() {
        set(h, STREAM_UP_TO_DATE, "true");
    }
    if at_eof(chunk) {
        set(h, STREAM_CLOSED, "true");
    }
}

fn etag(chunk: &Chunk) -> String {
    let closed = if at_eof(chunk) { ":c" } else { "" };
    format!("\"{}:{}:{}{closed}\"", chunk.info.id, chunk.start, chunk.next)
}

fn etag_matches(if_none_match: Option<&HeaderValue>, etag: &str) -> bool {
    if_none_match.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
    })
}

fn cursor_header(h: &mut HeaderMap, client: Option<u64>) {
    set(h, STREAM_CURSOR, cursor_value(client).to_string());
}

fn cursor_value(client: Option<u64>) -> u64 {
    next_cursor(rules::now_ms(), client, rand::random_range(1..=3600))
}

async fn catch_up(
    state: AppState,
    path: String,
    from: StartAt,
    req_headers: &HeaderMap,
    policy: Policy,
) -> Result<Response, ApiError> {
    let chunk = state
        .storage
        .read(Read {
            path,
            from,
            max_bytes: state.config.max_read_bytes,
        })
        .await?;
    if from == StartAt::Now {
        let mut res = (StatusCode::OK, body_of(&chunk)).into_response();
        let h = res.headers_mut();
        chunk_headers(h, &chunk);
        set(h, header::CACHE_CONTROL, "no-store");
        return Ok(res);
    }
    let tag = etag(&chunk);
    if etag_matches(req_headers.get(header::IF_NONE_MATCH), &tag) {
        let mut res = StatusCode::NOT_MODIFIED.into_response();
        set(res.headers_mut(), header::ETAG, tag);
        return Ok(res);
    }
    let mut res = (StatusCode::OK, body_of(&chunk)).into_response();
    let h = res.headers_mut();
    chunk_headers(h, &chunk);
    set(h, header::ETAG, tag);
    // Data at a fixed offset never changes; an empty answer at the tail does.
    set(
        h,
        header::CACHE_CONTROL,
        if chunk.pieces.is_empty() {
            "no-store"
        } else {
            policy.cacheable
        },
    );
    Ok(res)
}

/// `204` for a long-poll that found nothing (or the end of a closed stream).
fn no_content(info: &StreamInfo, cursor: Option<u64>) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    set(h, STREAM_NEXT_OFFSET, format_offset(info.tail));
    set(h, STREAM_UP_TO_DATE, "true");
    set(h, header::CACHE_CONTROL, "no-store");
    if info.closed {
        set(h, STREAM_CLOSED, "true");
    } else {
        cursor_header(h, cursor);
    }
    res
}

async fn long_poll(
    state: AppState,
    path: String,
    from: StartAt,
    cursor: Option<u64>,
    policy: Policy,
) -> Result<Response, ApiError> {
    let _reader = LiveReader::take(&state, &path, ConnectionKind::LongPoll)?;
    let deadline = policy.cap(Instant::now() + state.config.long_poll_timeout);
    let mut live = LiveRead::new(state.storage.clone(), path, from, state.config.max_read_bytes);
    // What is there now; the wait for more only starts if there is nothing.
    let mut chunk = live.next_until(Instant::now()).await?;
    if chunk.pieces.is_empty() && !chunk.info.closed {
        let mut stopping = state.shutdown.clone();
        tokio::select! {
            next = live.next_until(deadline) => chunk = next?,
            // A shutdown answers at once: nothing new, ask again.
            () = super::stopped(&mut stopping) => {}
        }
    }
    if chunk.pieces.is_empty() {
        return Ok(no_content(&chunk.info, cursor));
    }
    let mut res = (StatusCode::OK, body_of(&chunk)).into_response();
    let h = res.headers_mut();
    chunk_headers(h, &chunk);
    set(h, header::ETAG, etag(&chunk));
    set(h, header::CACHE_CONTROL, policy.cacheable);
    if !at_eof(&chunk) {
        cursor_header(h, cursor);
    }
    Ok(res)
}

/// One SSE event; payload lines each get a `data:` prefix.
fn sse_event(out: &mut String, event: &str, payload: &str) {
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in payload.split('\n') {
        out.push_str("data:");
        // The SSE parser drops one space after the colon; keep a real one.
        if line.starts_with(' ') {
            out.push(' ');
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

/// A `control` event describing where the reader stands.
fn control_event(out: &mut String, chunk: &Chunk, cursor: &mut Option<u64>) {
    let mut control = serde_json::Map::new();
    control.insert("streamNextOffset".into(), format_offset(chunk.next).into());
    if at_eof(chunk) {
        control.insert("streamClosed".into(), true.into());
        control.insert("upToDate".into(), true.into());
    } else {
        let next = cursor_value(*cursor);
        *cursor = Some(next);
        control.insert("streamCursor".into(), next.to_string().into());
        if chunk.up_to_date() {
            control.insert("upToDate".into(), true.into());
        }
    }
    sse_event(out, "control", &serde_json::Value::Object(control).to_string());
}

/// A `data` event carrying a chunk: JSON arrays and text as is, anything
/// else in base64.
fn data_event(chunk: &Chunk) -> String {
    let body = body_of(chunk);
    let mut out = String::new();
    if rules::is_text(&chunk.info.content_type) {
        let text = String::from_utf8_lossy(&body);
        sse_event(&mut out, "data", &text.replace("\r\n", "\n").replace('\r', "\n"));
    } else {
        sse_event(
            &mut out,
            "data",
            &base64::engine::general_purpose::STANDARD.encode(&body),
        );
    }
    out
}

async fn sse(
    state: AppState,
    path: String,
    from: StartAt,
    cursor: Option<u64>,
    policy: Policy,
) -> Result<Response, ApiError> {
    let reader = LiveReader::take(&state, &path, ConnectionKind::Sse)?;
    let mut live = LiveRead::new(state.storage.clone(), path.clone(), from, state.config.max_read_bytes);
    // The first read happens before the response starts, so a missing
    // stream is an ordinary 404.
    let first = live.next_until(Instant::now()).await?;
    let binary = !rules::is_text(&first.info.content_type);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let config = state.config.clone();
    let mut stopping = state.shutdown.clone();
    tokio::spawn(async move {
        let _reader = reader;
        let ends_at = policy.cap(Instant::now() + config.sse_max_duration);
        let mut cursor = cursor;
        let mut chunk = first;
        let mut first_event = true;
        loop {
            let mut out = String::new();
            if !chunk.pieces.is_empty() {
                // Written once for all the stream's live SSE readers.
                out.push_str(&live.shared(&chunk, "sse", data_event));
            }
            if !chunk.pieces.is_empty() || first_event || at_eof(&chunk) {
                control_event(&mut out, &chunk, &mut cursor);
                first_event = false;
            } else {
                // Nothing new within the keep-alive interval.
                out.push_str(": keep-alive\n\n");
            }
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return; // client went away
            }
            if at_eof(&chunk) {
                return;
            }
            let now = Instant::now();
            if now >= ends_at {
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                // A shutdown ends the response; the client reconnects from
                // its offset.
                () = super::stopped(&mut stopping) => return,
                next = live.next_until(now + config.sse_keepalive.min(ends_at - now)) => match next {
                    Ok(next) => chunk = next,
                    Err(e) => {
                        tracing::debug!(%path, error = %e, "SSE stream ends");
                        return;
                    }
                },
            }
        }
    });
    let mut res = Response::new(Body::from_stream(tokio_stream_from(rx)));
    let h = res.headers_mut();
    set(h, header::CONTENT_TYPE, "text/event-stream");
    set(h, header::CACHE_CONTROL, "no-cache");
    if binary {
        set(h, STREAM_SSE_DATA_ENCODING, "base64");
    }
    Ok(res)
}

/// Adapts a channel receiver into a body stream.
fn tokio_stream_from(
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}
