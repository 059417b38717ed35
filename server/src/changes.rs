//! Wake-ups for live readers.
//!
//! A [`ChangeHub`] keeps one version counter per stream path that someone is
//! waiting on. Writers call [`ChangeHub::notify`] after a change is durable;
//! readers take a [`ChangeFeed`] before they read and wait on it when the read
//! found nothing new. Because the feed is taken first, a change that lands
//! between the read and the wait is never missed. A backend shared by several
//! processes (such as Redis) calls `notify` from its own pub/sub listener.
//!
//! While a path is watched, the hub also keeps its last appends
//! ([`ChangeHub::publish`]), so live readers — a thousand tabs on one session
//! — are served the new data from memory instead of each reading the store
//! ([`ChangeHub::recent`]). Anything else that changes a stream
//! ([`ChangeHub::notify`]) drops that memory, and readers fall back to the store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::offset::Pos;
use crate::storage::StreamInfo;

/// Appends kept per watched path.
const RECENT_APPENDS: usize = 64;

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

/// Data of a watched stream from a position, served from memory.
#[derive(Debug, Clone)]
pub struct Recent {
    pub info: StreamInfo,
    pub pieces: Vec<Bytes>,
    pub next: Pos,
    pub touched_ms: i64,
}

struct Entry {
    tx: watch::Sender<u64>,
    recent: VecDeque<Arc<Published>>,
}

/// Per-path change counters (and recent appends). Cheap to clone.
#[derive(Clone, Default)]
pub struct ChangeHub {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
}

impl ChangeHub {
    /// A hub with nobody waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// A feed for `path`, registered now.
    pub fn subscribe(&self, path: &str) -> ChangeFeed {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let rx = match map.get(path) {
            Some(entry) => entry.tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                map.insert(
                    path.to_owned(),
                    Entry {
                        tx,
                        recent: VecDeque::new(),
                    },
                );
                rx
            }
        };
        ChangeFeed { rx }
    }

    /// Wakes everyone waiting on `path` after some change, forgets its recent
    /// appends, and forgets paths nobody waits on.
    pub fn notify(&self, path: &str) {
        self.change(path, None);
    }

    /// Wakes everyone waiting on `path` after an append, and keeps the
    /// appended data for them.
    pub fn publish(&self, path: &str, append: Published) {
        self.change(path, Some(append));
    }

    fn change(&self, path: &str, append: Option<Published>) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = map.get_mut(path) else { return };
        if entry.tx.receiver_count() == 0 {
            map.remove(path);
            return;
        }
        match append {
            // Only a contiguous run of appends is served from memory.
            Some(a) if entry.recent.back().is_none_or(|last| last.info.tail == a.start) => {
                entry.recent.push_back(Arc::new(a));
                if entry.recent.len() > RECENT_APPENDS {
                    entry.recent.pop_front();
                }
            }
            _ => entry.recent.clear(),
        }
        entry.tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The data of `path` from `from` to its latest known tail (about
    /// `max_bytes`, at least one piece), if the recent appends cover it.
    pub fn recent(&self, path: &str, from: Pos, max_bytes: usize) -> Option<Recent> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let recent = &map.get(path)?.recent;
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

    /// Number of paths with a registered feed (for tests and metrics).
    pub fn watched_paths(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A subscription to one stream's changes.
pub struct ChangeFeed {
    rx: watch::Receiver<u64>,
}

impl ChangeFeed {
    /// Waits until the stream changes after this feed was taken (or after the
    /// last wait returned), at most `timeout`. Returns `false` on timeout.
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.rx.changed()).await, Ok(Ok(())))
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
    async fn unwatched_paths_are_forgotten() {
        let hub = ChangeHub::new();
        drop(hub.subscribe("a"));
        assert_eq!(hub.watched_paths(), 1);
        hub.notify("a");
        assert_eq!(hub.watched_paths(), 0);
    }
}
