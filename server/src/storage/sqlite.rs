//! The embedded default backend: SQLite in WAL mode.
//!
//! One writer thread owns the write connection and applies every mutation;
//! requests that arrive together share one transaction (group commit), each in
//! its own savepoint so one failure never undoes another. A reply is sent only
//! after `COMMIT` returned with `synchronous=FULL`, so an acknowledged append
//! survives `kill -9` and power loss. Reads run on a small pool of read-only
//! connections and never wait for the writer.
//!
//! Sliding-TTL touches from reads are kept in memory (so a read never costs a
//! disk write) and folded into the database every few seconds.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use super::meta::{AppendPlan, Collected, NewStream, StreamMeta, Touches, expiry_columns};
use super::{
    Append, Appended, Chunk, CreateStream, Created, Expiry, IndexEntry, Read, Storage, StoreError, StoreResult,
    StreamInfo,
};
use super::{recent, rules};
use crate::changes::{ChangeFeed, ChangeHub, Published};
use crate::metrics::Metrics;
use crate::offset::{Lineage, Position};

/// Most mutations applied in one transaction.
const MAX_BATCH: usize = 512;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT UNIQUE,
    content_type TEXT NOT NULL,
    ttl_seconds INTEGER,
    expires_at_ms INTEGER,
    touched_ms INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    closed_by_id TEXT,
    closed_by_epoch INTEGER,
    closed_by_seq INTEGER,
    tail INTEGER NOT NULL,
    last_stream_seq TEXT,
    fork_source INTEGER,
    fork_source_path TEXT,
    fork_offset INTEGER,
    fork_req_offset INTEGER,
    fork_sub INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0,
    incarnation INTEGER NOT NULL DEFAULT 0,
    lineage TEXT
);
CREATE INDEX IF NOT EXISTS streams_fork_source ON streams(fork_source);
CREATE TABLE IF NOT EXISTS chunks (
    stream_id INTEGER NOT NULL,
    start_pos INTEGER NOT NULL,
    end_pos INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (stream_id, end_pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS producers (
    stream_id INTEGER NOT NULL,
    producer_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream_id, producer_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    doc BLOB NOT NULL
) WITHOUT ROWID;
";

/// Columns added since the first schema, with their definitions: a database
/// made before them gets them on open (`ALTER TABLE`). Rows from before
/// incarnations existed have incarnation 0, the offsets they issued.
const ADDED_COLUMNS: &[(&str, &str)] = &[("incarnation", "INTEGER NOT NULL DEFAULT 0"), ("lineage", "TEXT")];

const ROW_COLUMNS: &str = "id, path, content_type, ttl_seconds, expires_at_ms, touched_ms, closed, \
     closed_by_id, closed_by_epoch, closed_by_seq, tail, last_stream_seq, fork_source, \
     fork_source_path, fork_offset, fork_req_offset, fork_sub, deleted, incarnation, lineage";

/// A stream's row.
type Row = StreamMeta;

/// Reads a `streams` row selected with [`ROW_COLUMNS`].
fn row_from_sql(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let closed_by_id: Option<String> = r.get(7)?;
    let closed_by = match closed_by_id {
        Some(id) => Some((id, r.get::<_, i64>(8)? as u64, r.get::<_, i64>(9)? as u64)),
        None => None,
    };
    Ok(StreamMeta {
        id: r.get(0)?,
        content_type: r.get(2)?,
        ttl_seconds: r.get(3)?,
        expires_at_ms: r.get(4)?,
        touched_ms: r.get(5)?,
        closed: r.get(6)?,
        closed_by,
        tail: r.get::<_, i64>(10)? as Position,
        last_stream_seq: r.get(11)?,
        fork_source: r.get(12)?,
        fork_source_path: r.get(13)?,
        fork_offset: r.get::<_, Option<i64>>(14)?.map(|v| v as Position),
        fork_req_offset: r.get::<_, Option<i64>>(15)?.map(|v| v as Position),
        fork_sub: r.get::<_, i64>(16)? as u64,
        deleted: r.get(17)?,
        lineage: match r.get::<_, Option<String>>(19)? {
            // A stream created from scratch (or stored before lineages).
            None => Lineage::new(r.get::<_, i64>(18)? as u64),
            Some(text) => Lineage::decode(&text).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    19,
                    rusqlite::types::Type::Text,
                    format!("malformed lineage {text:?}").into(),
                )
            })?,
        },
    })
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn find(conn: &Connection, path: &str) -> StoreResult<Option<Row>> {
    conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM streams WHERE path = ?1"))
        .and_then(|mut st| st.query_row([path], row_from_sql).optional())
        .map_err(internal)
}

fn find_by_id(conn: &Connection, id: i64) -> StoreResult<Option<Row>> {
    conn.prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM streams WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], row_from_sql).optional())
        .map_err(internal)
}

fn fork_count(conn: &Connection, id: i64) -> StoreResult<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM streams WHERE fork_source = ?1")
        .and_then(|mut st| st.query_row([id], |r| r.get(0)))
        .map_err(internal)
}

/// Looks a stream up for a client operation: missing, expired and
/// soft-deleted streams are errors.
fn live_row(conn: &Connection, touches: &Touches, path: &str, now: i64) -> StoreResult<Row> {
    match find(conn, path)? {
        None => Err(StoreError::NotFound),
        Some(row) if row.deleted => Err(StoreError::Gone),
        Some(row) if row.expired(touches, now) => Err(StoreError::NotFound),
        Some(row) => Ok(row),
    }
}

/// Collects stored data of stream `id` from `*pos` up to (excluding)
/// `limit`, following the fork chain, until about `budget` bytes are in
/// `out`. Advances `*pos` past what was collected.
fn collect(
    conn: &Connection,
    id: i64,
    pos: &mut Position,
    limit: Position,
    budget: usize,
    out: &mut Collected,
) -> StoreResult<()> {
    let row = find_by_id(conn, id)?.ok_or_else(|| internal("fork source vanished"))?;
    if let (Some(source), Some(fork_at)) = (row.fork_source, row.fork_offset)
        && *pos < fork_at
    {
        let source_limit = limit.min(fork_at);
        collect(conn, source, pos, source_limit, budget, out)?;
        if *pos < source_limit {
            return Ok(()); // budget reached inside the source
        }
    }
    let mut st = conn
        .prepare_cached(
            "SELECT start_pos, end_pos, data FROM chunks \
             WHERE stream_id = ?1 AND end_pos > ?2 AND start_pos < ?3 ORDER BY end_pos",
        )
        .map_err(internal)?;
    let mut rows = st.query(params![id, *pos as i64, limit as i64]).map_err(internal)?;
    while let Some(r) = rows.next().map_err(internal)? {
        if out.full(budget) {
            break;
        }
        let start = r.get::<_, i64>(0).map_err(internal)? as Position;
        let end = r.get::<_, i64>(1).map_err(internal)? as Position;
        let data: Vec<u8> = r.get(2).map_err(internal)?;
        out.take(row.is_json(), Bytes::from(data), (start, end), pos, limit);
    }
    Ok(())
}

fn read_chunk(conn: &Connection, touches: &Touches, req: &Read) -> StoreResult<Chunk> {
    let now = rules::now_ms();
    let row = live_row(conn, touches, &req.path, now)?;
    if row.ttl_seconds.is_some() {
        touches.touch(row.id, now);
    }
    let start = row.read_start(req.from)?;
    let mut out = Collected::default();
    let mut next = start;
    if start < row.tail {
        collect(conn, row.id, &mut next, row.tail, req.max_bytes, &mut out)?;
    }
    Ok(row.chunk(start, next, out))
}

/// Writes pieces that end at `ends`.
fn insert_pieces(conn: &Connection, id: i64, json: bool, ends: &[Position], pieces: &[Bytes]) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached("INSERT INTO chunks (stream_id, start_pos, end_pos, data) VALUES (?1, ?2, ?3, ?4)")
        .map_err(internal)?;
    for (piece, &end) in pieces.iter().zip(ends) {
        let start = end - if json { 1 } else { piece.len() as Position };
        st.execute(params![id, start as i64, end as i64, piece.as_ref()])
            .map_err(internal)?;
    }
    Ok(())
}

/// Removes a stream for good, then any soft-deleted source it was the last
/// fork of.
fn hard_delete(conn: &Connection, touches: &Touches, id: i64) -> StoreResult<()> {
    let source = find_by_id(conn, id)?.and_then(|r| r.fork_source);
    for sql in [
        "DELETE FROM chunks WHERE stream_id = ?1",
        "DELETE FROM producers WHERE stream_id = ?1",
        "DELETE FROM streams WHERE id = ?1",
    ] {
        conn.prepare_cached(sql)
            .and_then(|mut st| st.execute([id]))
            .map_err(internal)?;
    }
    touches.forget(id);
    if let Some(source) = source
        && let Some(src) = find_by_id(conn, source)?
        && src.deleted
        && fork_count(conn, source)? == 0
    {
        hard_delete(conn, touches, source)?;
    }
    Ok(())
}

/// Deletes a stream, keeping it (soft-deleted) while forks read from it.
/// `keep_path` keeps the path reserved, as an explicit `DELETE` does; an
/// expiry frees it.
fn remove(conn: &Connection, touches: &Touches, row: &Row, keep_path: bool) -> StoreResult<()> {
    if fork_count(conn, row.id)? > 0 {
        let sql = if keep_path {
            "UPDATE streams SET deleted = 1 WHERE id = ?1"
        } else {
            "UPDATE streams SET deleted = 1, path = NULL WHERE id = ?1"
        };
        conn.execute(sql, [row.id]).map_err(internal)?;
        Ok(())
    } else {
        hard_delete(conn, touches, row.id)
    }
}

/// Side effects of a mutation, carried out after it is committed.
#[derive(Default)]
struct Effects {
    /// Paths whose live readers to wake.
    notify: Vec<String>,
    /// Appends whose data to hand live readers (and wake them).
    publish: Vec<(String, Published)>,
    /// Commit the changes even though the operation answers with an error
    /// (an expired stream removed on the way to a 404).
    keep_on_error: bool,
}

/// A finished mutation: whether to keep it, and how to answer once the
/// transaction's fate is known.
struct Done {
    keep: bool,
    effects: Effects,
    reply: Box<dyn FnOnce(Result<(), String>) + Send>,
}

type Job = Box<dyn FnOnce(&Connection) -> Done + Send>;

struct Writer {
    conn: Connection,
    jobs: mpsc::Receiver<Job>,
    hub: ChangeHub,
    metrics: Metrics,
}

impl Writer {
    fn run(self) {
        while let Ok(first) = self.jobs.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.apply(batch);
        }
    }

    fn apply(&self, batch: Vec<Job>) {
        let began = std::time::Instant::now();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            tracing::error!(error = %e, "cannot begin a transaction");
            // The jobs are dropped unanswered; their callers see an internal error.
            return;
        }
        let mut done = Vec::with_capacity(batch.len());
        for job in batch {
            let _ = self.conn.execute_batch("SAVEPOINT job");
            match std::panic::catch_unwind(AssertUnwindSafe(|| job(&self.conn))) {
                Ok(d) => {
                    let end = if d.keep {
                        "RELEASE job"
                    } else {
                        "ROLLBACK TO job; RELEASE job"
                    };
                    let _ = self.conn.execute_batch(end);
                    done.push(d);
                }
                Err(_) => {
                    tracing::error!("a storage job panicked; its changes were rolled back");
                    let _ = self.conn.execute_batch("ROLLBACK TO job; RELEASE job");
                }
            }
        }
        let committed = self.conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        self.metrics.committed(began.elapsed());
        if let Err(e) = &committed {
            tracing::error!(error = %e, "commit failed");
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        for d in done {
            if committed.is_ok() && d.keep {
                for path in &d.effects.notify {
                    self.hub.notify(path);
                }
                for (path, append) in d.effects.publish {
                    self.hub.publish(&path, append);
                }
            }
            (d.reply)(committed.clone());
        }
    }
}

/// Brings a database made by an earlier version up to [`SCHEMA`]: adds the
/// columns it lacks, in one transaction.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let present: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('streams')")?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (name, definition) in ADDED_COLUMNS {
            if !present.iter().any(|p| p == name) {
                conn.execute_batch(&format!("ALTER TABLE streams ADD COLUMN {name} {definition}"))?;
            }
        }
        Ok(())
    })();
    conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" })?;
    result
}

fn open_connection(path: &Path, read_only: bool) -> rusqlite::Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    if !read_only {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
    }
    Ok(conn)
}

/// Streams stored in one SQLite database file under a data directory.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use durable_session_server::storage::sqlite::SqliteStorage;
/// let storage = SqliteStorage::open(std::path::Path::new(".data"))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStorage {
    inner: Arc<Inner>,
}

/// How a [`SqliteStorage`] is set up besides its directory.
#[derive(Clone)]
pub struct SqliteOptions {
    /// Wakes live readers (with its bounds on recent appends).
    pub hub: ChangeHub,
    /// Where appends and commit times are counted.
    pub metrics: Metrics,
    /// Reads run at once, each on a pooled read-only connection and a
    /// blocking thread (`--max-sqlite-readers`); more wait their turn. This
    /// bounds the threads and connections (each with its page cache) that a
    /// burst of reads — thousands of subscribes at once — can start.
    pub max_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            hub: ChangeHub::new(),
            metrics: Metrics::new(),
            max_readers: DEFAULT_MAX_READERS,
        }
    }
}

/// Default of [`SqliteOptions::max_readers`].
pub const DEFAULT_MAX_READERS: usize = 16;

struct Inner {
    db_path: PathBuf,
    jobs: mpsc::Sender<Job>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per read running (`max_readers`).
    reading: Arc<tokio::sync::Semaphore>,
    touches: Arc<Touches>,
    hub: ChangeHub,
    metrics: Metrics,
}

impl SqliteStorage {
    /// Opens (creating if needed) the database in `dir` and starts the
    /// writer thread. Must be called inside a Tokio runtime.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        Self::open_with(dir, SqliteOptions::default())
    }

    /// [`SqliteStorage::open`] with [`SqliteOptions`]: the change hub (and
    /// its bounds), the metrics, how many reads run at once.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use durable_session_server::{changes::{ChangeHub, RecentLimits}, metrics::Metrics};
    /// use durable_session_server::storage::sqlite::{SqliteOptions, SqliteStorage};
    /// let metrics = Metrics::new();
    /// let hub = ChangeHub::with_limits(RecentLimits::default(), metrics.clone());
    /// let options = SqliteOptions { hub, metrics, max_readers: 8 };
    /// let storage = SqliteStorage::open_with(std::path::Path::new(".data"), options)?;
    /// # Ok(()) }
    /// ```
    pub fn open_with(dir: &Path, options: SqliteOptions) -> StoreResult<Self> {
        let SqliteOptions {
            hub,
            metrics,
            max_readers,
        } = options;
        std::fs::create_dir_all(dir).map_err(|e| internal(format!("cannot create data dir {}: {e}", dir.display())))?;
        let db_path = dir.join("streams.sqlite3");
        let conn = open_connection(&db_path, false)
            .map_err(|e| internal(format!("cannot open {}: {e}", db_path.display())))?;
        conn.execute_batch(SCHEMA).map_err(internal)?;
        migrate(&conn).map_err(|e| internal(format!("cannot migrate {}: {e}", db_path.display())))?;
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            conn,
            jobs: rx,
            hub: hub.clone(),
            metrics: metrics.clone(),
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(internal)?;
        let storage = Self {
            inner: Arc::new(Inner {
                db_path,
                jobs: tx,
                readers: Mutex::default(),
                reading: Arc::new(tokio::sync::Semaphore::new(max_readers.max(1))),
                touches: Arc::default(),
                hub,
                metrics,
            }),
        };
        storage.spawn_housekeeping();
        Ok(storage)
    }

    /// Path of the database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// Every few seconds, while the storage is in use: write read touches
    /// back and remove expired streams.
    fn spawn_housekeeping(&self) {
        super::spawn_housekeeping(Arc::downgrade(&self.inner), |inner| async move {
            let touches = inner.touches.clone();
            SqliteStorage { inner }
                .write(move |conn, effects| housekeeping(conn, &touches, effects))
                .await
        });
    }

    /// Runs a mutation on the writer thread; answers once it is committed.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection, &mut Effects) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let mut effects = Effects::default();
            let result = op(conn, &mut effects);
            Done {
                keep: result.is_ok() || effects.keep_on_error,
                effects,
                reply: Box::new(move |committed| {
                    let _ = tx.send(match committed {
                        Ok(()) => result,
                        Err(e) => Err(StoreError::Internal(format!("commit failed: {e}"))),
                    });
                }),
            }
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| internal("storage writer has stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(internal("storage writer dropped the request")))
    }

    /// Runs a query on a pooled read-only connection.
    async fn query<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection, &Touches) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        // The permit goes with the blocking work: a caller that gives up
        // does not free the place while the read still runs.
        let permit = self
            .inner
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| internal("storage is closing"))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let pooled = inner.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.db_path, true).map_err(internal)?,
            };
            let result = op(&conn, &inner.touches);
            inner.readers.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            result
        })
        .await
        .map_err(internal)?
    }
}

/// Writes read touches back and removes expired streams.
fn housekeeping(conn: &Connection, touches: &Touches, effects: &mut Effects) -> StoreResult<()> {
    for (id, at) in touches.snapshot() {
        conn.prepare_cached("UPDATE streams SET touched_ms = MAX(touched_ms, ?2) WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, at]))
            .map_err(internal)?;
    }
    let now = rules::now_ms();
    let candidates: Vec<Row> = {
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM streams WHERE deleted = 0 AND \
                 ((ttl_seconds IS NOT NULL AND touched_ms + ttl_seconds * 1000 <= ?1) \
                  OR expires_at_ms <= ?1)"
            ))
            .map_err(internal)?;
        st.query_map([now], row_from_sql)
            .and_then(|rows| rows.collect::<rusqlite::Result<_>>())
            .map_err(internal)?
    };
    for row in candidates.iter().filter(|r| r.expired(touches, now)) {
        let path: Option<String> = conn
            .query_row("SELECT path FROM streams WHERE id = ?1", [row.id], |r| r.get(0))
            .optional()
            .map_err(internal)?
            .flatten();
        remove(conn, touches, row, false)?;
        effects.notify.extend(path);
    }
    Ok(())
}

fn create(conn: &Connection, touches: &Touches, req: CreateStream, effects: &mut Effects) -> StoreResult<Created> {
    let now = rules::now_ms();
    if let Some(row) = find(conn, &req.path)? {
        if row.deleted {
            return Err(StoreError::ConfigMismatch(
                "state: it was deleted and is kept for its forks",
            ));
        }
        if row.expired(touches, now) {
            remove(conn, touches, &row, false)?;
        } else {
            let source = match row.fork_source {
                Some(id) => find_by_id(conn, id)?,
                None => None,
            };
            row.check_same_config(&req, source.as_ref())?;
            return Ok(Created {
                created: false,
                info: row.info(),
            });
        }
    }

    let new = match &req.fork {
        None => NewStream::plain(&req)?,
        Some(fork) => {
            let src = match find(conn, &fork.source)? {
                None => return Err(StoreError::ForkSourceNotFound),
                Some(src) if src.deleted => return Err(StoreError::ForkSourceGone),
                Some(src) if src.expired(touches, now) => return Err(StoreError::ForkSourceNotFound),
                Some(src) => src,
            };
            NewStream::fork(&req, fork, &src)?
        }
    };
    let (ttl, expires_at) = expiry_columns(new.expiry);
    conn.prepare_cached(
        "INSERT INTO streams (path, content_type, ttl_seconds, expires_at_ms, touched_ms, tail, \
         fork_source, fork_source_path, fork_offset, fork_req_offset, fork_sub) \
         VALUES (?1, ?2, ?3, ?4, ?5, 0, NULL, NULL, NULL, NULL, 0)",
    )
    .and_then(|mut st| st.execute(params![req.path, new.content_type, ttl, expires_at, now]))
    .map_err(internal)?;
    // The row id is the new incarnation: AUTOINCREMENT never hands out an id
    // twice, and each is greater than every one before it (restarts too), so
    // a stream created again at a deleted path gets offsets that sort after
    // the old stream's, and tell themselves apart from them.
    let id = conn.last_insert_rowid();
    let (row, ends) = new.meta(&req, id, now)?;
    insert_pieces(conn, id, row.is_json(), &ends, &new.pieces)?;
    conn.execute(
        "UPDATE streams SET tail = ?2, closed = ?3, incarnation = ?1, lineage = ?4, fork_source = ?5, \
         fork_source_path = ?6, fork_offset = ?7, fork_req_offset = ?8, fork_sub = ?9 WHERE id = ?1",
        params![
            id,
            row.tail as i64,
            row.closed,
            row.fork_source.map(|_| row.lineage.encode()),
            row.fork_source,
            row.fork_source_path,
            row.fork_offset.map(|p| p as i64),
            row.fork_req_offset.map(|p| p as i64),
            row.fork_sub as i64,
        ],
    )
    .map_err(internal)?;
    effects.notify.push(req.path);
    if let Some(entry) = req.index_entry {
        record_in_index(conn, touches, entry, effects)?;
    }
    Ok(Created {
        created: true,
        info: row.info(),
    })
}

/// Appends a new stream's index entry, in the transaction that creates the
/// stream (creating the index if it is missing). Any failure is the
/// storage's: the create fails with it, and is undone.
fn record_in_index(conn: &Connection, touches: &Touches, entry: IndexEntry, effects: &mut Effects) -> StoreResult<()> {
    let json = Some("application/json".to_owned());
    let failed = |e: StoreError| internal(format!("cannot record the new stream in {}: {e}", entry.path));
    if find(conn, &entry.path)?.is_none() {
        let index = CreateStream {
            path: entry.path.clone(),
            content_type: json.clone(),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::new(),
            fork: None,
            index_entry: None,
        };
        create(conn, touches, index, effects).map_err(failed)?;
    }
    let append_entry = Append {
        path: entry.path.clone(),
        content_type: json,
        body: entry.json,
        close: false,
        stream_seq: None,
        producer: None,
    };
    append(conn, touches, append_entry, effects).map_err(|e| {
        // Nothing of this job may be kept: the stream goes with its entry.
        effects.keep_on_error = false;
        failed(e)
    })?;
    Ok(())
}

fn append(conn: &Connection, touches: &Touches, req: Append, effects: &mut Effects) -> StoreResult<Appended> {
    let now = rules::now_ms();
    let row = match find(conn, &req.path)? {
        None => return Err(StoreError::NotFound),
        Some(row) if row.deleted => return Err(StoreError::Gone),
        Some(row) if row.expired(touches, now) => {
            remove(conn, touches, &row, false)?;
            effects.notify.push(req.path);
            effects.keep_on_error = true;
            return Err(StoreError::NotFound);
        }
        Some(row) => row,
    };
    let stored_producer: Option<(u64, u64)> = match &req.producer {
        None => None,
        Some(p) => conn
            .prepare_cached("SELECT epoch, last_seq FROM producers WHERE stream_id = ?1 AND producer_id = ?2")
            .and_then(|mut st| {
                st.query_row(params![row.id, p.id], |r| {
                    Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
                })
                .optional()
            })
            .map_err(internal)?,
    };
    let write = match row.plan_append(&req, stored_producer)? {
        AppendPlan::Done(answer) => return Ok(answer),
        AppendPlan::Write(write) => write,
    };
    insert_pieces(conn, row.id, row.is_json(), &write.ends, &write.pieces)?;
    let closer = write.closed_by.as_ref();
    conn.prepare_cached(
        "UPDATE streams SET tail = ?2, closed = closed OR ?3, \
         closed_by_id = COALESCE(?4, closed_by_id), closed_by_epoch = COALESCE(?5, closed_by_epoch), \
         closed_by_seq = COALESCE(?6, closed_by_seq), \
         last_stream_seq = COALESCE(?7, last_stream_seq), touched_ms = ?8 WHERE id = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            row.id,
            write.tail as i64,
            write.close,
            closer.map(|c| c.0.clone()),
            closer.map(|c| c.1 as i64),
            closer.map(|c| c.2 as i64),
            write.stream_seq,
            now,
        ])
    })
    .map_err(internal)?;
    if let Some(p) = &write.producer {
        conn.prepare_cached(
            "INSERT INTO producers (stream_id, producer_id, epoch, last_seq) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (stream_id, producer_id) DO UPDATE SET epoch = ?3, last_seq = ?4",
        )
        .and_then(|mut st| st.execute(params![row.id, p.id, p.epoch as i64, p.seq as i64]))
        .map_err(internal)?;
    }
    let (appended, published) = row.appended(write, now);
    match published {
        None => effects.notify.push(req.path),
        Some(published) => effects.publish.push((req.path, published)),
    }
    Ok(appended)
}

fn delete(conn: &Connection, touches: &Touches, path: String, effects: &mut Effects) -> StoreResult<()> {
    let now = rules::now_ms();
    let row = live_row(conn, touches, &path, now)?;
    remove(conn, touches, &row, true)?;
    effects.notify.push(path);
    Ok(())
}

#[async_trait]
impl Storage for SqliteStorage {
    async fn create(&self, req: CreateStream) -> StoreResult<Created> {
        let touches = self.inner.touches.clone();
        self.write(move |conn, effects| create(conn, &touches, req, effects))
            .await
    }

    async fn append(&self, req: Append) -> StoreResult<Appended> {
        let touches = self.inner.touches.clone();
        let (started, bytes) = (std::time::Instant::now(), req.body.len());
        let result = self
            .write(move |conn, effects| append(conn, &touches, req, effects))
            .await;
        if result.as_ref().is_ok_and(|a| !a.duplicate) {
            self.inner.metrics.appended(bytes, started.elapsed());
        }
        result
    }

    async fn read(&self, req: Read) -> StoreResult<Chunk> {
        if let Some(chunk) = recent::read_recent(&self.inner.hub, &self.inner.touches, &req) {
            return Ok(chunk);
        }
        self.query(move |conn, touches| read_chunk(conn, touches, &req)).await
    }

    async fn head(&self, path: &str) -> StoreResult<StreamInfo> {
        let path = path.to_owned();
        self.query(move |conn, touches| live_row(conn, touches, &path, rules::now_ms()).map(|row| row.info()))
            .await
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        let touches = self.inner.touches.clone();
        let path = path.to_owned();
        self.write(move |conn, effects| delete(conn, &touches, path, effects))
            .await
    }

    fn changes(&self, path: &str) -> ChangeFeed {
        self.inner.hub.subscribe(path)
    }

    async fn list_streams(&self, prefix: &str, limit: usize) -> StoreResult<Vec<(String, StreamInfo)>> {
        let prefix = prefix.to_owned();
        self.query(move |conn, touches| {
            let now = rules::now_ms();
            // Paths in order from the prefix on (the path index), until one
            // no longer starts with it.
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT {ROW_COLUMNS} FROM streams WHERE path >= ?1 ORDER BY path"
                ))
                .map_err(internal)?;
            let mut rows = stmt.query([&prefix]).map_err(internal)?;
            let mut out = Vec::new();
            while out.len() < limit {
                let Some(r) = rows.next().map_err(internal)? else { break };
                // ROW_COLUMNS: the path is the second column.
                let Some(path) = r.get::<_, Option<String>>(1).map_err(internal)? else {
                    continue;
                };
                let row = row_from_sql(r).map_err(internal)?;
                if !path.starts_with(&prefix) {
                    break;
                }
                if !row.deleted && !row.expired(touches, now) {
                    out.push((path, row.info()));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_subscription(&self, id: &str, doc: Bytes) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |conn, _| {
            conn.execute(
                "INSERT INTO subscriptions (id, doc) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
                rusqlite::params![id, doc.as_ref()],
            )
            .map(|_| ())
            .map_err(internal)
        })
        .await
    }

    async fn delete_subscription(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.write(move |conn, _| {
            conn.execute("DELETE FROM subscriptions WHERE id = ?1", [id])
                .map(|_| ())
                .map_err(internal)
        })
        .await
    }

    async fn subscriptions(&self) -> StoreResult<Vec<(String, Bytes)>> {
        self.query(|conn, _| {
            let mut stmt = conn
                .prepare("SELECT id, doc FROM subscriptions ORDER BY id")
                .map_err(internal)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, Bytes::from(r.get::<_, Vec<u8>>(1)?)))
                })
                .map_err(internal)?;
            rows.collect::<rusqlite::Result<_>>().map_err(internal)
        })
        .await
    }
}
