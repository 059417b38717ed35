//! The mutations of the Redis store, each a transaction ([`Op`]): create,
//! append, delete, and the housekeeping ones (expire, fold read touches in).
//! They mirror the SQLite backend step for step; the decisions are the shared
//! ones of [`crate::storage::meta`].

use std::sync::Arc;

use async_trait::async_trait;

use super::notify;
use super::stored::Stored;
use super::tx::{Op, Tx};
use crate::storage::meta::{AppendPlan, NewStream, Touches};
use crate::storage::{Append, Appended, CreateStream, Created, Expiry, IndexEntry, StoreError, StoreResult, rules};

/// Removes a stream, keeping it (soft-deleted) while forks read from it.
/// `keep_path` keeps the path reserved, as an explicit `DELETE` does; an
/// expiry frees it.
async fn remove(tx: &mut Tx<'_>, mut stream: Stored, keep_path: bool) -> StoreResult<()> {
    if stream.forks > 0 {
        stream.meta.deleted = true;
        if !keep_path && let Some(path) = stream.path.take() {
            tx.clear_path(&path);
        }
        tx.put(&stream);
        return Ok(());
    }
    // Removed for good; then any soft-deleted source it was the last fork
    // of, and so on down the chain.
    let mut next = Some(stream);
    while let Some(gone) = next.take() {
        tx.drop_stream(gone.meta.id);
        if let Some(path) = &gone.path {
            tx.clear_path(path);
        }
        let Some(source) = gone.meta.fork_source else { break };
        let Some(mut src) = tx.stream(source).await? else { break };
        src.forks = src.forks.saturating_sub(1);
        if src.meta.deleted && src.forks == 0 {
            next = Some(src);
        } else {
            tx.put(&src);
        }
    }
    Ok(())
}

/// `PUT`.
pub struct CreateOp {
    pub req: CreateStream,
    pub touches: Arc<Touches>,
}

#[async_trait]
impl Op for CreateOp {
    type Output = Created;

    async fn run(&self, tx: &mut Tx<'_>) -> StoreResult<Created> {
        create(tx, &self.touches, &self.req).await
    }
}

/// Creates a stream, or confirms an identical one; a new one with its index
/// entry, if it has one.
async fn create(tx: &mut Tx<'_>, touches: &Touches, req: &CreateStream) -> StoreResult<Created> {
    let now = rules::now_ms();
    if let Some(existing) = tx.stream_at(&req.path).await? {
        if existing.meta.deleted {
            return Err(StoreError::ConfigMismatch(
                "state: it was deleted and is kept for its forks",
            ));
        }
        if existing.meta.expired(touches, now) {
            remove(tx, existing, false).await?;
        } else {
            let source = match existing.meta.fork_source {
                Some(id) => tx.stream(id).await?.map(|s| s.meta),
                None => None,
            };
            existing.meta.check_same_config(req, source.as_ref())?;
            return Ok(Created {
                created: false,
                info: existing.meta.info(),
            });
        }
    }
    let (new, source) = match &req.fork {
        None => (NewStream::plain(req)?, None),
        Some(fork) => {
            let src = match tx.stream_at(&fork.source).await? {
                None => return Err(StoreError::ForkSourceNotFound),
                Some(src) if src.meta.deleted => return Err(StoreError::ForkSourceGone),
                Some(src) if src.meta.expired(touches, now) => return Err(StoreError::ForkSourceNotFound),
                Some(src) => src,
            };
            (NewStream::fork(req, fork, &src.meta)?, Some(src))
        }
    };
    // Taken after every read it depends on, so it is greater than the
    // incarnations of the source and of any stream at this path before.
    let id = tx.new_id().await?;
    let (meta, ends) = new.meta(req, id, now)?;
    tx.add_data(id, &ends, &new.pieces);
    let info = meta.info();
    tx.put(&Stored {
        meta,
        path: Some(req.path.clone()),
        forks: 0,
        rev: 0,
    });
    if let Some(mut src) = source {
        src.forks += 1;
        tx.put(&src);
    }
    tx.publish(notify::message(&req.path, None));
    if let Some(entry) = &req.index_entry {
        record_in_index(tx, touches, entry)
            .await
            .map_err(|e| StoreError::Internal(format!("cannot record the new stream in {}: {e}", entry.path)))?;
    }
    Ok(Created { created: true, info })
}

/// Appends a new stream's index entry, in the transaction that creates the
/// stream (creating the index, with the entry, if it is missing).
async fn record_in_index(tx: &mut Tx<'_>, touches: &Touches, entry: &IndexEntry) -> StoreResult<()> {
    let json = Some("application/json".to_owned());
    let append_entry = Append {
        path: entry.path.clone(),
        content_type: json.clone(),
        body: entry.json.clone(),
        close: false,
        stream_seq: None,
        producer: None,
    };
    match append(tx, touches, &append_entry).await {
        Err(StoreError::NotFound) => {
            let index = CreateStream {
                path: entry.path.clone(),
                content_type: json,
                expiry: Expiry::Never,
                closed: false,
                body: entry.json.clone(),
                fork: None,
                index_entry: None,
            };
            Box::pin(create(tx, touches, &index)).await.map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// `POST`.
pub struct AppendOp {
    pub req: Append,
    pub touches: Arc<Touches>,
}

#[async_trait]
impl Op for AppendOp {
    type Output = Appended;

    async fn run(&self, tx: &mut Tx<'_>) -> StoreResult<Appended> {
        append(tx, &self.touches, &self.req).await
    }
}

/// Appends to and/or closes a stream.
async fn append(tx: &mut Tx<'_>, touches: &Touches, req: &Append) -> StoreResult<Appended> {
    let now = rules::now_ms();
    let producer = req.producer.as_ref().map(|p| p.id.as_str());
    let (mut stream, stored_producer) = match tx.stream_and_producer_at(&req.path, producer).await? {
        None => return Err(StoreError::NotFound),
        Some((s, _)) if s.meta.deleted => return Err(StoreError::Gone),
        Some((s, _)) if s.meta.expired(touches, now) => {
            remove(tx, s, false).await?;
            tx.publish(notify::message(&req.path, None));
            tx.keep_on_error = true;
            return Err(StoreError::NotFound);
        }
        Some(found) => found,
    };
    let write = match stream.meta.plan_append(req, stored_producer)? {
        AppendPlan::Done(answer) => return Ok(answer),
        AppendPlan::Write(write) => write,
    };
    let id = stream.meta.id;
    tx.add_data(id, &write.ends, &write.pieces);
    if let Some(p) = &write.producer {
        tx.set_producer(id, p);
    }
    let before = stream.meta.clone();
    let m = &mut stream.meta;
    m.tail = write.tail;
    m.closed |= write.close;
    if write.closed_by.is_some() {
        m.closed_by.clone_from(&write.closed_by);
    }
    if write.stream_seq.is_some() {
        m.last_stream_seq.clone_from(&write.stream_seq);
    }
    m.touched_ms = now;
    tx.put(&stream);
    let (appended, published) = before.appended(write, now);
    tx.publish(notify::message(&req.path, published.as_ref()));
    Ok(appended)
}

/// `DELETE`.
pub struct DeleteOp {
    pub path: String,
    pub touches: Arc<Touches>,
}

#[async_trait]
impl Op for DeleteOp {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> StoreResult<()> {
        let stream = match tx.stream_at(&self.path).await? {
            None => return Err(StoreError::NotFound),
            Some(s) if s.meta.deleted => return Err(StoreError::Gone),
            Some(s) if s.meta.expired(&self.touches, rules::now_ms()) => return Err(StoreError::NotFound),
            Some(s) => s,
        };
        remove(tx, stream, true).await?;
        tx.publish(notify::message(&self.path, None));
        Ok(())
    }
}

/// Housekeeping: removes stream `id` if it has expired (its place among
/// expiring streams is brought up to date otherwise).
pub struct ExpireOp {
    pub id: i64,
    pub touches: Arc<Touches>,
}

#[async_trait]
impl Op for ExpireOp {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> StoreResult<()> {
        let Some(stream) = tx.stream(self.id).await? else {
            return Ok(());
        };
        if stream.meta.deleted || !stream.meta.expired(&self.touches, rules::now_ms()) {
            tx.index_expiry(&stream);
            return Ok(());
        }
        let path = stream.path.clone();
        remove(tx, stream, false).await?;
        if let Some(path) = path {
            tx.publish(notify::message(&path, None));
        }
        Ok(())
    }
}

/// Housekeeping: stores a read touch of stream `id` at `at` (Unix ms), so
/// that every node sees the sliding TTL renewed. (The node's own read
/// touches count at once; other nodes see them once stored.)
pub struct TouchOp {
    pub id: i64,
    pub at: i64,
}

#[async_trait]
impl Op for TouchOp {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> StoreResult<()> {
        if let Some(mut stream) = tx.stream(self.id).await?
            && stream.meta.touched_ms < self.at
            && !stream.meta.deleted
        {
            stream.meta.touched_ms = self.at;
            tx.put(&stream);
        }
        Ok(())
    }
}
