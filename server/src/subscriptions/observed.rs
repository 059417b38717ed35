//! The storage as subscriptions see it: a wrapper that tells
//! [`Subscriptions`] about every stream created or appended to — over
//! HTTP or the WebSocket alike — once the store has it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::Subscriptions;
use crate::changes::ChangeFeed;
use crate::storage::{Append, Appended, Chunk, CreateStream, Created, Read, Storage, StoreResult, StreamInfo};

/// A [`Storage`] that reports creates and appends to subscriptions.
pub struct Observed {
    inner: Arc<dyn Storage>,
    subscriptions: Subscriptions,
}

impl Observed {
    /// Wraps `inner` (the store `subscriptions` was made with).
    pub fn new(inner: Arc<dyn Storage>, subscriptions: Subscriptions) -> Self {
        Self { inner, subscriptions }
    }
}

#[async_trait]
impl Storage for Observed {
    async fn create(&self, req: CreateStream) -> StoreResult<Created> {
        let path = req.path.clone();
        let created = self.inner.create(req).await?;
        if created.created {
            self.subscriptions.observe(&path, None, created.info.tail);
        }
        Ok(created)
    }

    async fn append(&self, req: Append) -> StoreResult<Appended> {
        let path = req.path.clone();
        // Only for a stream a pattern links for the first time: where it
        // stood before this append (a racing append moves that earlier, never
        // later — so nothing is skipped).
        let before = if self.subscriptions.wants_tail_before(&path) {
            self.inner.head(&path).await.ok().map(|i| i.tail)
        } else {
            None
        };
        let appended = self.inner.append(req).await?;
        if !appended.duplicate {
            let before = before.or(Some(appended.info.tail));
            self.subscriptions.observe(&path, before, appended.info.tail);
        }
        Ok(appended)
    }

    async fn read(&self, req: Read) -> StoreResult<Chunk> {
        self.inner.read(req).await
    }

    async fn head(&self, path: &str) -> StoreResult<StreamInfo> {
        self.inner.head(path).await
    }

    async fn delete(&self, path: &str) -> StoreResult<()> {
        self.inner.delete(path).await
    }

    fn changes(&self, path: &str) -> ChangeFeed {
        self.inner.changes(path)
    }

    async fn list_streams(&self, prefix: &str, limit: usize) -> StoreResult<Vec<(String, StreamInfo)>> {
        self.inner.list_streams(prefix, limit).await
    }

    async fn put_subscription(&self, id: &str, doc: Bytes) -> StoreResult<()> {
        self.inner.put_subscription(id, doc).await
    }

    async fn delete_subscription(&self, id: &str) -> StoreResult<()> {
        self.inner.delete_subscription(id).await
    }

    async fn subscriptions(&self) -> StoreResult<Vec<(String, Bytes)>> {
        self.inner.subscriptions().await
    }
}
