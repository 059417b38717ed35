//! Wake-ups for live readers.
//!
//! A [`ChangeHub`] keeps one version counter per stream path that someone is
//! waiting on. Writers call [`ChangeHub::notify`] after a change is durable;
//! readers take a [`ChangeFeed`] before they read and wait on it when the read
//! found nothing new. Because the feed is taken first, a change that lands
//! between the read and the wait is never missed. A backend shared by several
//! processes (such as Redis) calls `notify` from its own pub/sub listener.
//!
//! A path is in the hub only while a feed for it lives: dropping the last
//! feed removes it. A subscription to a stream that does not exist ends with
//! `not_found` and drops its feed, so watching missing paths leaves nothing
//! behind; the hub holds at most one entry per live reader.
//!
//! While a path is watched, the hub also keeps its last appends
//! ([`ChangeHub::publish`]), so live readers — a thousand tabs on one session
//! — are served the new data from memory instead of each reading the store
//! ([`ChangeHub::recent`]). That memory is bounded in bytes per stream and in
//! all ([`RecentLimits`]); past a bound the oldest appends go and readers
//! fall back to the store. Anything else that changes a stream
//! ([`ChangeHub::notify`]) drops that memory too.
//!
//! The batch those readers are sent is written once, too: the first live
//! reader to deliver a batch keeps its serialized text in the path's entry
//! ([`ChangeFeed::shared_batch`]) and the others reuse it, until the stream
//! changes again. That text counts against the same byte bounds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::offset::Pos;
use crate::storage::StreamInfo;

/// Appends kept per watched path, at most.
const RECENT_APPENDS: usize = 64;

/// How much memory recent appends may take (`--recent-append-bytes`,
/// `--recent-append-bytes-per-stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentLimits {
    /// Bytes kept for one stream.
    pub per_stream: usize,
    /// Bytes kept for all streams together.
    pub total: usize,
}

impl Default for RecentLimits {
    fn default() -> Self {
        Self {
            per_stream: 1024 * 1024,
            total: 64 * 1024 * 1024,
        }
    }
}

/// An append just made durable, as live readers need it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The stream after the append (its `tail` is where the data ends).
    pub info: StreamInfo,
    /// Where the data starts.
    pub start: Pos,
    /// JSON mode: one message per piece. Otherwise: bytes.
    pub pieces: Vec<Bytes>,
    /// When the append happened (it renews a sliding TTL), Unix ms.
    pub touched_ms: i64,
}

impl Published {
    /// Bytes this append holds in memory.
    fn bytes(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }
}

/// Data of a watched stream from a position, served from memory.
#[derive(Debug, Clone)]
pub struct Recent {
    pub info: StreamInfo,
    pub pieces: Vec<Bytes>,
    pub next: Pos,
    pub touched_ms: i64,
}

/// Which batch of a stream a serialized text is, and in which form: the
/// key of [`ChangeFeed::shared_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchKey {
    /// The serialization (one per kind of reader, e.g. `"ws"`).
    pub format: &'static str,
    /// The stream's internal id ([`StreamInfo::id`]): one incarnation.
    pub stream: i64,
    /// Where the batch starts and ends.
    pub start: Pos,
    pub next: Pos,
    /// The stream's tail and whether it is closed, as the reader saw them.
    pub tail: Pos,
    pub closed: bool,
}

struct Entry {
    tx: watch::Sender<u64>,
    recent: VecDeque<Arc<Published>>,
    /// Bytes of `recent`.
    recent_bytes: usize,
    /// The latest batch serialized for live readers, per format.
    batches: Vec<(BatchKey, Arc<str>)>,
    /// Bytes of `batches`.
    batch_bytes: usize,
}

impl Entry {
    fn new(tx: watch::Sender<u64>) -> Self {
        Self {
            tx,
            recent: VecDeque::new(),
            recent_bytes: 0,
            batches: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// Forgets the serialized batches (the stream changed); their bytes.
    fn forget_batches(&mut self) -> usize {
        self.batches.clear();
        std::mem::take(&mut self.batch_bytes)
    }

    fn forget_oldest(&mut self) -> usize {
        let bytes = self.recent.pop_front().map_or(0, |a| a.bytes());
        self.recent_bytes -= bytes;
        bytes
    }

    fn forget_all(&mut self) -> usize {
        self.recent.clear();
        std::mem::take(&mut self.recent_bytes) + self.forget_batches()
    }
}

#[derive(Default)]
struct Paths {
    map: HashMap<Arc<str>, Entry>,
    /// Bytes of every entry's `recent` and `batches`.
    recent_bytes: usize,
}

struct Shared {
    paths: Mutex<Paths>,
    limits: RecentLimits,
    metrics: Metrics,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Paths> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, paths: &Paths) {
        self.metrics.hub_size(paths.map.len(), paths.recent_bytes);
    }
}

/// Per-path change counters (and recent appends). Cheap to clone.
#[derive(Clone)]
pub struct ChangeHub {
    shared: Arc<Shared>,
}

impl Default for ChangeHub {
    fn default() -> Self {
        Self::new()
    }
}

impl ChangeHub {
    /// A hub with nobody waiting, default limits, and metrics of its own.
    pub fn new() -> Self {
        Self::with_limits(RecentLimits::default(), Metrics::new())
    }

    /// A hub keeping at most `limits` of recent appends, reporting its size
    /// to `metrics`.
    ///
    /// ```
    /// use durable_session_server::changes::{ChangeHub, RecentLimits};
    /// use durable_session_server::metrics::Metrics;
    /// let limits = RecentLimits { per_stream: 64 * 1024, total: 1024 * 1024 };
    /// let hub = ChangeHub::with_limits(limits, Metrics::new());
    /// let feed = hub.subscribe("sessions/a");
    /// assert_eq!(hub.watched_paths(), 1);
    /// drop(feed);
    /// assert_eq!(hub.watched_paths(), 0);
    /// ```
    pub fn with_limits(limits: RecentLimits, metrics: Metrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                paths: Mutex::default(),
                limits,
                metrics,
            }),
        }
    }

    /// A feed for `path`, registered now. The path is watched until the
    /// last of its feeds is dropped.
    pub fn subscribe(&self, path: &str) -> ChangeFeed {
        let mut paths = self.shared.lock();
        let (key, rx) = match paths.map.get_key_value(path) {
            Some((key, entry)) => (key.clone(), entry.tx.subscribe()),
            None => {
                let key: Arc<str> = Arc::from(path);
                let (tx, rx) = watch::channel(0);
                paths.map.insert(key.clone(), Entry::new(tx));
                self.shared.report(&paths);
                (key, rx)
            }
        };
        ChangeFeed {
            rx,
            path: key,
            shared: self.shared.clone(),
        }
    }

    /// Wakes everyone waiting on `path` after some change, and forgets its
    /// recent appends.
    pub fn notify(&self, path: &str) {
        self.change(path, None);
    }

    /// Wakes everyone waiting on `path` after an append, and keeps the
    /// appended data for them (within the [`RecentLimits`]).
    pub fn publish(&self, path: &str, append: Published) {
        self.change(path, Some(append));
    }

    fn change(&self, path: &str, append: Option<Published>) {
        let limits = self.shared.limits;
        let mut guard = self.shared.lock();
        let paths = &mut *guard;
        let Some(entry) = paths.map.get_mut(path) else { return };
        // Batches serialized before this change are never asked for again.
        paths.recent_bytes -= entry.forget_batches();
        match append {
            // Only a contiguous run of appends is served from memory, and
            // only appends that fit the per-stream bound.
            Some(a)
                if entry.recent.back().is_none_or(|last| last.info.tail == a.start)
                    && a.bytes() <= limits.per_stream.min(limits.total) =>
            {
                let bytes = a.bytes();
                while !entry.recent.is_empty()
                    && (entry.recent.len() >= RECENT_APPENDS
                        || entry.recent_bytes + bytes > limits.per_stream
                        || paths.recent_bytes + bytes > limits.total)
                {
                    paths.recent_bytes -= entry.forget_oldest();
                }
                if paths.recent_bytes + bytes <= limits.total {
                    entry.recent.push_back(Arc::new(a));
                    entry.recent_bytes += bytes;
                    paths.recent_bytes += bytes;
                }
            }
            _ => paths.recent_bytes -= entry.forget_all(),
        }
        entry.tx.send_modify(|v| *v = v.wrapping_add(1));
        self.shared.report(paths);
    }

    /// Wakes everyone waiting on any path and forgets all recent appends:
    /// for a backend that may have missed changes (its pub/sub subscription
    /// dropped), so that every live reader reads the store again.
    pub fn notify_all(&self) {
        let mut guard = self.shared.lock();
        let paths = &mut *guard;
        for entry in paths.map.values_mut() {
            entry.forget_all();
            entry.tx.send_modify(|v| *v = v.wrapping_add(1));
        }
        paths.recent_bytes = 0;
        self.shared.report(paths);
    }

    /// The data of `path` from `from` to its latest known tail (about
    /// `max_bytes`, at least one piece), if the recent appends cover it.
    pub fn recent(&self, path: &str, from: Pos, max_bytes: usize) -> Option<Recent> {
        let paths = self.shared.lock();
        let recent = &paths.map.get(path)?.recent;
        let (first, last) = (recent.front()?, recent.back()?);
        if from < first.start || from > last.info.tail {
            return None;
        }
        let mut pieces = Vec::new();
        let mut next = from;
        let mut used = 0;
        'batches: for batch in recent.iter().filter(|b| b.info.tail > from) {
            let json = batch.info.is_json();
            let mut pos = batch.start;
            for piece in &batch.pieces {
                let end = pos + if json { 1 } else { piece.len() as Pos };
                if end > next {
                    if used >= max_bytes && !pieces.is_empty() {
                        break 'batches;
                    }
                    let piece = if json {
                        piece.clone()
                    } else {
                        piece.slice((next - pos) as usize..)
                    };
                    used += piece.len();
                    pieces.push(piece);
                    next = end;
                }
                pos = end;
            }
        }
        Some(Recent {
            info: last.info.clone(),
            pieces,
            next,
            touched_ms: last.touched_ms,
        })
    }

    /// Number of paths with a live feed (for tests and metrics).
    pub fn watched_paths(&self) -> usize {
        self.shared.lock().map.len()
    }

    /// Bytes of recent appends held for all paths (for tests and metrics).
    pub fn recent_bytes(&self) -> usize {
        self.shared.lock().recent_bytes
    }
}

/// A subscription to one stream's changes. The last feed of a path to be
/// dropped removes the path from the hub.
pub struct ChangeFeed {
    rx: watch::Receiver<u64>,
    path: Arc<str>,
    shared: Arc<Shared>,
}

impl ChangeFeed {
    /// Waits until the stream changes after this feed was taken (or after the
    /// last wait returned), at most `timeout`. Returns `false` on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.rx.changed()).await, Ok(Ok(())))
    }
}

impl ChangeFeed {
    /// The serialized text of batch `key`: the one another live reader of
    /// this path made, or `make()`'s, kept for the next reader while it
    /// fits the byte bounds ([`RecentLimits`]) and until the stream changes.
    pub fn shared_batch(&self, key: BatchKey, make: impl FnOnce() -> String) -> Arc<str> {
        let found = |paths: &Paths| {
            let entry = paths.map.get(&*self.path)?;
            entry
                .batches
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, text)| text.clone())
        };
        if let Some(text) = found(&self.shared.lock()) {
            return text;
        }
        // Made outside the lock: two readers may both make it; one is kept.
        let text: Arc<str> = Arc::from(make());
        let limits = self.shared.limits;
        let mut guard = self.shared.lock();
        let paths = &mut *guard;
        if let Some(entry) = paths.map.get_mut(&*self.path) {
            if let Some(i) = entry.batches.iter().position(|(k, _)| k.format == key.format) {
                let (_, old) = entry.batches.swap_remove(i);
                entry.batch_bytes -= old.len();
                paths.recent_bytes -= old.len();
            }
            let bytes = text.len();
            if entry.recent_bytes + entry.batch_bytes + bytes <= limits.per_stream
                && paths.recent_bytes + bytes <= limits.total
            {
                entry.batches.push((key, text.clone()));
                entry.batch_bytes += bytes;
                paths.recent_bytes += bytes;
            }
            self.shared.report(paths);
        }
        text
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        let mut guard = self.shared.lock();
        let paths = &mut *guard;
        // Feeds are created and dropped under the lock, so a count of one
        // is this feed alone.
        if let Some(entry) = paths.map.get_mut(&*self.path)
            && entry.tx.receiver_count() <= 1
        {
            paths.recent_bytes -= entry.forget_all();
            paths.map.remove(&*self.path);
            self.shared.report(paths);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_after_subscribing_wakes_the_feed() {
        let hub = ChangeHub::new();
        let mut feed = hub.subscribe("a");
        hub.notify("a");
        assert!(feed.wait(Duration::from_millis(10)).await);
        assert!(!feed.wait(Duration::from_millis(10)).await);
    }

    #[tokio::test]
    async fn notify_all_wakes_every_path_and_forgets_recent_appends() {
        let hub = ChangeHub::new();
        let (mut a, mut b) = (hub.subscribe("a"), hub.subscribe("b"));
        publish(&hub, 0, &["1"], true);
        hub.notify_all();
        assert!(a.wait(Duration::from_millis(10)).await);
        assert!(b.wait(Duration::from_millis(10)).await);
        assert!(hub.recent("a", 0, 1 << 20).is_none());
    }

    #[tokio::test]
    async fn other_paths_do_not_wake() {
        let hub = ChangeHub::new();
        let mut feed = hub.subscribe("a");
        hub.notify("b");
        assert!(!feed.wait(Duration::from_millis(10)).await);
    }

    fn info(tail: Pos, json: bool) -> StreamInfo {
        let content_type = if json { "application/json" } else { "text/plain" };
        StreamInfo {
            id: 1,
            content_type: content_type.into(),
            tail,
            closed: false,
            expiry: crate::storage::Expiry::Never,
        }
    }

    fn publish(hub: &ChangeHub, start: Pos, pieces: &[&'static str], json: bool) {
        let len: Pos = if json {
            pieces.len() as Pos
        } else {
            pieces.iter().map(|p| p.len() as Pos).sum()
        };
        let pieces = pieces.iter().map(|p| Bytes::from_static(p.as_bytes())).collect();
        hub.publish(
            "a",
            Published {
                info: info(start + len, json),
                start,
                pieces,
                touched_ms: 0,
            },
        );
    }

    #[test]
    fn a_batch_is_serialized_once_for_all_readers_until_the_stream_changes() {
        let hub = ChangeHub::with_limits(
            RecentLimits {
                per_stream: 100,
                total: 1000,
            },
            Metrics::new(),
        );
        let (a, b) = (hub.subscribe("a"), hub.subscribe("a"));
        let key = BatchKey {
            format: "ws",
            stream: 1,
            start: 0,
            next: 2,
            tail: 2,
            closed: false,
        };
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            "batch".to_owned()
        };
        assert_eq!(&*a.shared_batch(key, make), "batch");
        assert_eq!(&*b.shared_batch(key, make), "batch");
        assert_eq!(made.get(), 1, "the second reader reuses the first one's text");
        assert_eq!(hub.recent_bytes(), 5, "counted in the hub's memory");
        let sse = BatchKey { format: "sse", ..key };
        b.shared_batch(sse, make);
        assert_eq!(
            (made.get(), hub.recent_bytes()),
            (2, 10),
            "another format is another text"
        );

        hub.notify("a");
        assert_eq!(hub.recent_bytes(), 0, "a change forgets them");
        a.shared_batch(key, make);
        assert_eq!(made.get(), 3);

        // Larger than the per-stream bound: made for each reader, not kept.
        let big = BatchKey { next: 9, ..key };
        a.shared_batch(big, || "x".repeat(101));
        assert_eq!(
            hub.recent_bytes(),
            0,
            "the bigger batch replaced the kept one and was not kept"
        );
        drop((a, b));
        assert_eq!((hub.watched_paths(), hub.recent_bytes()), (0, 0));
    }

    #[tokio::test]
    async fn recent_appends_serve_live_readers_from_memory() {
        let hub = ChangeHub::new();
        let _feed = hub.subscribe("a");
        publish(&hub, 10, &["1", "2"], true);
        publish(&hub, 12, &["3"], true);
        let r = hub.recent("a", 11, 1 << 20).unwrap();
        assert_eq!((r.pieces.len(), r.next, r.info.tail), (2, 13, 13));
        assert_eq!(hub.recent("a", 13, 1 << 20).unwrap().pieces.len(), 0, "up to date");
        assert!(
            hub.recent("a", 9, 1 << 20).is_none(),
            "older than memory: read the store"
        );
        assert!(hub.recent("a", 14, 1 << 20).is_none());
        // A gap (an append memory missed) clears it; so does any other change.
        publish(&hub, 20, &["x"], true);
        assert!(hub.recent("a", 13, 1 << 20).is_none());
        hub.notify("a");
        assert!(hub.recent("a", 21, 1 << 20).is_none());
    }

    #[tokio::test]
    async fn byte_streams_are_sliced() {
        let hub = ChangeHub::new();
        let _feed = hub.subscribe("a");
        publish(&hub, 0, &["hello"], false);
        publish(&hub, 5, &[" world"], false);
        let r = hub.recent("a", 3, 1 << 20).unwrap();
        assert_eq!(r.pieces.concat(), b"lo world");
        assert_eq!(r.next, 11);
        let first = hub.recent("a", 0, 2).unwrap();
        assert_eq!(
            (first.pieces.concat(), first.next),
            (b"hello".to_vec(), 5),
            "about max_bytes, whole pieces"
        );
    }

    #[tokio::test]
    async fn a_path_is_forgotten_with_its_last_feed() {
        let hub = ChangeHub::new();
        let (a1, a2) = (hub.subscribe("a"), hub.subscribe("a"));
        let _b = hub.subscribe("b");
        assert_eq!(hub.watched_paths(), 2);
        publish(&hub, 0, &["1"], true);
        drop(a1);
        assert_eq!(hub.watched_paths(), 2, "a is still watched");
        assert!(hub.recent("a", 0, 1 << 20).is_some());
        drop(a2);
        assert_eq!(hub.watched_paths(), 1);
        assert_eq!(hub.recent_bytes(), 0, "its recent appends went with it");
        // Changes to unwatched paths leave nothing behind.
        hub.notify("c");
        publish(&hub, 1, &["2"], true);
        assert_eq!(hub.watched_paths(), 1);
    }

    #[tokio::test]
    async fn many_watchers_of_missing_paths_leave_nothing() {
        let hub = ChangeHub::new();
        for i in 0..10_000 {
            drop(hub.subscribe(&format!("missing/{i}")));
        }
        assert_eq!(hub.watched_paths(), 0);
    }

    fn publish_to(hub: &ChangeHub, path: &str, start: Pos, piece: &'static str) {
        hub.publish(
            path,
            Published {
                info: info(start + piece.len() as Pos, false),
                start,
                pieces: vec![Bytes::from_static(piece.as_bytes())],
                touched_ms: 0,
            },
        );
    }

    #[tokio::test]
    async fn recent_appends_are_bounded_in_bytes() {
        let limits = RecentLimits {
            per_stream: 10,
            total: 15,
        };
        let hub = ChangeHub::with_limits(limits, Metrics::new());
        let (_a, _b) = (hub.subscribe("a"), hub.subscribe("b"));
        publish_to(&hub, "a", 0, "0123");
        publish_to(&hub, "a", 4, "4567");
        assert_eq!(hub.recent_bytes(), 8);
        // Past the per-stream bound the oldest go.
        publish_to(&hub, "a", 8, "89ab");
        assert_eq!(hub.recent_bytes(), 8);
        assert!(
            hub.recent("a", 0, 1 << 20).is_none(),
            "0..4 was forgotten: read the store"
        );
        assert_eq!(hub.recent("a", 4, 1 << 20).unwrap().pieces.concat(), b"456789ab");
        // Past the total bound, the stream being appended to gives way.
        publish_to(&hub, "b", 0, "bbbbbb");
        assert_eq!(hub.recent_bytes(), 14);
        publish_to(&hub, "b", 6, "cccccc");
        assert_eq!(hub.recent_bytes(), 14, "b forgot its oldest to stay within 15");
        assert_eq!(hub.recent("b", 6, 1 << 20).unwrap().pieces.concat(), b"cccccc");
        // An append larger than a bound is not kept; readers use the store.
        publish_to(&hub, "a", 12, "0123456789abcdef");
        assert!(hub.recent("a", 12, 1 << 20).is_none());
        assert_eq!(hub.recent_bytes(), 6);
    }
}
