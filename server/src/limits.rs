//! Counted places: how many live holders a key (a client address, a
//! principal, a stream) has, up to a maximum each.
//!
//! A [`Slots`] hands out a [`Slot`] per holder while the key has fewer than
//! its maximum; dropping the slot frees it. Keys without holders are
//! forgotten, so the map never holds more entries than there are holders.
//! The limits themselves and their error codes are listed in
//! `docs/limits.md`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Live holders per key, at most `max` each.
///
/// ```
/// use durable_session_server::limits::Slots;
/// let per_stream = Slots::new(2);
/// let a = per_stream.try_take("sessions/a".to_owned()).unwrap();
/// let b = per_stream.try_take("sessions/a".to_owned()).unwrap();
/// assert!(per_stream.try_take("sessions/a".to_owned()).is_none(), "full");
/// assert!(per_stream.try_take("sessions/b".to_owned()).is_some(), "another key");
/// drop(a);
/// assert!(per_stream.try_take("sessions/a".to_owned()).is_some());
/// # drop(b);
/// ```
pub struct Slots<K: Hash + Eq> {
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq> Clone for Slots<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// At most `max` holders per key.
    pub fn new(max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                max,
                held: Mutex::default(),
            }),
        }
    }

    /// The most holders a key may have.
    pub fn max(&self) -> usize {
        self.shared.max
    }

    /// A slot for `key`, or `None` when it already has `max` holders.
    pub fn try_take(&self, key: K) -> Option<Slot<K>> {
        let mut held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key.clone()).or_insert(0);
        if *n >= self.shared.max {
            if *n == 0 {
                held.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            shared: self.shared.clone(),
            key,
        })
    }

    /// Holders of `key` now.
    pub fn held(&self, key: &K) -> usize {
        let held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one holder.
    pub fn keys(&self) -> usize {
        self.shared.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One holder's place; dropping it frees the place.
#[must_use = "the place is held while the slot lives"]
pub struct Slot<K: Hash + Eq> {
    shared: Arc<Shared<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.shared.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// The counted places of a server (one set per server).
#[derive(Clone)]
pub struct Occupancy {
    /// WebSockets per client IP address (`--max-ws-per-ip`).
    pub ws_per_ip: Slots<IpAddr>,
    /// WebSockets per principal, the token's `sub` (`--max-ws-per-principal`).
    pub ws_per_principal: Slots<String>,
    /// Long-poll and SSE readers per stream path (`--max-http-readers-per-stream`).
    pub http_readers_per_stream: Slots<String>,
}

impl Occupancy {
    /// Places as `config` allows.
    pub fn new(config: &crate::config::Limits) -> Self {
        Self {
            ws_per_ip: Slots::new(config.ws_per_ip),
            ws_per_principal: Slots::new(config.ws_per_principal),
            http_readers_per_stream: Slots::new(config.http_readers_per_stream),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_without_holders_are_forgotten() {
        let slots = Slots::new(1);
        let a = slots.try_take("a");
        assert!(slots.try_take("a").is_none());
        assert_eq!((slots.keys(), slots.held(&"a")), (1, 1));
        drop(a);
        assert_eq!(slots.keys(), 0);
        let none = Slots::new(0);
        assert!(none.try_take("a").is_none());
        assert_eq!(none.keys(), 0, "a refusal leaves no entry");
    }
}
