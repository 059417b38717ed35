//! The shared backend: streams in Redis, for several server nodes.
//!
//! Every node is stateless: all streams live in one Redis primary (with
//! replicas if you like), laid out as [`stored`] describes — one Redis
//! stream of data per stream, entry ids derived from positions, so offsets
//! are the same on every node (the same offsets as the SQLite store:
//! incarnation and position).
//!
//! - **Rules**: mutations are optimistic transactions ([`tx`]): `WATCH` what
//!   is read, decide with the shared rules of [`crate::storage::meta`],
//!   write in one `MULTI`/`EXEC` (data, producer state and description
//!   together), run again on a conflict. Producers, `Stream-Seq`, closing,
//!   forks, TTLs: one implementation for both stores.
//! - **Durability**: an append is acknowledged once `EXEC` returned, which
//!   with `appendonly yes` and `appendfsync always` is after Redis wrote it
//!   to its append-only file and fsynced it. [`RedisStorage::connect`]
//!   checks those settings (and `maxmemory-policy noeviction`) and refuses
//!   to start without them unless told otherwise. With
//!   [`RedisOptions::wait_replicas`], an append is acknowledged only once
//!   that many replicas have it too (`WAIT`).
//! - **Live across nodes**: [`notify`] — one subscription per node.
//! - **Expiry**: streams are treated as gone the moment they expire; each
//!   node sweeps expired ones every few seconds. Read touches of a sliding
//!   TTL are kept in memory and stored every few seconds, so another node
//!   sees a stream renewed by reads here up to that much later.

mod notify;
mod ops;
mod read;
mod stored;
mod tx;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::{AsyncConnectionConfig, Client};

use self::ops::{AppendOp, CreateOp, DeleteOp, ExpireOp, TouchOp};
use self::read::Reader;
pub use self::tx::Replication;
use self::tx::{Lanes, redis_error};
use super::meta::{Collected, Touches};
use super::{
    Append, Appended, Chunk, CreateStream, Created, Read, Storage, StoreError, StoreResult, StreamInfo, recent, rules,
};
use crate::changes::{ChangeFeed, ChangeHub};
use crate::metrics::Metrics;

/// A stream is swept only this long after it expired, so that every node
/// has stored its read touches by then.
const SWEEP_GRACE: Duration = Duration::from_secs(10);
/// Expired streams removed per sweep, at most.
const SWEEP_BATCH: usize = 256;
/// How long connecting to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a Redis command may take (besides `WAIT`'s own timeout).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach and use Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Connections for transactions (`--redis-connections`): at most this
    /// many run at once on this node; a stream's always take the same one.
    pub connections: usize,
    /// Acknowledge an append only once this many replicas have it too
    /// (`--redis-wait-replicas`, Redis `WAIT`), waiting at most
    /// `wait_timeout` (`--redis-wait-timeout-ms`). An append not replicated
    /// in time fails with a storage error though the primary has it; an
    /// idempotent producer's retry is then a duplicate, never stored twice.
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    /// Start even if Redis does not fsync every write or may evict keys
    /// (`--redis-allow-non-durable`): acknowledged appends can then be lost.
    pub allow_non_durable: bool,
}

impl RedisOptions {
    /// Defaults for a Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connections: 16,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            allow_non_durable: false,
        }
    }
}

/// Streams stored in Redis, shared by every node connected to it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_session_server::{changes::ChangeHub, metrics::Metrics};
/// use durable_session_server::storage::redis::{RedisOptions, RedisStorage};
/// let options = RedisOptions::new("redis://127.0.0.1:6379/0");
/// let storage = RedisStorage::connect(options, ChangeHub::new(), Metrics::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Lanes,
    reader: Reader,
    touches: Arc<Touches>,
    hub: ChangeHub,
    metrics: Metrics,
    /// Dropped with the store: stops its background tasks.
    _stop: tokio::sync::watch::Sender<()>,
}

impl RedisStorage {
    /// Connects, checks that Redis is set up to keep what it acknowledges,
    /// subscribes to changes (feeding `hub`), and starts housekeeping;
    /// appends are counted in `metrics`. Must be called inside a Tokio
    /// runtime.
    pub async fn connect(options: RedisOptions, hub: ChangeHub, metrics: Metrics) -> StoreResult<Self> {
        let client = Client::open(options.url.as_str())
            .map_err(|e| StoreError::Internal(format!("--store {}: {e}", options.url)))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT + options.wait_timeout));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| StoreError::Internal(format!("cannot connect to Redis at {}: {e}", options.url)))?;
        check_durability(&mut conn, options.allow_non_durable).await?;
        let subscription = notify::subscribe(&client).await.map_err(redis_error)?;
        let (stop, stopped) = tokio::sync::watch::channel(());
        tokio::spawn(notify::listen(client.clone(), hub.clone(), subscription, stopped));
        let replication = Replication {
            replicas: options.wait_replicas,
            timeout: options.wait_timeout,
        };
        let storage = Self {
            inner: Arc::new(Inner {
                lanes: Lanes::new(client.clone(), config.clone(), options.connections, replication),
                reader: Reader::new(client, config),
                touches: Arc::default(),
                hub,
                metrics,
                _stop: stop,
            }),
        };
        storage.spawn_housekeeping();
        Ok(storage)
    }

    /// Runs a mutation as a transaction, in a task of its own so that a
    /// request that goes away does not cut it short.
    async fn transact<O: tx::Op + 'static>(&self, key: String, op: O) -> StoreResult<O::Output>
    where
        O::Output: 'static,
    {
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.lanes.run(&key, &op).await })
            .await
            .map_err(|e| StoreError::Internal(format!("storage task failed: {e}")))?
    }

    /// Every few seconds, while the store is in use: store read touches and
    /// remove expired streams.
    fn spawn_housekeeping(&self) {
        super::spawn_housekeeping(Arc::downgrade(&self.inner), |inner| async move {
            Self { inner }.housekeeping().await
        });
    }

    async fn housekeeping(&self) -> StoreResult<()> {
        let touches = &self.inner.touches;
        for (id, at) in touches.snapshot() {
            self.transact(id.to_string(), TouchOp { id, at }).await?;
            touches.forget_if(id, at);
        }
        let due = rules::now_ms() - SWEEP_GRACE.as_millis() as i64;
        let expired: Vec<i64> = self.inner.reader.expiring(due, SWEEP_BATCH).await?;
        for id in expired {
            let op = ExpireOp {
                id,
                touches: touches.clone(),
            };
            self.transact(id.to_string(), op).await?;
        }
        Ok(())
    }
}

/// Refuses a Redis that may lose acknowledged writes: one that does not
/// fsync every write to its append-only file, or that evicts keys when
/// memory runs out. With `allow`, warns instead.
async fn check_durability(conn: &mut redis::aio::MultiplexedConnection, allow: bool) -> StoreResult<()> {
    let mut problems = Vec::new();
    for (setting, wanted) in [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("maxmemory-policy", "noeviction"),
    ] {
        let reply: redis::RedisResult<Vec<String>> =
            redis::cmd("CONFIG").arg("GET").arg(setting).query_async(conn).await;
        match reply {
            Ok(pair) if pair.get(1).is_some_and(|v| v == wanted) => {}
            Ok(pair) => problems.push(format!(
                "{setting} is {:?}, needs {wanted:?}",
                pair.get(1).map_or("unset", String::as_str)
            )),
            Err(e) => problems.push(format!("cannot read {setting} (CONFIG GET: {e}); needs {wanted:?}")),
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let problems = problems.join("; ");
    if allow {
        tracing::warn!(%problems, "Redis may lose acknowledged appends (--redis-allow-non-durable)");
        Ok(())
    } else {
        Err(StoreError::Internal(format!(
            "Redis may lose acknowledged appends: {problems}. Run it with --appendonly yes --appendfsync always \
             --maxmemory-policy noeviction, or start with --redis-allow-non-durable if you accept the loss"
        )))
    }
}

#[async_trait]
impl Storage for RedisStorage {
    async fn create(&self, req: CreateStream) -> StoreResult<Created> {
        let touches = self.inner.touches.clone();
        self.transact(req.path.clone(), CreateOp { req, touches }).await
    }

    async fn append(&self, req: Append) -> StoreResult<Appended> {
        let touches = self.inner.touches.clone();
        let (started, bytes) = (std::time::Instant::now(), req.body.len());
        let result = self.transact(req.path.clone(), AppendOp { req, touches }).await;
        if result.as_ref().is_ok_and(|a| !a.duplicate) {
            self.inner.metrics.appended(bytes, started.elapsed());
        }
        result
    }

    async fn read(&self, req: Read) -> StoreResult<Chunk> {
        let inner = &self.inner;
        if let Some(chunk) = recent::read_recent(&inner.hub, &inner.touches, &req) {
            return Ok(chunk);
        }
        let now = rules::now_ms();
        let stream = live(inner.reader.stream_at(&req.path).await?, &inner.touches, now)?;
        if stream.ttl_seconds.is_some() {
            inner.touches.touch(stream.id, now);
        }
        let start = stream.read_start(req.from)?;
        let mut out = Collected::default();
        let mut next = start;
        if start < stream.tail {
            inner
                .reader
                .collect(&stream, &mut next, stream.tail, req.max_bytes, &mut out)
                .await?;
        }
        Ok(stream.chunk(start, next, out))
    }

    async fn head(&self, path: &str) -> StoreResult<StreamInfo> {
        let inner = &self.inner;
        let stream = live(inner.reader.stream_at(path).await?, &inner.touches, rules::now_ms())?;
        Ok(stream.info())
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let touches = self.inner.touches.clone();
        let op = DeleteOp {
            path: path.to_owned(),
            touches,
        };
        self.transact(path.to_owned(), op).await
    }

    fn changes(&self, path: &str) -> ChangeFeed {
        self.inner.hub.subscribe(path)
    }

    async fn list_streams(&self, prefix: &str, limit: usize) -> StoreResult<Vec<(String, StreamInfo)>> {
        // SCAN the path keys (a glob: the prefix's own glob characters
        // escaped), then look each one up as HEAD does.
        let escaped: String = prefix
            .chars()
            .flat_map(|c| {
                let escape = matches!(c, '*' | '?' | '[' | ']' | '\\').then_some('\\');
                escape.into_iter().chain(std::iter::once(c))
            })
            .collect();
        let pattern = format!("{}*", stored::path_key(&escaped));
        let key_prefix = stored::path_key("");
        let mut cursor = 0u64;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .inner
                .reader
                .query(|mut conn| {
                    let pattern = &pattern;
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await?;
            for key in keys {
                let Some(path) = key.strip_prefix(&key_prefix) else {
                    continue;
                };
                if out.len() < limit
                    && let Ok(info) = self.head(path).await
                {
                    out.push((path.to_owned(), info));
                }
            }
            cursor = next;
            if cursor == 0 || out.len() >= limit {
                return Ok(out);
            }
        }
    }

    // Subscription documents: one hash, field = id. Durable like every
    // write here (appendfsync always).
    async fn put_subscription(&self, id: &str, doc: Bytes) -> StoreResult<()> {
        self.inner
            .reader
            .query(|mut conn| {
                let doc = doc.clone();
                async move {
                    redis::cmd("HSET")
                        .arg(SUBSCRIPTIONS_KEY)
                        .arg(id)
                        .arg(doc.as_ref())
                        .query_async::<()>(&mut conn)
                        .await
                }
            })
            .await
    }

    async fn delete_subscription(&self, id: &str) -> StoreResult<()> {
        self.inner
            .reader
            .query(|mut conn| async move {
                redis::cmd("HDEL")
                    .arg(SUBSCRIPTIONS_KEY)
                    .arg(id)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
    }

    async fn subscriptions(&self) -> StoreResult<Vec<(String, Bytes)>> {
        let all: Vec<(String, Vec<u8>)> = self
            .inner
            .reader
            .query(|mut conn| async move {
                redis::cmd("HGETALL")
                    .arg(SUBSCRIPTIONS_KEY)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        Ok(all.into_iter().map(|(id, doc)| (id, Bytes::from(doc))).collect())
    }
}

/// The hash of subscription documents ([`Storage::put_subscription`]).
const SUBSCRIPTIONS_KEY: &str = "ds:subscriptions";

/// A stream found for a client operation: missing, expired and
/// soft-deleted streams are errors.
fn live(found: Option<stored::Stored>, touches: &Touches, now: i64) -> StoreResult<super::meta::StreamMeta> {
    match found {
        None => Err(StoreError::NotFound),
        Some(s) if s.meta.deleted => Err(StoreError::Gone),
        Some(s) if s.meta.expired(touches, now) => Err(StoreError::NotFound),
        Some(s) => Ok(s.meta),
    }
}
