//! Storage: where streams live, behind one trait.
//!
//! Handlers speak only to [`Storage`]. A backend owns durability (an append is
//! acknowledged only once it is durable), atomicity (a producer's state moves
//! with the data it wrote) and wake-ups (a live reader waiting on a stream is
//! woken by [`Storage::changes`], whichever process wrote). The embedded
//! default is [`sqlite::SqliteStorage`]; several nodes share a
//! [`redis::RedisStorage`]. The protocol rules every backend shares live in
//! [`rules`] and [`meta`].

pub mod meta;
pub mod recent;
pub mod redis;
pub mod rules;
pub mod sqlite;

use async_trait::async_trait;
use bytes::Bytes;
use durable_session_protocol::ws::ErrorCode;

use crate::changes::ChangeFeed;
use crate::offset::{Pos, StartAt};

/// When a stream expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Never.
    Never,
    /// A sliding window: this many seconds after the last read or write.
    Ttl(u64),
    /// An absolute deadline, in Unix milliseconds.
    At(i64),
}

/// An idempotent producer's identity on one request (`Producer-Id`,
/// `Producer-Epoch`, `Producer-Seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// A request to fork an existing stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkFrom {
    /// Path of the source stream (relative to `/v1/stream/`).
    pub source: String,
    /// Divergence point, an offset of the source; `None` means the source's
    /// current tail.
    pub offset: Option<Pos>,
    /// Messages (JSON) or bytes (other types) past `offset` to inherit too.
    pub sub_offset: u64,
}

/// `PUT`: create a stream, or confirm one with the same configuration.
#[derive(Debug, Clone)]
pub struct CreateStream {
    pub path: String,
    /// `None` when the request had no `Content-Type` (a fork inherits its
    /// source's; a new stream gets `application/octet-stream`).
    pub content_type: Option<String>,
    pub expiry: Expiry,
    pub closed: bool,
    pub body: Bytes,
    pub fork: Option<ForkFrom>,
    /// A message to append to an index stream in the same transaction, if
    /// (and only if) this request creates the stream: both are stored, or
    /// neither (the session index, [`crate::session_index`]).
    pub index_entry: Option<IndexEntry>,
}

/// A JSON message recorded in an index stream together with the creation
/// of a stream ([`CreateStream::index_entry`]).
///
/// ```
/// use durable_session_server::storage::IndexEntry;
/// let entry = IndexEntry {
///     path: "_index/sessions".into(),
///     json: r#"{"type":"session_created","session_id":"a"}"#.into(),
/// };
/// assert_eq!(entry.path, "_index/sessions");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The index: a JSON stream that never expires, created with the entry
    /// if it does not exist.
    pub path: String,
    /// One JSON message.
    pub json: Bytes,
}

/// `POST`: append to a stream and/or close it.
#[derive(Debug, Clone)]
pub struct Append {
    pub path: String,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub close: bool,
    pub stream_seq: Option<String>,
    pub producer: Option<Producer>,
}

/// What a stream is, as `HEAD` and every response describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// Internal id, unique across the lifetime of the store (used in ETags).
    pub id: i64,
    pub content_type: String,
    /// The tail: the offset of the position the next append will start at.
    pub tail: Pos,
    pub closed: bool,
    pub expiry: Expiry,
}

impl StreamInfo {
    /// Whether this stream preserves message boundaries (JSON mode).
    pub fn is_json(&self) -> bool {
        rules::is_json(&self.content_type)
    }
}

/// The outcome of a successful `PUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// `false` when an identical stream already existed.
    pub created: bool,
    pub info: StreamInfo,
}

/// The outcome of a successful `POST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub info: StreamInfo,
    /// `true` when nothing new was written: an idempotent duplicate, or a
    /// close of an already-closed stream.
    pub duplicate: bool,
    /// For producer requests: the epoch and highest accepted seq.
    pub producer: Option<(u64, u64)>,
}

/// A read of the stored data from a position.
#[derive(Debug, Clone)]
pub struct Read {
    pub path: String,
    pub from: StartAt,
    /// Stop adding messages once this many bytes are collected (at least one
    /// message is always returned when there is one).
    pub max_bytes: usize,
}

/// Data returned by a read.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub info: StreamInfo,
    /// The offset the data starts at.
    pub start: Pos,
    /// The offset after the data: where the next read starts.
    pub next: Pos,
    /// JSON streams: one entry per message (each a JSON text). Other
    /// streams: consecutive byte runs, to be concatenated.
    pub pieces: Vec<Bytes>,
    /// The offset just after each piece (a fork's data can span
    /// incarnations, so these are not simply counted from `start`).
    pub offsets: Vec<Pos>,
}

impl Chunk {
    /// Whether the chunk reaches the tail of the stream.
    pub fn up_to_date(&self) -> bool {
        self.next >= self.info.tail
    }
}

/// Everything that can go wrong in a storage operation, phrased as the
/// protocol outcome it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No such stream (or it expired).
    NotFound,
    /// The stream was deleted but is kept for its forks; or a read's offset
    /// belongs to another incarnation of the stream (one deleted, or expired,
    /// and created again), or to data a fork does not share.
    Gone,
    /// The stream is closed; nothing more can be appended.
    Closed { tail: Pos },
    /// The request's content type differs from the stream's.
    ContentTypeMismatch { stream: String },
    /// `PUT` on an existing stream with a different configuration.
    ConfigMismatch(&'static str),
    /// `Stream-Seq` not greater than the last one.
    SeqRegression { last: String },
    /// A producer epoch older than the stored one.
    StaleEpoch { current: u64 },
    /// A producer seq that skips ahead.
    SeqGap { expected: u64, received: u64 },
    /// Anything else the client got wrong: a short, plain message.
    BadRequest(String),
    /// The offset is past the tail of the stream (in its current
    /// incarnation).
    OffsetBeyondTail,
    /// A fork source that does not exist.
    ForkSourceNotFound,
    /// A fork source that is soft-deleted.
    ForkSourceGone,
    /// The storage itself failed.
    Internal(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound => f.write_str("stream not found"),
            Self::Gone => {
                f.write_str("stream was deleted, or the offset is from before it was deleted and created again")
            }
            Self::Closed { .. } => f.write_str("stream is closed"),
            Self::ContentTypeMismatch { stream } => {
                write!(f, "content type does not match the stream's ({stream})")
            }
            Self::ConfigMismatch(what) => {
                write!(f, "stream already exists with a different {what}")
            }
            Self::SeqRegression { last } => {
                write!(f, "Stream-Seq must be greater than the last one ({last:?})")
            }
            Self::StaleEpoch { current } => {
                write!(f, "producer epoch is stale (current epoch is {current})")
            }
            Self::SeqGap { expected, received } => {
                write!(f, "producer seq gap: expected {expected}, received {received}")
            }
            Self::BadRequest(msg) => f.write_str(msg),
            Self::OffsetBeyondTail => f.write_str("offset is beyond the tail of the stream"),
            Self::ForkSourceNotFound => f.write_str("fork source stream not found"),
            Self::ForkSourceGone => f.write_str("fork source stream was deleted"),
            Self::Internal(msg) => write!(f, "storage error: {msg}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// The protocol error code of the outcome: the `code` of a WebSocket
    /// `error` frame, and over HTTP its status
    /// ([`ErrorCode::http_status`]).
    ///
    /// ```
    /// use durable_session_server::storage::StoreError;
    /// use durable_session_protocol::ws::ErrorCode;
    /// assert_eq!(StoreError::OffsetBeyondTail.code(), ErrorCode::BadOffset);
    /// assert_eq!(StoreError::Closed { tail: 3 }.code().http_status(), 409);
    /// ```
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound | Self::ForkSourceNotFound => ErrorCode::NotFound,
            Self::Gone => ErrorCode::Gone,
            Self::Closed { .. } => ErrorCode::Closed,
            Self::ContentTypeMismatch { .. }
            | Self::ConfigMismatch(_)
            | Self::SeqRegression { .. }
            | Self::ForkSourceGone => ErrorCode::Conflict,
            Self::StaleEpoch { .. } => ErrorCode::StaleEpoch,
            Self::SeqGap { .. } => ErrorCode::SeqGap,
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::OffsetBeyondTail => ErrorCode::BadOffset,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A place streams live. Implementations must be safe to share between all
/// request handlers.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Creates a stream (or a fork), or confirms an identical one. A new
    /// stream and its [`CreateStream::index_entry`] are written atomically
    /// (one transaction; a store without transactions uses whatever makes
    /// both writes one, e.g. a Lua script): if the entry cannot be written,
    /// the stream is not created either.
    async fn create(&self, req: CreateStream) -> StoreResult<Created>;
    /// Appends to and/or closes a stream. Returns only once durable.
    async fn append(&self, req: Append) -> StoreResult<Appended>;
    /// Reads from a position; resets a sliding TTL.
    async fn read(&self, req: Read) -> StoreResult<Chunk>;
    /// Describes a stream without touching its TTL.
    async fn head(&self, path: &str) -> StoreResult<StreamInfo>;
    /// Deletes a stream (a soft delete while forks still read from it).
    async fn delete(&self, path: &str) -> StoreResult<()>;
    /// A feed that wakes whenever the stream at `path` changes. Subscribe
    /// *before* reading so that no change between the read and the wait is
    /// missed.
    fn changes(&self, path: &str) -> ChangeFeed;
    /// Up to `limit` live streams whose path starts with `prefix`, in no
    /// particular order: how a subscription's pattern finds the streams
    /// that exist when it is created (PROTOCOL.md §6.2).
    async fn list_streams(&self, prefix: &str, limit: usize) -> StoreResult<Vec<(String, StreamInfo)>>;
    /// Stores (or replaces) the document of subscription `id`
    /// ([`crate::subscriptions`]: its configuration, cursors and wake
    /// generation), durably before it returns.
    async fn put_subscription(&self, id: &str, doc: Bytes) -> StoreResult<()>;
    /// Removes the document of subscription `id` (absent: nothing to do).
    async fn delete_subscription(&self, id: &str) -> StoreResult<()>;
    /// Every stored subscription document, by id (read once at start-up).
    async fn subscriptions(&self) -> StoreResult<Vec<(String, Bytes)>>;
}

/// How often a store writes read touches back and removes expired streams.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `housekeeping` every [`HOUSEKEEPING_EVERY`] while the store behind
/// `store` is alive (the task ends once the last handle to it is dropped);
/// a failure is logged and tried again next time.
fn spawn_housekeeping<T, F, Fut>(store: std::sync::Weak<T>, housekeeping: F)
where
    T: Send + Sync + 'static,
    F: Fn(std::sync::Arc<T>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = StoreResult<()>> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(inner) = store.upgrade() else { break };
            if let Err(e) = housekeeping(inner).await {
                tracing::warn!(error = %e, "housekeeping failed");
            }
        }
    });
}
