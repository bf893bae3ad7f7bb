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
    fn round_trips() {
        let t = 1_795_809_600_123;
        assert_eq!(parse(&format(t)), Some(t));
        assert_eq!(parse("2026-11-27T21:00:00.123+01:00"), Some(t));
        assert_eq!(parse("yesterday"), None);
    }
}
