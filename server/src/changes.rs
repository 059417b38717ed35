//! Wake-ups for live readers.
//!
//! A [`ChangeHub`] keeps one version counter per stream path that someone is
//! waiting on. Writers call [`ChangeHub::notify`] after a change is durable;
//! readers take a [`ChangeFeed`] before they read and wait on it when the read
//! found nothing new. Because the feed is taken first, a change that lands
//! between the read and the wait is never missed. A backend shared by several
//! processes (such as Redis) calls `notify` from its own pub/sub listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Per-path change counters. Cheap to clone.
#[derive(Clone, Default)]
pub struct ChangeHub {
    inner: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
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
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                map.insert(path.to_owned(), tx);
                rx
            }
        };
        ChangeFeed { rx }
    }

    /// Wakes everyone waiting on `path`, and forgets paths nobody waits on.
    pub fn notify(&self, path: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(path) {
            if tx.receiver_count() == 0 {
                map.remove(path);
            } else {
                tx.send_modify(|v| *v = v.wrapping_add(1));
            }
        }
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

    #[tokio::test]
    async fn unwatched_paths_are_forgotten() {
        let hub = ChangeHub::new();
        drop(hub.subscribe("a"));
        assert_eq!(hub.watched_paths(), 1);
        hub.notify("a");
        assert_eq!(hub.watched_paths(), 0);
    }
}
