//! Live-read cursors (`Stream-Cursor`): interval numbers that only move
//! forward, so that CDN collapsing never loops on a cached response.

/// Start of interval 0: 2024-10-09T00:00:00Z, in Unix seconds.
const EPOCH_SECS: i64 = 1_728_432_000;
/// Length of one interval.
const INTERVAL_SECS: i64 = 20;

/// The cursor for a live response at `now_ms`, given the cursor the client
/// echoed. Never returns a value at or below the client's: when the client
/// is already at (or ahead of) the current interval, it adds 1 to 3600
/// seconds of jitter, rounded up to whole intervals.
///
/// ```
/// use durable_session_server::cursor::next_cursor;
/// let now = 1_728_432_000_000 + 20_000 * 100; // interval 100
/// assert_eq!(next_cursor(now, None, 7), 100);
/// assert_eq!(next_cursor(now, Some(50), 7), 100);
/// assert!(next_cursor(now, Some(100), 7) > 100);
/// ```
pub fn next_cursor(now_ms: i64, client: Option<u64>, jitter_secs: u64) -> u64 {
    let current = ((now_ms / 1000 - EPOCH_SECS) / INTERVAL_SECS).max(0) as u64;
    match client {
        Some(c) if c >= current => {
            let jitter = jitter_secs.clamp(1, 3600);
            c.saturating_add(jitter.div_ceil(INTERVAL_SECS as u64).max(1))
        }
        _ => current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_moves_past_the_client() {
        let now = (EPOCH_SECS + 40) * 1000;
        for jitter in [0, 1, 19, 20, 21, 3600, 10_000] {
            for client in [2, 3, 1_000] {
                assert!(next_cursor(now, Some(client), jitter) > client);
            }
        }
        assert_eq!(next_cursor(now, Some(1), 5), 2);
    }
}
