//! What one task's check results mean: pure state, no I/O and no clock
//! (how long the task has run comes in with each result).
//!
//! Health (per check, then for the task):
//! * a success ends the check's grace period for good, resets its failure
//!   count and marks it passing;
//! * a failure while the check has never passed and the task has run less
//!   than the grace period is ignored; any other failure marks the check
//!   failing and counts;
//! * the task is healthy when every check passes, unhealthy as soon as one
//!   fails, and has no verdict before that;
//! * the task's health is reported when it changes (never before the first
//!   verdict);
//! * a check with `kill_on_failure` that has failed `consecutive_failures`
//!   times in a row kills the task.
//!
//! Readiness: each readiness check runs until it first succeeds; the task is
//! ready once all have, and stays ready.

use std::time::Duration;

use agora_proto::health::TaskChecks;

/// The result of one run of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CheckResult {
    /// It passed (the detail says how: "answered 200").
    Passed(String),
    /// It failed (the cause says why: "answered 503", "timed out after 1s").
    Failed(String),
}

/// What a result changes that the agent must act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The task's health changed: report it (with this message).
    pub health: Option<(bool, String)>,
    /// Kill the task, for this reason.
    pub kill: Option<String>,
    /// The check passed for the first time (its grace period is over; the
    /// agent checkpoints this so a restart does not grant a new one).
    pub first_pass: bool,
    /// The task became ready: report it (with this message).
    pub ready: Option<String>,
    /// The readiness check is done (it succeeded) and runs no more.
    pub done: bool,
}

#[derive(Clone, Debug)]
struct HealthState {
    label: String,
    grace_period: Duration,
    limit: u32,
    kill_on_failure: bool,
    passed_once: bool,
    failures: u32,
    /// The latest result that counted: `None` before the first one.
    passing: Option<bool>,
}

/// The checks of one task.
#[derive(Clone, Debug)]
pub(crate) struct Verdict {
    health: Vec<HealthState>,
    ready: Vec<(String, bool)>,
    /// The health last reported.
    reported_healthy: Option<bool>,
    /// The readiness last reported.
    reported_ready: Option<bool>,
}

impl Verdict {
    /// The state of a task's checks. After an agent restart, `passed` says
    /// which health checks had passed before, and `healthy` / `ready` what
    /// was last reported (from the task's latest status update).
    pub fn new(
        checks: &TaskChecks,
        passed: &[bool],
        healthy: Option<bool>,
        ready: Option<bool>,
    ) -> Verdict {
        let numbered = checks.health.len() > 1;
        let health = checks
            .health
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let label = if numbered {
                    format!("health check {} ({})", i + 1, c.probe)
                } else {
                    format!("health check ({})", c.probe)
                };
                // Reported healthy: every check had passed.
                let passed_once = healthy == Some(true) || passed.get(i).copied().unwrap_or(false);
                HealthState {
                    label,
                    grace_period: c.grace_period,
                    limit: c.consecutive_failures.max(1),
                    kill_on_failure: c.kill_on_failure,
                    passed_once,
                    failures: 0,
                    passing: (healthy == Some(true)).then_some(true),
                }
            })
            .collect();
        let numbered = checks.readiness.len() > 1;
        let was_ready = ready == Some(true);
        let readiness = checks
            .readiness
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let label = if numbered {
                    format!(
                        "readiness check {} (GET {}://127.0.0.1:{}{})",
                        i + 1,
                        c.probe.scheme.as_str(),
                        c.probe.port,
                        c.probe.path
                    )
                } else {
                    format!(
                        "readiness check (GET {}://127.0.0.1:{}{})",
                        c.probe.scheme.as_str(),
                        c.probe.port,
                        c.probe.path
                    )
                };
                (label, was_ready)
            })
            .collect();
        Verdict {
            health,
            ready: readiness,
            reported_healthy: healthy,
            reported_ready: (!checks.readiness.is_empty()).then_some(was_ready),
        }
    }

    /// The task's health now: unhealthy if a check fails, healthy if all
    /// pass, no verdict otherwise.
    pub fn healthy(&self) -> Option<bool> {
        if self.health.iter().any(|c| c.passing == Some(false)) {
            Some(false)
        } else if !self.health.is_empty() && self.health.iter().all(|c| c.passing == Some(true)) {
            Some(true)
        } else {
            None
        }
    }

    /// Whether the task is ready: `None` without readiness checks.
    #[cfg(test)]
    pub fn ready(&self) -> Option<bool> {
        self.reported_ready
    }

    /// Whether health check `i` is in its grace period (never passed, and
    /// the task has run less than the period).
    pub fn in_grace(&self, i: usize, running_for: Duration) -> bool {
        self.health
            .get(i)
            .is_some_and(|c| !c.passed_once && running_for < c.grace_period)
    }

    /// Whether readiness check `i` still has to run.
    pub fn readiness_pending(&self, i: usize) -> bool {
        self.ready.get(i).is_some_and(|(_, ok)| !ok)
    }

    /// Records a result of health check `i`, `running_for` after the task
    /// started running.
    pub fn record_health(
        &mut self,
        i: usize,
        result: CheckResult,
        running_for: Duration,
    ) -> Decision {
        let mut d = Decision::default();
        let in_grace = self.in_grace(i, running_for);
        let Some(c) = self.health.get_mut(i) else {
            return d;
        };
        let message = match result {
            CheckResult::Passed(detail) => {
                d.first_pass = !c.passed_once;
                c.passed_once = true;
                c.failures = 0;
                c.passing = Some(true);
                format!("The {} passed: {detail}", c.label)
            }
            CheckResult::Failed(_) if in_grace => return d,
            CheckResult::Failed(cause) => {
                c.failures = c.failures.saturating_add(1);
                c.passing = Some(false);
                if c.kill_on_failure && c.failures >= c.limit {
                    d.kill = Some(format!(
                        "its {} failed {} time{} in a row (last: {cause})",
                        c.label,
                        c.failures,
                        if c.failures == 1 { "" } else { "s" }
                    ));
                }
                format!("The {} failed: {cause}", c.label)
            }
        };
        let now = self.healthy();
        if now.is_some() && now != self.reported_healthy {
            self.reported_healthy = now;
            d.health = now.map(|h| (h, message));
        }
        d
    }

    /// Records a result of readiness check `i`.
    pub fn record_readiness(&mut self, i: usize, result: CheckResult) -> Decision {
        let mut d = Decision::default();
        let Some((label, ok)) = self.ready.get_mut(i) else {
            return d;
        };
        let CheckResult::Passed(detail) = result else {
            return d;
        };
        *ok = true;
        d.done = true;
        let message = format!("The {label} passed: {detail}");
        if self.ready.iter().all(|(_, ok)| *ok) && self.reported_ready != Some(true) {
            self.reported_ready = Some(true);
            d.ready = Some(message);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agora_proto::health::{
        HttpProbe, Probe, ResolvedHealthCheck, ResolvedReadinessCheck, Scheme, Statuses,
    };
    use proptest::prelude::*;

    fn check(grace: u64, limit: u32, kill: bool) -> ResolvedHealthCheck {
        ResolvedHealthCheck {
            probe: Probe::Tcp { port: 31000 },
            delay: Duration::ZERO,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            grace_period: Duration::from_secs(grace),
            consecutive_failures: limit,
            kill_on_failure: kill,
        }
    }

    fn checks(health: Vec<ResolvedHealthCheck>, readiness: usize) -> TaskChecks {
        TaskChecks {
            health,
            readiness: (0..readiness)
                .map(|_| ResolvedReadinessCheck {
                    probe: HttpProbe {
                        scheme: Scheme::Http,
                        port: 31000,
                        path: "/ready".into(),
                        statuses: Statuses::Listed(vec![200]),
                    },
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                })
                .collect(),
        }
    }

    fn pass() -> CheckResult {
        CheckResult::Passed("connected".into())
    }

    fn fail() -> CheckResult {
        CheckResult::Failed("connection refused".into())
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_grace_period_holds_failures_until_the_first_pass() {
        let mut v = Verdict::new(&checks(vec![check(10, 1, true)], 0), &[], None, None);
        // Failures within the grace period change nothing.
        assert_eq!(v.record_health(0, fail(), S(3)), Decision::default());
        assert_eq!(v.healthy(), None);
        // The first pass is reported, and ends the grace period.
        let d = v.record_health(0, pass(), S(4));
        assert!(d.first_pass);
        let (healthy, message) = d.health.unwrap();
        assert!(healthy);
        assert_eq!(
            message,
            "The health check (TCP 127.0.0.1:31000) passed: connected"
        );
        // Now one failure (the limit is 1) kills, even within the period.
        let d = v.record_health(0, fail(), S(5));
        assert!(!d.health.unwrap().0);
        let kill = d.kill.unwrap();
        assert_eq!(
            kill,
            "its health check (TCP 127.0.0.1:31000) failed 1 time in a row (last: connection refused)"
        );
    }

    #[test]
    fn a_slow_starter_is_killed_only_after_its_grace_period() {
        let mut v = Verdict::new(&checks(vec![check(10, 3, true)], 0), &[], None, None);
        for t in 0..10 {
            assert_eq!(v.record_health(0, fail(), S(t)), Decision::default());
        }
        let d = v.record_health(0, fail(), S(10));
        assert_eq!(
            d.health.as_ref().map(|h| h.0),
            Some(false),
            "reported unhealthy at once"
        );
        assert!(d.kill.is_none());
        let d = v.record_health(0, fail(), S(11));
        assert!(d.health.is_none(), "no change: nothing to report");
        assert!(d.kill.is_none());
        assert!(
            v.record_health(0, fail(), S(12))
                .kill
                .unwrap()
                .contains("3 times in a row")
        );
    }

    #[test]
    fn without_kill_on_failure_the_task_is_only_unhealthy() {
        let mut v = Verdict::new(&checks(vec![check(0, 1, false)], 0), &[], None, None);
        for t in 0..5 {
            let d = v.record_health(0, fail(), S(t));
            assert!(d.kill.is_none());
            assert_eq!(d.health.is_some(), t == 0);
        }
        // Back to healthy when it passes again; the count starts over.
        assert!(v.record_health(0, pass(), S(6)).health.unwrap().0);
    }

    #[test]
    fn every_check_must_pass_for_the_task_to_be_healthy() {
        let mut v = Verdict::new(
            &checks(vec![check(0, 3, true), check(0, 3, true)], 0),
            &[],
            None,
            None,
        );
        assert!(
            v.record_health(0, pass(), S(1)).health.is_none(),
            "check 2 has no result yet"
        );
        let d = v.record_health(1, pass(), S(1));
        let (healthy, message) = d.health.unwrap();
        assert!(healthy);
        assert!(message.starts_with("The health check 2 (TCP"), "{message}");
        assert!(!v.record_health(0, fail(), S(2)).health.unwrap().0);
        assert!(
            v.record_health(1, pass(), S(2)).health.is_none(),
            "check 1 still fails"
        );
        assert!(v.record_health(0, pass(), S(3)).health.unwrap().0);
    }

    #[test]
    fn a_restart_keeps_the_grace_period_and_the_reported_health() {
        let c = checks(vec![check(100, 3, true)], 0);
        // The check had passed before the restart: no new grace period.
        let mut v = Verdict::new(&c, &[true], None, None);
        assert!(!v.in_grace(0, S(1)));
        assert!(!v.record_health(0, fail(), S(1)).health.unwrap().0);
        // Reported unhealthy before: another failure is no news.
        let mut v = Verdict::new(&c, &[true], Some(false), None);
        assert!(v.record_health(0, fail(), S(1)).health.is_none());
        assert!(v.record_health(0, pass(), S(2)).health.unwrap().0);
        // Reported healthy before: a pass is no news.
        let mut v = Verdict::new(&c, &[], Some(true), None);
        assert_eq!(v.healthy(), Some(true));
        assert!(v.record_health(0, pass(), S(1)).health.is_none());
    }

    #[test]
    fn readiness_is_reached_once_every_check_succeeded_and_kept() {
        let mut v = Verdict::new(&checks(vec![], 2), &[], None, None);
        assert_eq!(v.ready(), Some(false));
        assert_eq!(v.record_readiness(0, fail()), Decision::default());
        let d = v.record_readiness(0, pass());
        assert!(d.done && d.ready.is_none());
        assert!(!v.readiness_pending(0) && v.readiness_pending(1));
        let d = v.record_readiness(1, pass());
        assert!(
            d.ready
                .unwrap()
                .starts_with("The readiness check 2 (GET http://127.0.0.1:31000/ready) passed")
        );
        assert_eq!(v.ready(), Some(true));
        // Ready before a restart: nothing left to run.
        let v = Verdict::new(&checks(vec![], 1), &[], None, Some(true));
        assert!(!v.readiness_pending(0));
        assert_eq!(v.ready(), Some(true));
        assert_eq!(
            Verdict::new(&checks(vec![], 0), &[], None, None).ready(),
            None
        );
    }

    proptest! {
        /// Whatever the results, a kill comes only after `limit` failures
        /// in a row outside the grace period, health is reported only when
        /// it changes, and the reported health is always the verdict.
        #[test]
        fn kills_and_reports_follow_the_rules(
            results in proptest::collection::vec((any::<bool>(), 0u64..20), 1..60),
            limit in 1u32..5,
            grace in 0u64..10,
        ) {
            let mut v = Verdict::new(&checks(vec![check(grace, limit, true)], 0), &[], None, None);
            let mut last_reported = None;
            let mut run = 0u32;
            let mut passed = false;
            let mut t = 0;
            for (ok, dt) in results {
                t += dt;
                let d = v.record_health(0, if ok { pass() } else { fail() }, S(t));
                if ok {
                    passed = true;
                    run = 0;
                } else if passed || t >= grace {
                    run += 1;
                }
                prop_assert_eq!(d.kill.is_some(), !ok && run >= limit);
                if let Some((h, _)) = d.health {
                    prop_assert_ne!(Some(h), last_reported);
                    last_reported = Some(h);
                }
                if last_reported.is_some() {
                    prop_assert_eq!(v.healthy(), last_reported);
                }
            }
        }
    }
}
