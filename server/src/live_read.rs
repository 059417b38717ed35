//! The catch-up→live reader: one loop over a stream, above the [`Storage`]
//! trait, used by every live read — WebSocket subscriptions, SSE and
//! long-poll — on every store.
//!
//! It always reads by offset, so nothing is skipped or repeated at the
//! boundary between catching up and following live; it subscribes to the
//! stream's changes *before* its first read, so an append landing between a
//! read and the wait that follows still wakes it.

use std::sync::Arc;

use tokio::time::Instant;

use crate::changes::{BatchKey, ChangeFeed};
use crate::offset::StartAt;
use crate::storage::{Chunk, Read, Storage, StoreResult};

/// Reads one stream from an offset: what is stored, then each append as it
/// lands.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use durable_session_server::{live_read::LiveRead, offset::StartAt, storage::Storage};
/// # async fn follow(storage: Arc<dyn Storage>) -> Result<(), durable_session_server::storage::StoreError> {
/// let mut live = LiveRead::new(storage, "sessions/abc".into(), StartAt::Beginning, 64 * 1024);
/// loop {
///     let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
///     let chunk = live.next_until(deadline).await?;
///     if chunk.pieces.is_empty() && !chunk.info.closed {
///         continue; // nothing new within 30 s: a keep-alive would go here
///     }
///     println!("{} messages up to {:?}", chunk.pieces.len(), chunk.next);
///     if chunk.info.closed && chunk.up_to_date() {
///         return Ok(()); // the end of a closed stream
///     }
/// }
/// # }
/// ```
pub struct LiveRead {
    storage: Arc<dyn Storage>,
    feed: ChangeFeed,
    path: String,
    from: StartAt,
    max_bytes: usize,
    /// Set when the reader stands at the tail: an empty chunk describing it.
    /// The next call waits for a change before reading again.
    at_tail: Option<Chunk>,
}

impl LiveRead {
    /// A reader of `path` from `from`, each read returning at most about
    /// `max_bytes` (always at least one message when there is one).
    pub fn new(storage: Arc<dyn Storage>, path: String, from: StartAt, max_bytes: usize) -> Self {
        let feed = storage.changes(&path);
        Self {
            storage,
            feed,
            path,
            from,
            max_bytes,
            at_tail: None,
        }
    }

    /// The text `make` writes for `chunk` (a chunk this reader returned) in
    /// `format`, written once for all live readers of the stream on this
    /// node: a batch that reaches a thousand subscribers is serialized
    /// once, not a thousand times ([`ChangeFeed::shared_batch`]).
    pub fn shared(&self, chunk: &Chunk, format: &'static str, make: impl FnOnce(&Chunk) -> String) -> Arc<str> {
        let key = BatchKey {
            format,
            stream: chunk.info.id,
            start: chunk.start,
            next: chunk.next,
            tail: chunk.info.tail,
            closed: chunk.info.closed,
        };
        self.feed.shared_batch(key, || make(chunk))
    }

    /// The next data from the reader's position, or the end of a closed
    /// stream; when there is none, waits for an append until `deadline` and
    /// then returns an empty chunk describing the tail. A deadline already
    /// passed reads what is there now without waiting.
    ///
    /// Safe to cancel (for example in `tokio::select!`): the position only
    /// moves when a chunk is returned.
    pub async fn next_until(&mut self, deadline: Instant) -> StoreResult<Chunk> {
        loop {
            if let Some(tail) = &self.at_tail {
                let now = Instant::now();
                if now >= deadline || !self.feed.wait(deadline - now).await {
                    return Ok(tail.clone());
                }
                self.at_tail = None;
            }
            let chunk = self
                .storage
                .read(Read {
                    path: self.path.clone(),
                    from: self.from,
                    max_bytes: self.max_bytes,
                })
                .await?;
            self.from = StartAt::Pos(chunk.next);
            let at_end = chunk.info.closed && chunk.up_to_date();
            if chunk.up_to_date() && !at_end {
                self.at_tail = Some(Chunk {
                    info: chunk.info.clone(),
                    start: chunk.next,
                    next: chunk.next,
                    pieces: Vec::new(),
                    offsets: Vec::new(),
                });
            }
            if !chunk.pieces.is_empty() || at_end {
                return Ok(chunk);
            }
        }
    }
}
