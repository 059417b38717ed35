//! Offsets: opaque, strictly increasing tokens that sort as strings.
//!
//! Internally a position in a stream is a plain counter ([`Pos`]): bytes for
//! byte streams, messages for JSON streams. On the wire it is written as a
//! fixed-width, 32-digit decimal in two groups of 16 (`HHHHHHHHHHHHHHHH_LLLLLLLLLLLLLLLL`,
//! the shape other Durable Streams servers use), so string order equals
//! numeric order. Forks share the offset space of their source, which a
//! position counter gives for free.

use std::fmt;

/// A position in a stream: bytes for byte streams, messages for JSON streams.
pub type Pos = u64;

/// Digits in each of the two groups of a wire offset.
const GROUP: usize = 16;
const GROUP_BASE: u128 = 10_000_000_000_000_000;

/// A wire offset for `pos`.
///
/// ```
/// use durable_session_server::offset::format_offset;
/// assert_eq!(format_offset(42), "0000000000000000_0000000000000042");
/// assert!(format_offset(9) < format_offset(10));
/// ```
pub fn format_offset(pos: Pos) -> String {
    let pos = u128::from(pos);
    format!("{:0w$}_{:0w$}", pos / GROUP_BASE, pos % GROUP_BASE, w = GROUP)
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
/// use durable_session_server::offset::parse_offset;
/// assert_eq!(parse_offset("0000000000000000_0000000000000042"), Ok(42));
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
    let value = group(hi)? * GROUP_BASE + group(lo)?;
    Pos::try_from(value).map_err(|_| invalid())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_sort_as_strings_in_numeric_order() {
        let positions = [0, 1, 9, 10, 99, 100, 12_345, 10u64.pow(16), Pos::MAX];
        for pair in positions.windows(2) {
            assert!(format_offset(pair[0]) < format_offset(pair[1]));
        }
    }

    #[test]
    fn round_trips() {
        for pos in [0, 1, 4096, 10u64.pow(16) + 3, Pos::MAX] {
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
            "9999999999999999_9999999999999999",
        ] {
            assert!(parse_start(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
