//! What a browser keeps of a session between page loads, as plain data: the
//! rules of the IndexedDB store (`web::persist`) without IndexedDB, so they
//! are unit-tested natively.
//!
//! **Transcript.** Events are stored in *chunks*, one per write: the events
//! that arrived after offset `from` up to offset `to`, keyed by `from`. A
//! write appends one chunk, so its cost depends on the batch, never on the
//! length of the session. On load, the chunks are chained from the
//! beginning (`-1`): each chunk's `to` names the next chunk's `from`. Every
//! chunk is a true segment of the stream, so whatever several tabs wrote (the
//! same events cut at different places, or a tab still writing after another
//! evicted the session), any chain from the beginning is an exact prefix of
//! the stream: no gap, no duplicate. Chunks off the chain are garbage.
//!
//! **Limits.** A session's stored transcript never exceeds
//! [`Limits::max_events`] nor [`Limits::max_bytes`]: once the next chunk
//! would not fit, nothing more is added (what is stored stays a valid
//! prefix; after a reload the rest comes from the server). At most
//! [`Limits::max_sessions`] transcripts are kept, the least recently opened
//! are evicted first.
//!
//! **Outbox.** Each append waiting for its acknowledgement is kept as a
//! [`PendingAppend`] with its own idempotent-producer ids, so that resending
//! it after a reload — from this tab or any other — is stored once.

use durable_session_protocol::json::{self, Json, Obj};
use durable_session_protocol::ws::ProducerIds;

use super::session::{Envelope, SessionModel};

/// The `from` of a session's first chunk: the beginning of the stream.
pub const BEGINNING: &str = "-1";

/// How much the browser keeps.
///
/// ```
/// use durable_sessions::core::persist::Limits;
/// let limits = Limits { max_events: 1_000, ..Limits::default() };
/// assert_eq!(limits.max_sessions, 20);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events kept per session (default 50,000).
    pub max_events: u64,
    /// Most bytes of event JSON kept per session (default 8 MiB).
    pub max_bytes: u64,
    /// Most sessions whose transcript is kept; the least recently opened
    /// are evicted first (default 20). Pending appends are never evicted.
    pub max_sessions: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_events: 50_000,
            max_bytes: 8 << 20,
            max_sessions: 20,
        }
    }
}

/// Events and bytes of a session's stored transcript.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub events: u64,
    pub bytes: u64,
}

impl Usage {
    /// Adds a chunk of `events` events and `bytes` bytes, unless the
    /// transcript would then exceed `limits` (returns `false`, unchanged).
    ///
    /// ```
    /// use durable_sessions::core::persist::{Limits, Usage};
    /// let limits = Limits { max_events: 3, ..Limits::default() };
    /// let mut usage = Usage::default();
    /// assert!(usage.admit(2, 100, &limits));
    /// assert!(!usage.admit(2, 100, &limits));
    /// assert_eq!(usage.events, 2);
    /// ```
    pub fn admit(&mut self, events: u64, bytes: u64, limits: &Limits) -> bool {
        let (e, b) = (self.events + events, self.bytes + bytes);
        if e > limits.max_events || b > limits.max_bytes {
            return false;
        }
        *self = Self { events: e, bytes: b };
        true
    }
}

/// A chunk as stored: `{"f":from,"t":to,"e":[events…]}`.
///
/// ```
/// use durable_sessions::core::persist::chunk;
/// assert_eq!(chunk("-1", "07", [r#"{"type":"x"}"#]), r#"{"f":"-1","t":"07","e":[{"type":"x"}]}"#);
/// ```
pub fn chunk<'a>(from: &str, to: &str, events: impl IntoIterator<Item = &'a str>) -> String {
    Obj::new()
        .str("f", from)
        .str("t", to)
        .raw("e", &json::array(events))
        .finish()
}

/// A stored message of a stream that is not a session (see
/// [`restore`]): `{"o":offset,"d":data}`, so it comes back with its own
/// offset.
///
/// ```
/// use durable_sessions::core::persist::raw_message;
/// assert_eq!(raw_message("07", r#""a line""#), r#"{"o":"07","d":"a line"}"#);
/// ```
pub fn raw_message(offset: &str, data: &str) -> String {
    Obj::new().str("o", offset).raw("d", data).finish()
}

/// A session brought back from its stored chunks.
#[derive(Debug, Default)]
pub struct Restored {
    /// The view folded from the chained events, at the offset they reach.
    pub model: SessionModel,
    /// Of a stream that is not a session: its stored messages, with their
    /// offsets, in order (the model then folds nothing).
    pub messages: Vec<Envelope>,
    /// Where the next chunk starts ([`BEGINNING`] when nothing was chained).
    pub tail: String,
    /// What the chained chunks hold.
    pub usage: Usage,
    /// Keys (`from`) of stored chunks off the chain, to delete.
    pub garbage: Vec<String>,
}

/// Chains stored chunks (in key order, i.e. by `from`) from the beginning.
/// Unreadable chunks and chunks off the chain end up in
/// [`Restored::garbage`]. With `raw`, the chunks are of a stream that is not
/// a session: their events are [`raw_message`]s, returned in
/// [`Restored::messages`] with a [`SessionModel::raw`] model.
///
/// ```
/// use durable_sessions::core::persist::{chunk, restore};
/// let stored = [
///     chunk("-1", "02", [r#"{"type":"user_message","id":"m","author":"a","text":"hi"}"#]),
///     chunk("02", "05", [r#"{"type":"note"}"#]),
/// ];
/// let r = restore(stored.iter().map(String::as_str), false);
/// assert_eq!(r.model.offset(), Some("05"));
/// assert_eq!(r.model.received(), 2);
/// assert_eq!(r.tail, "05");
/// ```
pub fn restore<'a>(chunks: impl IntoIterator<Item = &'a str>, raw: bool) -> Restored {
    let mut r = Restored {
        model: SessionModel::without_snapshots(),
        tail: BEGINNING.to_owned(),
        ..Restored::default()
    };
    let mut events = Vec::new();
    for text in chunks {
        let Ok(v) = json::parse(text) else { continue };
        let (Some(from), Some(to), Some(list)) = (
            v.get("f").and_then(Json::str),
            v.get("t").and_then(Json::str),
            v.get("e").and_then(Json::array),
        ) else {
            continue;
        };
        // Offsets strictly increase along the stream, so the chain follows
        // key order: a chunk starting elsewhere than the tail is off it.
        if from != r.tail || to <= from {
            r.garbage.push(from.to_owned());
            continue;
        }
        r.usage.events += list.len() as u64;
        r.usage.bytes += text.len() as u64;
        events.extend(list.iter().map(|e| e.raw.to_owned()));
        to.clone_into(&mut r.tail);
    }
    if r.tail == BEGINNING {
        return r;
    }
    if raw {
        for e in &events {
            let Ok(v) = json::parse(e) else { continue };
            if let (Some(offset), Some(data)) = (v.get("o").and_then(Json::str), v.get("d")) {
                r.messages.push(Envelope {
                    offset: offset.to_owned(),
                    json: data.raw.to_owned(),
                });
            }
        }
        r.model = SessionModel::raw_at(&r.tail, r.messages.len() as u64);
    } else {
        r.model = SessionModel::restore_events(&r.tail, events.iter().map(String::as_str));
    }
    r
}

/// A session's record in the store: when it was last opened (for the LRU).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The session's store key.
    pub key: String,
    /// Last opened, ms since the Unix epoch.
    pub used: u64,
}

impl Meta {
    /// As stored: `{used} {key}`.
    ///
    /// ```
    /// use durable_sessions::core::persist::Meta;
    /// let m = Meta { key: "http://h sessions/a".into(), used: 5 };
    /// assert_eq!(m.to_text(), "5 http://h sessions/a");
    /// assert_eq!(Meta::parse(&m.to_text()), Some(m));
    /// ```
    pub fn to_text(&self) -> String {
        let mut out = self.used.to_string();
        out.push(' ');
        out.push_str(&self.key);
        out
    }

    /// Reads a stored record.
    pub fn parse(text: &str) -> Option<Self> {
        let (used, key) = text.split_once(' ')?;
        Some(Self {
            key: key.to_owned(),
            used: used.parse().ok()?,
        })
    }
}

/// Keys of the sessions to evict so that at most `max` remain, least
/// recently used first; `keep` (the session being opened) is never one.
///
/// ```
/// use durable_sessions::core::persist::{Meta, lru_victims};
/// let m = |key: &str, used| Meta { key: key.into(), used };
/// let stored = [m("a", 3), m("b", 1), m("c", 2), m("d", 0)];
/// assert_eq!(lru_victims(&stored, 2, "d"), ["b", "c"]);
/// ```
pub fn lru_victims(stored: &[Meta], max: u32, keep: &str) -> Vec<String> {
    let mut others: Vec<&Meta> = stored.iter().filter(|m| m.key != keep).collect();
    let mut victims = Vec::new();
    // Few sessions: picking the oldest each time beats pulling in a sort.
    while others.len() >= (max as usize).max(1) {
        let Some(oldest) = (0..others.len()).min_by_key(|i| others[*i].used) else {
            break;
        };
        victims.push(others.swap_remove(oldest).key.clone());
    }
    victims
}

/// An append kept until the server acknowledged it: the event and the
/// idempotent-producer ids it is sent with, every time (docs/protocol.md
/// §4.2: a request repeated with the same `(id, epoch, seq)` is acknowledged
/// as a duplicate and not stored twice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAppend {
    /// Order among a session's pending appends (ms since the Unix epoch,
    /// made strictly increasing); resent in this order.
    pub order: u64,
    pub producer: ProducerIds,
    /// The event (JSON text).
    pub json: String,
}

impl PendingAppend {
    /// A new pending append: its own producer id `producer_id` at epoch 0,
    /// seq 0, so it never depends on any other append.
    ///
    /// ```
    /// use durable_sessions::core::persist::PendingAppend;
    /// let p = PendingAppend::new(7, "out-1".into(), r#"{"type":"note"}"#.into());
    /// assert_eq!((p.producer.epoch, p.producer.seq), (0, 0));
    /// assert_eq!(p.to_text(), r#"7 0 0 out-1 {"type":"note"}"#);
    /// assert_eq!(PendingAppend::parse(&p.to_text()), Some(p));
    /// ```
    pub fn new(order: u64, producer_id: String, json: String) -> Self {
        Self {
            order,
            producer: ProducerIds {
                id: producer_id,
                epoch: 0,
                seq: 0,
            },
            json,
        }
    }

    /// As stored: `{order} {epoch} {seq} {producer id} {event}` (ids
    /// never contain a space).
    pub fn to_text(&self) -> String {
        let p = &self.producer;
        [
            self.order.to_string().as_str(),
            &p.epoch.to_string(),
            &p.seq.to_string(),
            &p.id,
            &self.json,
        ]
        .join(" ")
    }

    /// Reads a stored record.
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = text.splitn(5, ' ');
        let mut number = || fields.next()?.parse::<u64>().ok();
        let (order, epoch, seq) = (number()?, number()?, number()?);
        let id = fields.next().filter(|id| !id.is_empty())?.to_owned();
        let json = fields.next().filter(|j| j.starts_with('{'))?.to_owned();
        Some(Self {
            order,
            producer: ProducerIds { id, epoch, seq },
            json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UM: &str = r#"{"type":"user_message","id":"m1","author":"a","text":"x"}"#;
    const RS: &str = r#"{"type":"run_started","run_id":"r","agent":"g","in_reply_to":"m1"}"#;
    const D1: &str = r#"{"type":"text_delta","run_id":"r","agent":"g","delta":"ab"}"#;
    const D2: &str = r#"{"type":"text_delta","run_id":"r","agent":"g","delta":"cd"}"#;

    fn text_of(r: &Restored) -> String {
        r.model.view().run("r").map(|run| run.text.clone()).unwrap_or_default()
    }

    #[test]
    fn chunks_written_by_two_tabs_cut_differently_chain_into_one_exact_prefix() {
        // Tab A wrote [UM RS] then [D1 D2]; tab B wrote [UM] then [RS D1].
        // Keyed by `from`, B's first chunk replaced A's (same key).
        let mut stored = [
            chunk("-1", "01", [UM]),     // B
            chunk("01", "03", [RS, D1]), // B
            chunk("02", "04", [D1, D2]), // A, off B's chain
            chunk("03", "04", [D2]),     // B, later
        ]
        .to_vec();
        stored.sort_by(|a, b| {
            let from = |t: &str| json::parse(t).unwrap().get("f").unwrap().str().unwrap().to_owned();
            from(a).cmp(&from(b))
        });
        let r = restore(stored.iter().map(String::as_str), false);
        assert_eq!(r.model.offset(), Some("04"));
        assert_eq!(r.model.received(), 4);
        assert_eq!(text_of(&r), "abcd", "each delta once");
        assert_eq!(r.garbage, ["02"]);
        assert_eq!(r.tail, "04");
    }

    #[test]
    fn a_chain_stops_at_a_gap_and_nothing_is_restored_without_a_beginning() {
        let stored = [chunk("-1", "01", [UM]), chunk("05", "06", [D2])];
        let r = restore(stored.iter().map(String::as_str), false);
        assert_eq!(r.model.offset(), Some("01"));
        assert_eq!(r.garbage, ["05"]);
        // Evicted by another tab while this one kept writing: all garbage.
        let stored = [chunk("03", "04", [D1]), "not json".to_owned()];
        let r = restore(stored.iter().map(String::as_str), false);
        assert_eq!(r.model.offset(), None);
        assert_eq!(r.tail, BEGINNING);
        assert_eq!(r.garbage, ["03"]);
        assert_eq!(r.usage, Usage::default());
    }

    #[test]
    fn a_raw_stream_comes_back_message_by_message_with_offsets() {
        let stored = [
            chunk(
                "-1",
                "02",
                [raw_message("01", r#""a""#).as_str(), &raw_message("02", "[1]")],
            ),
            chunk("02", "05", [raw_message("05", r#"{"type":"user_message"}"#).as_str()]),
        ];
        let r = restore(stored.iter().map(String::as_str), true);
        let got: Vec<(&str, &str)> = r
            .messages
            .iter()
            .map(|e| (e.offset.as_str(), e.json.as_str()))
            .collect();
        assert_eq!(
            got,
            [("01", r#""a""#), ("02", "[1]"), ("05", r#"{"type":"user_message"}"#)]
        );
        assert_eq!((r.model.offset(), r.model.received()), (Some("05"), 3));
        assert!(r.model.view().items().is_empty(), "a raw stream folds nothing");
        assert!(restore(stored.iter().map(String::as_str), false).messages.is_empty());
    }

    #[test]
    fn usage_counts_what_the_chain_holds() {
        let stored = [chunk("-1", "01", [UM, RS])];
        let r = restore(stored.iter().map(String::as_str), false);
        assert_eq!(r.usage.events, 2);
        assert_eq!(r.usage.bytes, stored[0].len() as u64);
    }

    #[test]
    fn lru_keeps_the_newest_and_the_one_being_opened() {
        let m = |key: &str, used| Meta { key: key.into(), used };
        assert!(lru_victims(&[m("a", 1)], 2, "b").is_empty());
        assert_eq!(lru_victims(&[m("a", 1), m("b", 2)], 2, "c"), ["a"]);
        assert_eq!(lru_victims(&[m("a", 1), m("b", 2)], 1, "a"), ["b"]);
        assert_eq!(lru_victims(&[m("a", 1), m("b", 2)], 0, "c"), ["a", "b"]);
    }

    #[test]
    fn garbage_records_are_rejected() {
        assert_eq!(PendingAppend::parse("{}"), None);
        assert_eq!(PendingAppend::parse("1 0 0 x 3"), None);
        assert_eq!(PendingAppend::parse("1 0 x y {}"), None);
        assert_eq!(Meta::parse("[]"), None);
        assert_eq!(Meta::parse("x key"), None);
    }
}
