//! Delta batching: the pieces a model streams are gathered for a short
//! window and written as one event, so the session log does not hold one
//! event per token.

use std::time::{Duration, Instant};

/// The most bytes of one batch: a fuller one is written at once, well
/// within the server's frame limit (1 MiB, protocol.md §6).
pub const MAX_BATCH_BYTES: usize = 16 * 1024;

/// What a batch is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Answer text: a `text_delta`.
    Text,
    /// Reasoning: a `reasoning_delta`.
    Reasoning,
}

/// Pieces waiting to be written: one kind at a time, for at most the
/// window after the first of them arrived.
///
/// ```
/// use std::time::{Duration, Instant};
/// use durable_session_agent::batch::{Batcher, Kind};
/// let mut b = Batcher::new(Duration::from_millis(30));
/// let t0 = Instant::now();
/// assert_eq!(b.push(Kind::Text, "Hel", t0), None);
/// assert_eq!(b.push(Kind::Text, "lo", t0), None);
/// assert_eq!(b.due(), Some(t0 + Duration::from_millis(30)));
/// // Another kind flushes what was gathered, in order.
/// assert_eq!(b.push(Kind::Reasoning, "hm", t0), Some((Kind::Text, "Hello".into())));
/// assert_eq!(b.take(), Some((Kind::Reasoning, "hm".into())));
/// assert_eq!((b.take(), b.due()), (None, None));
/// b.push(Kind::Text, &"x".repeat(durable_session_agent::batch::MAX_BATCH_BYTES), t0);
/// assert!(b.full());
/// ```
#[derive(Debug)]
pub struct Batcher {
    window: Duration,
    pending: Option<(Kind, String, Instant)>,
}

impl Batcher {
    /// Batches of `window` (zero: every piece is a batch of its own when
    /// the caller flushes at [`Batcher::due`]).
    pub fn new(window: Duration) -> Self {
        Self { window, pending: None }
    }

    /// Adds a piece that arrived at `now`. Returns the batch to write first
    /// if it was of another kind.
    pub fn push(&mut self, kind: Kind, piece: &str, now: Instant) -> Option<(Kind, String)> {
        match &mut self.pending {
            Some((k, text, _)) if *k == kind => {
                text.push_str(piece);
                None
            }
            _ => {
                let before = self.take();
                self.pending = Some((kind, piece.to_owned(), now));
                before
            }
        }
    }

    /// The pending batch holds [`MAX_BATCH_BYTES`] or more: write it now.
    pub fn full(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|(_, text, _)| text.len() >= MAX_BATCH_BYTES)
    }

    /// When the pending batch is to be written.
    pub fn due(&self) -> Option<Instant> {
        self.pending.as_ref().map(|(_, _, since)| *since + self.window)
    }

    /// The pending batch, now.
    pub fn take(&mut self) -> Option<(Kind, String)> {
        self.pending.take().map(|(kind, text, _)| (kind, text))
    }
}
