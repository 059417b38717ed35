//! Session snapshots (offset + chat view) in `localStorage`, so a reload
//! resumes where the tab left off instead of replaying the session.

use web_sys::Storage;

/// Snapshots of sessions of one server, in `localStorage`.
#[derive(Clone)]
pub struct OffsetStore {
    storage: Storage,
    prefix: String,
}

impl OffsetStore {
    /// The store for the server at `http_base`; `None` where the page has no
    /// `localStorage` (or it is disabled).
    pub fn new(http_base: &str) -> Option<Self> {
        let storage = web_sys::window()?.local_storage().ok()??;
        Some(Self {
            storage,
            prefix: format!("durable-sessions/v1/{http_base}/"),
        })
    }

    fn key(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The stored snapshot of `path`.
    pub fn load(&self, path: &str) -> Option<String> {
        self.storage.get_item(&self.key(path)).ok()?
    }

    /// Stores a snapshot of `path`. A full storage is not an error: the tab
    /// then simply replays the session after a reload.
    pub fn save(&self, path: &str, snapshot: &str) {
        let _ = self.storage.set_item(&self.key(path), snapshot);
    }

    /// Forgets `path`.
    pub fn remove(&self, path: &str) {
        let _ = self.storage.remove_item(&self.key(path));
    }
}
