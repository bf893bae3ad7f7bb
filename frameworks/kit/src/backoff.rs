//! Launch backoff, as Marathon computes it: after the `n`th failure in a row
//! the next launch waits `base * factor^(n-1)`, at most `max`.

use std::time::Duration;

/// The delay before the next launch after `failures` failures in a row (0
/// failures: no delay). `factor` below 1 or not finite counts as 1 (no
/// growth); the result never exceeds `max` and never overflows.
///
/// Marathon: `backoffSeconds * backoffFactor^(failures-1)`, capped at
/// `maxLaunchDelaySeconds` (defaults 1 s, 1.15, 300 s).
pub fn delay(failures: u32, base: Duration, factor: f64, max: Duration) -> Duration {
    if failures == 0 || base.is_zero() || max.is_zero() {
        return Duration::ZERO;
    }
    let factor = if factor.is_finite() && factor >= 1.0 {
        factor
    } else {
        1.0
    };
    let exponent = (failures - 1).min(i32::MAX as u32) as i32;
    let seconds = base.as_secs_f64() * factor.powi(exponent);
    if !seconds.is_finite() || seconds >= max.as_secs_f64() {
        return max;
    }
    Duration::try_from_secs_f64(seconds).map_or(max, |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn follows_marathon() {
        assert_eq!(delay(0, S, 1.15, 300 * S), Duration::ZERO);
        assert_eq!(delay(1, S, 1.15, 300 * S), S);
        assert_eq!(delay(2, S, 2.0, 300 * S), 2 * S);
        assert_eq!(delay(3, S, 2.0, 300 * S), 4 * S);
        assert_eq!(delay(10, S, 2.0, 300 * S), 300 * S);
        let d = delay(3, S, 1.15, 300 * S).as_secs_f64();
        assert!((d - 1.3225).abs() < 1e-9, "{d}");
        // Nonsense factors do not grow the delay, and never panic.
        assert_eq!(delay(5, S, f64::NAN, 300 * S), S);
        assert_eq!(delay(5, S, 0.5, 300 * S), S);
        assert_eq!(delay(u32::MAX, S, f64::MAX, 300 * S), 300 * S);
        assert_eq!(delay(u32::MAX, S, 1.15, Duration::MAX), Duration::MAX);
    }

    proptest! {
        #[test]
        fn grows_monotonically_and_stays_under_the_cap(
            failures in 0u32..2000,
            base_ms in 0u64..100_000,
            factor in 0.0f64..10.0,
            max_ms in 0u64..1_000_000,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = Duration::from_millis(max_ms);
            let d = delay(failures, base, factor, max);
            let next = delay(failures + 1, base, factor, max);
            prop_assert!(d <= max);
            prop_assert!(next >= d, "{next:?} < {d:?}");
            if failures >= 1 && base <= max {
                prop_assert!(d >= base.min(max));
            }
        }
    }
}
