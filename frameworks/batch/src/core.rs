//! The batch framework's state and every decision over it, sans I/O.
//!
//! The [`Core`] takes what happens (a tick of the clock, offers, task
//! updates, API commands, a new subscription), changes its state, and
//! answers with [`Effects`]: the Store writes to make, and what to send to
//! the master once those writes are durable. The runtime
//! ([`crate::runtime`]) commits the writes first and only then launches,
//! replies or acknowledges; when a write fails it drops the core and loads
//! a fresh one from the Store. Time comes in as a value ([`Now`]), so tests
//! drive hours of schedules in microseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use agora_coord::Expected;
use agora_framework_kit::backoff;
use agora_framework_kit::constraints::Constraint;
use agora_framework_kit::matcher::{self, PlacedIndex};
use agora_framework_kit::tracker::{Observed, TaskTracker, TrackerConfig};
use agora_proto::v1::{self, TaskState, TaskStatus};
use jiff::{SignedDuration, Timestamp};

use crate::cron::CronSchedule;
use crate::due::{MissedRange, due};
use crate::graph::{self, GraphError};
use crate::launch;
use crate::layout::{self, Cursor, JobRecord};
use crate::run::{
    self, Run, RunEvent, RunStatus, Trigger, manual_run_id, parse_task_id, scheduled_run_id,
};
use crate::spec::{ConcurrencyPolicy, FieldError, JobSpec, RestartPolicy, ScheduleSpec};

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The role whose resources runs use.
    pub role: String,
    /// Ended runs kept per job (the newest).
    pub history_count: usize,
    /// Ended runs older than this are removed.
    pub history_age: Duration,
    /// ON_FAILURE retries wait `base * factor^(failures-1)`, at most `max`.
    pub backoff_base: Duration,
    pub backoff_factor: f64,
    pub backoff_max: Duration,
    pub tracker: TrackerConfig,
}

impl Default for CoreConfig {
    fn default() -> CoreConfig {
        CoreConfig {
            role: "*".into(),
            history_count: 10,
            history_age: Duration::from_secs(7 * 24 * 3600),
            backoff_base: Duration::from_secs(1),
            backoff_factor: 2.0,
            backoff_max: Duration::from_secs(60),
            tracker: TrackerConfig::default(),
        }
    }
}

/// The time, as the core sees it: the wall clock for schedules and the
/// records, the monotonic clock for retries of reconciliation and kills.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub wall: Timestamp,
    pub mono: Instant,
}

impl Now {
    pub fn read() -> Now {
        Now {
            wall: Timestamp::now(),
            mono: Instant::now(),
        }
    }
}

/// A value to write (or delete), named by what it is; the runtime reads the
/// value from the core when it commits, so a key is written once per
/// commit with its latest value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Write {
    Job(String),
    Cursor(String, String),
    Run(String, String),
    Delete(String),
}

impl Write {
    pub fn key(&self) -> String {
        match self {
            Write::Job(j) => layout::job_key(j),
            Write::Cursor(j, s) => layout::cursor_key(j, s),
            Write::Run(j, r) => layout::run_key(j, r),
            Write::Delete(k) => k.clone(),
        }
    }
}

/// What the runtime does after a step, in this order: write (all or
/// nothing, or the core is reloaded), then launch, decline, revive or
/// suppress, acknowledge, reply and publish.
#[derive(Debug, Default)]
pub struct Effects {
    /// Writes, each key once, with whether it must be new.
    pub writes: Vec<(Write, Expected)>,
    /// The index in `writes` of each key written.
    written: HashMap<String, usize>,
    /// Accepts: the offers (one agent) and the tasks to launch on them.
    pub launches: Vec<(Vec<String>, Vec<v1::TaskInfo>)>,
    pub declines: Vec<String>,
    pub revive: bool,
    pub suppress: bool,
    /// Runs that changed (for the event stream).
    pub changed_runs: Vec<(String, String)>,
    /// Jobs created, changed or deleted: `(kind, job)`.
    pub job_events: Vec<(&'static str, String)>,
    /// Seconds from scheduled time to first launch, per launched run.
    pub lateness: Vec<f64>,
    /// Runs that ended, by status.
    pub ended: Vec<RunStatus>,
}

impl Effects {
    fn write(&mut self, w: Write, expected: Expected) {
        // One write per key: a later write of the same key (a run deleted
        // after it changed, a job created again after its delete) takes the
        // earlier one's place and keeps its condition.
        match self.written.get(&w.key()) {
            Some(&i) => self.writes[i].0 = w,
            None => {
                self.written.insert(w.key(), self.writes.len());
                self.writes.push((w, expected));
            }
        }
    }

    fn run_changed(&mut self, job: &str, run: &str, created: bool) {
        let w = Write::Run(job.to_string(), run.to_string());
        self.write(
            w,
            if created {
                Expected::Absent
            } else {
                Expected::Any
            },
        );
        self.changed_runs.push((job.to_string(), run.to_string()));
    }

    /// Appends what a later step decided: the writes of both (each key
    /// once, with the condition of its first write), every launch and
    /// decline in order, and the later step's revive or suppress.
    pub fn merge(&mut self, later: Effects) {
        for (w, expected) in later.writes {
            self.write(w, expected);
        }
        self.launches.extend(later.launches);
        self.declines.extend(later.declines);
        if later.revive {
            self.revive = true;
            self.suppress = false;
        }
        if later.suppress {
            self.suppress = true;
            self.revive = false;
        }
        self.changed_runs.extend(later.changed_runs);
        self.job_events.extend(later.job_events);
        self.lateness.extend(later.lateness);
        self.ended.extend(later.ended);
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.launches.is_empty()
            && self.declines.is_empty()
            && !self.revive
            && !self.suppress
    }
}

/// A refused API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 404, 409 or 422.
    pub status: u16,
    pub message: String,
    pub details: Vec<FieldError>,
}

impl Refusal {
    fn not_found(message: String) -> Refusal {
        Refusal {
            status: 404,
            message,
            details: Vec::new(),
        }
    }
    fn conflict(message: String) -> Refusal {
        Refusal {
            status: 409,
            message,
            details: Vec::new(),
        }
    }
    fn invalid(path: &str, message: String) -> Refusal {
        Refusal {
            status: 422,
            message: "Object is not valid".into(),
            details: vec![FieldError {
                path: path.into(),
                errors: vec![message],
            }],
        }
    }
}

/// What the API asks the core to change (read-only requests read the core
/// directly).
#[derive(Debug, Clone)]
pub enum Command {
    CreateJob(JobSpec),
    ReplaceJob(String, JobSpec),
    DeleteJob {
        job: String,
        stop_runs: bool,
    },
    AddSchedule(String, ScheduleSpec),
    ReplaceSchedule(String, String, ScheduleSpec),
    DeleteSchedule(String, String),
    /// Run now; `suffix`: five random characters for the run id.
    StartRun {
        job: String,
        suffix: String,
    },
    StopRun {
        job: String,
        run: String,
    },
}

/// What a successful command answers.
#[derive(Debug, Clone)]
pub enum Answer {
    Job(Box<JobRecord>),
    Schedule(ScheduleSpec),
    Run(Box<Run>),
    Done,
}

/// One job and everything the core keeps about it.
#[derive(Debug, Clone)]
pub struct JobState {
    pub record: JobRecord,
    crons: BTreeMap<String, CronSchedule>,
    constraints: Vec<Constraint>,
    pub cursors: BTreeMap<String, Timestamp>,
    /// Runs by id (ids start with the time, so roughly oldest first).
    pub runs: BTreeMap<String, Run>,
}

impl JobState {
    fn new(record: JobRecord) -> Result<JobState, String> {
        let mut crons = BTreeMap::new();
        for s in &record.schedules {
            let cron = s.cron_schedule().map_err(|e| e.to_string())?;
            crons.insert(s.id.clone(), cron);
        }
        let constraints = launch::constraints(&record.spec.run).map_err(|(_, e)| e)?;
        Ok(JobState {
            record,
            crons,
            constraints,
            cursors: BTreeMap::new(),
            runs: BTreeMap::new(),
        })
    }

    /// Runs not ended.
    pub fn active_runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.values().filter(|r| r.status.is_active())
    }
}

/// The state of the batch framework while it leads.
pub struct Core {
    config: CoreConfig,
    pub jobs: BTreeMap<String, JobState>,
    tracker: TaskTracker,
    /// When this core started: scheduled times before it passed while no
    /// leader ran.
    started: Timestamp,
    subscribed: bool,
    suppressed: bool,
    /// Why waiting runs found no offer (`job/run` -> the matcher's reason).
    waiting: HashMap<String, String>,
    /// Indexes, so that a step costs what it touches rather than every job
    /// and run (10,000 jobs firing every minute): each enabled schedule's
    /// next time to act, `(when, job, schedule)` ...
    fires: BTreeSet<(Timestamp, String, String)>,
    /// ... and the entries of each job in it;
    fire_at: HashMap<String, Vec<(String, Timestamp)>>,
    /// runs not ended, `(job, run)`;
    active: BTreeSet<(String, String)>,
    /// runs ended whose dependents have not been told;
    unnotified: BTreeSet<(String, String)>,
    /// jobs with runs ended since their history was last pruned;
    prune_pending: BTreeSet<String>,
    /// and when every job's history was last pruned by age.
    last_sweep: Option<Timestamp>,
}

/// How often every job's history is checked for runs past the age limit.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(60);

impl Core {
    /// A core for what the Store holds. Records that cannot be used
    /// (a job whose schedule no longer parses) are skipped with a warning.
    pub fn load(
        config: CoreConfig,
        jobs: Vec<JobRecord>,
        cursors: Vec<(String, String, Cursor)>,
        runs: Vec<Run>,
        now: Now,
    ) -> Core {
        let mut core = Core {
            tracker: TaskTracker::new(config.tracker),
            config,
            jobs: BTreeMap::new(),
            started: now.wall,
            subscribed: false,
            suppressed: false,
            waiting: HashMap::new(),
            fires: BTreeSet::new(),
            fire_at: HashMap::new(),
            active: BTreeSet::new(),
            unnotified: BTreeSet::new(),
            prune_pending: BTreeSet::new(),
            last_sweep: None,
        };
        for record in jobs {
            let id = record.spec.id.clone();
            match JobState::new(record) {
                Ok(state) => {
                    core.jobs.insert(id, state);
                }
                Err(e) => tracing::warn!(job = %id, "cannot use the stored job: {e}"),
            }
        }
        for (job, schedule, cursor) in cursors {
            if let Some(j) = core.jobs.get_mut(&job) {
                j.cursors.insert(schedule, cursor.handled_until);
            }
        }
        for run in runs {
            let Some(j) = core.jobs.get_mut(&run.job_id) else {
                continue;
            };
            if matches!(run.status, RunStatus::Starting | RunStatus::Active)
                && let Some(t) = run.current_task()
            {
                let agent = Some(t.agent_id.clone()).filter(|a| !a.is_empty());
                core.tracker.expect(&t.id, agent);
            }
            let (job, id) = (run.job_id.clone(), run.id.clone());
            j.runs.insert(id.clone(), run);
            core.sync_run(&job, &id);
        }
        let ids: Vec<String> = core.jobs.keys().cloned().collect();
        for id in ids {
            core.index_job(&id);
            core.prune_pending.insert(id);
        }
        core
    }

    /// Puts a job's enabled schedules in the index of times to act, at
    /// the next time after their cursor (at once without a cursor: the
    /// next tick gives them one). Call after any change of the job's
    /// schedules or cursors, or its removal.
    fn index_job(&mut self, id: &str) {
        if let Some(old) = self.fire_at.remove(id) {
            for (sid, t) in old {
                self.fires.remove(&(t, id.to_string(), sid));
            }
        }
        let Some(j) = self.jobs.get(id) else {
            return;
        };
        let entries: Vec<(String, Timestamp)> = j
            .record
            .schedules
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| {
                let t = match j.cursors.get(&s.id) {
                    None => Some(Timestamp::MIN),
                    Some(c) => j.crons.get(&s.id)?.next_after(*c),
                };
                Some((s.id.clone(), t?))
            })
            .collect();
        for (sid, t) in &entries {
            self.fires.insert((*t, id.to_string(), sid.clone()));
        }
        if !entries.is_empty() {
            self.fire_at.insert(id.to_string(), entries);
        }
    }

    /// Brings the run indexes up to date with a run that was created,
    /// changed or removed.
    fn sync_run(&mut self, job: &str, run: &str) {
        let key = (job.to_string(), run.to_string());
        let r = self.jobs.get(job).and_then(|j| j.runs.get(run));
        match r {
            Some(r) if r.status.is_active() => {
                self.unnotified.remove(&key);
                self.active.insert(key);
            }
            Some(r) => {
                self.active.remove(&key);
                if r.dependents_notified {
                    self.unnotified.remove(&key);
                    self.prune_pending.insert(key.0);
                } else {
                    self.unnotified.insert(key);
                }
            }
            None => {
                self.active.remove(&key);
                self.unnotified.remove(&key);
            }
        }
    }

    /// Runs not ended, over every job.
    pub fn active_run_count(&self) -> usize {
        self.active.len()
    }

    /// The run of an index entry.
    fn indexed(&self, (job, run): &(String, String)) -> Option<(&JobState, &Run)> {
        let j = self.jobs.get(job)?;
        Some((j, j.runs.get(run)?))
    }

    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The task tracker (the runtime drives its reconciliation and kills).
    pub fn tracker_mut(&mut self) -> &mut TaskTracker {
        &mut self.tracker
    }

    /// What a waiting run waits for, when the matcher said.
    pub fn waiting_reason(&self, job: &str, run: &str) -> Option<&str> {
        self.waiting
            .get(&format!("{job}/{run}"))
            .map(String::as_str)
    }

    /// The value of a write, as stored; `None` for deletes (and for values
    /// gone since, which are then deleted).
    pub fn value_of(&self, w: &Write) -> Option<serde_json::Value> {
        let v = match w {
            Write::Job(j) => serde_json::to_value(&self.jobs.get(j)?.record),
            Write::Cursor(j, s) => serde_json::to_value(Cursor {
                handled_until: *self.jobs.get(j)?.cursors.get(s)?,
            }),
            Write::Run(j, r) => serde_json::to_value(self.jobs.get(j)?.runs.get(r)?),
            Write::Delete(_) => return None,
        };
        v.ok()
    }

    /// When [`Core::tick`] has something to do next, at the latest.
    pub fn next_wakeup(&self, _now: Now) -> Option<Timestamp> {
        let mut next: Option<Timestamp> = None;
        let mut at = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some((t, _, _)) = self.fires.first() {
            at(*t);
        }
        for key in &self.active {
            let Some((j, r)) = self.indexed(key) else {
                continue;
            };
            if r.status == RunStatus::Initial {
                if r.started_at.is_none() {
                    at(r.launch_by);
                }
                if let Some(t) = r.next_attempt_at {
                    at(t);
                }
            }
            if let (Some(started), Some(d)) = (
                r.started_at,
                j.record.spec.run.restart.active_deadline_seconds,
            ) && r.stopping.is_none()
            {
                at(started + SignedDuration::from_secs(d as i64));
            }
        }
        next
    }

    /// The master accepted the subscription: every known task must answer
    /// again, and offers are wanted if a run waits.
    pub fn on_subscribed(&mut self, now: Now) -> Effects {
        self.subscribed = true;
        self.tracker.on_subscribed(now.mono);
        // The master may still hold the framework suppressed by an earlier
        // instance or session: say what is wanted, either way.
        let mut fx = Effects::default();
        if !self.any_launchable(now) {
            self.suppressed = true;
            fx.suppress = true;
        } else {
            self.suppressed = false;
            fx.revive = true;
        }
        fx
    }

    pub fn on_disconnected(&mut self) {
        self.subscribed = false;
    }

    /// Schedules, deadlines, dependencies, history.
    pub fn tick(&mut self, now: Now) -> Effects {
        let mut fx = Effects::default();
        // Only the schedules whose time has come, and the jobs with runs
        // not ended or just ended, are looked at.
        let due: BTreeSet<String> = self
            .fires
            .iter()
            .take_while(|(t, _, _)| *t <= now.wall)
            .map(|(_, job, _)| job.clone())
            .collect();
        for id in &due {
            self.fire_schedules(id, now, &mut fx);
        }
        let mut with_active: Vec<String> = self.active.iter().map(|(j, _)| j.clone()).collect();
        with_active.dedup();
        for id in &with_active {
            self.check_deadlines(id, now, &mut fx);
        }
        self.propagate(now, &mut fx);
        let sweep = self.last_sweep.is_none_or(|t| now.wall >= t + SWEEP_EVERY);
        let prune: Vec<String> = if sweep {
            self.last_sweep = Some(now.wall);
            self.prune_pending.clear();
            self.jobs.keys().cloned().collect()
        } else {
            std::mem::take(&mut self.prune_pending)
                .into_iter()
                .collect()
        };
        for id in &prune {
            self.prune(id, now, &mut fx);
        }
        self.want_offers(now, &mut fx);
        fx
    }

    fn fire_schedules(&mut self, id: &str, now: Now, fx: &mut Effects) {
        let Some(job) = self.jobs.get(id) else {
            return;
        };
        let schedules: Vec<ScheduleSpec> = job
            .record
            .schedules
            .iter()
            .filter(|s| s.enabled)
            .cloned()
            .collect();
        for s in schedules {
            let Some(cron) = self.jobs[id].crons.get(&s.id).cloned() else {
                continue;
            };
            let Some(mut cursor) = self.jobs[id].cursors.get(&s.id).copied() else {
                // A schedule without a cursor (never stored): its times start now.
                self.set_cursor(id, &s.id, now.wall, fx);
                continue;
            };
            let deadline = Duration::from_secs(s.starting_deadline_seconds);
            loop {
                let d = due(&cron, cursor, now.wall, deadline);
                if d.is_empty() {
                    break;
                }
                for t in &d.missed {
                    let why = self.missed_reason(*t, s.starting_deadline_seconds);
                    self.record_not_started(id, &s.id, *t, now, RunStatus::Missed, why, fx);
                }
                if let Some(range) = &d.missed_more {
                    let why = format!(
                        "{}; {} more scheduled times from {} to {} were missed too",
                        self.missed_reason(range.last, s.starting_deadline_seconds),
                        count_text(range),
                        range.first,
                        range.last
                    );
                    self.record_not_started(id, &s.id, range.last, now, RunStatus::Missed, why, fx);
                }
                for t in &d.start {
                    self.start_scheduled(id, &s, *t, now, fx);
                }
                cursor = d.handled_until;
                self.set_cursor(id, &s.id, cursor, fx);
                if d.next != Some(now.wall) {
                    break;
                }
            }
        }
    }

    fn missed_reason(&self, t: Timestamp, deadline: u64) -> String {
        if t < self.started {
            format!(
                "not started within startingDeadlineSeconds ({deadline} s): no batch leader was running at the scheduled time (this leader took over at {})",
                self.started
            )
        } else {
            format!(
                "not started within startingDeadlineSeconds ({deadline} s): the scheduler was late"
            )
        }
    }

    fn set_cursor(&mut self, job: &str, schedule: &str, t: Timestamp, fx: &mut Effects) {
        if let Some(j) = self.jobs.get_mut(job) {
            j.cursors.insert(schedule.to_string(), t);
            fx.write(
                Write::Cursor(job.to_string(), schedule.to_string()),
                Expected::Any,
            );
            self.index_job(job);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_not_started(
        &mut self,
        job: &str,
        schedule: &str,
        t: Timestamp,
        now: Now,
        status: RunStatus,
        reason: String,
        fx: &mut Effects,
    ) {
        let Some(j) = self.jobs.get_mut(job) else {
            return;
        };
        let id = scheduled_run_id(t);
        if j.runs.contains_key(&id) {
            return;
        }
        tracing::warn!(job, run = %id, status = %status, "{reason}");
        let run = Run::not_started(
            job,
            id.clone(),
            Trigger::Schedule {
                schedule: schedule.to_string(),
            },
            t,
            now.wall,
            status,
            reason,
        );
        j.runs.insert(id.clone(), run);
        fx.run_changed(job, &id, true);
        fx.ended.push(status);
        self.sync_run(job, &id);
    }

    /// A schedule's time has come: a run, unless the concurrency policy
    /// says otherwise.
    fn start_scheduled(
        &mut self,
        job: &str,
        s: &ScheduleSpec,
        t: Timestamp,
        now: Now,
        fx: &mut Effects,
    ) {
        let id = scheduled_run_id(t);
        let Some(j) = self.jobs.get(job) else {
            return;
        };
        if j.runs.contains_key(&id) {
            // Already handled (another schedule with the same time).
            return;
        }
        let active: Vec<String> = j.active_runs().map(|r| r.id.clone()).collect();
        if !active.is_empty() {
            match s.concurrency_policy {
                ConcurrencyPolicy::Allow => {}
                ConcurrencyPolicy::Forbid => {
                    let why = format!(
                        "concurrencyPolicy FORBID: run {} is still active",
                        active.join(", ")
                    );
                    self.record_not_started(job, &s.id, t, now, RunStatus::Skipped, why, fx);
                    return;
                }
                ConcurrencyPolicy::Replace => {
                    for old in &active {
                        self.stop(
                            job,
                            old,
                            format!("replaced by run {id} (concurrencyPolicy REPLACE)"),
                            now,
                            fx,
                        );
                    }
                }
            }
        }
        let j = &self.jobs[job];
        let starting_by = t + SignedDuration::from_secs(s.starting_deadline_seconds as i64);
        let launching_by =
            now.wall + SignedDuration::from_secs(j.record.spec.run.max_launch_delay as i64);
        let (launch_by, status) = if starting_by <= launching_by {
            (starting_by, RunStatus::Missed)
        } else {
            (launching_by, RunStatus::Failed)
        };
        let run = Run::new(
            job,
            id.clone(),
            Trigger::Schedule {
                schedule: s.id.clone(),
            },
            t,
            now.wall,
            launch_by,
            status,
        );
        tracing::info!(job, run = %id, scheduled = %t, "scheduled run");
        self.insert_run(run, fx);
    }

    fn insert_run(&mut self, run: Run, fx: &mut Effects) {
        let (job, id) = (run.job_id.clone(), run.id.clone());
        if let Some(j) = self.jobs.get_mut(&job) {
            j.runs.insert(id.clone(), run);
            fx.run_changed(&job, &id, true);
            self.sync_run(&job, &id);
        }
    }

    /// Stops a run: at once if no task runs, else kills its task and ends
    /// it when the task's end is seen.
    fn stop(&mut self, job: &str, run: &str, reason: String, now: Now, fx: &mut Effects) {
        let Some(r) = self.jobs.get_mut(job).and_then(|j| j.runs.get_mut(run)) else {
            return;
        };
        let task = match r.status {
            RunStatus::Starting | RunStatus::Active => r.current_task().map(|t| t.id.clone()),
            _ => None,
        };
        if r.apply(
            RunEvent::Stop {
                reason: reason.clone(),
            },
            now.wall,
        )
        .is_err()
        {
            return;
        }
        tracing::info!(job, run, "stopping: {reason}");
        if r.status.is_terminal() {
            fx.ended.push(r.status);
        }
        fx.run_changed(job, run, false);
        self.sync_run(job, run);
        if let Some(task) = task {
            self.tracker.kill(&task, now.mono);
        }
    }

    fn check_deadlines(&mut self, id: &str, now: Now, fx: &mut Effects) {
        let Some(j) = self.jobs.get(id) else {
            return;
        };
        let spec = &j.record.spec.run;
        let mut expire = Vec::new();
        let mut overran = Vec::new();
        for r in j.active_runs() {
            if r.status == RunStatus::Initial && r.started_at.is_none() && r.launch_by < now.wall {
                let waiting = self
                    .waiting
                    .get(&format!("{id}/{}", r.id))
                    .cloned()
                    .unwrap_or_else(|| {
                        if self.subscribed {
                            "no offer came".to_string()
                        } else {
                            "the master could not be reached".to_string()
                        }
                    });
                let limit = if r.launch_by_status == RunStatus::Missed {
                    let s = match &r.trigger {
                        Trigger::Schedule { schedule } => j
                            .record
                            .schedules
                            .iter()
                            .find(|s| &s.id == schedule)
                            .map(|s| s.starting_deadline_seconds),
                        _ => None,
                    };
                    format!(
                        "startingDeadlineSeconds ({} s) of its scheduled time",
                        s.map_or("?".into(), |s| s.to_string())
                    )
                } else {
                    format!("maxLaunchDelay ({} s)", spec.max_launch_delay)
                };
                expire.push((
                    r.id.clone(),
                    format!("not launched within {limit}: {waiting}"),
                ));
            }
            if let (Some(started), Some(d)) = (r.started_at, spec.restart.active_deadline_seconds)
                && r.stopping.is_none()
                && started + SignedDuration::from_secs(d as i64) <= now.wall
            {
                overran.push((
                    r.id.clone(),
                    format!("exceeded activeDeadlineSeconds ({d} s); its task was killed"),
                ));
            }
        }
        for (run, reason) in expire {
            if let Some(r) = self.jobs.get_mut(id).and_then(|j| j.runs.get_mut(&run))
                && r.apply(RunEvent::Expire { reason }, now.wall).is_ok()
            {
                fx.ended.push(r.status);
                fx.run_changed(id, &run, false);
                self.waiting.remove(&format!("{id}/{run}"));
                self.sync_run(id, &run);
            }
        }
        for (run, reason) in overran {
            self.stop(id, &run, reason, now, fx);
        }
    }

    /// Runs that ended start (or skip) the runs of the jobs that depend on
    /// theirs.
    fn propagate(&mut self, now: Now, fx: &mut Effects) {
        if self.unnotified.is_empty() {
            return;
        }
        // Only jobs with dependencies matter here, and who depends on whom
        // is looked up once per step rather than once per ended run.
        let deps: graph::Dependencies = self
            .jobs
            .iter()
            .filter(|(_, j)| !j.record.spec.dependencies.is_empty())
            .map(|(id, j)| {
                let ds = j.record.spec.dependencies.iter().map(|d| d.id.clone());
                (id.clone(), ds.collect())
            })
            .collect();
        let mut dependents_of: HashMap<&str, Vec<String>> = HashMap::new();
        for (j, ds) in &deps {
            for d in ds {
                dependents_of.entry(d.as_str()).or_default().push(j.clone());
            }
        }
        let ended: Vec<(String, String)> = self.unnotified.iter().cloned().collect();
        for (job, run_id) in ended {
            if self.indexed(&(job.clone(), run_id.clone())).is_none() {
                self.unnotified.remove(&(job, run_id));
                continue;
            }
            let completed = self.jobs[&job].runs[&run_id].completed_at;
            let scheduled_at = self.jobs[&job].runs[&run_id].scheduled_at;
            let dependents = dependents_of.get(job.as_str()).cloned().unwrap_or_default();
            for dependent in dependents {
                let Some(d) = self.jobs.get(&dependent) else {
                    continue;
                };
                if d.runs.contains_key(&run_id) {
                    continue;
                }
                if completed.is_some_and(|c| c < d.record.dependencies_since) {
                    continue;
                }
                let mut all_succeeded = true;
                let mut failed: Option<String> = None;
                for dep in deps.get(&dependent).into_iter().flatten() {
                    match self.jobs.get(dep).and_then(|j| j.runs.get(&run_id)) {
                        Some(r) if r.status == RunStatus::Success => {}
                        Some(r) if r.status.is_terminal() => {
                            failed.get_or_insert(format!(
                                "dependency {dep}'s run {run_id} ended {}",
                                r.status
                            ));
                        }
                        _ => all_succeeded = false,
                    }
                }
                if let Some(why) = failed {
                    let run = Run::not_started(
                        &dependent,
                        run_id.clone(),
                        Trigger::Dependencies,
                        scheduled_at,
                        now.wall,
                        RunStatus::Skipped,
                        why,
                    );
                    fx.ended.push(RunStatus::Skipped);
                    self.insert_run(run, fx);
                } else if all_succeeded {
                    let mld = self.jobs[&dependent].record.spec.run.max_launch_delay;
                    let run = Run::new(
                        &dependent,
                        run_id.clone(),
                        Trigger::Dependencies,
                        scheduled_at,
                        now.wall,
                        now.wall + SignedDuration::from_secs(mld as i64),
                        RunStatus::Failed,
                    );
                    tracing::info!(job = %dependent, run = %run_id, "its dependencies succeeded");
                    self.insert_run(run, fx);
                }
            }
            if let Some(r) = self
                .jobs
                .get_mut(&job)
                .and_then(|j| j.runs.get_mut(&run_id))
            {
                r.dependents_notified = true;
                fx.run_changed(&job, &run_id, false);
            }
            self.sync_run(&job, &run_id);
        }
    }

    /// Every job's dependencies.
    pub fn dependencies(&self) -> graph::Dependencies {
        self.jobs
            .iter()
            .map(|(id, j)| {
                let deps = j
                    .record
                    .spec
                    .dependencies
                    .iter()
                    .map(|d| d.id.clone())
                    .collect();
                (id.clone(), deps)
            })
            .collect()
    }

    fn prune(&mut self, id: &str, now: Now, fx: &mut Effects) {
        let Some(j) = self.jobs.get(id) else {
            return;
        };
        let max_age =
            SignedDuration::try_from(self.config.history_age).unwrap_or(SignedDuration::MAX);
        let oldest = now.wall.checked_sub(max_age).unwrap_or(Timestamp::MIN);
        let mut ended: Vec<(&Timestamp, &String)> = j
            .runs
            .values()
            .filter(|r| r.status.is_terminal() && r.dependents_notified)
            .filter_map(|r| r.completed_at.as_ref().map(|c| (c, &r.id)))
            .collect();
        if ended.len() <= self.config.history_count && ended.iter().all(|(c, _)| **c >= oldest) {
            return;
        }
        ended.sort_by(|a, b| b.cmp(a));
        let remove: Vec<String> = ended
            .iter()
            .enumerate()
            .filter(|(i, (c, _))| *i >= self.config.history_count || **c < oldest)
            .map(|(_, (_, id))| (*id).clone())
            .collect();
        let j = self.jobs.get_mut(id).expect("checked above");
        for run in &remove {
            j.runs.remove(run);
            fx.write(Write::Delete(layout::run_key(id, run)), Expected::Any);
        }
        for run in remove {
            self.sync_run(id, &run);
        }
    }

    /// Runs that may launch now, oldest scheduled time first.
    fn launchable(&self, now: Now) -> Vec<(String, String)> {
        let mut ready: Vec<(&Timestamp, &String, &String)> = self
            .active
            .iter()
            .filter_map(|key| {
                let (_, r) = self.indexed(key)?;
                Self::may_launch(r, now).then_some((&r.scheduled_at, &key.0, &key.1))
            })
            .collect();
        ready.sort();
        ready
            .into_iter()
            .map(|(_, j, r)| (j.clone(), r.clone()))
            .collect()
    }

    fn may_launch(r: &Run, now: Now) -> bool {
        r.status == RunStatus::Initial
            && r.stopping.is_none()
            && r.next_attempt_at.is_none_or(|t| t <= now.wall)
            && (r.started_at.is_some() || r.launch_by >= now.wall)
    }

    /// Whether a run may launch now.
    fn any_launchable(&self, now: Now) -> bool {
        self.active.iter().any(|key| {
            self.indexed(key)
                .is_some_and(|(_, r)| Self::may_launch(r, now))
        })
    }

    fn want_offers(&mut self, now: Now, fx: &mut Effects) {
        let want = self.any_launchable(now);
        if want && self.suppressed {
            self.suppressed = false;
            fx.revive = true;
        } else if !want && !self.suppressed && self.subscribed {
            self.suppressed = true;
            fx.suppress = true;
        }
    }

    /// Offers: launch what waits, decline the rest.
    pub fn on_offers(&mut self, offers: &[v1::Offer], now: Now) -> Effects {
        let mut fx = Effects::default();
        let ready = self.launchable(now);
        if ready.is_empty() {
            fx.declines = offers.iter().map(|o| o.id.clone()).collect();
            self.want_offers(now, &mut fx);
            return fx;
        }
        let requests: Vec<matcher::TaskRequest> = ready
            .iter()
            .map(|(job, run)| {
                let j = &self.jobs[job];
                launch::request(
                    &j.record.spec,
                    format!("{job}/{run}"),
                    &self.config.role,
                    j.constraints.clone(),
                )
            })
            .collect();
        let result = matcher::match_offers(offers, &requests, &PlacedIndex::new());
        let address_of: HashMap<&str, &str> = offers
            .iter()
            .map(|o| (o.id.as_str(), o.agent_http_address.as_str()))
            .collect();
        for (offer_ids, placements) in result.launches {
            let mut tasks = Vec::new();
            for p in placements {
                let Some((job, run_id)) = p.key.split_once('/') else {
                    continue;
                };
                let Some(j) = self.jobs.get_mut(job) else {
                    continue;
                };
                let Some(r) = j.runs.get_mut(run_id) else {
                    continue;
                };
                let first = r.started_at.is_none();
                let task_id = run::task_id(job, run_id, r.next_attempt());
                let event = RunEvent::Launch {
                    task_id: task_id.clone(),
                    agent_id: p.agent_id.clone(),
                    host: p.hostname.clone(),
                    agent_http_address: address_of
                        .get(p.offer_id.as_str())
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                };
                if let Err(e) = r.apply(event, now.wall) {
                    tracing::warn!(job, run = run_id, "{e}");
                    continue;
                }
                if first {
                    let late = now.wall.duration_since(r.scheduled_at).as_secs_f64();
                    fx.lateness.push(late.max(0.0));
                }
                tracing::info!(job, run = run_id, task = %task_id, agent = %p.agent_id, "launching");
                tasks.push(launch::task_info(
                    &j.record.spec,
                    run_id,
                    r.scheduled_at,
                    &task_id,
                    &p.agent_id,
                    p.resources,
                ));
                self.tracker.expect(&task_id, Some(p.agent_id.clone()));
                self.waiting.remove(&p.key);
                fx.run_changed(job, run_id, false);
                // Still active (STARTING): the indexes need no change.
            }
            if tasks.is_empty() {
                fx.declines.extend(offer_ids);
            } else {
                fx.launches.push((offer_ids, tasks));
            }
        }
        for (key, why) in result.unplaced {
            self.waiting.insert(key, why);
        }
        fx.declines.extend(result.unused_offers);
        self.want_offers(now, &mut fx);
        fx
    }

    /// Task updates (the runtime acknowledges them once the effects'
    /// writes are durable).
    pub fn on_updates(&mut self, statuses: &[TaskStatus], now: Now) -> Effects {
        let mut fx = Effects::default();
        for s in statuses {
            self.on_update(s, now, &mut fx);
        }
        self.want_offers(now, &mut fx);
        fx
    }

    fn on_update(&mut self, s: &TaskStatus, now: Now, fx: &mut Effects) {
        if let Observed::Unknown = self.tracker.on_update(s, now.mono) {
            tracing::info!(task = %s.task_id, state = ?s.state(), "a task this framework does not know: it is killed");
            return;
        }
        let state = s.state();
        let ends = agora_proto::is_terminal(state)
            || matches!(state, TaskState::TaskUnknown | TaskState::TaskUnreachable);
        if state == TaskState::TaskUnreachable {
            // Its agent may come back with it: kill it until its end is
            // seen. The run goes on with another attempt (or fails).
            self.tracker.kill(&s.task_id, now.mono);
        } else if ends {
            self.tracker.forget(&s.task_id);
        }
        let Some((job, run_id, _)) = parse_task_id(&s.task_id) else {
            return;
        };
        let (job, run_id) = (job.to_string(), run_id.to_string());
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let restart = j.record.spec.run.restart.clone();
        let Some(r) = j.runs.get_mut(&run_id) else {
            return;
        };
        if r.current_task().map(|t| t.id.as_str()) != Some(s.task_id.as_str()) {
            return;
        }
        let state_name = state.as_str_name().to_string();
        let before = r.status;
        let event = match state {
            TaskState::TaskFinished => RunEvent::TaskEnded {
                task_id: s.task_id.clone(),
                state: state_name,
                success: true,
                exit_code: s.exit_code,
                message: s.message.clone(),
                retry_at: None,
            },
            TaskState::TaskUnknown
                if r.current_task().is_some_and(|t| t.status == "TASK_STAGING") =>
            {
                tracing::info!(job, run = run_id, task = %s.task_id, "the master does not know the task: it was never launched; launching it");
                RunEvent::LaunchLost
            }
            _ if ends => {
                let retry_at = retry_at(r, &restart, &self.config, now.wall);
                let message = if s.message.is_empty() && state == TaskState::TaskUnknown {
                    "the master no longer knows the task".to_string()
                } else {
                    s.message.clone()
                };
                RunEvent::TaskEnded {
                    task_id: s.task_id.clone(),
                    state: state_name,
                    success: false,
                    exit_code: s.exit_code,
                    message,
                    retry_at,
                }
            }
            _ => RunEvent::TaskState {
                task_id: s.task_id.clone(),
                state: state_name,
                running: state == TaskState::TaskRunning,
            },
        };
        let was_launch_lost = matches!(event, RunEvent::LaunchLost);
        match r.apply(event, now.wall) {
            Ok(()) => {
                if r.status.is_terminal() {
                    fx.ended.push(r.status);
                }
                if r.status != before || was_launch_lost || ends {
                    fx.run_changed(&job, &run_id, false);
                }
            }
            Err(e) => tracing::debug!("{e}"),
        }
        self.sync_run(&job, &run_id);
    }

    /// An API command.
    pub fn command(&mut self, cmd: Command, now: Now) -> (Effects, Result<Answer, Refusal>) {
        let mut fx = Effects::default();
        let answer = match cmd {
            Command::CreateJob(spec) => self.create_job(spec, now, &mut fx),
            Command::ReplaceJob(id, spec) => self.replace_job(&id, spec, now, &mut fx),
            Command::DeleteJob { job, stop_runs } => self.delete_job(&job, stop_runs, now, &mut fx),
            Command::AddSchedule(job, s) => self.add_schedule(&job, s, now, &mut fx),
            Command::ReplaceSchedule(job, sid, s) => {
                self.replace_schedule(&job, &sid, s, now, &mut fx)
            }
            Command::DeleteSchedule(job, sid) => self.delete_schedule(&job, &sid, now, &mut fx),
            Command::StartRun { job, suffix } => self.start_run(&job, &suffix, now, &mut fx),
            Command::StopRun { job, run } => self.stop_run(&job, &run, now, &mut fx),
        };
        if answer.is_ok() {
            self.want_offers(now, &mut fx);
        }
        (fx, answer)
    }

    fn job(&self, id: &str) -> Result<&JobState, Refusal> {
        self.jobs
            .get(id)
            .ok_or_else(|| Refusal::not_found(format!("Job '{id}' does not exist")))
    }

    /// Checks what needs the other jobs: dependencies exist and form no
    /// cycle, constraints compile.
    fn check_against_others(
        &self,
        spec: &JobSpec,
        schedules: &[ScheduleSpec],
    ) -> Result<(), Refusal> {
        let deps: Vec<String> = spec.dependencies.iter().map(|d| d.id.clone()).collect();
        if let Err(e) = graph::check(&self.dependencies(), &spec.id, &deps) {
            let path = match &e {
                GraphError::Unknown { dependency, .. } => {
                    let i = deps.iter().position(|d| d == dependency).unwrap_or(0);
                    format!("/dependencies/{i}/id")
                }
                GraphError::Cycle { .. } => "/dependencies".to_string(),
            };
            return Err(Refusal::invalid(&path, e.to_string()));
        }
        if !deps.is_empty() && !schedules.is_empty() {
            return Err(Refusal::invalid(
                "/schedules",
                "a job with dependencies runs after them, for their scheduled times: give the schedule to the jobs it depends on".into(),
            ));
        }
        if let Err((i, e)) = launch::constraints(&spec.run) {
            return Err(Refusal::invalid(
                &format!("/run/placement/constraints/{i}"),
                e,
            ));
        }
        Ok(())
    }

    fn create_job(
        &mut self,
        mut spec: JobSpec,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        if self.jobs.contains_key(&spec.id) {
            return Err(Refusal::conflict(format!(
                "Job '{}' already exists: PUT /v1/jobs/{} replaces it",
                spec.id, spec.id
            )));
        }
        let schedules = spec.schedules.take().unwrap_or_default();
        self.check_against_others(&spec, &schedules)?;
        let record = JobRecord {
            spec,
            schedules,
            created_at: now.wall,
            updated_at: now.wall,
            dependencies_since: now.wall,
        };
        let id = record.spec.id.clone();
        let state = JobState::new(record).map_err(|e| Refusal::invalid("/", e))?;
        let sids: Vec<String> = state
            .record
            .schedules
            .iter()
            .map(|s| s.id.clone())
            .collect();
        self.jobs.insert(id.clone(), state);
        fx.write(Write::Job(id.clone()), Expected::Absent);
        for sid in sids {
            self.set_cursor(&id, &sid, now.wall, fx);
        }
        fx.job_events.push(("job_created", id.clone()));
        tracing::info!(job = %id, "job created");
        Ok(Answer::Job(Box::new(self.jobs[&id].record.clone())))
    }

    fn replace_job(
        &mut self,
        id: &str,
        mut spec: JobSpec,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let old = self.job(id)?.record.clone();
        if spec.id != id {
            return Err(Refusal::invalid(
                "/id",
                format!("is `{}` but the path names job `{id}`", spec.id),
            ));
        }
        let schedules = spec
            .schedules
            .take()
            .unwrap_or_else(|| old.schedules.clone());
        self.check_against_others(&spec, &schedules)?;
        let deps_changed = spec.dependencies != old.spec.dependencies;
        let record = JobRecord {
            spec,
            schedules,
            created_at: old.created_at,
            updated_at: now.wall,
            dependencies_since: if deps_changed {
                now.wall
            } else {
                old.dependencies_since
            },
        };
        self.put_record(id, record, &old.schedules, now, fx)?;
        fx.job_events.push(("job_updated", id.to_string()));
        Ok(Answer::Job(Box::new(self.jobs[id].record.clone())))
    }

    /// Stores a job's new record, keeping its runs; cursors of new, changed
    /// or re-enabled schedules start at `now`, those of removed ones go.
    fn put_record(
        &mut self,
        id: &str,
        record: JobRecord,
        old_schedules: &[ScheduleSpec],
        now: Now,
        fx: &mut Effects,
    ) -> Result<(), Refusal> {
        let mut state = JobState::new(record).map_err(|e| Refusal::invalid("/", e))?;
        let old = self.jobs.remove(id).expect("checked by the caller");
        state.runs = old.runs;
        state.cursors = old.cursors;
        let mut reset = Vec::new();
        for s in &state.record.schedules {
            let before = old_schedules.iter().find(|o| o.id == s.id);
            let same_times = before.is_some_and(|b| {
                b.cron == s.cron && b.timezone == s.timezone && (b.enabled || !s.enabled)
            });
            if !same_times || !state.cursors.contains_key(&s.id) {
                reset.push(s.id.clone());
            }
        }
        let gone: Vec<String> = state
            .cursors
            .keys()
            .filter(|k| !state.record.schedules.iter().any(|s| &s.id == *k))
            .cloned()
            .collect();
        for g in gone {
            state.cursors.remove(&g);
            fx.write(Write::Delete(layout::cursor_key(id, &g)), Expected::Any);
        }
        self.jobs.insert(id.to_string(), state);
        fx.write(Write::Job(id.to_string()), Expected::Any);
        for sid in reset {
            self.set_cursor(id, &sid, now.wall, fx);
        }
        self.index_job(id);
        Ok(())
    }

    fn delete_job(
        &mut self,
        id: &str,
        stop_runs: bool,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let j = self.job(id)?;
        let dependents = graph::dependents(&self.dependencies(), id);
        if !dependents.is_empty() {
            return Err(Refusal::conflict(format!(
                "job{} {} depend{} on Job '{id}': change or delete {} first",
                if dependents.len() > 1 { "s" } else { "" },
                dependents.join(", "),
                if dependents.len() > 1 { "" } else { "s" },
                if dependents.len() > 1 { "them" } else { "it" },
            )));
        }
        let active: Vec<String> = j.active_runs().map(|r| r.id.clone()).collect();
        if !active.is_empty() && !stop_runs {
            return Err(Refusal::conflict(format!(
                "Job '{id}' has active runs ({}): stop them first, or DELETE /v1/jobs/{id}?stopCurrentJobRuns=true",
                active.join(", ")
            )));
        }
        for run in &active {
            self.stop(id, run, "its job was deleted".into(), now, fx);
        }
        let j = self.jobs.remove(id).expect("checked above");
        for run in j.runs.keys() {
            fx.write(Write::Delete(layout::run_key(id, run)), Expected::Any);
            self.sync_run(id, run);
        }
        self.index_job(id);
        self.prune_pending.remove(id);
        for sid in j.cursors.keys() {
            fx.write(Write::Delete(layout::cursor_key(id, sid)), Expected::Any);
        }
        fx.write(Write::Delete(layout::job_key(id)), Expected::Any);
        fx.job_events.push(("job_deleted", id.to_string()));
        tracing::info!(job = %id, "job deleted");
        Ok(Answer::Done)
    }

    fn add_schedule(
        &mut self,
        job: &str,
        s: ScheduleSpec,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let old = self.job(job)?.record.clone();
        if old.schedules.iter().any(|o| o.id == s.id) {
            return Err(Refusal::conflict(format!(
                "Schedule '{}' of Job '{job}' already exists: PUT /v1/jobs/{job}/schedules/{} replaces it",
                s.id, s.id
            )));
        }
        let mut record = old.clone();
        record.schedules.push(s.clone());
        record.updated_at = now.wall;
        self.check_against_others(&record.spec, &record.schedules)?;
        self.put_record(job, record, &old.schedules, now, fx)?;
        fx.job_events.push(("job_updated", job.to_string()));
        Ok(Answer::Schedule(s))
    }

    fn replace_schedule(
        &mut self,
        job: &str,
        sid: &str,
        s: ScheduleSpec,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let old = self.job(job)?.record.clone();
        if s.id != sid {
            return Err(Refusal::invalid(
                "/id",
                format!("is `{}` but the path names schedule `{sid}`", s.id),
            ));
        }
        let Some(i) = old.schedules.iter().position(|o| o.id == sid) else {
            return Err(Refusal::not_found(format!(
                "Schedule '{sid}' of Job '{job}' does not exist"
            )));
        };
        let mut record = old.clone();
        record.schedules[i] = s.clone();
        record.updated_at = now.wall;
        self.put_record(job, record, &old.schedules, now, fx)?;
        fx.job_events.push(("job_updated", job.to_string()));
        Ok(Answer::Schedule(s))
    }

    fn delete_schedule(
        &mut self,
        job: &str,
        sid: &str,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let old = self.job(job)?.record.clone();
        if !old.schedules.iter().any(|o| o.id == sid) {
            return Err(Refusal::not_found(format!(
                "Schedule '{sid}' of Job '{job}' does not exist"
            )));
        }
        let mut record = old.clone();
        record.schedules.retain(|o| o.id != sid);
        record.updated_at = now.wall;
        self.put_record(job, record, &old.schedules, now, fx)?;
        fx.job_events.push(("job_updated", job.to_string()));
        Ok(Answer::Done)
    }

    fn start_run(
        &mut self,
        job: &str,
        suffix: &str,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let j = self.job(job)?;
        let id = manual_run_id(now.wall, suffix);
        if j.runs.contains_key(&id) {
            return Err(Refusal::conflict(format!(
                "run {id} of Job '{job}' exists already; ask again"
            )));
        }
        let mld = j.record.spec.run.max_launch_delay;
        let run = Run::new(
            job,
            id.clone(),
            Trigger::Manual,
            now.wall,
            now.wall,
            now.wall + SignedDuration::from_secs(mld as i64),
            RunStatus::Failed,
        );
        tracing::info!(job, run = %id, "run started by hand");
        self.insert_run(run, fx);
        Ok(Answer::Run(Box::new(self.jobs[job].runs[&id].clone())))
    }

    fn stop_run(
        &mut self,
        job: &str,
        run: &str,
        now: Now,
        fx: &mut Effects,
    ) -> Result<Answer, Refusal> {
        let r = self.job(job)?.runs.get(run).ok_or_else(|| {
            Refusal::not_found(format!("JobRun '{run}' of Job '{job}' does not exist"))
        })?;
        if r.status.is_terminal() {
            return Err(Refusal::conflict(format!(
                "JobRun '{run}' of Job '{job}' has ended ({}): there is nothing to stop",
                r.status
            )));
        }
        self.stop(job, run, "stopped by a user".into(), now, fx);
        Ok(Answer::Run(Box::new(self.jobs[job].runs[run].clone())))
    }
}

/// When a failed attempt is tried again under the job's restart policy
/// (None: it is not).
fn retry_at(
    run: &Run,
    restart: &crate::spec::Restart,
    config: &CoreConfig,
    now: Timestamp,
) -> Option<Timestamp> {
    if restart.policy != RestartPolicy::OnFailure || run.stopping.is_some() {
        return None;
    }
    if let (Some(started), Some(d)) = (run.started_at, restart.active_deadline_seconds)
        && started + SignedDuration::from_secs(d as i64) <= now
    {
        return None;
    }
    let failures = run.failures() + 1;
    let delay = backoff::delay(
        failures,
        config.backoff_base,
        config.backoff_factor,
        config.backoff_max,
    );
    Some(now + SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX))
}

fn count_text(range: &MissedRange) -> String {
    if range.at_least {
        format!("at least {}", range.count)
    } else {
        range.count.to_string()
    }
}

#[cfg(test)]
mod tests;
