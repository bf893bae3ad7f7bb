//! Timestamps as Marathon writes them: `2026-11-21T20:00:00.000Z`
//! (UTC, milliseconds). App versions are such timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: how times are kept in records.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    millis_of(SystemTime::now())
}

pub fn millis_of(t: SystemTime) -> Millis {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-21T20:00:00.000Z`.
pub fn format(ms: Millis) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Milliseconds of 9999-12-30T00:00:00Z (jiff's timestamps end on that
/// day): [`write`] formats times from the epoch up to this itself, others
/// through [`format`].
const FAST_END: Millis = 253_402_128_000_000;

/// Appends [`format`]`(ms)` to `out` without allocating (for lists of
/// thousands of tasks, each with three timestamps).
pub fn write(ms: Millis, out: &mut Vec<u8>) {
    if !(0..FAST_END).contains(&ms) {
        out.extend_from_slice(format(ms).as_bytes());
        return;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Days to a civil date (H. Hinnant's algorithm, for days >= 0).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    let digit = |v: i64| b'0' + v as u8;
    let buf = [
        digit(year / 1000),
        digit(year / 100 % 10),
        digit(year / 10 % 10),
        digit(year % 10),
        b'-',
        digit(month / 10),
        digit(month % 10),
        b'-',
        digit(day / 10),
        digit(day % 10),
        b'T',
        digit(h / 10),
        digit(h % 10),
        b':',
        digit(m / 10),
        digit(m % 10),
        b':',
        digit(s / 10),
        digit(s % 10),
        b'.',
        digit(milli / 100),
        digit(milli / 10 % 10),
        digit(milli % 10),
        b'Z',
    ];
    out.extend_from_slice(&buf);
}

/// Reads an RFC 3339 timestamp (any precision, any offset) as milliseconds.
pub fn parse(text: &str) -> Option<Millis> {
    text.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Seconds (a status update's `timestamp`) as milliseconds.
pub fn from_seconds(secs: f64) -> Millis {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0) as i64
    } else {
        now_millis()
    }
}

/// `d` as whole milliseconds, saturating.
pub fn duration_millis(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_marathon() {
        assert_eq!(format(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format(1_795_809_600_123), "2026-11-27T20:00:00.123Z");
    }

    #[test]
    fn write_is_format_without_allocating() {
        let mut samples = vec![
            0,
            1,
            999,
            86_399_999,
            86_400_000,
            951_782_400_000, // 2000-02-29
            1_795_809_600_123,
            4_107_542_399_999, // 2100-02-28T23:59:59.999
            4_107_542_400_000,
            FAST_END - 1,
            FAST_END,
            -1,
            -86_400_001,
            i64::MAX,
            i64::MIN,
        ];
        // A walk over four centuries in uneven steps.
        let mut t = 0i64;
        while t < 13_000_000_000_000 {
            samples.push(t);
            t += 7_919_993_377;
        }
        for ms in samples {
            let mut out = Vec::new();
            write(ms, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format(ms), "{ms}");
        }
    }

    #[test]
    fn round_trips() {
        let t = 1_795_809_600_123;
        assert_eq!(parse(&format(t)), Some(t));
        assert_eq!(parse("2026-11-27T21:00:00.123+01:00"), Some(t));
        assert_eq!(parse("yesterday"), None);
    }
}
