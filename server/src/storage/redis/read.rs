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
    /// The connection, and its generation (so that a read that saw an old
    /// one fail does not drop a new one).
    conn: tokio::sync::Mutex<(u64, Option<MultiplexedConnection>)>,
    lookup: Script,
    range: Script,
}

/// Whether a failure means the connection is unusable.
pub fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl Reader {
    pub fn new(client: Client, config: AsyncConnectionConfig) -> Self {
        Self {
            client,
            config,
            conn: tokio::sync::Mutex::new((0, None)),
            lookup: Script::new(stored::LOOKUP),
            range: Script::new(RANGE),
        }
    }

    /// Runs `op` on the shared connection. A connection found broken (Redis
    /// restarted since it was made) is replaced and `op` run once more;
    /// reads have no effects, so that is always safe.
    pub(super) async fn query<T, F>(&self, op: impl Fn(MultiplexedConnection) -> F) -> StoreResult<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        for attempt in 0..2 {
            let (generation, conn, fresh) = {
                let mut slot = self.conn.lock().await;
                match &slot.1 {
                    Some(conn) => (slot.0, conn.clone(), false),
                    None => {
                        let conn = self
                            .client
                            .get_multiplexed_async_connection_with_config(&self.config)
                            .await
                            .map_err(redis_error)?;
                        slot.0 += 1;
                        slot.1 = Some(conn.clone());
                        (slot.0, conn, true)
                    }
                }
            };
            match op(conn).await {
                Ok(value) => return Ok(value),
                Err(e) if connection_lost(&e) => {
                    let mut slot = self.conn.lock().await;
                    if slot.0 == generation {
                        slot.1 = None;
                    }
                    if fresh || attempt > 0 {
                        return Err(redis_error(e));
                    }
                }
                Err(e) => return Err(redis_error(e)),
            }
        }
        Err(StoreError::Internal("redis: no connection".into()))
    }

    /// The stream at `path`.
    pub async fn stream_at(&self, path: &str) -> StoreResult<Option<Stored>> {
        let key = stored::path_key(path);
        let found: Option<(i64, HashMap<String, String>, Option<String>)> = self
            .query(|mut conn| {
                let key = &key;
                async move { self.lookup.key(key).arg("").invoke_async(&mut conn).await }
            })
            .await?;
        match found {
            Some((id, hash, _)) => Stored::parse(id, hash),
            None => Ok(None),
        }
    }

    /// Stream `id`.
    pub async fn stream(&self, id: i64) -> StoreResult<Option<Stored>> {
        let key = stored::meta_key(id);
        let hash: HashMap<String, String> = self
            .query(|mut conn| {
                let key = &key;
                async move { redis::cmd("HGETALL").arg(key).query_async(&mut conn).await }
            })
            .await?;
        Stored::parse(id, hash)
    }

    /// Up to `count` ids of streams due to expire by `due` (Unix ms).
    pub async fn expiring(&self, due: i64, count: usize) -> StoreResult<Vec<i64>> {
        self.query(|mut conn| async move {
            redis::cmd("ZRANGE")
                .arg(stored::EXPIRING)
                .arg("-inf")
                .arg(due)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(count)
                .query_async(&mut conn)
                .await
        })
        .await
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
        let (after, until) = (format!("({}", stored::entry_id(*pos)), stored::entry_id(limit));
        let left = budget.saturating_sub(out.bytes).max(1);
        let entries: Vec<(String, Vec<u8>)> = self
            .query(|mut conn| {
                let (key, after, until) = (&key, &after, &until);
                async move {
                    self.range
                        .key(key)
                        .arg(after)
                        .arg(until)
                        .arg(left)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await?;
        let before = out.pieces.len();
        for (id, data) in entries {
            self.take(json, &id, data, pos, limit, out)?;
        }
        if *pos < limit && !out.full(budget) {
            // A byte run across `limit` (a fork point inside an append):
            // the entry after the range starts before it.
            let after = format!("({}", stored::entry_id(*pos));
            let next: Vec<(String, HashMap<String, Vec<u8>>)> = self
                .query(|mut conn| {
                    let (key, after) = (&key, &after);
                    async move {
                        redis::cmd("XRANGE")
                            .arg(key)
                            .arg(after)
                            .arg("+")
                            .arg("COUNT")
                            .arg(1)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            let next = next
                .into_iter()
                .map(|(id, mut fields)| (id, fields.remove("d").unwrap_or_default()));
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
