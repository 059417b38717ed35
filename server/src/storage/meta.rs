//! What a backend stores about a stream ([`StreamMeta`]), and the protocol
//! decisions taken from it: whether a stream is live, where a read starts,
//! whether a repeated `PUT` matches, where a fork starts, and what an append
//! writes. Every backend loads a [`StreamMeta`] inside its own transaction,
//! asks these functions what to do, and writes what they say; so each rule
//! has one implementation, whatever the store.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;

use super::rules::{self, ProducerVerdict};
use super::{Append, Appended, Chunk, CreateStream, Expiry, ForkFrom, Producer, StoreError, StoreResult, StreamInfo};
use crate::changes::Published;
use crate::offset::{Lineage, MAX_POSITION, Pos, Position, StartAt, Unresolved};

/// A stream's stored description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMeta {
    /// Unique across the lifetime of the store; also the stream's
    /// incarnation (the first group of its own offsets).
    pub id: i64,
    pub content_type: String,
    pub ttl_seconds: Option<i64>,
    pub expires_at_ms: Option<i64>,
    /// The last write (or folded-in read), Unix ms: where a sliding TTL runs from.
    pub touched_ms: i64,
    pub closed: bool,
    /// The producer request that closed the stream: `(id, epoch, seq)`.
    pub closed_by: Option<(String, u64, u64)>,
    /// The position after the last data.
    pub tail: Position,
    pub last_stream_seq: Option<String>,
    /// A fork's source stream (its id), while it is a fork.
    pub fork_source: Option<i64>,
    /// The source's path as the fork request named it.
    pub fork_source_path: Option<String>,
    /// Where the fork's own data starts (its source's data is read below it).
    pub fork_offset: Option<Position>,
    /// The position `Stream-Fork-Offset` named in the source (before the
    /// sub-offset), to compare a repeated `PUT` with.
    pub fork_req_offset: Option<Position>,
    pub fork_sub: u64,
    /// Deleted, but kept because forks read its data.
    pub deleted: bool,
    /// Which incarnation each run of positions belongs to: how positions
    /// become offsets.
    pub lineage: Lineage,
}

impl StreamMeta {
    /// When the stream expires.
    pub fn expiry(&self) -> Expiry {
        match (self.ttl_seconds, self.expires_at_ms) {
            (Some(ttl), _) => Expiry::Ttl(ttl as u64),
            (None, Some(at)) => Expiry::At(at),
            (None, None) => Expiry::Never,
        }
    }

    /// The stream as responses describe it.
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            id: self.id,
            content_type: self.content_type.clone(),
            tail: self.lineage.offset(self.tail),
            closed: self.closed,
            expiry: self.expiry(),
        }
    }

    /// Whether the stream preserves message boundaries (JSON mode).
    pub fn is_json(&self) -> bool {
        rules::is_json(&self.content_type)
    }

    /// Whether the stream has expired at `now`, counting read touches not
    /// yet stored.
    pub fn expired(&self, touches: &Touches, now: i64) -> bool {
        rules::is_expired(self.expiry(), touches.effective(self.id, self.touched_ms), now)
    }

    /// The position a read from `from` starts at.
    pub fn read_start(&self, from: StartAt) -> StoreResult<Position> {
        match from {
            StartAt::Beginning => Ok(0),
            StartAt::Now => Ok(self.tail),
            StartAt::Pos(offset) => self.lineage.resolve(offset, self.tail).map_err(|e| match e {
                Unresolved::BeyondTail => StoreError::OffsetBeyondTail,
                Unresolved::OtherIncarnation => StoreError::Gone,
            }),
        }
    }

    /// The position a `Stream-Fork-Offset` names in this (source) stream.
    pub fn fork_anchor(&self, offset: Option<Pos>) -> StoreResult<Position> {
        let Some(offset) = offset else { return Ok(self.tail) };
        self.lineage.resolve(offset, self.tail).map_err(|e| {
            StoreError::BadRequest(match e {
                Unresolved::BeyondTail => "Stream-Fork-Offset is beyond the source stream's tail".into(),
                Unresolved::OtherIncarnation => "Stream-Fork-Offset is not an offset of the source stream".into(),
            })
        })
    }

    /// Whether this existing stream matches a repeated `PUT`. `source` is
    /// this stream's fork source, if it is a fork and the source is still
    /// stored.
    pub fn check_same_config(&self, req: &CreateStream, source: Option<&StreamMeta>) -> StoreResult<()> {
        let forked = req.fork.is_some();
        if forked != self.fork_source_path.is_some() {
            return Err(StoreError::ConfigMismatch("fork source"));
        }
        let wanted_type = match (&req.content_type, forked) {
            (Some(ct), _) => Some(ct.as_str()),
            (None, true) => None, // inherits the source's
            (None, false) => Some(rules::DEFAULT_CONTENT_TYPE),
        };
        if wanted_type.is_some_and(|ct| !rules::same_media_type(ct, &self.content_type)) {
            return Err(StoreError::ConfigMismatch("content type"));
        }
        if !(forked && req.expiry == Expiry::Never) && req.expiry != self.expiry() {
            return Err(StoreError::ConfigMismatch("TTL or expiry"));
        }
        if req.closed != self.closed {
            return Err(StoreError::ConfigMismatch("closed state"));
        }
        if let Some(fork) = &req.fork {
            let same_source = self.fork_source_path.as_deref() == Some(fork.source.as_str());
            let same_offset = match fork.offset {
                None => true,
                // The offset names a position of the source it was resolved in.
                Some(offset) => source.is_some_and(|src| src.fork_anchor(Some(offset)).ok() == self.fork_req_offset),
            };
            if !same_source || !same_offset || fork.sub_offset != self.fork_sub {
                return Err(StoreError::ConfigMismatch("fork source or offset"));
            }
        }
        Ok(())
    }

    /// What an append does to this (live) stream, given the stored state of
    /// the request's producer (`(epoch, last seq)`, if it has written before).
    pub fn plan_append(&self, req: &Append, stored_producer: Option<(u64, u64)>) -> StoreResult<AppendPlan> {
        let has_body = !req.body.is_empty();
        if self.closed {
            if let (Some(p), Some((id, epoch, seq))) = (&req.producer, &self.closed_by)
                && (&p.id, p.epoch, p.seq) == (id, *epoch, *seq)
            {
                return Ok(AppendPlan::Done(Appended {
                    info: self.info(),
                    duplicate: true,
                    producer: Some((p.epoch, p.seq)),
                }));
            }
            if req.close && !has_body {
                return Ok(AppendPlan::Done(Appended {
                    info: self.info(),
                    duplicate: true,
                    producer: None,
                }));
            }
            return Err(StoreError::Closed {
                tail: self.lineage.offset(self.tail),
            });
        }
        if has_body {
            match &req.content_type {
                None => {
                    return Err(StoreError::BadRequest(
                        "Content-Type is required when there is a body".into(),
                    ));
                }
                Some(ct) if !rules::same_media_type(ct, &self.content_type) => {
                    return Err(StoreError::ContentTypeMismatch {
                        stream: self.content_type.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        if let Some(p) = &req.producer
            && let ProducerVerdict::Duplicate { last_seq } = rules::check_producer(stored_producer, p)?
        {
            return Ok(AppendPlan::Done(Appended {
                info: self.info(),
                duplicate: true,
                producer: Some((p.epoch, last_seq)),
            }));
        }
        if let Some(seq) = &req.stream_seq {
            rules::check_stream_seq(self.last_stream_seq.as_deref(), seq)?;
        }
        let pieces = if has_body {
            rules::split_body(self.is_json(), &req.body, false)?.pieces
        } else {
            vec![]
        };
        let ends = piece_ends(self.is_json(), self.tail, &pieces)?;
        Ok(AppendPlan::Write(AppendWrite {
            tail: ends.last().copied().unwrap_or(self.tail),
            pieces,
            ends,
            close: req.close,
            closed_by: req
                .producer
                .as_ref()
                .filter(|_| req.close)
                .map(|p| (p.id.clone(), p.epoch, p.seq)),
            stream_seq: req.stream_seq.clone(),
            producer: req.producer.clone(),
        }))
    }

    /// The outcome of a planned append once it is stored at `now`: the
    /// answer, and the data for live readers (`None` when there is none).
    pub fn appended(&self, write: AppendWrite, now: i64) -> (Appended, Option<Published>) {
        let info = StreamInfo {
            tail: self.lineage.offset(write.tail),
            closed: self.closed || write.close,
            ..self.info()
        };
        let published = (!write.pieces.is_empty()).then(|| Published {
            info: info.clone(),
            // In the incarnation the data is in, so that live readers count
            // the pieces' offsets from here.
            start: self.lineage.append_offset(self.tail),
            pieces: write.pieces,
            touched_ms: now,
        });
        let appended = Appended {
            info,
            duplicate: false,
            producer: write.producer.map(|p| (p.epoch, p.seq)),
        };
        (appended, published)
    }
}

/// Stored data gathered for a read: the pieces and the position after each.
#[derive(Debug, Default)]
pub struct Collected {
    pub pieces: Vec<Bytes>,
    pub ends: Vec<Position>,
    pub bytes: usize,
}

impl Collected {
    /// Whether `budget` bytes are collected (a read returns at least one
    /// piece, however large).
    pub fn full(&self, budget: usize) -> bool {
        self.bytes >= budget && !self.pieces.is_empty()
    }

    /// Takes the stored piece `[start, end)` holding `data`, from `*pos` up
    /// to `limit` (a byte run is cut to that range), and advances `*pos`.
    pub fn take(
        &mut self,
        json: bool,
        data: Bytes,
        (start, end): (Position, Position),
        pos: &mut Position,
        limit: Position,
    ) {
        let piece = if json {
            data
        } else {
            let from = (*pos).max(start) - start;
            let to = end.min(limit) - start;
            data.slice(from as usize..to as usize)
        };
        self.bytes += piece.len();
        self.pieces.push(piece);
        *pos = end.min(limit);
        self.ends.push(*pos);
    }
}

impl StreamMeta {
    /// The answer to a read of this stream that started at `start` and
    /// collected `out`, up to `next`.
    pub fn chunk(&self, start: Position, next: Position, out: Collected) -> Chunk {
        Chunk {
            info: self.info(),
            start: self.lineage.offset(start),
            next: self.lineage.offset(next),
            pieces: out.pieces,
            offsets: out.ends.into_iter().map(|end| self.lineage.offset(end)).collect(),
        }
    }
}

/// What an append does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendPlan {
    /// Nothing is written (an idempotent duplicate, or a close of a closed
    /// stream): answer with this.
    Done(Appended),
    /// Write this.
    Write(AppendWrite),
}

/// The writes of an append, in order: the pieces, then the stream's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendWrite {
    /// JSON mode: one message per piece; otherwise the body, if any.
    pub pieces: Vec<Bytes>,
    /// The position after each piece.
    pub ends: Vec<Position>,
    /// The new tail.
    pub tail: Position,
    /// Whether the stream is closed by this append.
    pub close: bool,
    /// `(id, epoch, seq)` of the producer that closes it.
    pub closed_by: Option<(String, u64, u64)>,
    /// The new `Stream-Seq`, if the request had one.
    pub stream_seq: Option<String>,
    /// The producer state to store.
    pub producer: Option<Producer>,
}

/// The position after each of `pieces` written from `start`, or an error if
/// the stream has no offsets left for them.
pub fn piece_ends(json: bool, start: Position, pieces: &[Bytes]) -> StoreResult<Vec<Position>> {
    let mut pos = start;
    pieces
        .iter()
        .map(|piece| {
            pos += if json { 1 } else { piece.len() as Position };
            if pos > MAX_POSITION {
                return Err(StoreError::BadRequest(
                    "the stream is full: no offset left for this data".into(),
                ));
            }
            Ok(pos)
        })
        .collect()
}

/// A new stream a `PUT` creates, before it has an id.
#[derive(Debug, Clone)]
pub struct NewStream {
    pub content_type: String,
    pub expiry: Expiry,
    /// For a fork: the source, and where the fork's own data starts.
    pub fork: Option<NewFork>,
    /// The initial data.
    pub pieces: Vec<Bytes>,
}

/// A fork a `PUT` creates.
#[derive(Debug, Clone)]
pub struct NewFork {
    /// The source stream's id.
    pub source: i64,
    /// The position `Stream-Fork-Offset` named in the source.
    pub anchor: Position,
    /// Where the fork's own data starts: `anchor` plus the sub-offset.
    pub at: Position,
    /// The source's lineage.
    pub source_lineage: Lineage,
}

impl NewStream {
    /// Plans a new stream (not a fork) for `req`.
    pub fn plain(req: &CreateStream) -> StoreResult<Self> {
        Self::with(
            req,
            req.content_type
                .clone()
                .unwrap_or_else(|| rules::DEFAULT_CONTENT_TYPE.into()),
            req.expiry,
            None,
        )
    }

    /// Plans a fork of `src` (a live stream) for `req`, which asks for `fork`.
    pub fn fork(req: &CreateStream, fork: &ForkFrom, src: &StreamMeta) -> StoreResult<Self> {
        if let Some(ct) = &req.content_type
            && !rules::same_media_type(ct, &src.content_type)
        {
            return Err(StoreError::ContentTypeMismatch {
                stream: src.content_type.clone(),
            });
        }
        let anchor = src.fork_anchor(fork.offset)?;
        let at = anchor
            .checked_add(fork.sub_offset)
            .filter(|at| *at <= src.tail)
            .ok_or_else(|| {
                StoreError::BadRequest("Stream-Fork-Sub-Offset is past the end of the source data".into())
            })?;
        let new_fork = NewFork {
            source: src.id,
            anchor,
            at,
            source_lineage: src.lineage.clone(),
        };
        Self::with(
            req,
            src.content_type.clone(),
            rules::fork_expiry(src.expiry(), req.expiry),
            Some(new_fork),
        )
    }

    fn with(req: &CreateStream, content_type: String, expiry: Expiry, fork: Option<NewFork>) -> StoreResult<Self> {
        let pieces = rules::split_body(rules::is_json(&content_type), &req.body, true)?.pieces;
        Ok(Self {
            content_type,
            expiry,
            fork,
            pieces,
        })
    }

    /// The stored description of the stream once it has its `id` (also its
    /// incarnation), created at `now`: with its initial data, ending at the
    /// returned `ends`.
    pub fn meta(&self, req: &CreateStream, id: i64, now: i64) -> StoreResult<(StreamMeta, Vec<Position>)> {
        let start = self.fork.as_ref().map_or(0, |f| f.at);
        let ends = piece_ends(rules::is_json(&self.content_type), start, &self.pieces)?;
        let (ttl_seconds, expires_at_ms) = expiry_columns(self.expiry);
        let meta = StreamMeta {
            id,
            content_type: self.content_type.clone(),
            ttl_seconds,
            expires_at_ms,
            touched_ms: now,
            closed: req.closed,
            closed_by: None,
            tail: ends.last().copied().unwrap_or(start),
            last_stream_seq: None,
            fork_source: self.fork.as_ref().map(|f| f.source),
            fork_source_path: req.fork.as_ref().map(|f| f.source.clone()),
            fork_offset: self.fork.as_ref().map(|f| f.at),
            fork_req_offset: self.fork.as_ref().map(|f| f.anchor),
            fork_sub: req.fork.as_ref().map_or(0, |f| f.sub_offset),
            deleted: false,
            lineage: match &self.fork {
                None => Lineage::new(id as u64),
                Some(f) => f.source_lineage.fork(f.at, id as u64),
            },
        };
        Ok((meta, ends))
    }
}

/// An expiry as stored: `(ttl_seconds, expires_at_ms)`.
pub fn expiry_columns(expiry: Expiry) -> (Option<i64>, Option<i64>) {
    match expiry {
        Expiry::Never => (None, None),
        Expiry::Ttl(s) => (Some(s as i64), None),
        Expiry::At(ms) => (None, Some(ms)),
    }
}

/// Last-touch times from reads, not yet stored (a read never costs a
/// write). Keyed by stream id.
#[derive(Default)]
pub struct Touches(Mutex<HashMap<i64, i64>>);

impl Touches {
    /// Records a read of stream `id` at `now`.
    pub fn touch(&self, id: i64, now: i64) {
        self.lock().insert(id, now);
    }

    /// The last touch of stream `id`, whose stored touch is `stored_ms`.
    pub fn effective(&self, id: i64, stored_ms: i64) -> i64 {
        self.lock().get(&id).copied().unwrap_or(0).max(stored_ms)
    }

    /// The last read touch of stream `id`, if there was one.
    pub fn get(&self, id: i64) -> Option<i64> {
        self.lock().get(&id).copied()
    }

    /// Forgets stream `id` (it is gone).
    pub fn forget(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Forgets stream `id`'s read touch if it is still `at` (it has been
    /// stored).
    pub fn forget_if(&self, id: i64, at: i64) {
        let mut map = self.lock();
        if map.get(&id) == Some(&at) {
            map.remove(&id);
        }
    }

    /// Every stream's last read touch.
    pub fn snapshot(&self) -> Vec<(i64, i64)> {
        self.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(json: bool) -> StreamMeta {
        let req = CreateStream {
            path: "a".into(),
            content_type: Some(if json { "application/json" } else { "text/plain" }.into()),
            expiry: Expiry::Never,
            closed: false,
            body: Bytes::new(),
            fork: None,
            index_entry: None,
        };
        NewStream::plain(&req).unwrap().meta(&req, 3, 0).unwrap().0
    }

    fn append(body: &'static str, producer: Option<(u64, u64)>, close: bool) -> Append {
        Append {
            path: "a".into(),
            content_type: Some("application/json".into()),
            body: Bytes::from_static(body.as_bytes()),
            close,
            stream_seq: None,
            producer: producer.map(|(epoch, seq)| Producer {
                id: "p".into(),
                epoch,
                seq,
            }),
        }
    }

    #[test]
    fn an_append_writes_its_messages_and_moves_the_tail() {
        let meta = stream(true);
        let AppendPlan::Write(write) = meta.plan_append(&append("[1,2]", Some((0, 0)), false), None).unwrap() else {
            panic!("expected a write");
        };
        assert_eq!((write.ends.clone(), write.tail), (vec![1, 2], 2));
        let (appended, published) = meta.appended(write, 7);
        assert_eq!(appended.info.tail, crate::offset::offset_at(3, 2));
        assert_eq!(published.unwrap().start, crate::offset::offset_at(3, 0));
    }

    #[test]
    fn duplicates_and_closed_streams_write_nothing() {
        let mut meta = stream(true);
        assert!(matches!(
            meta.plan_append(&append("1", Some((0, 0)), false), Some((0, 0))),
            Ok(AppendPlan::Done(Appended { duplicate: true, .. }))
        ));
        meta.closed = true;
        meta.closed_by = Some(("p".into(), 0, 4));
        assert!(matches!(
            meta.plan_append(&append("1", Some((0, 4)), true), Some((0, 4))),
            Ok(AppendPlan::Done(Appended { duplicate: true, .. }))
        ));
        assert!(matches!(
            meta.plan_append(&append("1", None, false), None),
            Err(StoreError::Closed { .. })
        ));
        assert!(matches!(
            meta.plan_append(&append("", None, true), None),
            Ok(AppendPlan::Done(_))
        ));
    }

    #[test]
    fn a_full_stream_takes_no_more_data() {
        let mut meta = stream(false);
        meta.tail = MAX_POSITION - 1;
        let mut req = append("ab", None, false);
        req.content_type = Some("text/plain".into());
        assert!(matches!(meta.plan_append(&req, None), Err(StoreError::BadRequest(_))));
    }
}
