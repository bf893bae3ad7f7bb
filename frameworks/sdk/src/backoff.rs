//! Jittered exponential backoff between connection attempts.

use std::time::Duration;

/// Exponential backoff with "equal jitter": the `n`th retry (from 0) waits a
/// random time in `[d/2, d]` where `d = min(min * 2^n, max)`. Half the delay
/// is certain, so a herd of frameworks reconnecting after a master failover
/// spreads out without any of them retrying in a tight loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max }
    }

    /// The delay before retry number `attempt` (0 for the first retry), with
    /// `unit` a random number in `[0, 1]`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self
            .min
            .checked_mul(2u32.saturating_pow(attempt.min(31)))
            .unwrap_or(self.max)
            .min(self.max);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        ceiling / 2 + ceiling.mul_f64(unit / 2.0)
    }

    /// [`delay`](Self::delay) with a fresh random number.
    pub(crate) fn random_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_exponentially_then_caps() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(b.delay(0, 1.0), 100 * MS);
        assert_eq!(b.delay(1, 1.0), 200 * MS);
        assert_eq!(b.delay(2, 1.0), 400 * MS);
        assert_eq!(b.delay(3, 1.0), 800 * MS);
        assert_eq!(b.delay(4, 1.0), 1000 * MS);
        assert_eq!(b.delay(u32::MAX, 1.0), 1000 * MS);
    }

    #[test]
    fn jitter_stays_within_half_and_full_delay() {
        let b = Backoff::new(100 * MS, 1000 * MS);
        assert_eq!(b.delay(0, 0.0), 50 * MS);
        assert_eq!(b.delay(4, 0.0), 500 * MS);
        assert_eq!(b.delay(2, 0.5), 300 * MS);
        // Out-of-range randomness is clamped, never panics.
        assert_eq!(b.delay(0, -3.0), 50 * MS);
        assert_eq!(b.delay(0, f64::NAN), 100 * MS);
        for attempt in 0..40 {
            let d = b.random_delay(attempt);
            assert!(d >= 50 * MS && d <= 1000 * MS, "{d:?}");
        }
    }

    #[test]
    fn huge_minimum_does_not_overflow() {
        let b = Backoff::new(
            Duration::from_secs(u64::MAX / 2),
            Duration::from_secs(u64::MAX),
        );
        let _ = b.delay(31, 1.0);
    }
}
