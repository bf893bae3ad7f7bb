use super::*;
use proptest::prelude::*;

const S: Duration = Duration::from_secs(1);

fn status(task: &str, agent: &str, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: task.into(),
        agent_id: agent.into(),
        state: state as i32,
        ..Default::default()
    }
}

fn pairs(list: &[(&str, &str)]) -> TrackerAction {
    TrackerAction::Reconcile(
        list.iter()
            .map(|(t, a)| (t.to_string(), a.to_string()))
            .collect(),
    )
}

fn kill(task: &str, agent: &str) -> TrackerAction {
    TrackerAction::Kill {
        task_id: task.into(),
        agent_id: agent.into(),
    }
}

#[test]
fn reconciles_with_backoff_until_every_task_answered() {
    let t0 = Instant::now();
    let mut t = TaskTracker::new(TrackerConfig::default());
    t.expect("a", Some("ag1".into()));
    t.expect("b", Some("ag1".into()));
    t.expect("c", None);
    assert!(!t.reconciled());
    assert_eq!(t.poll(t0), vec![]);

    t.on_subscribed(t0);
    assert_eq!(t.next_wakeup(), Some(t0));
    assert_eq!(
        t.poll(t0),
        vec![pairs(&[("a", "ag1"), ("b", "ag1"), ("c", "")])]
    );
    assert_eq!(t.poll(t0), vec![]);
    assert_eq!(
        t.on_update(&status("a", "ag1", TaskState::TaskRunning), t0),
        Observed::Known {
            prev_state: None,
            state: TaskState::TaskRunning
        }
    );
    t.on_update(&status("c", "ag2", TaskState::TaskRunning), t0);
    assert!(!t.reconciled());
    // Asked again after 1 s, then 2 s, 4 s ... for the silent one only.
    assert_eq!(t.next_wakeup(), Some(t0 + S));
    assert_eq!(t.poll(t0 + S / 2), vec![]);
    assert_eq!(t.poll(t0 + S), vec![pairs(&[("b", "ag1")])]);
    assert_eq!(t.next_wakeup(), Some(t0 + 3 * S));
    assert_eq!(t.poll(t0 + 2 * S), vec![]);
    assert_eq!(t.poll(t0 + 3 * S), vec![pairs(&[("b", "ag1")])]);
    assert_eq!(t.poll(t0 + 6 * S), vec![]);
    assert_eq!(t.poll(t0 + 7 * S), vec![pairs(&[("b", "ag1")])]);

    // The last answer ends the round; an implicit ask finds strangers.
    t.on_update(&status("b", "ag1", TaskState::TaskLost), t0 + 8 * S);
    assert!(t.reconciled());
    assert_eq!(t.next_wakeup(), Some(t0 + 8 * S));
    assert_eq!(t.poll(t0 + 8 * S), vec![TrackerAction::ReconcileAll]);
    assert_eq!(t.poll(t0 + 9 * S), vec![]);
    assert_eq!(t.state("b"), Some(TaskState::TaskLost));
    assert_eq!(t.state("c"), Some(TaskState::TaskRunning));
    // The agent learnt from an update is used from now on.
    t.on_subscribed(t0 + 10 * S);
    assert!(!t.reconciled());
    // b ended: it is not asked about again.
    assert_eq!(
        t.poll(t0 + 10 * S),
        vec![pairs(&[("a", "ag1"), ("c", "ag2")])]
    );
}

#[test]
fn the_backoff_is_capped() {
    let t0 = Instant::now();
    let config = TrackerConfig {
        reconcile_min: S,
        reconcile_max: 5 * S,
        ..TrackerConfig::default()
    };
    let mut t = TaskTracker::new(config);
    t.expect("a", Some("x".into()));
    t.on_subscribed(t0);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..6 {
        assert_eq!(t.poll(now).len(), 1);
        let next = t.next_wakeup().unwrap();
        waits.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(waits, vec![1, 2, 4, 5, 5, 5]);
}

#[test]
fn strangers_are_killed_until_they_end() {
    let t0 = Instant::now();
    let mut t = TaskTracker::new(TrackerConfig::default());
    t.on_subscribed(t0);
    assert_eq!(t.poll(t0), vec![TrackerAction::ReconcileAll]);
    assert!(t.reconciled());
    assert_eq!(
        t.on_update(&status("old", "ag", TaskState::TaskRunning), t0),
        Observed::Unknown
    );
    // A stranger that has ended needs nothing.
    assert_eq!(
        t.on_update(&status("gone", "ag", TaskState::TaskFinished), t0),
        Observed::Unknown
    );
    assert_eq!(t.poll(t0), vec![kill("old", "ag")]);
    assert_eq!(t.poll(t0 + S), vec![]);
    assert_eq!(t.poll(t0 + 2 * S), vec![kill("old", "ag")]);
    assert_eq!(t.poll(t0 + 5 * S), vec![]);
    assert_eq!(t.poll(t0 + 6 * S), vec![kill("old", "ag")]);
    t.on_update(&status("old", "ag", TaskState::TaskKilled), t0 + 7 * S);
    assert_eq!(t.killing(), 0);
    assert_eq!(t.poll(t0 + 100 * S), vec![]);
    assert!(!t.knows("old"));
}

#[test]
fn expecting_a_stranger_adopts_it() {
    let t0 = Instant::now();
    let mut t = TaskTracker::new(TrackerConfig::default());
    t.on_subscribed(t0);
    t.poll(t0);
    assert_eq!(
        t.on_update(&status("mine", "ag", TaskState::TaskRunning), t0),
        Observed::Unknown
    );
    t.expect("mine", Some("ag".into()));
    assert_eq!(t.poll(t0), vec![]);
    assert!(t.knows("mine"));
    assert_eq!(
        t.on_update(&status("mine", "ag", TaskState::TaskRunning), t0),
        Observed::Known {
            prev_state: None,
            state: TaskState::TaskRunning
        }
    );
}

#[test]
fn kills_are_retried_until_a_terminal_update() {
    let t0 = Instant::now();
    let config = TrackerConfig {
        kill_retry_min: 2 * S,
        kill_retry_max: 10 * S,
        ..TrackerConfig::default()
    };
    let mut t = TaskTracker::new(config);
    t.expect("web.1", Some("ag".into()));
    t.on_subscribed(t0);
    t.on_update(&status("web.1", "ag", TaskState::TaskRunning), t0);
    assert_eq!(t.poll(t0), vec![TrackerAction::ReconcileAll]);

    t.kill("web.1", t0);
    assert_eq!(t.poll(t0), vec![kill("web.1", "ag")]);
    let mut now = t0;
    let mut waits = Vec::new();
    for _ in 0..5 {
        let next = t.next_wakeup().unwrap();
        waits.push((next - now).as_secs());
        now = next;
        assert_eq!(t.poll(now), vec![kill("web.1", "ag")]);
    }
    assert_eq!(waits, vec![2, 4, 8, 10, 10]);
    // KILLING is not the end.
    t.on_update(&status("web.1", "ag", TaskState::TaskKilling), now);
    assert_eq!(t.killing(), 1);
    // A resubscription sends pending kills at once.
    let later = now + S;
    t.on_subscribed(later);
    assert_eq!(
        t.poll(later),
        vec![pairs(&[("web.1", "ag")]), kill("web.1", "ag")]
    );
    t.on_update(&status("web.1", "ag", TaskState::TaskKilled), later);
    assert_eq!(t.killing(), 0);
    assert_eq!(t.poll(later + 100 * S), vec![TrackerAction::ReconcileAll]);
    assert_eq!(t.state("web.1"), Some(TaskState::TaskKilled));
    t.forget("web.1");
    assert!(!t.knows("web.1"));
}

#[test]
fn forgetting_the_last_silent_task_ends_the_round() {
    let t0 = Instant::now();
    let mut t = TaskTracker::new(TrackerConfig::default());
    t.expect("a", None);
    t.on_subscribed(t0);
    assert_eq!(t.poll(t0).len(), 1);
    t.forget("a");
    assert!(t.next_wakeup().unwrap() <= t0 + S / 10);
    assert_eq!(t.poll(t0 + S / 10), vec![TrackerAction::ReconcileAll]);
    assert!(t.reconciled());
}

#[test]
fn reconciles_periodically() {
    let t0 = Instant::now();
    let config = TrackerConfig {
        periodic_reconcile: 60 * S,
        ..TrackerConfig::default()
    };
    let mut t = TaskTracker::new(config);
    t.expect("a", Some("ag".into()));
    t.on_subscribed(t0);
    t.poll(t0);
    t.on_update(&status("a", "ag", TaskState::TaskRunning), t0);
    assert_eq!(t.poll(t0), vec![TrackerAction::ReconcileAll]);
    assert_eq!(t.next_wakeup(), Some(t0 + 60 * S));
    assert_eq!(t.poll(t0 + 59 * S), vec![]);
    assert_eq!(t.poll(t0 + 60 * S), vec![pairs(&[("a", "ag")])]);
    // Still reconciled: a periodic round is not a new subscription.
    assert!(t.reconciled());
    t.on_update(&status("a", "ag", TaskState::TaskRunning), t0 + 61 * S);
    assert_eq!(t.poll(t0 + 61 * S), vec![TrackerAction::ReconcileAll]);
    assert_eq!(t.next_wakeup(), Some(t0 + 120 * S));
}

proptest! {
    /// Whatever happens: no kill is sent for a task whose terminal update
    /// came after the last kill request; reconciliation only asks about
    /// known, unended tasks; waits stay within [min, max].
    #[test]
    fn invariants_hold_under_any_event_order(events in proptest::collection::vec((0u8..6, 0u8..4, 0u8..4), 1..80)) {
        let t0 = Instant::now();
        let config = TrackerConfig {
            reconcile_min: S, reconcile_max: 8 * S,
            kill_retry_min: S, kill_retry_max: 8 * S,
            periodic_reconcile: 30 * S,
        };
        let mut t = TaskTracker::new(config);
        let mut now = t0;
        // task -> terminal since the last kill request
        let mut ended: HashMap<String, bool> = HashMap::new();
        let states = [TaskState::TaskRunning, TaskState::TaskStaging, TaskState::TaskFinished, TaskState::TaskKilled];
        for (what, task, arg) in events {
            let id = format!("t{task}");
            match what {
                0 => t.expect(&id, Some(format!("ag{arg}"))),
                1 => { t.kill(&id, now); ended.insert(id.clone(), false); }
                2 => {
                    let state = states[arg as usize];
                    let stranger = !t.knows(&id);
                    t.on_update(&status(&id, "ag", state), now);
                    if is_terminal(state) {
                        ended.insert(id.clone(), true);
                    } else if stranger {
                        // A running stranger is a kill request of its own.
                        ended.insert(id.clone(), false);
                    }
                }
                3 => t.on_subscribed(now),
                4 => t.forget(&id),
                _ => now += Duration::from_millis(u64::from(arg) * 700),
            }
            if let Some(next) = t.next_wakeup() {
                // A wakeup is never more than the longest wait away.
                prop_assert!(next <= now + 30 * S);
            }
            for action in t.poll(now) {
                match action {
                    TrackerAction::Kill { task_id, .. } => {
                        prop_assert!(!ended.get(&task_id).copied().unwrap_or(false), "kill after the end of {task_id}");
                    }
                    TrackerAction::Reconcile(pairs) => {
                        prop_assert!(!pairs.is_empty());
                        for (task_id, _) in pairs {
                            prop_assert!(t.knows(&task_id));
                            prop_assert!(!t.state(&task_id).is_some_and(is_terminal));
                        }
                    }
                    TrackerAction::ReconcileAll => {}
                }
            }
        }
    }
}
