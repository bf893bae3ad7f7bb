//! What the batch framework keeps in its Store, and under which keys.
//!
//! | key | value |
//! | --- | --- |
//! | `framework-id` | the framework id (the kit's session) |
//! | `jobs/<job>` | [`JobRecord`]: the spec and its schedules |
//! | `cursors/<job>:<schedule>` | [`Cursor`]: the last scheduled time handled |
//! | `runs.<job>/<run>` | [`crate::run::Run`]: one run and its attempts |
//!
//! Runs live in one bucket per job, so listing a job's history reads only
//! its own runs (in ZooKeeper: one node's children). A cursor moves in the
//! same atomic write that records the runs of the times it passes.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::spec::{JobSpec, ScheduleSpec};

pub const JOBS: &str = "jobs/";
pub const CURSORS: &str = "cursors/";
pub const RUNS: &str = "runs.";
/// Where the kit's session keeps the framework id.
pub const FRAMEWORK_ID: &str = "framework-id";

pub fn job_key(job: &str) -> String {
    format!("{JOBS}{job}")
}

pub fn cursor_key(job: &str, schedule: &str) -> String {
    format!("{CURSORS}{job}:{schedule}")
}

/// `(job, schedule)` of a cursor key.
pub fn parse_cursor_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(CURSORS)?.rsplit_once(':')
}

/// The prefix of a job's runs.
pub fn runs_prefix(job: &str) -> String {
    format!("{RUNS}{job}/")
}

pub fn run_key(job: &str, run: &str) -> String {
    format!("{RUNS}{job}/{run}")
}

/// A job as stored: its spec (without schedules) and its schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub spec: JobSpec,
    pub schedules: Vec<ScheduleSpec>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Runs of the jobs this one depends on that ended before this time do
    /// not start it (they ended before the dependency existed).
    pub dependencies_since: Timestamp,
}

/// How far a schedule's times are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// Every scheduled time at or before this has a run or a record.
    pub handled_until: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(job_key("a.b"), "jobs/a.b");
        assert_eq!(cursor_key("a.b", "daily"), "cursors/a.b:daily");
        assert_eq!(
            parse_cursor_key("cursors/a.b:daily"),
            Some(("a.b", "daily"))
        );
        assert_eq!(parse_cursor_key("jobs/a"), None);
        assert_eq!(run_key("a.b", "20250101000000"), "runs.a.b/20250101000000");
        assert!(run_key("a", "1").starts_with(&runs_prefix("a")));
        // One job's runs are not another's whose id extends it.
        assert!(!run_key("ab", "1").starts_with(&runs_prefix("a")));
        assert!(!run_key("a.b", "1").starts_with(&runs_prefix("a")));
    }
}
