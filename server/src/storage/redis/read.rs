//! Reads from Redis: a stream's description by path in one round trip, and
//! its data from a position, bounded in bytes on the Redis side (a read
//! never pulls more than about its budget, however large the stream's
//! entries), following a fork's chain of sources.
//!
//! Reads take no locks and are not transactions: the description read first
//! bounds the data read after it, so an append in between is simply not part
//! of this read; a stream removed in between reads as not found.

use std::collections::HashMap;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};

use super::stored::{self, Stored};
use super::tx::redis_error;
use crate::offset::Position;
use crate::storage::meta::{Collected, StreamMeta};
use crate::storage::{StoreError, StoreResult};

/// `GET` the id at a path, then `HGETALL` that stream: one round trip.
const LOOKUP: &str = r"
local id = redis.call('GET', KEYS[1])
if not id then return false end
return {id, redis.call('HGETALL', 'ds:stream:' .. id)}
";

/// Data entries in `(ARGV[1], ARGV[2]]` (entry ids) until `ARGV[3]` bytes
/// are collected (at least one entry): a flat list of id, data, id, data…
const RANGE: &str = r"
local out, bytes, cursor, size = {}, 0, ARGV[1], 16
local budget = tonumber(ARGV[3])
while true do
  local batch = redis.call('XRANGE', KEYS[1], cursor, ARGV[2], 'COUNT', size)
  for _, entry in ipairs(batch) do
    local data = entry[2][2]
    out[#out + 1] = entry[1]
    out[#out + 1] = data
    bytes = bytes + #data
    if bytes >= budget then return out end
  end
  if #batch < size then return out end
  cursor = '(' .. batch[#batch][1]
  if size < 512 then size = size * 2 end
end
";

/// The read side of the store: one multiplexed connection shared by every
/// read of the node (pipelined), connected again after a failure.
pub struct Reader {
    client: Client,
    config: AsyncConnectionConfig,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    lookup: Script,
    range: Script,
}

impl Reader {
    pub fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            conn: tokio::sync::Mutex::new(None),
            lookup: Script::new(LOOKUP),
            range: Script::new(RANGE),
        }
    }

    async fn conn(&self) -> StoreResult<MultiplexedConnection> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(redis_error)?;
        Ok(slot.insert(conn).clone())
    }

    /// A failed command: the connection is dropped (and made again by the
    /// next read) so that a broken link does not fail every read after it.
    async fn failed(&self, e: redis::RedisError) -> StoreError {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error() {
            *self.conn.lock().await = None;
        }
        redis_error(e)
    }

    /// The stream at `path`.
    pub async fn stream_at(&self, path: &str) -> StoreResult<Option<Stored>> {
        let mut conn = self.conn().await?;
        let found: Option<(i64, HashMap<String, String>)> =
            match self.lookup.key(stored::path_key(path)).invoke_async(&mut conn).await {
                Ok(found) => found,
                Err(e) => return Err(self.failed(e).await),
            };
        match found {
            Some((id, hash)) => Stored::parse(id, hash),
            None => Ok(None),
        }
    }

    /// Stream `id`.
    pub async fn stream(&self, id: i64) -> StoreResult<Option<Stored>> {
        let mut conn = self.conn().await?;
        let hash: HashMap<String, String> = match redis::cmd("HGETALL")
            .arg(stored::meta_key(id))
            .query_async(&mut conn)
            .await
        {
            Ok(hash) => hash,
            Err(e) => return Err(self.failed(e).await),
        };
        Stored::parse(id, hash)
    }

    /// Up to `count` ids of streams due to expire by `due` (Unix ms).
    pub async fn expiring(&self, due: i64, count: usize) -> StoreResult<Vec<i64>> {
        let mut conn = self.conn().await?;
        let reply = redis::cmd("ZRANGE")
            .arg(stored::EXPIRING)
            .arg("-inf")
            .arg(due)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(count)
            .query_async(&mut conn)
            .await;
        match reply {
            Ok(ids) => Ok(ids),
            Err(e) => Err(self.failed(e).await),
        }
    }

    /// Collects the data of `stream` from `*pos` up to (excluding) `limit`,
    /// its fork sources' where it inherited it, until about `budget` bytes
    /// are in `out`. Advances `*pos` past what was collected.
    pub async fn collect(
        &self,
        stream: &StreamMeta,
        pos: &mut Position,
        limit: Position,
        budget: usize,
        out: &mut Collected,
    ) -> StoreResult<()> {
        if let (Some(source), Some(fork_at)) = (stream.fork_source, stream.fork_offset)
            && *pos < fork_at
        {
            let src = self
                .stream(source)
                .await?
                .ok_or_else(|| StoreError::Internal("fork source vanished".into()))?;
            let source_limit = limit.min(fork_at);
            Box::pin(self.collect(&src.meta, pos, source_limit, budget, out)).await?;
            if *pos < source_limit {
                return Ok(()); // budget reached inside the source
            }
        }
        if *pos >= limit || out.full(budget) {
            return Ok(());
        }
        let key = stored::data_key(stream.id);
        let json = stream.is_json();
        let mut conn = self.conn().await?;
        let entries: Vec<(String, Vec<u8>)> = match self
            .range
            .key(&key)
            .arg(format!("({}", stored::entry_id(*pos)))
            .arg(stored::entry_id(limit))
            .arg(budget.saturating_sub(out.bytes).max(1))
            .invoke_async(&mut conn)
            .await
        {
            Ok(entries) => entries,
            Err(e) => return Err(self.failed(e).await),
        };
        let before = out.pieces.len();
        for (id, data) in entries {
            self.take(json, &id, data, pos, limit, out)?;
        }
        if *pos < limit && !out.full(budget) {
            // A byte run across `limit` (a fork point inside an append):
            // the entry after the range starts before it.
            let next: Vec<(String, Vec<u8>)> = match redis::cmd("XRANGE")
                .arg(&key)
                .arg(format!("({}", stored::entry_id(*pos)))
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async::<Vec<(String, HashMap<String, Vec<u8>>)>>(&mut conn)
                .await
            {
                Ok(next) => next
                    .into_iter()
                    .map(|(id, mut fields)| (id, fields.remove("d").unwrap_or_default()))
                    .collect(),
                Err(e) => return Err(self.failed(e).await),
            };
            for (id, data) in next {
                self.take(json, &id, data, pos, limit, out)?;
            }
        }
        if out.pieces.len() == before && *pos < limit {
            // Described as holding data it does not have: removed meanwhile.
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    fn take(
        &self,
        json: bool,
        id: &str,
        data: Vec<u8>,
        pos: &mut Position,
        limit: Position,
        out: &mut Collected,
    ) -> StoreResult<()> {
        let end = stored::entry_end(id)?;
        let start = end.saturating_sub(if json { 1 } else { data.len() as Position });
        if start >= limit || end <= *pos {
            return Ok(());
        }
        out.take(json, Bytes::from(data), (start, end), pos, limit);
        Ok(())
    }
}
