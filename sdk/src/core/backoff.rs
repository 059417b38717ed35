//! Reconnect delays: exponential backoff with full jitter.

/// How long to wait between reconnect attempts.
///
/// Attempt 0 (the first retry after an unexpected drop) is immediate. Attempt
/// `n ≥ 1` waits a uniformly random time in `[0, min(max, min · factor^(n-1))]`
/// ("full jitter"), which spreads a crowd of clients that all lost the same
/// server.
///
/// ```
/// use durable_sessions::core::backoff::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.delay_ms(0, 0.7), 0);
/// assert!(b.delay_ms(1, 0.999) <= b.min_ms);
/// assert!(b.delay_ms(30, 0.999) <= b.max_ms);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Ceiling of the first jittered delay, in milliseconds.
    pub min_ms: u64,
    /// Largest delay, in milliseconds.
    pub max_ms: u64,
    /// Growth of the ceiling per attempt.
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_ms: 500,
            max_ms: 15_000,
            factor: 2.0,
        }
    }
}

impl Backoff {
    /// The ceiling of attempt `attempt` (no jitter).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        if attempt == 0 {
            return 0;
        }
        let grown = self.min_ms as f64 * self.factor.max(1.0).powi(attempt.saturating_sub(1).min(64) as i32);
        grown.min(self.max_ms as f64).max(0.0) as u64
    }

    /// The delay of attempt `attempt`, with `unit_random` uniform in `[0, 1)`.
    pub fn delay_ms(&self, attempt: u32, unit_random: f64) -> u64 {
        (self.ceiling_ms(attempt) as f64 * unit_random.clamp(0.0, 1.0)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_is_immediate() {
        let b = Backoff::default();
        for r in [0.0, 0.5, 0.99] {
            assert_eq!(b.delay_ms(0, r), 0);
        }
    }

    #[test]
    fn ceilings_grow_by_factor_up_to_max() {
        let b = Backoff {
            min_ms: 100,
            max_ms: 1_000,
            factor: 2.0,
        };
        let ceilings: Vec<u64> = (1..=6).map(|a| b.ceiling_ms(a)).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(b.ceiling_ms(u32::MAX), 1_000);
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let b = Backoff {
            min_ms: 100,
            max_ms: 1_000,
            factor: 2.0,
        };
        assert_eq!(b.delay_ms(3, 0.0), 0);
        assert_eq!(b.delay_ms(3, 0.5), 200);
        assert!(b.delay_ms(3, 0.999_999) <= 400);
        // Many draws stay within bounds and are not all the same.
        let mut rng = crate::core::rng::Rng::new(42);
        let draws: Vec<u64> = (0..1_000).map(|_| b.delay_ms(4, rng.unit())).collect();
        assert!(draws.iter().all(|d| *d <= 800));
        let distinct: std::collections::HashSet<_> = draws.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads delays");
        let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
        assert!((300.0..500.0).contains(&mean), "uniform over [0, 800]: mean {mean}");
    }
}
