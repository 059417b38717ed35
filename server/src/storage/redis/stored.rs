//! How streams are laid out in Redis: key names, and a stream's description
//! as a hash.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `ds:next-id` | string | the last stream id handed out (`INCR`): ids are incarnations |
//! | `ds:path:{path}` | string | `{id}:{rev}`: the stream at `path`, and its revision |
//! | `ds:stream:{id}` | hash | the stream's description ([`Stored`]) |
//! | `ds:data:{id}` | stream | its data: one entry per piece, entry id `0-{end position}` |
//! | `ds:producers:{id}` | hash | producer id → `epoch:last seq` |
//! | `ds:expiring` | sorted set | stream ids by the instant they expire (Unix ms) |
//!
//! A data entry's id is the position after it, so entries sort as the
//! stream's offsets do and a read from a position is one `XRANGE`.
//!
//! Every write of a stream's description increments its revision, and, while
//! a path names the stream, rewrites the path's value with it: so watching a
//! path's key watches the stream there too (its description, and its
//! producers, which change only with it), and [`LOOKUP`] reads both in one
//! round trip.

/// `KEYS[1]` a path's key, `ARGV[1]` a producer id or empty: `false` if no
/// stream is there, else `{id, description (HGETALL), producer state or
/// false}`.
pub const LOOKUP: &str = r"
local at = redis.call('GET', KEYS[1])
if not at then return false end
local id = string.match(at, '^(%d+):')
local producer = false
if ARGV[1] ~= '' then producer = redis.call('HGET', 'ds:producers:' .. id, ARGV[1]) end
return {id, redis.call('HGETALL', 'ds:stream:' .. id), producer}
";

use std::collections::HashMap;

use crate::offset::{Lineage, Position};
use crate::storage::meta::StreamMeta;
use crate::storage::{StoreError, StoreResult, rules};

/// The channel every node listens on for changes.
pub const CHANGES_CHANNEL: &str = "ds:changes";
/// The counter stream ids come from.
pub const NEXT_ID: &str = "ds:next-id";
/// Stream ids by expiry instant.
pub const EXPIRING: &str = "ds:expiring";

/// The key naming the stream at `path`.
pub fn path_key(path: &str) -> String {
    format!("ds:path:{path}")
}

/// What a path's key holds: the stream's id and revision.
pub fn path_value(id: i64, rev: u64) -> String {
    format!("{id}:{rev}")
}

/// The key of stream `id`'s description.
pub fn meta_key(id: i64) -> String {
    format!("ds:stream:{id}")
}

/// The key of stream `id`'s data.
pub fn data_key(id: i64) -> String {
    format!("ds:data:{id}")
}

/// The key of stream `id`'s producer states.
pub fn producers_key(id: i64) -> String {
    format!("ds:producers:{id}")
}

/// The data entry id of the piece ending at `end`.
pub fn entry_id(end: Position) -> String {
    format!("0-{end}")
}

/// The position an entry id names.
pub fn entry_end(id: &str) -> StoreResult<Position> {
    id.strip_prefix("0-")
        .and_then(|end| end.parse().ok())
        .ok_or_else(|| StoreError::Internal(format!("malformed data entry id {id:?}")))
}

/// A producer's state as stored: `epoch:seq`.
pub fn producer_value(epoch: u64, seq: u64) -> String {
    format!("{epoch}:{seq}")
}

/// Parses [`producer_value`].
pub fn parse_producer(value: &str) -> StoreResult<(u64, u64)> {
    value
        .split_once(':')
        .and_then(|(e, s)| Some((e.parse().ok()?, s.parse().ok()?)))
        .ok_or_else(|| StoreError::Internal(format!("malformed producer state {value:?}")))
}

/// A stream's description as the Redis store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub meta: StreamMeta,
    /// The path that names it (`ds:path:{path}` holds its id), if one does:
    /// a stream that expired while forks read it keeps its data but not its
    /// path.
    pub path: Option<String>,
    /// Streams forked from it that are still stored.
    pub forks: u64,
    /// Incremented by every write of the description.
    pub rev: u64,
}

impl Stored {
    /// The hash fields, in `HSET` order.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let m = &self.meta;
        let mut f = vec![
            ("ct", m.content_type.clone()),
            ("touched", m.touched_ms.to_string()),
            ("closed", u8::from(m.closed).to_string()),
            ("tail", m.tail.to_string()),
            ("fork_sub", m.fork_sub.to_string()),
            ("deleted", u8::from(m.deleted).to_string()),
            ("lineage", m.lineage.encode()),
            ("forks", self.forks.to_string()),
            ("rev", self.rev.to_string()),
        ];
        let mut opt = |name, value: Option<String>| {
            if let Some(v) = value {
                f.push((name, v));
            }
        };
        opt("ttl", m.ttl_seconds.map(|v| v.to_string()));
        opt("expires_at", m.expires_at_ms.map(|v| v.to_string()));
        opt("closed_by_id", m.closed_by.as_ref().map(|c| c.0.clone()));
        opt("closed_by_epoch", m.closed_by.as_ref().map(|c| c.1.to_string()));
        opt("closed_by_seq", m.closed_by.as_ref().map(|c| c.2.to_string()));
        opt("stream_seq", m.last_stream_seq.clone());
        opt("fork_source", m.fork_source.map(|v| v.to_string()));
        opt("fork_source_path", m.fork_source_path.clone());
        opt("fork_offset", m.fork_offset.map(|v| v.to_string()));
        opt("fork_req_offset", m.fork_req_offset.map(|v| v.to_string()));
        opt("path", self.path.clone());
        f
    }

    /// Reads the hash of stream `id` (as `HGETALL` returns it); `None` when
    /// it is empty (no such stream).
    pub fn parse(id: i64, hash: HashMap<String, String>) -> StoreResult<Option<Self>> {
        if hash.is_empty() {
            return Ok(None);
        }
        let bad = |field: &str| StoreError::Internal(format!("stream {id}: missing or malformed field {field:?}"));
        let text = |field: &str| hash.get(field).cloned().ok_or_else(|| bad(field));
        let num = |field: &str| -> StoreResult<Option<i64>> {
            hash.get(field)
                .map(|v| v.parse::<i64>().map_err(|_| bad(field)))
                .transpose()
        };
        let need = |field: &str| num(field)?.ok_or_else(|| bad(field));
        let pos = |field: &str| -> StoreResult<Option<Position>> { Ok(num(field)?.map(|v| v as Position)) };
        let closed_by = match hash.get("closed_by_id") {
            Some(pid) => Some((
                pid.clone(),
                need("closed_by_epoch")? as u64,
                need("closed_by_seq")? as u64,
            )),
            None => None,
        };
        let lineage = Lineage::decode(&text("lineage")?).ok_or_else(|| bad("lineage"))?;
        let meta = StreamMeta {
            id,
            content_type: text("ct")?,
            ttl_seconds: num("ttl")?,
            expires_at_ms: num("expires_at")?,
            touched_ms: need("touched")?,
            closed: need("closed")? != 0,
            closed_by,
            tail: need("tail")? as Position,
            last_stream_seq: hash.get("stream_seq").cloned(),
            fork_source: num("fork_source")?,
            fork_source_path: hash.get("fork_source_path").cloned(),
            fork_offset: pos("fork_offset")?,
            fork_req_offset: pos("fork_req_offset")?,
            fork_sub: need("fork_sub")? as u64,
            deleted: need("deleted")? != 0,
            lineage,
        };
        Ok(Some(Self {
            meta,
            path: hash.get("path").cloned(),
            forks: need("forks")? as u64,
            rev: need("rev")? as u64,
        }))
    }

    /// The instant the stream expires given its stored touch, if it does.
    pub fn deadline(&self) -> Option<i64> {
        rules::expires_at_ms(self.meta.expiry(), self.meta.touched_ms)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::storage::meta::NewStream;
    use crate::storage::{CreateStream, Expiry, ForkFrom};

    #[test]
    fn descriptions_round_trip_through_a_hash() {
        let req = CreateStream {
            path: "f".into(),
            content_type: None,
            expiry: Expiry::Ttl(30),
            closed: true,
            body: Bytes::new(),
            fork: Some(ForkFrom {
                source: "s".into(),
                offset: Some(crate::offset::ZERO),
                sub_offset: 2,
            }),
            index_entry: None,
        };
        let source = NewStream::plain(&CreateStream {
            path: "s".into(),
            content_type: Some("text/plain".into()),
            fork: None,
            body: Bytes::from_static(b"hello"),
            ..req.clone()
        })
        .unwrap()
        .meta(&req, 4, 1)
        .unwrap()
        .0;
        let fork = NewStream::fork(&req, req.fork.as_ref().unwrap(), &source).unwrap();
        let (mut meta, _) = fork.meta(&req, 9, 5).unwrap();
        meta.closed_by = Some(("p:1".into(), 2, 3));
        meta.last_stream_seq = Some("a b".into());
        for stored in [
            Stored {
                meta: meta.clone(),
                path: Some("f".into()),
                forks: 2,
                rev: 7,
            },
            Stored {
                meta: source,
                path: None,
                forks: 0,
                rev: 0,
            },
        ] {
            let hash = stored.fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            assert_eq!(Stored::parse(stored.meta.id, hash).unwrap(), Some(stored));
        }
        assert_eq!(Stored::parse(1, HashMap::new()).unwrap(), None);
    }

    #[test]
    fn entry_ids_are_end_positions() {
        assert_eq!(entry_end(&entry_id(42)).unwrap(), 42);
        assert!(entry_end("1-2").is_err());
        assert_eq!(parse_producer(&producer_value(3, 9)).unwrap(), (3, 9));
        assert!(parse_producer("3").is_err());
    }
}
