//! Mutations as optimistic transactions: the keys an operation reads are
//! `WATCH`ed before they are read, the operation decides in Rust (with the
//! shared rules of [`crate::storage::meta`]) and queues its writes, and the
//! writes go in one `MULTI`/`EXEC`. If another node changed a watched key in
//! between, `EXEC` does nothing and the operation runs again from the start
//! (at most [`MAX_ATTEMPTS`] times). An append takes two round trips: watch
//! the path and read stream and producer state (one Lua lookup), then `EXEC`.
//!
//! `WATCH` belongs to a connection, so a transaction needs a connection of
//! its own while it runs. A node has a fixed set of them, [`Lanes`]: a
//! stream's transactions always take the lane its path hashes to, one at a
//! time, so the requests of one node never conflict with each other (only
//! with other nodes), and the number of connections is bounded.
//!
//! Why not one Lua function per operation (one round trip): the rules would
//! then exist twice, in Rust for SQLite and in Lua for Redis. Measured on
//! the 2-core development machine (shared with other builds; release build,
//! 100-byte JSON appends, Redis 7.0 with `appendfsync always`): sequential
//! appends 1,030–1,320/s on Redis vs 1,170–1,590/s on SQLite; 64 producers
//! on 64 streams 1,650–2,600/s vs 4,000–13,000/s, with the node at about 75%
//! CPU and Redis at 25% — the node's CPU, not the round trips, was the limit.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Pipeline, Value};

use super::read::connection_lost;
use super::stored::{self, Stored};
use crate::offset::Position;
use crate::storage::{Producer, StoreError, StoreResult};

/// Attempts of one operation before it fails as contended.
pub const MAX_ATTEMPTS: usize = 64;

/// A Redis failure, as a storage error.
pub fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Internal(format!("redis: {e}"))
}

/// How a transaction's writes are confirmed durable beyond the primary.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    /// Replicas that must have the writes (`WAIT`); 0 waits for none.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

/// The connections transactions run on, one transaction per connection at a
/// time.
pub struct Lanes {
    client: Client,
    config: AsyncConnectionConfig,
    lanes: Vec<tokio::sync::Mutex<Option<MultiplexedConnection>>>,
    replication: Replication,
}

impl Lanes {
    /// `count` lanes to the server of `client` (connected when first used).
    pub fn new(client: Client, config: AsyncConnectionConfig, count: usize, replication: Replication) -> Self {
        Self {
            client,
            config,
            lanes: (0..count.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            replication,
        }
    }

    /// Runs `op` as a transaction on the lane of `key`, again after a
    /// conflict; answers once its writes are durable (and replicated, if
    /// asked).
    pub async fn run<O: Op>(&self, key: &str, op: &O) -> StoreResult<O::Output> {
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        let lane = &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize];
        let mut slot = lane.lock().await;
        let mut reconnected = false;
        for _ in 0..MAX_ATTEMPTS {
            let fresh = slot.is_none();
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(
                    self.client
                        .get_multiplexed_async_connection_with_config(&self.config)
                        .await
                        .map_err(redis_error)?,
                ),
            };
            let mut tx = Tx {
                conn,
                writes: redis::pipe(),
                watching: false,
                broken: false,
                lost: false,
                exec_sent: false,
                keep_on_error: false,
            };
            tx.writes.atomic();
            let result = op.run(&mut tx).await;
            let attempt = tx.finish(result.is_ok(), self.replication).await;
            let (broken, retry) = (tx.broken, tx.lost && !tx.exec_sent && !fresh && !reconnected);
            if broken {
                // Never leave a connection in an unknown state (a WATCH or
                // a MULTI of its own) for the next transaction.
                *slot = None;
                // A connection that died while idle (Redis restarted) fails
                // the first command: nothing was written, so run again once
                // on a new one.
                if retry {
                    reconnected = true;
                    continue;
                }
            }
            match attempt {
                Ok(true) => return result,
                Ok(false) => continue, // a watched key changed: run again
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Internal(format!(
            "redis: gave up after {MAX_ATTEMPTS} conflicting attempts on {key:?}"
        )))
    }
}

/// One attempt of a transaction: reads that watch, and queued writes.
pub struct Tx<'c> {
    conn: &'c mut MultiplexedConnection,
    writes: Pipeline,
    watching: bool,
    /// A command failed: the connection is in an unknown state.
    broken: bool,
    /// …because the connection is gone.
    lost: bool,
    /// `EXEC` was sent: the writes may have been applied.
    exec_sent: bool,
    /// Commit the writes even though the operation fails (an expired stream
    /// removed on the way to a 404).
    pub keep_on_error: bool,
}

impl Tx<'_> {
    async fn query<T: redis::FromRedisValue>(&mut self, pipe: &Pipeline) -> StoreResult<T> {
        let result = pipe.query_async(self.conn).await;
        result.map_err(|e| {
            self.broken = true;
            self.lost = connection_lost(&e);
            redis_error(e)
        })
    }

    /// The stream at `path`, watching what was read.
    pub async fn stream_at(&mut self, path: &str) -> StoreResult<Option<Stored>> {
        Ok(self.stream_and_producer_at(path, None).await?.map(|(stream, _)| stream))
    }

    /// The stream at `path` and the stored `(epoch, last seq)` of its
    /// producer `producer`, watching what was read: the path's key, which
    /// changes with the stream's description (see [`stored`]), which changes
    /// with its producers' states. One round trip.
    pub async fn stream_and_producer_at(
        &mut self,
        path: &str,
        producer: Option<&str>,
    ) -> StoreResult<Option<(Stored, Option<(u64, u64)>)>> {
        let key = stored::path_key(path);
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(&key).ignore();
        pipe.cmd("EVAL")
            .arg(stored::LOOKUP)
            .arg(1)
            .arg(&key)
            .arg(producer.unwrap_or(""));
        self.watching = true;
        type Found = Option<(i64, HashMap<String, String>, Option<String>)>;
        let (found,): (Found,) = self.query(&pipe).await?;
        let Some((id, hash, state)) = found else {
            return Ok(None);
        };
        let state = state.as_deref().map(stored::parse_producer).transpose()?;
        Ok(Stored::parse(id, hash)?.map(|stream| (stream, state)))
    }

    /// Stream `id`, watching what was read.
    pub async fn stream(&mut self, id: i64) -> StoreResult<Option<Stored>> {
        let key = stored::meta_key(id);
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(&key).ignore().cmd("HGETALL").arg(&key);
        self.watching = true;
        let (hash,) = self.query(&pipe).await?;
        Stored::parse(id, hash)
    }

    /// A new stream id, greater than every one handed out before.
    pub async fn new_id(&mut self) -> StoreResult<i64> {
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg(stored::NEXT_ID);
        let (id,): (i64,) = self.query(&pipe).await?;
        Ok(id)
    }

    /// Queues: store `stream`'s description as its next revision (and its
    /// place among expiring streams); the path naming it, if one does, names
    /// that revision.
    pub fn put(&mut self, stream: &Stored) {
        let id = stream.meta.id;
        let next = Stored {
            rev: stream.rev + 1,
            ..stream.clone()
        };
        let key = stored::meta_key(id);
        self.writes.cmd("DEL").arg(&key);
        let cmd = self.writes.cmd("HSET").arg(&key);
        for (field, value) in next.fields() {
            cmd.arg(field).arg(value);
        }
        if let Some(path) = &next.path {
            self.writes
                .cmd("SET")
                .arg(stored::path_key(path))
                .arg(stored::path_value(id, next.rev));
        }
        self.index_expiry(stream);
    }

    /// Queues: `stream`'s place among expiring streams, by its stored
    /// description.
    pub fn index_expiry(&mut self, stream: &Stored) {
        let id = stream.meta.id;
        match stream.deadline().filter(|_| !stream.meta.deleted) {
            Some(at) => self.writes.cmd("ZADD").arg(stored::EXPIRING).arg(at).arg(id),
            None => self.writes.cmd("ZREM").arg(stored::EXPIRING).arg(id),
        };
    }

    /// Queues: `pieces` as data of stream `id`, ending at `ends`.
    pub fn add_data(&mut self, id: i64, ends: &[Position], pieces: &[Bytes]) {
        let key = stored::data_key(id);
        for (end, piece) in ends.iter().zip(pieces) {
            self.writes
                .cmd("XADD")
                .arg(&key)
                .arg(stored::entry_id(*end))
                .arg("d")
                .arg(piece.as_ref());
        }
    }

    /// Queues: the state of producer `p` of stream `id`.
    pub fn set_producer(&mut self, id: i64, p: &Producer) {
        self.writes
            .cmd("HSET")
            .arg(stored::producers_key(id))
            .arg(&p.id)
            .arg(stored::producer_value(p.epoch, p.seq));
    }

    /// Queues: `path` names no stream.
    pub fn clear_path(&mut self, path: &str) {
        self.writes.cmd("DEL").arg(stored::path_key(path));
    }

    /// Queues: stream `id` and everything it holds are gone.
    pub fn drop_stream(&mut self, id: i64) {
        self.writes
            .cmd("DEL")
            .arg(stored::meta_key(id))
            .arg(stored::data_key(id))
            .arg(stored::producers_key(id));
        self.writes.cmd("ZREM").arg(stored::EXPIRING).arg(id);
    }

    /// Queues: tell every node's live readers (with the writes, so in
    /// commit order).
    pub fn publish(&mut self, message: Vec<u8>) {
        self.writes.cmd("PUBLISH").arg(stored::CHANGES_CHANNEL).arg(message);
    }

    /// Ends the attempt: commits the queued writes if the operation
    /// succeeded (or asked to keep them), else lets go of the watched keys.
    /// `Ok(false)` when a watched key changed and nothing was written.
    async fn finish(&mut self, succeeded: bool, replication: Replication) -> StoreResult<bool> {
        if self.broken {
            return Ok(true); // the operation's own error is the answer
        }
        let commit = (succeeded || self.keep_on_error) && !self.writes.is_empty();
        if !commit {
            if self.watching {
                let mut pipe = redis::pipe();
                pipe.cmd("UNWATCH").ignore();
                self.query::<()>(&pipe).await?;
            }
            return Ok(true);
        }
        let writes = std::mem::replace(&mut self.writes, redis::pipe());
        self.exec_sent = true;
        let committed: Option<Vec<Value>> = self.query(&writes).await?;
        if committed.is_none() {
            return Ok(false);
        }
        if replication.replicas > 0 {
            let mut pipe = redis::pipe();
            pipe.cmd("WAIT")
                .arg(replication.replicas)
                .arg(replication.timeout.as_millis() as u64);
            let (acked,): (u32,) = self.query(&pipe).await?;
            if acked < replication.replicas {
                return Err(StoreError::Internal(format!(
                    "redis: the write is on the primary, but only {acked} of {} replicas confirmed it within {:?}",
                    replication.replicas, replication.timeout
                )));
            }
        }
        Ok(true)
    }
}

/// A mutation run as a transaction by [`Lanes::run`]: reads through the
/// [`Tx`] (which watches them), decides, and queues its writes. It may run
/// several times; only the last run's writes are committed.
#[async_trait]
pub trait Op: Send + Sync {
    type Output: Send;
    async fn run(&self, tx: &mut Tx<'_>) -> StoreResult<Self::Output>;
}
