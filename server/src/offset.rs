//! Offsets: opaque, strictly increasing tokens that sort as strings.
//!
//! A stream's data is addressed internally by a plain counter, its
//! [`Position`]: bytes for byte streams, messages for JSON streams. On the
//! wire an offset is written as a fixed-width, 32-digit decimal in two groups
//! of 16, `IIIIIIIIIIIIIIII_PPPPPPPPPPPPPPPP` (the shape other Durable Streams
//! servers use), so string order equals numeric order:
//!
//! - the first group is an **incarnation**: a number the store hands out once
//!   per created stream (or fork), greater than every one it handed out
//!   before, and never reused — so a stream created again at a deleted path
//!   gets offsets that sort after every offset of the one before it, and an
//!   offset of the old one is recognized as such;
//! - the second group is the position.
//!
//! Streams stored before incarnations existed have incarnation 0, so the
//! offsets they issued keep their meaning.
//!
//! A fork shares its source's offsets up to the fork point and continues in
//! its own incarnation after it: its [`Lineage`] lists which incarnation each
//! run of positions belongs to. Offsets are handled as numbers ([`Pos`]:
//! incarnation × 10¹⁶ + position) everywhere outside the store, which alone
//! knows lineages.

use std::fmt;

/// An offset in numeric form: `incarnation × 10¹⁶ + position`. Its decimal
/// form, split in two groups of 16 digits, is the wire offset.
pub type Pos = u128;

/// A position within a stream's data: bytes for byte streams, messages for
/// JSON streams.
pub type Position = u64;

/// Digits in each of the two groups of a wire offset.
const GROUP: usize = 16;
const GROUP_BASE: u128 = 10_000_000_000_000_000;

/// The largest position an offset can carry (a stream holds at most this
/// many bytes or messages: about 10 PB).
pub const MAX_POSITION: Position = 9_999_999_999_999_999;

/// The all-zero offset `0000000000000000_0000000000000000`: the beginning of
/// an incarnation-0 stream, and accepted by every stream as its beginning
/// (clients of other Durable Streams servers write it for "the start").
pub const ZERO: Pos = 0;

/// The offset for `position` in `incarnation`.
///
/// ```
/// use durable_session_server::offset::{format_offset, offset_at};
/// assert_eq!(format_offset(offset_at(7, 42)), "0000000000000007_0000000000000042");
/// ```
pub fn offset_at(incarnation: u64, position: Position) -> Pos {
    u128::from(incarnation) * GROUP_BASE + u128::from(position)
}

/// The incarnation and position an offset names.
///
/// ```
/// use durable_session_server::offset::{offset_at, split};
/// assert_eq!(split(offset_at(7, 42)), (7, 42));
/// ```
pub fn split(pos: Pos) -> (u64, Position) {
    // Both groups have 16 digits, so each fits in a u64.
    ((pos / GROUP_BASE) as u64, (pos % GROUP_BASE) as u64)
}

/// A wire offset for `pos`.
///
/// ```
/// use durable_session_server::offset::format_offset;
/// assert_eq!(format_offset(42), "0000000000000000_0000000000000042");
/// assert!(format_offset(9) < format_offset(10));
/// ```
pub fn format_offset(pos: Pos) -> String {
    let (hi, lo) = split(pos);
    format!("{hi:0w$}_{lo:0w$}", w = GROUP)
}

/// Where a read starts, as asked for by the `offset` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// `-1` (or no `offset` at all): the beginning of the stream.
    Beginning,
    /// `now`: the current tail; no historical data.
    Now,
    /// A concrete offset previously handed out by this server.
    Pos(Pos),
}

/// An offset string that is neither a sentinel nor a well-formed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidOffset(pub String);

impl fmt::Display for InvalidOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid offset {:?}: expected -1, now, or an offset returned by this server",
            self.0
        )
    }
}

impl std::error::Error for InvalidOffset {}

/// Parses a concrete wire offset (no sentinels).
///
/// ```
/// use durable_session_server::offset::{offset_at, parse_offset};
/// assert_eq!(parse_offset("0000000000000000_0000000000000042"), Ok(42));
/// assert_eq!(parse_offset("0000000000000003_0000000000000042"), Ok(offset_at(3, 42)));
/// assert!(parse_offset("42").is_err());
/// assert!(parse_offset("-1").is_err());
/// ```
pub fn parse_offset(s: &str) -> Result<Pos, InvalidOffset> {
    let invalid = || InvalidOffset(s.to_owned());
    let (hi, lo) = s.split_once('_').ok_or_else(invalid)?;
    let group = |g: &str| {
        if g.len() == GROUP && g.bytes().all(|b| b.is_ascii_digit()) {
            g.parse::<u128>().map_err(|_| invalid())
        } else {
            Err(invalid())
        }
    };
    Ok(group(hi)? * GROUP_BASE + group(lo)?)
}

/// Parses the `offset` query parameter, sentinels included.
///
/// ```
/// use durable_session_server::offset::{parse_start, StartAt};
/// assert_eq!(parse_start("-1"), Ok(StartAt::Beginning));
/// assert_eq!(parse_start("now"), Ok(StartAt::Now));
/// assert_eq!(parse_start("0000000000000000_0000000000000007"), Ok(StartAt::Pos(7)));
/// assert!(parse_start("7,8").is_err());
/// ```
pub fn parse_start(s: &str) -> Result<StartAt, InvalidOffset> {
    match s {
        "-1" => Ok(StartAt::Beginning),
        "now" => Ok(StartAt::Now),
        _ => parse_offset(s).map(StartAt::Pos),
    }
}

/// Why an offset does not name a position of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// An offset of the stream's current incarnation, past its tail.
    BeyondTail,
    /// An offset of another incarnation: of a stream that was at this path
    /// before (deleted, or expired, and created again), or of data a fork
    /// does not share.
    OtherIncarnation,
}

/// Which incarnation each run of a stream's positions belongs to.
///
/// A stream created from scratch has one incarnation for all its data. A
/// fork has its source's lineage up to the fork point, then its own
/// incarnation, which is greater than every one before it; so offsets
/// increase strictly along the stream, and the offsets of the data a fork
/// inherited are the source's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    /// `(incarnation, first position)`, by position; the first starts at 0.
    /// Each run ends where the next starts; the last one at the tail.
    runs: Vec<(u64, Position)>,
}

impl Lineage {
    /// The lineage of a stream created from scratch.
    pub fn new(incarnation: u64) -> Self {
        Self {
            runs: vec![(incarnation, 0)],
        }
    }

    /// The lineage of a fork of this stream at `at`, in `incarnation`.
    ///
    /// ```
    /// use durable_session_server::offset::{Lineage, format_offset};
    /// let source = Lineage::new(3);
    /// let fork = source.fork(5, 8);
    /// // Up to the fork point, the fork's offsets are its source's…
    /// assert_eq!(fork.offset(5), source.offset(5));
    /// // …after it, its own, which sort after them.
    /// assert_eq!(format_offset(fork.offset(6)), "0000000000000008_0000000000000006");
    /// ```
    pub fn fork(&self, at: Position, incarnation: u64) -> Self {
        // The runs holding data before `at`; at least the first, which names
        // position 0 (a fork at 0 shares that offset with its source too).
        let mut runs: Vec<_> = self
            .runs
            .iter()
            .enumerate()
            .filter(|&(i, &(_, start))| i == 0 || start < at)
            .map(|(_, &run)| run)
            .collect();
        runs.push((incarnation, at));
        Self { runs }
    }

    /// The newest incarnation: the one appends are written in.
    pub fn incarnation(&self) -> u64 {
        self.runs.last().map_or(0, |r| r.0)
    }

    /// The offset the stream issues for `position`: that of the run holding
    /// the data just before it (so the offset after a message is the same
    /// whether it is given as that message's offset or as a tail).
    pub fn offset(&self, position: Position) -> Pos {
        let run = self
            .runs
            .iter()
            .rev()
            .find(|&&(_, start)| start < position)
            .or(self.runs.first());
        offset_at(run.map_or(0, |r| r.0), position)
    }

    /// `position` in the newest incarnation: where appended data starts, as
    /// live readers are told (it may differ from [`Lineage::offset`] at a
    /// fork point, which has two names).
    pub fn append_offset(&self, position: Position) -> Pos {
        offset_at(self.incarnation(), position)
    }

    /// The position `offset` names in a stream with this lineage and `tail`.
    ///
    /// The all-zero offset ([`ZERO`]) is the beginning of every stream.
    ///
    /// ```
    /// use durable_session_server::offset::{Lineage, Unresolved, offset_at};
    /// let old = Lineage::new(3);
    /// let new = Lineage::new(9); // the same path, created again
    /// assert_eq!(old.resolve(offset_at(3, 2), 4), Ok(2));
    /// assert_eq!(new.resolve(offset_at(3, 2), 4), Err(Unresolved::OtherIncarnation));
    /// assert_eq!(new.resolve(offset_at(9, 5), 4), Err(Unresolved::BeyondTail));
    /// ```
    pub fn resolve(&self, offset: Pos, tail: Position) -> Result<Position, Unresolved> {
        if offset == ZERO {
            return Ok(0);
        }
        let (incarnation, position) = split(offset);
        let last = self.runs.len() - 1;
        for (i, &(inc, start)) in self.runs.iter().enumerate() {
            if inc != incarnation {
                continue;
            }
            let end = self.runs.get(i + 1).map_or(tail, |next| next.1);
            if (start..=end).contains(&position) {
                return Ok(position);
            }
            if i == last && position > tail {
                return Err(Unresolved::BeyondTail);
            }
        }
        Err(Unresolved::OtherIncarnation)
    }

    /// The lineage as stored: `incarnation:start` runs joined by `,`.
    pub fn encode(&self) -> String {
        let runs: Vec<String> = self.runs.iter().map(|(i, s)| format!("{i}:{s}")).collect();
        runs.join(",")
    }

    /// Parses [`Lineage::encode`]'s output.
    pub fn decode(s: &str) -> Option<Self> {
        let runs = s
            .split(',')
            .map(|run| {
                let (i, s) = run.split_once(':')?;
                Some((i.parse().ok()?, s.parse().ok()?))
            })
            .collect::<Option<Vec<(u64, Position)>>>()?;
        let starts_at_zero = runs.first().is_some_and(|r| r.1 == 0);
        let ordered = runs.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0);
        (starts_at_zero && ordered).then_some(Self { runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_as_strings_in_numeric_order() {
        let offsets = [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            offset_at(0, MAX_POSITION),
            offset_at(1, 0),
            offset_at(1, 7),
            offset_at(12, 3),
            offset_at(u64::MAX / 10_000, MAX_POSITION),
        ];
        for pair in offsets.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(format_offset(pair[0]) < format_offset(pair[1]));
        }
    }

    #[test]
    fn round_trips() {
        for pos in [
            0,
            1,
            4096,
            offset_at(1, 3),
            offset_at(9_999_999_999_999_999, MAX_POSITION),
        ] {
            assert_eq!(parse_offset(&format_offset(pos)), Ok(pos));
        }
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            " ",
            "abc",
            "0000000000000000_00000000000000-1",
            "0000000000000000_0000000000000001,",
            "0000000000000000 0000000000000001",
            "0000000000000000_00000000000000001",
            "+000000000000000_0000000000000001",
        ] {
            assert!(parse_start(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn a_new_incarnation_never_reads_an_old_ones_offsets() {
        let old = Lineage::new(4);
        let new = Lineage::new(11);
        for p in 1..=5 {
            assert!(new.offset(0) > old.offset(p), "new offsets sort after old ones");
            assert_eq!(new.resolve(old.offset(p), 10), Err(Unresolved::OtherIncarnation));
        }
        assert_eq!(new.resolve(new.offset(10), 10), Ok(10));
        assert_eq!(new.resolve(new.offset(11), 10), Err(Unresolved::BeyondTail));
        assert_eq!(new.resolve(ZERO, 10), Ok(0), "the all-zero offset is everyone's start");
        assert_eq!(
            new.resolve(old.offset(0), 10),
            Err(Unresolved::OtherIncarnation),
            "another incarnation's start is not"
        );
    }

    #[test]
    fn legacy_streams_are_incarnation_zero() {
        let legacy = Lineage::new(0);
        assert_eq!(legacy.offset(5), 5, "the offsets issued before incarnations");
        assert_eq!(legacy.resolve(5, 9), Ok(5));
        assert_eq!(legacy.resolve(10, 9), Err(Unresolved::BeyondTail));
        let fork = legacy.fork(3, 20);
        assert_eq!(fork.resolve(2, 3), Ok(2));
        assert_eq!(fork.offset(3), 3);
        assert_eq!(fork.offset(4), offset_at(20, 4));
    }

    #[test]
    fn forks_share_offsets_up_to_the_fork_point() {
        let source = Lineage::new(2);
        let fork = source.fork(5, 6);
        // Inherited data: the source's offsets; the fork point has two names.
        for p in 0..=5 {
            assert_eq!(fork.offset(p), source.offset(p));
            assert_eq!(fork.resolve(source.offset(p), 8), Ok(p));
        }
        assert_eq!(fork.resolve(offset_at(6, 5), 8), Ok(5));
        assert_eq!(fork.append_offset(5), offset_at(6, 5));
        // Own data: the fork's incarnation, after every inherited offset.
        assert_eq!(fork.offset(6), offset_at(6, 6));
        assert!(fork.offset(6) > fork.offset(5));
        // The source's data past the fork point is not the fork's.
        assert_eq!(fork.resolve(source.offset(7), 8), Err(Unresolved::OtherIncarnation));
        assert_eq!(fork.resolve(offset_at(6, 9), 8), Err(Unresolved::BeyondTail));
        // A fork created again at the same path is another incarnation.
        let again = source.fork(5, 13);
        assert_eq!(again.resolve(fork.offset(7), 8), Err(Unresolved::OtherIncarnation));
        assert_eq!(again.resolve(fork.offset(4), 8), Ok(4), "shared data stays valid");
    }

    #[test]
    fn forks_of_forks_and_empty_runs() {
        let a = Lineage::new(1);
        let b = a.fork(5, 2);
        let c = b.fork(7, 3);
        assert_eq!(c.encode(), "1:0,2:5,3:7");
        assert_eq!(c.offset(5), offset_at(1, 5));
        assert_eq!(c.offset(6), offset_at(2, 6));
        assert_eq!(c.offset(8), offset_at(3, 8));
        let d = b.fork(5, 4);
        assert_eq!(d.encode(), "1:0,4:5", "the fork's empty run is dropped");
        let e = a.fork(0, 5);
        assert_eq!(e.encode(), "1:0,5:0", "a fork at 0 shares its source's first offset");
        assert_eq!(e.offset(0), offset_at(1, 0));
        assert_eq!(e.resolve(offset_at(1, 0), 3), Ok(0));
        assert_eq!(e.resolve(offset_at(1, 1), 3), Err(Unresolved::OtherIncarnation));
        assert_eq!(e.offset(1), offset_at(5, 1));
        assert_eq!(c.fork(0, 6).encode(), "1:0,6:0");
    }

    #[test]
    fn lineages_round_trip_through_storage() {
        for l in [Lineage::new(0), Lineage::new(4).fork(2, 9).fork(5, 12)] {
            assert_eq!(Lineage::decode(&l.encode()), Some(l));
        }
        for bad in ["", "1", "1:1", "2:0,1:3", "1:0,2:x"] {
            assert_eq!(Lineage::decode(bad), None, "{bad:?}");
        }
    }
}
