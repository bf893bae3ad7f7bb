//! The pure scheduling decision: given a schedule, the last scheduled time
//! already handled, the time now and the starting deadline, which scheduled
//! times start now and which are recorded as missed.
//!
//! Every scheduled time after the cursor and at or before `now` is exactly
//! one of: started (it is at most `starting_deadline` old), or missed (it is
//! older). The cursor then moves past it, in the same Store write that
//! records the run, so no time is handled twice and none is dropped, however
//! long the batch framework or the master was away. This is Kubernetes's
//! CronJob rule with two changes: every time in the deadline is started,
//! not only the latest, and times past it are recorded, not dropped.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::cron::CronSchedule;

/// At most this many times are started by one decision; the rest (still due)
/// come with the next one, so a long catch-up is paced, never dropped.
pub const MAX_STARTS: usize = 100;
/// At most this many missed times are listed one by one; more are counted.
pub const MAX_LISTED_MISSED: usize = 10;
/// Scanning missed times stops counting after this many.
pub const MAX_COUNTED_MISSED: u64 = 100_000;

/// What one decision found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Times to start now, oldest first.
    pub start: Vec<Timestamp>,
    /// Times too old to start, oldest first (the first
    /// [`MAX_LISTED_MISSED`]).
    pub missed: Vec<Timestamp>,
    /// Missed times beyond those listed.
    pub missed_more: Option<MissedRange>,
    /// The new cursor: every scheduled time at or before it is handled by
    /// this decision or an earlier one. Unchanged when nothing was due.
    pub handled_until: Timestamp,
    /// When to decide again: the next scheduled time after the cursor (at
    /// once when more is due than one decision takes).
    pub next: Option<Timestamp>,
}

impl Due {
    /// Whether the decision changes anything (and so must be written).
    pub fn is_empty(&self) -> bool {
        self.start.is_empty() && self.missed.is_empty() && self.missed_more.is_none()
    }
}

/// Missed times counted rather than listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissedRange {
    pub first: Timestamp,
    pub last: Timestamp,
    pub count: u64,
    /// The count stopped at [`MAX_COUNTED_MISSED`]: there were more.
    pub at_least: bool,
}

/// The decision for one schedule. `handled_until` is the cursor (for a new
/// or re-enabled schedule: the time it was created or enabled).
pub fn due(
    cron: &CronSchedule,
    handled_until: Timestamp,
    now: Timestamp,
    starting_deadline: Duration,
) -> Due {
    let deadline = SignedDuration::try_from(starting_deadline).unwrap_or(SignedDuration::MAX);
    // The oldest time that may still start.
    let oldest_startable = now.checked_sub(deadline).unwrap_or(Timestamp::MIN);
    let mut out = Due {
        start: Vec::new(),
        missed: Vec::new(),
        missed_more: None,
        handled_until,
        next: None,
    };
    let mut t = handled_until;
    let mut counted: u64 = 0;
    loop {
        let Some(next) = cron.next_after(t) else {
            out.next = None;
            return out;
        };
        if next > now {
            out.next = Some(next);
            return out;
        }
        if next < oldest_startable {
            if out.missed.len() < MAX_LISTED_MISSED {
                out.missed.push(next);
            } else {
                counted += 1;
                let range = out.missed_more.get_or_insert(MissedRange {
                    first: next,
                    last: next,
                    count: 0,
                    at_least: false,
                });
                range.last = next;
                range.count = counted;
                if counted >= MAX_COUNTED_MISSED {
                    // Jump to the startable window without counting the rest.
                    range.at_least = true;
                    let before_window = oldest_startable
                        .checked_sub(SignedDuration::from_nanos(1))
                        .unwrap_or(oldest_startable);
                    if before_window > next {
                        if let Some(last) = cron.last_at_or_before(before_window) {
                            range.last = last;
                        }
                        t = before_window;
                        out.handled_until = before_window;
                        continue;
                    }
                }
            }
        } else {
            if out.start.len() == MAX_STARTS {
                // More is due than one decision takes: decide again at once.
                out.next = Some(now);
                return out;
            }
            out.start.push(next);
        }
        out.handled_until = next;
        t = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn minutely() -> CronSchedule {
        CronSchedule::parse("* * * * *", "UTC").unwrap()
    }

    #[test]
    fn nothing_due_before_the_next_time() {
        let d = due(
            &minutely(),
            ts("2025-01-01T10:00:00Z"),
            ts("2025-01-01T10:00:59Z"),
            Duration::from_secs(60),
        );
        assert!(d.is_empty());
        assert_eq!(d.handled_until, ts("2025-01-01T10:00:00Z"));
        assert_eq!(d.next, Some(ts("2025-01-01T10:01:00Z")));
    }

    #[test]
    fn a_time_that_has_come_starts_and_moves_the_cursor() {
        let d = due(
            &minutely(),
            ts("2025-01-01T10:00:00Z"),
            ts("2025-01-01T10:01:00.2Z"),
            Duration::from_secs(60),
        );
        assert_eq!(d.start, [ts("2025-01-01T10:01:00Z")]);
        assert!(d.missed.is_empty());
        assert_eq!(d.handled_until, ts("2025-01-01T10:01:00Z"));
        assert_eq!(d.next, Some(ts("2025-01-01T10:02:00Z")));
        // Deciding again changes nothing: the time is handled.
        let again = due(
            &minutely(),
            d.handled_until,
            ts("2025-01-01T10:01:00.9Z"),
            Duration::from_secs(60),
        );
        assert!(again.is_empty());
    }

    #[test]
    fn after_an_outage_times_within_the_deadline_start_and_older_ones_are_missed() {
        // Away from 10:00 to 10:05:30 with a 149 s deadline: 10:01, 10:02
        // and 10:03 (150 s old) are too old; 10:04 and 10:05 still start.
        let d = due(
            &minutely(),
            ts("2025-01-01T10:00:00Z"),
            ts("2025-01-01T10:05:30Z"),
            Duration::from_secs(149),
        );
        assert_eq!(
            d.missed,
            [
                ts("2025-01-01T10:01:00Z"),
                ts("2025-01-01T10:02:00Z"),
                ts("2025-01-01T10:03:00Z")
            ]
        );
        assert_eq!(
            d.start,
            [ts("2025-01-01T10:04:00Z"), ts("2025-01-01T10:05:00Z")]
        );
        assert_eq!(d.handled_until, ts("2025-01-01T10:05:00Z"));
        // Exactly at the deadline still starts.
        let d = due(
            &minutely(),
            ts("2025-01-01T10:00:00Z"),
            ts("2025-01-01T10:02:00Z"),
            Duration::from_secs(60),
        );
        assert_eq!(
            d.start,
            [ts("2025-01-01T10:01:00Z"), ts("2025-01-01T10:02:00Z")]
        );
    }

    #[test]
    fn a_long_outage_lists_a_few_missed_times_and_counts_the_rest() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let d = due(
            &every_second,
            ts("2025-01-01T00:00:00Z"),
            ts("2025-01-01T01:00:00Z"),
            Duration::from_secs(5),
        );
        assert_eq!(d.missed.len(), MAX_LISTED_MISSED);
        let more = d.missed_more.unwrap();
        assert_eq!(more.first, ts("2025-01-01T00:00:11Z"));
        assert_eq!(more.last, ts("2025-01-01T00:59:54Z"));
        assert_eq!(more.count, 3600 - 5 - 1 - 10);
        assert!(!more.at_least);
        assert_eq!(d.start.len(), 6); // 00:59:55 ..= 01:00:00
        assert_eq!(d.handled_until, ts("2025-01-01T01:00:00Z"));
    }

    #[test]
    fn a_huge_outage_stops_counting_but_still_starts_the_recent_times() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let d = due(
            &every_second,
            ts("2025-01-01T00:00:00Z"),
            ts("2025-01-10T00:00:00Z"),
            Duration::from_secs(2),
        );
        let more = d.missed_more.unwrap();
        assert!(more.at_least);
        assert_eq!(more.count, MAX_COUNTED_MISSED);
        assert_eq!(more.last, ts("2025-01-09T23:59:57Z"));
        assert_eq!(
            d.start,
            [
                ts("2025-01-09T23:59:58Z"),
                ts("2025-01-09T23:59:59Z"),
                ts("2025-01-10T00:00:00Z")
            ]
        );
    }

    #[test]
    fn a_big_catch_up_is_paced_not_dropped() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        let now = ts("2025-01-01T00:10:00Z");
        let deadline = Duration::from_secs(3600);
        let mut cursor = ts("2025-01-01T00:00:00Z");
        let mut started = Vec::new();
        loop {
            let d = due(&every_second, cursor, now, deadline);
            assert!(d.start.len() <= MAX_STARTS);
            if d.is_empty() {
                break;
            }
            started.extend(d.start);
            cursor = d.handled_until;
        }
        assert_eq!(started.len(), 600);
        assert!(started.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_clock_behind_the_cursor_starts_nothing() {
        let d = due(
            &minutely(),
            ts("2025-01-01T10:00:00Z"),
            ts("2025-01-01T09:00:00Z"),
            Duration::from_secs(60),
        );
        assert!(d.is_empty());
        assert_eq!(d.handled_until, ts("2025-01-01T10:00:00Z"));
    }

    proptest! {
        /// Split the time line at arbitrary points and decide at each: every
        /// scheduled time is handled exactly once (started or missed), and
        /// started ones were within the deadline when started.
        #[test]
        fn each_time_is_handled_exactly_once(
            steps in proptest::collection::vec(0i64..400, 1..20),
            deadline in 1u64..300,
        ) {
            let cron = CronSchedule::parse("*/7 * * * * *", "UTC").unwrap();
            let start = ts("2025-01-01T00:00:00Z");
            let mut cursor = start;
            let mut now = start;
            let mut handled = Vec::new();
            for s in steps {
                now += SignedDuration::from_secs(s);
                loop {
                    let d = due(&cron, cursor, now, Duration::from_secs(deadline));
                    for t in &d.start {
                        prop_assert!(now.duration_since(*t) <= SignedDuration::from_secs(deadline as i64));
                    }
                    handled.extend(d.missed.iter().copied());
                    if let Some(m) = &d.missed_more {
                        prop_assert!(m.count > 0);
                        let mut t = m.first;
                        handled.push(t);
                        while t < m.last {
                            t = cron.next_after(t).unwrap();
                            handled.push(t);
                        }
                    }
                    handled.extend(d.start.iter().copied());
                    prop_assert!(d.handled_until >= cursor);
                    cursor = d.handled_until;
                    if d.next != Some(now) {
                        break;
                    }
                }
            }
            handled.sort();
            let mut expected = Vec::new();
            let mut t = start;
            while let Some(n) = cron.next_after(t) {
                if n > now { break; }
                expected.push(n);
                t = n;
            }
            prop_assert_eq!(handled, expected);
        }
    }
}
