//! What the agent's health checking has done: counters and a histogram of
//! how late checks started (shown in the agent's `/state`, read by
//! `agora bench health`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// Sub-buckets per power of two: values are kept within about 3 %.
const SUB_BUCKETS: u64 = 32;
/// Microseconds up to 2^40 (about 12 days) have a bucket.
const BUCKETS: usize = ((40 - 5) * SUB_BUCKETS + SUB_BUCKETS) as usize;

/// Durations, counted in log-linear buckets of microseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatenessHistogram {
    counts: Vec<u64>,
}

impl Default for LatenessHistogram {
    fn default() -> Self {
        LatenessHistogram {
            counts: vec![0; BUCKETS],
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let exp = 63 - u64::from(us.leading_zeros()); // >= 5
    let shift = exp - 5;
    (((shift) * SUB_BUCKETS + (us >> shift)) as usize).min(BUCKETS - 1)
}

/// The upper end (exclusive) of a bucket, in microseconds.
fn upper(index: usize) -> u64 {
    let i = index as u64;
    if i < 2 * SUB_BUCKETS {
        return i + 1;
    }
    let shift = i / SUB_BUCKETS - 1;
    let m = i - shift * SUB_BUCKETS;
    (m + 1) << shift
}

impl LatenessHistogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(us)] += 1;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1), rounded up to its bucket's upper end.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(upper(i));
            }
        }
        Duration::from_micros(upper(BUCKETS - 1))
    }

    /// What was recorded since `earlier` (an older copy of this histogram).
    pub fn since(&self, earlier: &LatenessHistogram) -> LatenessHistogram {
        LatenessHistogram {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }
}

/// Counters shared by the checker and whoever reads them.
#[derive(Debug, Default)]
pub(crate) struct HealthStats {
    pub tasks: AtomicU64,
    pub started: AtomicU64,
    pub passed: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub lateness: Mutex<LatenessHistogram>,
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealthStatsSnapshot {
    /// Tasks whose checks run now.
    pub tasks: u64,
    /// Checks started, passed, failed (timeouts included), timed out.
    pub started: u64,
    pub passed: u64,
    pub failed: u64,
    pub timed_out: u64,
    /// How late each check started after it was due (waiting for a free
    /// slot of the agent's concurrency bound included).
    pub lateness: LatenessHistogram,
}

/// The summary in the agent's `/state`.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct HealthStatsView {
    pub tasks: u64,
    pub checks_started: u64,
    pub checks_passed: u64,
    pub checks_failed: u64,
    pub checks_timed_out: u64,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
}

impl HealthStats {
    pub fn snapshot(&self) -> HealthStatsSnapshot {
        HealthStatsSnapshot {
            tasks: self.tasks.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            passed: self.passed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            lateness: self.lateness.lock().clone(),
        }
    }

    pub fn view(&self) -> HealthStatsView {
        let s = self.snapshot();
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        HealthStatsView {
            tasks: s.tasks,
            checks_started: s.started,
            checks_passed: s.passed,
            checks_failed: s.failed,
            checks_timed_out: s.timed_out,
            lateness_p50_ms: ms(s.lateness.quantile(0.5)),
            lateness_p99_ms: ms(s.lateness.quantile(0.99)),
            lateness_max_ms: ms(s.lateness.quantile(1.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_and_differences() {
        let mut h = LatenessHistogram::default();
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_secs_f64() * 1e3;
        let p99 = h.quantile(0.99).as_secs_f64() * 1e3;
        assert!((50.0..=52.0).contains(&p50), "{p50}");
        assert!((99.0..=102.0).contains(&p99), "{p99}");
        let before = h.clone();
        h.record(Duration::from_secs(2));
        let d = h.since(&before);
        assert_eq!(d.count(), 1);
        assert!(d.quantile(0.5) >= Duration::from_secs(2));
        h.record(Duration::from_secs(100 * 86_400));
        assert_eq!(h.count(), 102, "huge values land in the last bucket");
    }

    proptest! {
        #[test]
        fn every_value_lies_below_its_bucket_upper_end_within_4_percent(us in 0u64..(1u64 << 39)) {
            let i = bucket(us);
            let hi = upper(i);
            prop_assert!(us < hi, "{us} in bucket {i} ending at {hi}");
            prop_assert!((hi - us) as f64 <= 1.0 + us as f64 * 0.04, "{us} -> {hi}");
            if i > 0 {
                prop_assert!(upper(i - 1) <= us, "{us}: bucket {i} starts after {}", upper(i - 1));
            }
        }
    }
}
