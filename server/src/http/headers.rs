//! Protocol header names and strict parsers for their values.

use axum::http::{HeaderMap, HeaderName};

use super::error::ApiError;
use crate::offset::{Pos, parse_offset};
use crate::storage::{Expiry, Producer};

pub const STREAM_NEXT_OFFSET: HeaderName = HeaderName::from_static("stream-next-offset");
pub const STREAM_CURSOR: HeaderName = HeaderName::from_static("stream-cursor");
pub const STREAM_UP_TO_DATE: HeaderName = HeaderName::from_static("stream-up-to-date");
pub const STREAM_CLOSED: HeaderName = HeaderName::from_static("stream-closed");
pub const STREAM_TTL: HeaderName = HeaderName::from_static("stream-ttl");
pub const STREAM_EXPIRES_AT: HeaderName = HeaderName::from_static("stream-expires-at");
pub const STREAM_SEQ: HeaderName = HeaderName::from_static("stream-seq");
pub const STREAM_SSE_DATA_ENCODING: HeaderName = HeaderName::from_static("stream-sse-data-encoding");
pub const STREAM_FORKED_FROM: HeaderName = HeaderName::from_static("stream-forked-from");
pub const STREAM_FORK_OFFSET: HeaderName = HeaderName::from_static("stream-fork-offset");
pub const STREAM_FORK_SUB_OFFSET: HeaderName = HeaderName::from_static("stream-fork-sub-offset");
pub const PRODUCER_ID: HeaderName = HeaderName::from_static("producer-id");
pub const PRODUCER_EPOCH: HeaderName = HeaderName::from_static("producer-epoch");
pub const PRODUCER_SEQ: HeaderName = HeaderName::from_static("producer-seq");
pub const PRODUCER_EXPECTED_SEQ: HeaderName = HeaderName::from_static("producer-expected-seq");
pub const PRODUCER_RECEIVED_SEQ: HeaderName = HeaderName::from_static("producer-received-seq");

/// Response headers a browser may read (`Access-Control-Expose-Headers`).
pub const EXPOSED: &str = "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, \
     Stream-TTL, Stream-Expires-At, Stream-Seq, Stream-SSE-Data-Encoding, Stream-Forked-From, \
     Stream-Fork-Offset, Producer-Epoch, Producer-Seq, Producer-Expected-Seq, \
     Producer-Received-Seq, ETag, Location, Content-Type";

/// Request headers a browser may send (`Access-Control-Allow-Headers`).
pub const ALLOWED: &str = "Content-Type, Authorization, If-None-Match, Stream-TTL, \
     Stream-Expires-At, Stream-Closed, Stream-Seq, Stream-Forked-From, Stream-Fork-Offset, \
     Stream-Fork-Sub-Offset, Producer-Id, Producer-Epoch, Producer-Seq";

/// The largest integer JavaScript represents exactly (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A header's value as text, if present. Non-UTF-8 values are an error.
pub fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::bad_request(format!("{name} is not valid text")))
        })
        .transpose()
}

/// A non-negative decimal integer with no sign, no leading zeros, no
/// fraction and no exponent.
pub fn strict_uint(s: &str) -> Option<u64> {
    let canonical = s == "0" || (!s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()));
    if canonical { s.parse().ok() } else { None }
}

fn uint_header(headers: &HeaderMap, name: &HeaderName, max: u64) -> Result<Option<u64>, ApiError> {
    text(headers, name)?
        .map(|v| {
            strict_uint(v).filter(|n| *n <= max).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be a non-negative integer without sign or leading zeros (at most {max}), got {v:?}"
                ))
            })
        })
        .transpose()
}

/// `Stream-Closed: true` (case-insensitive); any other value means absent.
pub fn closed(headers: &HeaderMap) -> bool {
    headers
        .get(STREAM_CLOSED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// `Stream-TTL` / `Stream-Expires-At`; both at once is an error.
pub fn expiry(headers: &HeaderMap) -> Result<Expiry, ApiError> {
    let ttl = uint_header(headers, &STREAM_TTL, i64::MAX as u64 / 1000)?;
    let at = text(headers, &STREAM_EXPIRES_AT)?
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                .map_err(|_| {
                    ApiError::bad_request(format!("Stream-Expires-At must be an RFC 3339 timestamp, got {v:?}"))
                })
        })
        .transpose()?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("send Stream-TTL or Stream-Expires-At, not both")),
        (Some(ttl), None) => Ok(Expiry::Ttl(ttl)),
        (None, Some(at)) => Ok(Expiry::At(at)),
        (None, None) => Ok(Expiry::Never),
    }
}

/// `Producer-Id`, `Producer-Epoch`, `Producer-Seq`: all three or none.
pub fn producer(headers: &HeaderMap) -> Result<Option<Producer>, ApiError> {
    let id = text(headers, &PRODUCER_ID)?;
    let epoch = uint_header(headers, &PRODUCER_EPOCH, MAX_SAFE_INTEGER)?;
    let seq = uint_header(headers, &PRODUCER_SEQ, MAX_SAFE_INTEGER)?;
    match (id, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(""), _, _) => Err(ApiError::bad_request("Producer-Id must not be empty")),
        (Some(id), Some(epoch), Some(seq)) => Ok(Some(Producer {
            id: id.to_owned(),
            epoch,
            seq,
        })),
        _ => Err(ApiError::bad_request(
            "Producer-Id, Producer-Epoch and Producer-Seq must be sent together",
        )),
    }
}

/// `Stream-Fork-Offset`, a concrete offset.
pub fn fork_offset(headers: &HeaderMap) -> Result<Option<Pos>, ApiError> {
    text(headers, &STREAM_FORK_OFFSET)?
        .map(|v| parse_offset(v).map_err(|e| ApiError::bad_request(format!("Stream-Fork-Offset: {e}"))))
        .transpose()
}

/// `Stream-Fork-Sub-Offset`, 0 when absent.
pub fn fork_sub_offset(headers: &HeaderMap) -> Result<u64, ApiError> {
    Ok(uint_header(headers, &STREAM_FORK_SUB_OFFSET, MAX_SAFE_INTEGER)?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn map(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert((*k).clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn strict_integers() {
        assert_eq!(strict_uint("0"), Some(0));
        assert_eq!(strict_uint("3600"), Some(3600));
        for bad in ["", "+1", "-1", "01", "1.0", "3.6e3", " 1", "abc"] {
            assert_eq!(strict_uint(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn closed_is_only_true() {
        assert!(closed(&map(&[(&STREAM_CLOSED, "TRUE")])));
        for other in ["false", "yes", "1", ""] {
            assert!(!closed(&map(&[(&STREAM_CLOSED, other)])), "{other:?}");
        }
    }

    #[test]
    fn ttl_and_expiry_are_exclusive() {
        assert_eq!(expiry(&map(&[(&STREAM_TTL, "60")])).unwrap(), Expiry::Ttl(60));
        assert!(
            expiry(&map(&[
                (&STREAM_TTL, "60"),
                (&STREAM_EXPIRES_AT, "2030-01-01T00:00:00Z")
            ]))
            .is_err()
        );
        assert_eq!(
            expiry(&map(&[(&STREAM_EXPIRES_AT, "1970-01-01T00:00:01Z")])).unwrap(),
            Expiry::At(1000)
        );
        assert!(expiry(&map(&[(&STREAM_EXPIRES_AT, "tomorrow")])).is_err());
    }

    #[test]
    fn producer_headers_come_together() {
        assert_eq!(producer(&HeaderMap::new()).unwrap(), None);
        assert!(producer(&map(&[(&PRODUCER_ID, "p")])).is_err());
        assert!(
            producer(&map(&[
                (&PRODUCER_ID, ""),
                (&PRODUCER_EPOCH, "0"),
                (&PRODUCER_SEQ, "0")
            ]))
            .is_err()
        );
        assert!(
            producer(&map(&[
                (&PRODUCER_ID, "p"),
                (&PRODUCER_EPOCH, "9007199254740992"),
                (&PRODUCER_SEQ, "0")
            ]))
            .is_err()
        );
        assert_eq!(
            producer(&map(&[
                (&PRODUCER_ID, "p"),
                (&PRODUCER_EPOCH, "1"),
                (&PRODUCER_SEQ, "2")
            ]))
            .unwrap(),
            Some(Producer {
                id: "p".into(),
                epoch: 1,
                seq: 2
            })
        );
    }
}
