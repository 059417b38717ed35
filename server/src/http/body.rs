//! Request bodies: read whole up to the limit (`--max-body-bytes`); past it,
//! a `413 Payload Too Large` the client can read.
//!
//! A server that answers an upload early and then closes the connection
//! leaves unread bytes behind, so the client's kernel gets a reset while the
//! client is still sending. A client that sends the whole body before it
//! reads the answer (Node's `fetch` with a streamed body, for one) then
//! reports a network error — which it retries — instead of "too large". So
//! the `413` carries `Connection: close`, and the rest of the body is read
//! and thrown away while the answer goes out: up to [`DRAIN_BYTES`] more, for
//! at most [`DRAIN_TIME`]. Only then does the connection close. A body whose
//! `Content-Length` is over the limit is answered before any of it is read
//! (and drained only if it is at most [`DRAIN_BYTES`]; a client that sent
//! `Expect: 100-continue` has not sent it at all).

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use bytes::{Bytes, BytesMut};
use durable_session_protocol::ws::ErrorCode;
use http_body_util::BodyExt;

use super::ApiError;

/// The most bytes read and thrown away after a `413`.
pub const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// The longest time spent reading and throwing away a body after a `413`.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the whole body, refusing more than `limit` bytes with `413`.
pub(super) async fn read(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared.filter(|n| *n > limit as u64) {
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if declared <= DRAIN_BYTES && !expects_continue {
            tokio::spawn(drain(body));
        }
        return Err(too_large(limit));
    }
    let mut body = body;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if buf.len() + data.len() > limit {
            tokio::spawn(drain(body));
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

fn too_large(limit: usize) -> ApiError {
    let mut e = ApiError::of_code(
        ErrorCode::TooLarge,
        format!("request body is larger than the limit of {limit} bytes"),
    );
    e.headers.push((header::CONNECTION, HeaderValue::from_static("close")));
    e
}

/// Reads and throws away the rest of a refused body (bounded in bytes and
/// time), so the connection closes only once the client stopped sending.
async fn drain(mut body: Body) {
    let discard = async {
        let mut left = DRAIN_BYTES;
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            if n > left {
                break;
            }
            left -= n;
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, discard).await;
}
