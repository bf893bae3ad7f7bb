//! Exponential backoff, with optional jitter.

use std::time::Duration;

/// Doubles a delay from `min` up to `max`. With jitter, each delay is drawn
/// uniformly from the upper half of the current step (`[step/2, step]`), so
/// many agents that lost the same master do not all come back at once, and
/// the delay still grows.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
    jitter: bool,
}

impl Backoff {
    /// `min` and `max` are ordered on the way in (`min <= max`), and `min` is
    /// at least one millisecond.
    pub fn new(min: Duration, max: Duration, jitter: bool) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff {
            min,
            max,
            step: min,
            jitter,
        }
    }

    /// The next delay; each call doubles the step, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        if self.jitter {
            let half = step / 2;
            half + step.mul_f64(fastrand::f64()) / 2
        } else {
            step
        }
    }

    /// Starts again from `min` (after a success).
    pub fn reset(&mut self) {
        self.step = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(500),
            false,
        );
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_each_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), true);
        let mut step = Duration::from_millis(100);
        for _ in 0..50 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(Duration::from_secs(2));
        }
    }

    #[test]
    fn orders_bad_bounds() {
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(1), false);
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        assert_eq!(b.next_delay(), Duration::from_secs(5));
        let mut z = Backoff::new(Duration::ZERO, Duration::ZERO, false);
        assert_eq!(z.next_delay(), Duration::from_millis(1));
    }
}
