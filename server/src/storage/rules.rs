//! Protocol rules every storage backend applies inside its own transaction:
//! content-type matching, JSON-mode message splitting, idempotent-producer
//! validation, `Stream-Seq` ordering and expiry. Pure functions, no I/O.

use bytes::Bytes;
use durable_session_protocol::json::{self, MAX_MESSAGE_DEPTH};
use serde_json::value::RawValue;

use super::{Expiry, Producer, StoreError};
use crate::offset::Pos;

/// The content type a stream gets when `PUT` names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The media type of a `Content-Type` value: no parameters, lower case.
///
/// ```
/// use durable_session_server::storage::rules::media_type;
/// assert_eq!(media_type(" Application/JSON; charset=utf-8"), "application/json");
/// ```
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Whether two `Content-Type` values name the same media type.
pub fn same_media_type(a: &str, b: &str) -> bool {
    media_type(a) == media_type(b)
}

/// Whether a stream of this content type is in JSON mode.
pub fn is_json(content_type: &str) -> bool {
    media_type(content_type) == "application/json"
}

/// Whether SSE carries this content type as text (otherwise base64).
pub fn is_text(content_type: &str) -> bool {
    let media = media_type(content_type);
    media.starts_with("text/") || media == "application/json"
}

/// A request body cut into the pieces a stream stores, and how many
/// positions they take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pieces {
    /// JSON mode: one JSON text per message. Otherwise: the body as one run.
    pub pieces: Vec<Bytes>,
    /// Positions the pieces occupy: messages (JSON) or bytes.
    pub len: Pos,
}

/// The text of a JSON-mode body, if it may be stored: UTF-8, and no message
/// nested deeper than [`MAX_MESSAGE_DEPTH`] arrays and objects (a top-level
/// array is flattened into messages, so it may nest one level more). One
/// pass without recursion or allocation, so it runs before anything else is
/// done with the body; whether the text is JSON is for the parser to say.
///
/// ```
/// use durable_session_server::storage::rules::json_text;
/// let deep = |n| "[".repeat(n) + &"]".repeat(n);
/// assert!(json_text(deep(64).as_bytes()).is_ok());
/// assert!(json_text(format!("[{}]", deep(64)).as_bytes()).is_ok(), "a batch of one 64-level message");
/// assert!(json_text(format!(r#"{{"a":{}}}"#, deep(64)).as_bytes()).is_err());
/// assert!(json_text(deep(100_000).as_bytes()).is_err());
/// ```
pub fn json_text(body: &[u8]) -> Result<&str, StoreError> {
    let text =
        std::str::from_utf8(body).map_err(|_| StoreError::BadRequest("invalid JSON: body is not UTF-8".into()))?;
    let batch = text.trim_start().starts_with('[');
    let max = MAX_MESSAGE_DEPTH + usize::from(batch);
    json::check_depth(text, max).map_err(|e| {
        StoreError::BadRequest(format!(
            "JSON nested too deep: a message may nest at most {MAX_MESSAGE_DEPTH} arrays and objects (byte {})",
            e.offset
        ))
    })?;
    Ok(text)
}

/// Cuts a body into stored pieces. In JSON mode the body must be valid JSON
/// ([`json_text`] first); a top-level array is flattened one level, and an
/// empty one is accepted only where `allow_empty_array` (creation) says so.
pub fn split_body(json: bool, body: &Bytes, allow_empty_array: bool) -> Result<Pieces, StoreError> {
    if !json {
        return Ok(Pieces {
            pieces: if body.is_empty() { vec![] } else { vec![body.clone()] },
            len: body.len() as Pos,
        });
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return if allow_empty_array {
            Ok(Pieces { pieces: vec![], len: 0 })
        } else {
            Err(StoreError::BadRequest("empty body".into()))
        };
    }
    let text = json_text(body)?;
    let value: &RawValue =
        serde_json::from_str(text).map_err(|e| StoreError::BadRequest(format!("invalid JSON: {e}")))?;
    let raw = value.get();
    let messages: Vec<&str> = if raw.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(raw).map_err(|e| StoreError::BadRequest(format!("invalid JSON: {e}")))?;
        if items.is_empty() && !allow_empty_array {
            return Err(StoreError::BadRequest("empty JSON array: nothing to append".into()));
        }
        items.into_iter().map(RawValue::get).collect()
    } else {
        vec![raw]
    };
    Ok(Pieces {
        len: messages.len() as Pos,
        pieces: messages
            .into_iter()
            .map(|m| Bytes::copy_from_slice(m.as_bytes()))
            .collect(),
    })
}

/// What a producer's request means given the state stored for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerVerdict {
    /// New data: write it and store `(epoch, seq)`.
    Accept,
    /// Already written: acknowledge without writing. Carries the highest
    /// accepted seq of the epoch.
    Duplicate { last_seq: u64 },
}

/// Validates a producer request against the stored `(epoch, last_seq)`.
///
/// ```
/// use durable_session_server::storage::{Producer, rules::{check_producer, ProducerVerdict}};
/// let p = |epoch, seq| Producer { id: "p".into(), epoch, seq };
/// assert_eq!(check_producer(None, &p(0, 0)), Ok(ProducerVerdict::Accept));
/// assert_eq!(check_producer(Some((0, 0)), &p(0, 1)), Ok(ProducerVerdict::Accept));
/// assert_eq!(check_producer(Some((0, 1)), &p(0, 1)), Ok(ProducerVerdict::Duplicate { last_seq: 1 }));
/// assert!(check_producer(Some((1, 0)), &p(0, 2)).is_err()); // stale epoch
/// ```
pub fn check_producer(stored: Option<(u64, u64)>, req: &Producer) -> Result<ProducerVerdict, StoreError> {
    match stored {
        None if req.seq == 0 => Ok(ProducerVerdict::Accept),
        None => Err(StoreError::SeqGap {
            expected: 0,
            received: req.seq,
        }),
        Some((epoch, _)) if req.epoch < epoch => Err(StoreError::StaleEpoch { current: epoch }),
        Some((epoch, _)) if req.epoch > epoch => {
            if req.seq == 0 {
                Ok(ProducerVerdict::Accept)
            } else {
                Err(StoreError::BadRequest(format!(
                    "a new producer epoch must start at Producer-Seq 0, got {}",
                    req.seq
                )))
            }
        }
        Some((_, last)) if req.seq <= last => Ok(ProducerVerdict::Duplicate { last_seq: last }),
        Some((_, last)) if req.seq == last + 1 => Ok(ProducerVerdict::Accept),
        Some((_, last)) => Err(StoreError::SeqGap {
            expected: last + 1,
            received: req.seq,
        }),
    }
}

/// Checks a `Stream-Seq` against the last one accepted (byte-wise order).
pub fn check_stream_seq(last: Option<&str>, next: &str) -> Result<(), StoreError> {
    match last {
        Some(last) if next.as_bytes() <= last.as_bytes() => Err(StoreError::SeqRegression { last: last.to_owned() }),
        _ => Ok(()),
    }
}

/// The instant (Unix ms) a stream expires, given when it was last touched.
pub fn expires_at_ms(expiry: Expiry, touched_ms: i64) -> Option<i64> {
    match expiry {
        Expiry::Never => None,
        Expiry::Ttl(secs) => Some(touched_ms.saturating_add((secs as i64).saturating_mul(1000))),
        Expiry::At(ms) => Some(ms),
    }
}

/// Whether a stream has expired at `now_ms`.
pub fn is_expired(expiry: Expiry, touched_ms: i64, now_ms: i64) -> bool {
    expires_at_ms(expiry, touched_ms).is_some_and(|at| now_ms >= at)
}

/// The expiry a fork gets: its own if it asked for one, else its source's.
pub fn fork_expiry(source: Expiry, requested: Expiry) -> Expiry {
    match requested {
        Expiry::Never => source,
        own => own,
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str, allow_empty: bool) -> Result<Vec<String>, StoreError> {
        split_body(true, &Bytes::from(body.to_owned()), allow_empty).map(|p| {
            p.pieces
                .iter()
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn json_arrays_flatten_one_level() {
        assert_eq!(json(r#"{"a":1}"#, false).unwrap(), [r#"{"a":1}"#]);
        assert_eq!(
            json(r#"[{"a":1}, {"b":2}]"#, false).unwrap(),
            [r#"{"a":1}"#, r#"{"b":2}"#]
        );
        assert_eq!(json("[[1,2],[3,4]]", false).unwrap(), ["[1,2]", "[3,4]"]);
        assert_eq!(json("[[[1,2,3]]]", false).unwrap(), ["[[1,2,3]]"]);
        assert_eq!(json(" 7 ", false).unwrap(), ["7"]);
    }

    #[test]
    fn empty_arrays_only_on_create() {
        assert!(json("[]", false).is_err());
        assert_eq!(json("[]", true).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn invalid_json_is_a_bad_request() {
        for bad in ["{", "[1,]", "nope", "{\"a\":1}}"] {
            assert!(matches!(json(bad, false), Err(StoreError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn messages_nest_at_most_max_message_depth() {
        let deep = |n| "[".repeat(n) + &"]".repeat(n);
        let obj = |n: usize| r#"{"a":"#.repeat(n) + "1" + &"}".repeat(n);
        assert_eq!(json(&obj(64), false).unwrap(), [obj(64)]);
        assert_eq!(json(&format!("[{},1]", obj(64)), false).unwrap(), [obj(64), "1".into()]);
        for bad in [
            obj(65),
            format!("[1,{}]", obj(65)),
            deep(100_000),
            format!("[{}]", deep(65)),
        ] {
            assert!(
                matches!(json(&bad, false), Err(StoreError::BadRequest(_))),
                "{}",
                bad.len()
            );
        }
        // Octet streams are not JSON: brackets are bytes.
        assert!(split_body(false, &Bytes::from(deep(1000)), false).is_ok());
    }

    #[test]
    fn bytes_are_one_piece() {
        let p = split_body(false, &Bytes::from_static(b"abc"), false).unwrap();
        assert_eq!(p.len, 3);
        assert_eq!(p.pieces.len(), 1);
    }

    #[test]
    fn producer_outcomes() {
        let p = |epoch, seq| Producer {
            id: "p".into(),
            epoch,
            seq,
        };
        assert_eq!(check_producer(None, &p(3, 0)), Ok(ProducerVerdict::Accept));
        assert_eq!(
            check_producer(None, &p(0, 2)),
            Err(StoreError::SeqGap {
                expected: 0,
                received: 2
            })
        );
        assert_eq!(
            check_producer(Some((2, 5)), &p(1, 0)),
            Err(StoreError::StaleEpoch { current: 2 })
        );
        assert!(matches!(
            check_producer(Some((2, 5)), &p(3, 1)),
            Err(StoreError::BadRequest(_))
        ));
        assert_eq!(check_producer(Some((2, 5)), &p(3, 0)), Ok(ProducerVerdict::Accept));
        assert_eq!(
            check_producer(Some((2, 5)), &p(2, 3)),
            Ok(ProducerVerdict::Duplicate { last_seq: 5 })
        );
        assert_eq!(check_producer(Some((2, 5)), &p(2, 6)), Ok(ProducerVerdict::Accept));
        assert_eq!(
            check_producer(Some((2, 5)), &p(2, 8)),
            Err(StoreError::SeqGap {
                expected: 6,
                received: 8
            })
        );
    }

    #[test]
    fn stream_seq_is_strictly_increasing_bytewise() {
        assert!(check_stream_seq(None, "a").is_ok());
        assert!(check_stream_seq(Some("a"), "b").is_ok());
        assert!(check_stream_seq(Some("b"), "b").is_err());
        assert!(check_stream_seq(Some("b"), "a").is_err());
        assert!(check_stream_seq(Some("9"), "10").is_err(), "lexicographic, not numeric");
    }

    #[test]
    fn expiry() {
        assert!(!is_expired(Expiry::Never, 0, i64::MAX));
        assert!(!is_expired(Expiry::Ttl(1), 1_000, 1_999));
        assert!(is_expired(Expiry::Ttl(1), 1_000, 2_000));
        assert!(is_expired(Expiry::At(5), 0, 5));
        assert_eq!(fork_expiry(Expiry::Ttl(9), Expiry::Never), Expiry::Ttl(9));
        assert_eq!(fork_expiry(Expiry::Ttl(9), Expiry::At(1)), Expiry::At(1));
    }
}
