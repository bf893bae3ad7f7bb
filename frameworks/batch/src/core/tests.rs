//! The core, driven by hand: time as a value, offers and updates made up.

use super::*;
use agora_proto::Resources;

struct H {
    core: Core,
    now: Now,
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn job(json: &str) -> JobSpec {
    let spec: JobSpec = serde_json::from_str(json).unwrap();
    spec.validate().unwrap();
    spec
}

fn offer(id: &str, agent: &str) -> v1::Offer {
    v1::Offer {
        id: id.into(),
        framework_id: "fw".into(),
        agent_id: agent.into(),
        hostname: format!("host-{agent}"),
        resources: Resources::parse("cpus:8;mem:8192;disk:1000")
            .unwrap()
            .to_proto(),
        role: "*".into(),
        agent_http_address: format!("{agent}:5051"),
        ..Default::default()
    }
}

fn status(task: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: task.into(),
        state: state as i32,
        agent_id: "a1".into(),
        exit_code: match state {
            TaskState::TaskFinished => Some(0),
            TaskState::TaskFailed => Some(1),
            _ => None,
        },
        ..Default::default()
    }
}

impl H {
    fn new() -> H {
        let now = Now {
            wall: ts("2025-03-01T10:00:00Z"),
            mono: Instant::now(),
        };
        let mut core = Core::load(CoreConfig::default(), vec![], vec![], vec![], now);
        core.on_subscribed(now);
        H { core, now }
    }

    fn advance(&mut self, secs: i64) {
        self.now.wall += SignedDuration::from_secs(secs);
        self.now.mono += Duration::from_secs(secs as u64);
    }

    fn cmd(&mut self, c: Command) -> (Effects, Result<Answer, Refusal>) {
        self.core.command(c, self.now)
    }

    fn create(&mut self, json: &str) {
        let (_, r) = self.cmd(Command::CreateJob(job(json)));
        r.unwrap();
    }

    fn run(&self, job: &str, run: &str) -> &Run {
        &self.core.jobs[job].runs[run]
    }

    fn runs(&self, job: &str) -> Vec<(String, RunStatus)> {
        self.core.jobs[job]
            .runs
            .values()
            .map(|r| (r.id.clone(), r.status))
            .collect()
    }

    /// Offers one agent; returns the launched task ids.
    fn launch(&mut self) -> Vec<String> {
        let fx = self.core.on_offers(&[offer("o1", "a1")], self.now);
        fx.launches
            .iter()
            .flat_map(|(_, ts)| ts.iter().map(|t| t.task_id.clone()))
            .collect()
    }

    fn update(&mut self, task: &str, state: TaskState) -> Effects {
        self.core.on_updates(&[status(task, state)], self.now)
    }

    /// Kills the tracker wants sent now.
    fn kills(&mut self) -> Vec<String> {
        self.core
            .tracker_mut()
            .poll(self.now.mono + Duration::from_secs(3600))
            .into_iter()
            .filter_map(|a| match a {
                agora_framework_kit::tracker::TrackerAction::Kill { task_id, .. } => Some(task_id),
                _ => None,
            })
            .collect()
    }
}

const EVERY_MINUTE: &str = r#"{"id": "report", "run": {"cmd": "echo hi", "cpus": 0.1, "mem": 32},
    "schedules": [{"id": "m", "cron": "* * * * *", "startingDeadlineSeconds": 30}]}"#;

#[test]
fn a_scheduled_time_makes_one_run_written_with_the_cursor_then_launched() {
    let mut h = H::new();
    h.create(EVERY_MINUTE);
    h.advance(59);
    assert!(h.core.tick(h.now).writes.is_empty());
    h.advance(1);
    let fx = h.core.tick(h.now);
    assert_eq!(
        fx.writes,
        [
            (
                Write::Run("report".into(), "20250301100100".into()),
                Expected::Absent
            ),
            (Write::Cursor("report".into(), "m".into()), Expected::Any),
        ]
    );
    assert!(fx.revive || !h.core.suppressed);
    // Deciding again at the same time makes nothing more.
    assert!(h.core.tick(h.now).writes.is_empty());

    let fx = h.core.on_offers(&[offer("o1", "a1")], h.now);
    // The run's new state is among the writes the runtime commits before
    // it sends the launch.
    assert!(fx.writes.contains(&(
        Write::Run("report".into(), "20250301100100".into()),
        Expected::Any
    )));
    let (offers, tasks) = &fx.launches[0];
    assert_eq!(offers, &["o1"]);
    assert_eq!(tasks[0].task_id, "report_20250301100100.1");
    assert_eq!(fx.lateness, [0.0]);
    let r = h.run("report", "20250301100100");
    assert_eq!(r.status, RunStatus::Starting);
    assert_eq!(r.tasks[0].agent_http_address, "a1:5051");

    h.update("report_20250301100100.1", TaskState::TaskRunning);
    assert_eq!(h.run("report", "20250301100100").status, RunStatus::Active);
    let fx = h.update("report_20250301100100.1", TaskState::TaskFinished);
    assert_eq!(fx.ended, [RunStatus::Success]);
    assert_eq!(h.run("report", "20250301100100").exit_code, Some(0));
    // Nothing waits: offers are declined and suppressed.
    let fx = h.core.on_offers(&[offer("o2", "a1")], h.now);
    assert!(fx.launches.is_empty());
    assert_eq!(fx.declines, ["o2"]);
}

#[test]
fn on_failure_retries_with_backoff_under_a_new_task_id() {
    let mut h = H::new();
    h.create(r#"{"id": "flaky", "run": {"cmd": "x", "restart": {"policy": "ON_FAILURE"}}}"#);
    let (_, r) = h.cmd(Command::StartRun {
        job: "flaky".into(),
        suffix: "abcde".into(),
    });
    let Answer::Run(run) = r.unwrap() else {
        panic!()
    };
    let t1 = h.launch();
    assert_eq!(t1, [format!("flaky_{}.1", run.id)]);
    h.update(&t1[0], TaskState::TaskFailed);
    let r = h.run("flaky", &run.id);
    assert_eq!(r.status, RunStatus::Initial);
    assert_eq!(
        r.next_attempt_at,
        Some(h.now.wall + SignedDuration::from_secs(1))
    );
    // Not before the backoff.
    assert!(h.launch().is_empty());
    h.advance(1);
    let t2 = h.launch();
    assert_eq!(t2, [format!("flaky_{}.2", run.id)]);
    h.update(&t2[0], TaskState::TaskFailed);
    // Second failure: 2 s.
    assert_eq!(
        h.run("flaky", &run.id).next_attempt_at,
        Some(h.now.wall + SignedDuration::from_secs(2))
    );
    h.advance(2);
    let t3 = h.launch();
    h.update(&t3[0], TaskState::TaskFinished);
    let r = h.run("flaky", &run.id);
    assert_eq!(r.status, RunStatus::Success);
    assert_eq!(r.tasks.len(), 3);
}

#[test]
fn never_fails_at_the_first_failure() {
    let mut h = H::new();
    h.create(r#"{"id": "once", "run": {"cmd": "x"}}"#);
    h.cmd(Command::StartRun {
        job: "once".into(),
        suffix: "aaaaa".into(),
    })
    .1
    .unwrap();
    let t = h.launch();
    h.update(&t[0], TaskState::TaskFailed);
    let r = &h.runs("once")[0];
    assert_eq!(r.1, RunStatus::Failed);
}

#[test]
fn forbid_skips_and_says_why_replace_stops_the_old_run() {
    let mut h = H::new();
    h.create(
        r#"{"id": "f", "run": {"cmd": "sleep 100"},
            "schedules": [{"id": "m", "cron": "* * * * *", "concurrencyPolicy": "FORBID"}]}"#,
    );
    h.create(
        r#"{"id": "r", "run": {"cmd": "sleep 100"},
            "schedules": [{"id": "m", "cron": "* * * * *", "concurrencyPolicy": "REPLACE"}]}"#,
    );
    h.advance(60);
    h.core.tick(h.now);
    let first = h.launch();
    assert_eq!(first.len(), 2);
    for t in &first {
        h.update(t, TaskState::TaskRunning);
    }
    h.advance(60);
    h.core.tick(h.now);
    assert_eq!(
        h.runs("f"),
        [
            ("20250301100100".to_string(), RunStatus::Active),
            ("20250301100200".to_string(), RunStatus::Skipped)
        ]
    );
    assert_eq!(
        h.run("f", "20250301100200").reason.as_deref(),
        Some("concurrencyPolicy FORBID: run 20250301100100 is still active")
    );
    // REPLACE: the old run is stopping (its task killed), the new one waits.
    let old = h.run("r", "20250301100100");
    assert_eq!(old.status, RunStatus::Active);
    assert!(
        old.stopping
            .as_deref()
            .unwrap()
            .contains("replaced by run 20250301100200")
    );
    assert_eq!(h.kills(), ["r_20250301100100.1"]);
    assert_eq!(h.run("r", "20250301100200").status, RunStatus::Initial);
    h.update("r_20250301100100.1", TaskState::TaskKilled);
    assert_eq!(h.run("r", "20250301100100").status, RunStatus::Failed);
}

#[test]
fn active_deadline_kills_the_run() {
    let mut h = H::new();
    h.create(
        r#"{"id": "slow", "run": {"cmd": "sleep 100", "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 5}}}"#,
    );
    h.cmd(Command::StartRun {
        job: "slow".into(),
        suffix: "aaaaa".into(),
    })
    .1
    .unwrap();
    let t = h.launch();
    h.update(&t[0], TaskState::TaskRunning);
    h.advance(4);
    h.core.tick(h.now);
    assert!(h.kills().is_empty());
    assert_eq!(
        h.core.next_wakeup(h.now),
        Some(h.now.wall + SignedDuration::from_secs(1))
    );
    h.advance(1);
    h.core.tick(h.now);
    assert_eq!(h.kills(), t);
    // Killed, it is not retried despite ON_FAILURE.
    h.update(&t[0], TaskState::TaskKilled);
    let r = &h.core.jobs["slow"].runs.values().next().unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert_eq!(
        r.reason.as_deref(),
        Some("exceeded activeDeadlineSeconds (5 s); its task was killed")
    );
}

#[test]
fn after_an_outage_recent_times_start_and_old_ones_are_recorded_missed() {
    let mut h = H::new();
    h.create(EVERY_MINUTE);
    // The leader dies; a new one loads the store three minutes later.
    let jobs = vec![h.core.jobs["report"].record.clone()];
    let cursors = vec![(
        "report".to_string(),
        "m".to_string(),
        Cursor {
            handled_until: h.now.wall,
        },
    )];
    h.advance(180 + 20);
    let mut core = Core::load(CoreConfig::default(), jobs, cursors, vec![], h.now);
    core.tick(h.now);
    let runs: Vec<(String, RunStatus)> = core.jobs["report"]
        .runs
        .values()
        .map(|r| (r.id.clone(), r.status))
        .collect();
    // 10:01 and 10:02 are past the 30 s deadline; 10:03 (20 s ago) starts.
    assert_eq!(
        runs,
        [
            ("20250301100100".to_string(), RunStatus::Missed),
            ("20250301100200".to_string(), RunStatus::Missed),
            ("20250301100300".to_string(), RunStatus::Initial),
        ]
    );
    let missed = &core.jobs["report"].runs["20250301100100"];
    assert!(
        missed
            .reason
            .as_deref()
            .unwrap()
            .contains("no batch leader was running at the scheduled time"),
        "{:?}",
        missed.reason
    );
}

#[test]
fn a_run_that_gets_no_offer_by_its_starting_deadline_is_missed() {
    let mut h = H::new();
    h.create(EVERY_MINUTE);
    h.advance(60);
    h.core.tick(h.now);
    h.advance(30);
    h.core.tick(h.now);
    assert_eq!(h.run("report", "20250301100100").status, RunStatus::Initial);
    h.advance(1);
    let fx = h.core.tick(h.now);
    assert!(fx.ended.contains(&RunStatus::Missed));
    let r = h.run("report", "20250301100100");
    assert_eq!(r.status, RunStatus::Missed);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("not launched within startingDeadlineSeconds (30 s)")
    );
}

#[test]
fn after_a_restart_a_known_task_is_found_not_launched_again() {
    let mut h = H::new();
    h.create(EVERY_MINUTE);
    h.advance(60);
    h.core.tick(h.now);
    let t = h.launch();
    // Restart: load the same records.
    let j = &h.core.jobs["report"];
    let runs: Vec<Run> = j.runs.values().cloned().collect();
    let mut core = Core::load(
        CoreConfig::default(),
        vec![j.record.clone()],
        vec![],
        runs,
        h.now,
    );
    core.on_subscribed(h.now);
    let actions = core.tracker_mut().poll(h.now.mono);
    assert!(
        actions.iter().any(|a| matches!(a,
            agora_framework_kit::tracker::TrackerAction::Reconcile(p) if p.iter().any(|(id, _)| id == &t[0]))),
        "{actions:?}"
    );
    // Nothing to launch while the run's task is out there.
    let fx = core.on_offers(&[offer("o9", "a1")], h.now);
    assert!(fx.launches.is_empty());
    // The master knows it: running.
    core.on_updates(&[status(&t[0], TaskState::TaskRunning)], h.now);
    assert_eq!(
        core.jobs["report"].runs["20250301100100"].status,
        RunStatus::Active
    );
}

#[test]
fn a_launch_the_master_never_got_is_launched_again_under_the_same_id() {
    let mut h = H::new();
    h.create(EVERY_MINUTE);
    h.advance(60);
    h.core.tick(h.now);
    let t = h.launch();
    let mut unknown = status(&t[0], TaskState::TaskUnknown);
    unknown.reason = v1::StatusReason::ReasonReconciliation as i32;
    h.core.on_updates(&[unknown], h.now);
    assert_eq!(h.run("report", "20250301100100").status, RunStatus::Initial);
    assert_eq!(h.launch(), t);
}

#[test]
fn an_unreachable_task_is_killed_and_replaced_under_on_failure() {
    let mut h = H::new();
    h.create(r#"{"id": "x", "run": {"cmd": "x", "restart": {"policy": "ON_FAILURE"}}}"#);
    h.cmd(Command::StartRun {
        job: "x".into(),
        suffix: "aaaaa".into(),
    })
    .1
    .unwrap();
    let t1 = h.launch();
    h.update(&t1[0], TaskState::TaskRunning);
    h.update(&t1[0], TaskState::TaskUnreachable);
    assert_eq!(h.kills(), t1);
    h.advance(1);
    let t2 = h.launch();
    assert!(t2[0].ends_with(".2"));
}

#[test]
fn dependencies_run_in_order_and_a_failure_skips_the_dependents() {
    let mut h = H::new();
    h.create(
        r#"{"id": "extract", "run": {"cmd": "x"}, "schedules": [{"id": "m", "cron": "* * * * *"}]}"#,
    );
    h.create(r#"{"id": "load", "run": {"cmd": "x"}, "dependencies": [{"id": "extract"}]}"#);
    h.create(r#"{"id": "report", "run": {"cmd": "x"}, "dependencies": [{"id": "load"}]}"#);
    h.advance(60);
    h.core.tick(h.now);
    let t = h.launch();
    assert_eq!(t, ["extract_20250301100100.1"]);
    assert!(h.core.jobs["load"].runs.is_empty());
    h.update(&t[0], TaskState::TaskFinished);
    h.core.tick(h.now);
    assert_eq!(
        h.runs("load"),
        [("20250301100100".to_string(), RunStatus::Initial)]
    );
    let t = h.launch();
    assert_eq!(t, ["load_20250301100100.1"]);
    h.update(&t[0], TaskState::TaskFailed);
    h.core.tick(h.now);
    let r = h.run("report", "20250301100100");
    assert_eq!(r.status, RunStatus::Skipped);
    assert_eq!(
        r.reason.as_deref(),
        Some("dependency load's run 20250301100100 ended FAILED")
    );
    assert!(matches!(r.trigger, Trigger::Dependencies));
}

#[test]
fn commands_refuse_what_cannot_be_and_store_nothing() {
    let mut h = H::new();
    h.create(r#"{"id": "a", "run": {"cmd": "x"}}"#);
    h.create(r#"{"id": "b", "run": {"cmd": "x"}, "dependencies": [{"id": "a"}]}"#);
    let (fx, r) = h.cmd(Command::CreateJob(job(
        r#"{"id": "a", "run": {"cmd": "y"}}"#,
    )));
    assert_eq!(r.unwrap_err().status, 409);
    assert!(fx.writes.is_empty());
    // A cycle: a -> b -> a.
    let (fx, r) = h.cmd(Command::ReplaceJob(
        "a".into(),
        job(r#"{"id": "a", "run": {"cmd": "x"}, "dependencies": [{"id": "b"}]}"#),
    ));
    let e = r.unwrap_err();
    assert_eq!(e.status, 422);
    assert_eq!(
        e.details[0].errors[0],
        "the dependencies would form a cycle: a -> b -> a"
    );
    assert!(fx.writes.is_empty());
    assert!(h.core.jobs["a"].record.spec.dependencies.is_empty());
    let (_, r) = h.cmd(Command::CreateJob(job(
        r#"{"id": "c", "run": {"cmd": "x"}, "dependencies": [{"id": "nope"}]}"#,
    )));
    assert_eq!(r.unwrap_err().status, 422);
    // Deleting a job others depend on.
    let (_, r) = h.cmd(Command::DeleteJob {
        job: "a".into(),
        stop_runs: false,
    });
    let e = r.unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (409, "job b depends on Job 'a': change or delete it first")
    );
    // Active runs need stopCurrentJobRuns.
    h.cmd(Command::StartRun {
        job: "b".into(),
        suffix: "aaaaa".into(),
    })
    .1
    .unwrap();
    let (_, r) = h.cmd(Command::DeleteJob {
        job: "b".into(),
        stop_runs: false,
    });
    assert_eq!(r.unwrap_err().status, 409);
    let (fx, r) = h.cmd(Command::DeleteJob {
        job: "b".into(),
        stop_runs: true,
    });
    r.unwrap();
    assert!(
        fx.writes
            .iter()
            .any(|(w, _)| w == &Write::Delete("jobs/b".into()))
    );
    assert!(!h.core.jobs.contains_key("b"));
    // Unknown things are 404.
    for c in [
        Command::StartRun {
            job: "zz".into(),
            suffix: "x".into(),
        },
        Command::StopRun {
            job: "a".into(),
            run: "nope".into(),
        },
        Command::DeleteSchedule("a".into(), "nope".into()),
    ] {
        assert_eq!(h.cmd(c).1.unwrap_err().status, 404);
    }
}

#[test]
fn a_new_or_changed_schedule_starts_from_now() {
    let mut h = H::new();
    h.create(r#"{"id": "a", "run": {"cmd": "x"}}"#);
    h.advance(3600);
    let s: ScheduleSpec = serde_json::from_str(r#"{"id": "m", "cron": "* * * * *"}"#).unwrap();
    h.cmd(Command::AddSchedule("a".into(), s)).1.unwrap();
    h.core.tick(h.now);
    // No run for the hour before the schedule existed.
    assert!(h.core.jobs["a"].runs.is_empty());
    assert_eq!(h.core.jobs["a"].cursors["m"], h.now.wall);
}

#[test]
fn history_keeps_the_newest_runs() {
    let mut h = H::new();
    h.core.config.history_count = 3;
    h.create(r#"{"id": "a", "run": {"cmd": "x"}}"#);
    for i in 0..5 {
        h.cmd(Command::StartRun {
            job: "a".into(),
            suffix: format!("aaaa{i}"),
        })
        .1
        .unwrap();
        let t = h.launch();
        h.update(&t[0], TaskState::TaskFinished);
        h.advance(1);
    }
    let fx = h.core.tick(h.now);
    assert_eq!(
        fx.writes
            .iter()
            .filter(|(w, _)| matches!(w, Write::Delete(_)))
            .count(),
        2
    );
    let kept: Vec<String> = h.core.jobs["a"].runs.keys().cloned().collect();
    assert_eq!(
        kept,
        [
            "20250301100002aaaa2",
            "20250301100003aaaa3",
            "20250301100004aaaa4"
        ]
    );
}

#[test]
fn a_stopped_run_kills_its_task_and_ends_failed() {
    let mut h = H::new();
    h.create(r#"{"id": "a", "run": {"cmd": "x"}}"#);
    let Answer::Run(run) = h
        .cmd(Command::StartRun {
            job: "a".into(),
            suffix: "aaaaa".into(),
        })
        .1
        .unwrap()
    else {
        panic!()
    };
    let t = h.launch();
    h.update(&t[0], TaskState::TaskRunning);
    h.cmd(Command::StopRun {
        job: "a".into(),
        run: run.id.clone(),
    })
    .1
    .unwrap();
    assert_eq!(h.kills(), t);
    h.update(&t[0], TaskState::TaskKilled);
    let r = h.run("a", &run.id);
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (RunStatus::Failed, Some("stopped by a user"))
    );
    // Stopping it again: it has ended.
    let (_, again) = h.cmd(Command::StopRun {
        job: "a".into(),
        run: run.id,
    });
    assert_eq!(again.unwrap_err().status, 409);
}

#[test]
fn a_new_subscription_says_whether_offers_are_wanted() {
    let mut h = H::new();
    // Nothing waits: suppressed at once (the master may remember an
    // earlier instance's state either way).
    assert!(h.core.on_subscribed(h.now).suppress);
    h.create(r#"{"id": "a", "run": {"cmd": "x"}}"#);
    h.cmd(Command::StartRun {
        job: "a".into(),
        suffix: "aaaaa".into(),
    })
    .1
    .unwrap();
    let fx = h.core.on_subscribed(h.now);
    assert!(fx.revive && !fx.suppress);
}
