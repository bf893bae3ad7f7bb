//! Cron expressions in a time zone: the pure next-run function.
//!
//! An expression has five fields (`minute hour day-of-month month
//! day-of-week`) or six with a leading seconds field; `@daily`-style
//! nicknames work too. It is read in an IANA time zone (default `UTC`), and
//! times are computed on the real time line: a run time is an instant, never
//! a wall-clock reading.
//!
//! Daylight-saving changes (the rules of `croner`, which Agora documents as
//! its own in `docs/batch.md` and pins in the tests below):
//!
//! * A gap (clocks jump forward, e.g. 02:00 -> 03:00): a job at a fixed time
//!   inside the gap (`30 2 * * *`) runs at the first instant after the gap,
//!   once, the same day; a job with a wildcard or step in its seconds,
//!   minutes or hours (`*/15 * * * *`) skips the times the gap swallowed.
//! * A repeat (clocks fall back, e.g. 02:00 -> 01:00): a fixed-time job runs
//!   once, at the first pass; a wildcard or step job runs on both passes.

use std::fmt;

use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

/// The time zone a schedule without one is read in.
pub const DEFAULT_TIMEZONE: &str = "UTC";

/// A parsed cron expression and the time zone it is read in.
#[derive(Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    tz: TimeZone,
    expression: String,
    timezone: String,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CronSchedule({:?} in {})",
            self.expression, self.timezone
        )
    }
}

/// Why an expression or a time zone was refused; the message says what to
/// write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error(
        "`{expression}` is not a cron expression: {reason} (write 5 fields `minute hour day-of-month month day-of-week`, or 6 with seconds first)"
    )]
    Expression { expression: String, reason: String },
    #[error("`{expression}` never matches any time")]
    NeverMatches { expression: String },
    #[error(
        "`{timezone}` is not an IANA time zone (e.g. `UTC`, `Europe/Berlin`, `America/New_York`)"
    )]
    TimeZone { timezone: String },
}

impl CronSchedule {
    /// Parses `expression` to be read in `timezone` (an IANA name).
    pub fn parse(expression: &str, timezone: &str) -> Result<CronSchedule, CronError> {
        let tz = TimeZone::get(timezone).map_err(|_| CronError::TimeZone {
            timezone: timezone.to_string(),
        })?;
        let expression_err = |reason: String| CronError::Expression {
            expression: expression.to_string(),
            reason,
        };
        let trimmed = expression.trim();
        if trimmed.is_empty() {
            return Err(expression_err("it is empty".into()));
        }
        let fields = trimmed.split_whitespace().count();
        if !trimmed.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(expression_err(format!("it has {fields} fields")));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(trimmed)
            .map_err(|e| expression_err(e.to_string()))?;
        let schedule = CronSchedule {
            cron,
            tz,
            expression: expression.to_string(),
            timezone: timezone.to_string(),
        };
        // `0 0 30 2 *` parses but never happens: refuse it now rather than
        // keep a schedule that never fires.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(CronError::NeverMatches {
                expression: expression.to_string(),
            });
        }
        Ok(schedule)
    }

    /// The expression as written.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone's name as written.
    pub fn timezone(&self) -> &str {
        &self.timezone
    }

    /// The first run time strictly after `t`, or `None` when there is none
    /// (before the year 5000).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last run time at or before `t`, if any (after the year 1).
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_previous_occurrence(&zoned, true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// Whether the wall-clock time of `t` in the schedule's zone matches the
    /// expression (whole seconds only).
    pub fn matches(&self, t: Timestamp) -> bool {
        if t.subsec_nanosecond() != 0 {
            return false;
        }
        let zoned: Zoned = t.to_zoned(self.tz.clone());
        self.cron.is_time_matching(&zoned).unwrap_or(false)
    }

    /// The UTC offset of `t` in the schedule's zone, in seconds.
    pub fn offset_seconds(&self, t: Timestamp) -> i32 {
        self.tz.to_offset(t).seconds()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The next `n` run times after `from`, as RFC 3339 in UTC.
    fn next_n(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = CronSchedule::parse(expr, tz).unwrap();
        let mut t = ts(from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.to_string()
            })
            .collect()
    }

    #[test]
    fn five_fields_run_on_whole_minutes() {
        assert_eq!(
            next_n("*/15 * * * *", "UTC", "2025-01-01T10:07:30Z", 3),
            [
                "2025-01-01T10:15:00Z",
                "2025-01-01T10:30:00Z",
                "2025-01-01T10:45:00Z"
            ]
        );
    }

    #[test]
    fn a_sixth_leading_field_is_seconds() {
        assert_eq!(
            next_n("*/5 * * * * *", "UTC", "2025-01-01T10:00:03Z", 3),
            [
                "2025-01-01T10:00:05Z",
                "2025-01-01T10:00:10Z",
                "2025-01-01T10:00:15Z"
            ]
        );
        assert_eq!(
            next_n("30 0 12 * * *", "UTC", "2025-01-01T00:00:00Z", 1),
            ["2025-01-01T12:00:30Z"]
        );
    }

    #[test]
    fn next_after_is_strictly_after_even_on_a_match() {
        let s = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            s.next_after(ts("2025-01-01T00:00:00Z")),
            Some(ts("2025-01-01T00:00:01Z"))
        );
        // Fractions of a second move on to the next whole second.
        assert_eq!(
            s.next_after(ts("2025-01-01T00:00:00.5Z")),
            Some(ts("2025-01-01T00:00:01Z"))
        );
    }

    #[test]
    fn nicknames_and_day_of_week_names() {
        assert_eq!(
            next_n("@daily", "UTC", "2025-01-01T10:00:00Z", 1),
            ["2025-01-02T00:00:00Z"]
        );
        // 2025-01-01 is a Wednesday.
        assert_eq!(
            next_n("0 9 * * MON-FRI", "UTC", "2025-01-03T10:00:00Z", 2),
            ["2025-01-06T09:00:00Z", "2025-01-07T09:00:00Z"]
        );
    }

    #[test]
    fn a_time_zone_moves_the_instant() {
        // 02:00 in Tokyo (UTC+9, no DST) is 17:00 UTC the day before.
        assert_eq!(
            next_n("0 2 * * *", "Asia/Tokyo", "2025-06-01T00:00:00Z", 1),
            ["2025-06-01T17:00:00Z"]
        );
        // 02:00 in Berlin is 01:00 UTC in winter, 00:00 UTC in summer.
        assert_eq!(
            next_n("0 2 * * *", "Europe/Berlin", "2025-01-10T12:00:00Z", 1),
            ["2025-01-11T01:00:00Z"]
        );
        assert_eq!(
            next_n("0 2 * * *", "Europe/Berlin", "2025-07-10T12:00:00Z", 1),
            ["2025-07-11T00:00:00Z"]
        );
    }

    // New York springs forward on 2025-03-09: 02:00 EST becomes 03:00 EDT.

    #[test]
    fn dst_gap_a_fixed_time_inside_the_gap_runs_once_right_after_it() {
        assert_eq!(
            next_n("30 2 * * *", "America/New_York", "2025-03-07T12:00:00Z", 3),
            [
                "2025-03-08T07:30:00Z", // 02:30 EST
                "2025-03-09T07:00:00Z", // 02:30 does not exist: 03:00 EDT
                "2025-03-10T06:30:00Z", // 02:30 EDT
            ]
        );
    }

    #[test]
    fn dst_gap_a_step_job_skips_the_missing_hour() {
        // 01:45 EST, then the hour 02:xx does not exist, then 03:00 EDT.
        assert_eq!(
            next_n(
                "*/15 * * * *",
                "America/New_York",
                "2025-03-09T06:40:00Z",
                3
            ),
            [
                "2025-03-09T06:45:00Z",
                "2025-03-09T07:00:00Z",
                "2025-03-09T07:15:00Z"
            ]
        );
    }

    // New York falls back on 2025-11-02: 02:00 EDT becomes 01:00 EST, so
    // 01:00-01:59 happens twice (05:00-05:59 UTC, then 06:00-06:59 UTC).

    #[test]
    fn dst_repeat_a_fixed_time_runs_once_on_the_first_pass() {
        assert_eq!(
            next_n("30 1 * * *", "America/New_York", "2025-11-01T12:00:00Z", 2),
            ["2025-11-02T05:30:00Z", "2025-11-03T06:30:00Z"]
        );
    }

    #[test]
    fn dst_repeat_a_step_job_runs_on_both_passes() {
        assert_eq!(
            next_n(
                "*/30 * * * *",
                "America/New_York",
                "2025-11-02T04:45:00Z",
                5
            ),
            [
                "2025-11-02T05:00:00Z", // 01:00 EDT
                "2025-11-02T05:30:00Z", // 01:30 EDT
                "2025-11-02T06:00:00Z", // 01:00 EST
                "2025-11-02T06:30:00Z", // 01:30 EST
                "2025-11-02T07:00:00Z", // 02:00 EST
            ]
        );
    }

    #[test]
    fn bad_expressions_and_zones_say_what_is_wrong() {
        for bad in [
            "",
            "   ",
            "* * * *",
            "61 * * * *",
            "* * * * * * * *",
            "hello",
        ] {
            let e = CronSchedule::parse(bad, "UTC").unwrap_err();
            assert!(matches!(e, CronError::Expression { .. }), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("is not a cron expression"));
        }
        let e = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(
            e,
            CronError::TimeZone {
                timezone: "Mars/Olympus".into()
            }
        );
        let e = CronSchedule::parse("0 0 30 2 *", "UTC").unwrap_err();
        assert!(matches!(e, CronError::NeverMatches { .. }), "{e:?}");
    }

    fn expressions() -> impl Strategy<Value = String> {
        let field = |max: u32| {
            prop_oneof![
                Just("*".to_string()),
                (0..max).prop_map(|v| v.to_string()),
                (1..max.min(30)).prop_map(|s| format!("*/{s}")),
                (0..max, 0..max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (0..max, 0..max).prop_map(|(a, b)| if a == b {
                    a.to_string()
                } else {
                    format!("{a},{b}")
                }),
            ]
        };
        (
            proptest::option::of(field(60)),
            field(60),
            field(24),
            prop_oneof![
                Just("*".to_string()),
                (1u32..29).prop_map(|d| d.to_string())
            ],
            prop_oneof![
                Just("*".to_string()),
                (1u32..13).prop_map(|m| m.to_string())
            ],
            prop_oneof![Just("*".to_string()), (0u32..7).prop_map(|d| d.to_string())],
        )
            .prop_map(|(s, m, h, dom, mon, dow)| match s {
                Some(s) => format!("{s} {m} {h} {dom} {mon} {dow}"),
                None => format!("{m} {h} {dom} {mon} {dow}"),
            })
    }

    fn zones() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("UTC"),
            Just("Europe/Berlin"),
            Just("America/New_York"),
            Just("Australia/Lord_Howe"), // half-hour DST shift
            Just("Asia/Kolkata"),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Run times strictly increase, and each one's wall-clock reading
        /// matches the expression, but for a fixed time moved to the end of
        /// a DST gap (the offset changed in the second before it).
        #[test]
        fn next_runs_increase_and_match(
            expr in expressions(),
            tz in zones(),
            start in 1_700_000_000i64..1_900_000_000i64,
        ) {
            let s = CronSchedule::parse(&expr, tz).unwrap();
            let mut t = Timestamp::from_second(start).unwrap();
            for _ in 0..8 {
                let Some(next) = s.next_after(t) else { break };
                prop_assert!(next > t, "{expr} in {tz}: {next} after {t}");
                let before = next - jiff::SignedDuration::from_secs(1);
                let after_gap = s.offset_seconds(before) < s.offset_seconds(next);
                prop_assert!(
                    s.matches(next) || after_gap,
                    "{expr} in {tz}: {next} does not match"
                );
                t = next;
            }
        }

        /// In UTC no matching second is skipped between two run times.
        #[test]
        fn utc_skips_no_match(
            expr in expressions(),
            start in 1_700_000_000i64..1_900_000_000i64,
        ) {
            let s = CronSchedule::parse(&expr, "UTC").unwrap();
            let t = Timestamp::from_second(start).unwrap();
            let next = s.next_after(t).unwrap();
            let gap = (next.as_second() - start).min(3 * 3600);
            for sec in start + 1..start + gap {
                let probe = Timestamp::from_second(sec).unwrap();
                prop_assert!(!s.matches(probe), "{expr}: {probe} matches before {next}");
            }
        }
    }
}
