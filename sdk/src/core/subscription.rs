//! Per-subscription offset tracking: exactly-once, in-order delivery.

use durable_session_protocol::ws::Message;

/// Where a new subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The first message of the stream.
    Beginning,
    /// Only messages appended from now on.
    Now,
    /// Just after this offset (one the server issued earlier, e.g. persisted
    /// by the app).
    Offset(String),
}

impl StartFrom {
    /// The wire form of the start position.
    pub fn wire(&self) -> &str {
        match self {
            Self::Beginning => "-1",
            Self::Now => "now",
            Self::Offset(o) => o,
        }
    }
}

/// What a subscription does when the server says its position is gone
/// (the stream was deleted, or retention dropped the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetPolicy {
    /// Emit `reset`, then start again from the beginning.
    #[default]
    FromBeginning,
    /// Emit `reset`, then continue with new messages only.
    FromNow,
    /// Emit `reset` and end the subscription.
    Stop,
}

/// Offset state of one subscription. Offsets are opaque but sort as strings,
/// so a message is new exactly when its offset is greater than the last one
/// delivered; anything else is a duplicate (a replay after reconnect, or a
/// repeated frame) and is dropped.
#[derive(Debug, Clone)]
pub struct Cursor {
    start: StartFrom,
    /// Offset after the last message delivered (or the resolved start).
    last: Option<String>,
}

impl Cursor {
    /// A cursor at `start`.
    pub fn new(start: StartFrom) -> Self {
        let last = match &start {
            StartFrom::Offset(o) => Some(o.clone()),
            _ => None,
        };
        Self { start, last }
    }

    /// Where to (re)subscribe from: the last offset, else the start.
    pub fn resume_from(&self) -> &str {
        self.last.as_deref().unwrap_or_else(|| self.start.wire())
    }

    /// The last offset delivered, if any.
    pub fn offset(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// Keeps only messages after the last offset, in order, and advances.
    /// `next` (the frame's resume offset) also advances the cursor, which
    /// pins down where a `now` subscription started.
    ///
    /// Messages with an empty offset (transports that only know a batch's
    /// end, such as HTTP) are kept when the batch as a whole is new, and
    /// are given the batch's `next` offset.
    pub fn accept(&mut self, messages: Vec<Message>, next: &str) -> Vec<Message> {
        let batch_is_new = self.last.as_deref().is_none_or(|last| next > last);
        let mut fresh = Vec::with_capacity(messages.len());
        for mut m in messages {
            if m.offset.is_empty() {
                if batch_is_new {
                    m.offset = next.to_owned();
                    fresh.push(m);
                }
            } else if self.last.as_deref().is_none_or(|last| m.offset.as_str() > last) {
                self.last = Some(m.offset.clone());
                fresh.push(m);
            }
        }
        if self.last.as_deref().is_none_or(|last| next > last) {
            self.last = Some(next.to_owned());
        }
        fresh
    }

    /// Starts over at `start` (after a reset).
    pub fn restart(&mut self, start: StartFrom) {
        *self = Self::new(start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_session_protocol::ws::Payload;

    fn msg(offset: &str) -> Message {
        Message {
            offset: offset.into(),
            payload: Payload::json("1").unwrap(),
        }
    }

    fn offsets(ms: &[Message]) -> Vec<&str> {
        ms.iter().map(|m| m.offset.as_str()).collect()
    }

    #[test]
    fn duplicates_and_replays_are_dropped() {
        let mut c = Cursor::new(StartFrom::Beginning);
        assert_eq!(c.resume_from(), "-1");
        let got = c.accept(vec![msg("01"), msg("02")], "02");
        assert_eq!(offsets(&got), ["01", "02"]);
        // A replay after reconnect overlaps: only the new one passes.
        let got = c.accept(vec![msg("01"), msg("02"), msg("03")], "03");
        assert_eq!(offsets(&got), ["03"]);
        // A repeated frame: nothing.
        assert!(c.accept(vec![msg("03")], "03").is_empty());
        assert_eq!(c.resume_from(), "03");
    }

    #[test]
    fn out_of_order_messages_are_not_delivered_twice_or_backwards() {
        let mut c = Cursor::new(StartFrom::Beginning);
        let got = c.accept(vec![msg("02"), msg("01"), msg("03")], "03");
        assert_eq!(offsets(&got), ["02", "03"], "never backwards");
    }

    #[test]
    fn now_is_pinned_by_the_first_frame() {
        let mut c = Cursor::new(StartFrom::Now);
        assert_eq!(c.resume_from(), "now");
        assert!(c.accept(vec![], "07").is_empty());
        assert_eq!(c.resume_from(), "07", "a reconnect resumes where now was");
    }

    #[test]
    fn batches_without_per_message_offsets_are_new_or_not_as_a_whole() {
        let mut c = Cursor::new(StartFrom::Beginning);
        let got = c.accept(vec![msg(""), msg("")], "02");
        assert_eq!(offsets(&got), ["02", "02"]);
        assert!(
            c.accept(vec![msg(""), msg("")], "02").is_empty(),
            "the same batch again"
        );
        assert_eq!(offsets(&c.accept(vec![msg("")], "03")), ["03"]);
    }

    #[test]
    fn a_stored_offset_resumes_there() {
        let mut c = Cursor::new(StartFrom::Offset("05".into()));
        assert_eq!(c.resume_from(), "05");
        assert_eq!(offsets(&c.accept(vec![msg("05"), msg("06")], "06")), ["06"]);
        c.restart(StartFrom::Beginning);
        assert_eq!(c.resume_from(), "-1");
    }
}
