//! The controller: the one task that changes the state. It takes the API's
//! changes, the master's offers and status updates, and a timer, and after
//! each of them reconciles: compares what each app should run (its
//! definition, its deployment's current step) with what runs, and acts
//! (kills, launch demand, step progress). Level-triggered: a missed event is
//! healed by the next pass.
//!
//! Durable before acknowledged: an API change is stored before it is
//! answered; an instance is stored before its task is launched; a task's end
//! is stored before its status update is acknowledged. Other instance
//! changes (RUNNING, health) are written in batches every
//! [`ControllerConfig::flush_interval`]: a new leader learns them again by
//! reconciliation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_framework_kit::backoff;
use agora_framework_kit::constraints::{AgentFacts, Constraint};
use agora_framework_kit::matcher::{PlacedIndex, PortRequest, TaskRequest, match_offers};
use agora_framework_kit::tracker::{self, Observed, TaskTracker, TrackerConfig};
use agora_proto::v1::{Offer, TaskState, TaskStatus};
use agora_proto::{Resources, is_terminal};
use agora_scheduler::{Event as SdkEvent, Scheduler};
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ServicesError;
use crate::app::StoredApp;
use crate::command::Command;
use crate::deployment::rolling::{self, Counts};
use crate::deployment::scale::{self, Candidate};
use crate::deployment::{ActionKind, Deployment};
use crate::events::{Event, EventBus};
use crate::health;
use crate::instance::{Instance, new_task_id};
use crate::metrics::Metrics;
use crate::path_id::PathId;
use crate::refusal::Refusal;
use crate::state::{AppChange, State, UnusedOffer};
use crate::store::{self, Changes, Records, TaskFailure};
use crate::taskinfo::{self, Slot};
use crate::time::{self, Millis};
use crate::validation::Context;

/// Timings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// How often the controller reconciles without being woken.
    pub tick: Duration,
    /// How often instance changes that need not be stored at once are.
    pub flush_interval: Duration,
    /// How long declined offers stay away (while instances wait for a fit).
    pub refuse_seconds: f64,
    pub tracker: TrackerConfig,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            tick: Duration::from_secs(1),
            flush_interval: Duration::from_secs(1),
            refuse_seconds: 5.0,
            tracker: TrackerConfig::default(),
        }
    }
}

/// Unused offers remembered per app for `/v2/queue?embed=lastUnusedOffers`.
const LAST_UNUSED: usize = 10;

pub struct Controller {
    pub(crate) state: Arc<RwLock<State>>,
    pub(crate) records: Records,
    pub(crate) events: EventBus,
    pub(crate) ctx: Context,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: ControllerConfig,
    tracker: TaskTracker,
    placed: PlacedIndex,
    /// Task id -> app id.
    index: HashMap<String, String>,
    /// Instance shards changed but not yet stored.
    dirty: BTreeMap<String, BTreeSet<u32>>,
    /// Other records changed but not yet stored.
    pending: Changes,
    last_flush: Instant,
    /// Whether the master was last told to suppress offers. A new
    /// subscription always says one or the other at once (the master keeps
    /// an earlier instance's suppression).
    suppressed: bool,
    /// Set once every known task has answered since the last subscription:
    /// until then nothing is launched or killed (stored states may be old).
    reconciled: bool,
    /// A store write failed: the term ends (its state is reloaded from the
    /// store by the next one), nothing decided after it is acted on.
    failed: Option<ServicesError>,
}

fn now() -> Millis {
    time::now_millis()
}

impl Controller {
    pub fn new(
        state: Arc<RwLock<State>>,
        records: Records,
        events: EventBus,
        ctx: Context,
        metrics: Arc<Metrics>,
        config: ControllerConfig,
        orphans: Vec<Instance>,
    ) -> Controller {
        let mut tracker = TaskTracker::new(config.tracker);
        let mut placed = PlacedIndex::new();
        let mut index = HashMap::new();
        {
            let s = state.read();
            for a in s.apps.values() {
                for i in a.instances.values() {
                    tracker.expect(&i.task_id, Some(i.agent_id.clone()));
                    index.insert(i.task_id.clone(), i.app_id.clone());
                    if i.is_active() {
                        placed.add(&i.app_id, facts(i));
                    }
                }
            }
        }
        let now_i = Instant::now();
        let mut pending = Changes::default();
        for o in &orphans {
            // Instances of apps that no longer exist: killed, and their
            // records dropped (were this leader to die first, the next one's
            // reconciliation would find them unknown and kill them too).
            tracker.expect(&o.task_id, Some(o.agent_id.clone()));
            tracker.kill(&o.task_id, now_i);
            pending.delete(store::shard_key(&o.app_id, store::shard_of(&o.task_id)));
        }
        Controller {
            state,
            records,
            events,
            ctx,
            metrics,
            config,
            tracker,
            placed,
            index,
            dirty: BTreeMap::new(),
            pending,
            last_flush: Instant::now(),
            suppressed: false,
            reconciled: false,
            failed: None,
        }
    }

    /// Ends the term after a failed store write.
    fn fail(&mut self, e: ServicesError) {
        tracing::error!("a store write failed: {e}; this term ends and the state is reloaded");
        if self.failed.is_none() {
            self.failed = Some(e);
        }
    }

    /// Runs until `stop` (leadership lost, shutdown): `Ok`. A failed store
    /// write or a stopped driver ends it with the error; the caller starts
    /// the term again from the store.
    pub async fn run(
        mut self,
        scheduler: Scheduler,
        mut sdk: mpsc::UnboundedReceiver<SdkEvent>,
        commands: &mut mpsc::UnboundedReceiver<Command>,
        stop: CancellationToken,
    ) -> Result<(), ServicesError> {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tracker::drive(&mut self.tracker, &scheduler, Instant::now());
            let wake = wake.map(tokio::time::Instant::from_std);
            tokio::select! {
                _ = stop.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => break,
                },
                ev = sdk.recv() => match ev {
                    Some(SdkEvent::Stopped { reason }) => return Err(ServicesError::Stopped(reason)),
                    Some(ev) => self.on_sdk_event(&scheduler, ev).await,
                    None => return Err(ServicesError::Stopped("the driver's events ended".into())),
                },
                _ = tick.tick() => {}
                _ = sleep_until(wake) => {}
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
            self.reconcile(&scheduler);
            if self.last_flush.elapsed() >= self.config.flush_interval {
                self.flush().await;
            }
            if let Some(e) = self.failed.take() {
                return Err(e);
            }
        }
        // Leadership lost or shutting down: what was not stored yet is
        // learnt again by the next leader's reconciliation (a deposed
        // leader's fenced store refuses it anyway).
        let mut rest = std::mem::take(&mut self.pending);
        {
            let s = self.state.read();
            for (app, shards) in std::mem::take(&mut self.dirty) {
                if let Some(a) = s.apps.get(&app) {
                    rest.put_shards(&app, shards, a.instances.values());
                }
            }
        }
        if let Err(e) = self.records.commit(rest).await {
            tracing::debug!(
                "the last changes of the term were not stored ({e}); reconciliation learns them again"
            );
        }
        Ok(())
    }

    /// Stores the dirty shards and pending records in one batch; `false`
    /// (and the term ends) when the store did not take them.
    async fn flush(&mut self) -> bool {
        self.last_flush = Instant::now();
        let mut changes = std::mem::take(&mut self.pending);
        {
            let s = self.state.read();
            for (app, shards) in std::mem::take(&mut self.dirty) {
                match s.apps.get(&app) {
                    Some(a) => changes.put_shards(&app, shards, a.instances.values()),
                    None => {
                        for shard in shards {
                            changes.delete(store::shard_key(&app, shard));
                        }
                    }
                }
            }
        }
        if changes.is_empty() {
            return true;
        }
        let n = changes.len() as u64;
        match self.records.commit(changes).await {
            Ok(()) => {
                self.metrics.store_batches.inc();
                self.metrics.store_batch_writes.inc_by(n);
                true
            }
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn mark(&mut self, app: &str, task_id: &str) {
        self.dirty
            .entry(app.to_string())
            .or_default()
            .insert(store::shard_of(task_id));
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Deploy {
                changes,
                force,
                reply,
            } => {
                let r = self.deploy(changes, force).await;
                let _ = reply.send(r);
            }
            Command::KillTasks { tasks, reply } => {
                let now_i = Instant::now();
                let mut killed = Vec::new();
                {
                    let mut s = self.state.write();
                    for (app, task) in tasks {
                        if let Some(i) = s
                            .apps
                            .get_mut(&app)
                            .and_then(|a| a.instances.get_mut(&task))
                            && i.is_active()
                        {
                            i.killing = true;
                            self.tracker.kill(&task, now_i);
                            self.metrics.killed.inc();
                            killed.push((app, task));
                        }
                    }
                }
                for (app, task) in &killed {
                    self.mark(app, task);
                }
                // Durable before answered: a new leader goes on killing them.
                let r = if self.flush().await {
                    Ok(killed)
                } else {
                    Err(Refusal::unavailable(
                        "the kill could not be stored; retry shortly",
                    ))
                };
                let _ = reply.send(r);
            }
            Command::CancelDeployment { id, force, reply } => {
                let r = self.cancel(id, force).await;
                let _ = reply.send(r);
            }
            Command::ResetDelay { app, reply } => {
                let mut s = self.state.write();
                let r = match s.apps.get_mut(&app).filter(|a| !a.removed) {
                    Some(a) => {
                        a.launch.failures = 0;
                        a.launch.delay_until = 0;
                        Ok(())
                    }
                    None => Err(Refusal::app_not_found(&app)),
                };
                let _ = reply.send(r);
            }
        }
    }

    async fn deploy(
        &mut self,
        changes: Vec<AppChange>,
        force: bool,
    ) -> Result<(String, Millis), Refusal> {
        let prepared = self
            .state
            .read()
            .prepare(changes, force, now(), &self.ctx)?;
        let changes = prepared.changes(&self.state.read());
        self.store_change(changes).await?;
        let now_i = Instant::now();
        for (_, task) in &prepared.kill {
            self.tracker.kill(task, now_i);
            self.metrics.killed.inc();
        }
        // Deployments this one replaces (`force`) end as failed.
        let replaced: Vec<Deployment> = {
            let s = self.state.read();
            prepared
                .cancelled
                .iter()
                .filter_map(|id| s.deployments.get(id).cloned())
                .collect()
        };
        self.state.write().apply(&prepared);
        for old in &replaced {
            self.events.publish(Event::deployment_failed(old));
        }
        let d = &prepared.deployment;
        self.events.publish(Event::deployment_info(d));
        self.events
            .publish(Event::group_change_success("/", d.version));
        Ok((d.id.clone(), d.version))
    }

    /// Stores what an API request changes (with whatever else waits to be
    /// stored, so that nothing older is overwritten later); a failure
    /// answers 503 and ends the term.
    async fn store_change(&mut self, changes: Changes) -> Result<(), Refusal> {
        self.pending.merge(changes);
        if self.flush().await {
            Ok(())
        } else {
            Err(Refusal::unavailable(
                "the change could not be stored; nothing was changed; retry shortly",
            ))
        }
    }

    async fn cancel(
        &mut self,
        id: String,
        force: bool,
    ) -> Result<Option<(String, Millis)>, Refusal> {
        let d = self
            .state
            .read()
            .deployments
            .get(&id)
            .cloned()
            .ok_or_else(|| Refusal::not_found(format!("DeploymentPlan {id} does not exist")))?;
        if force {
            let mut c = Changes::default();
            c.delete(store::deployment_key(&id));
            self.store_change(c).await?;
            self.state.write().deployments.remove(&id);
            self.events.publish(Event::deployment_failed(&d));
            return Ok(None);
        }
        // Roll back: every app back to what it was before.
        let changes = d
            .original
            .iter()
            .map(|(app, before)| match before {
                Some(b) => AppChange::Rollback {
                    id: app.clone(),
                    to: Box::new(b.clone()),
                },
                None => AppChange::Remove(app.clone()),
            })
            .filter(|c| match c {
                // An app the deployment created and nothing else holds.
                AppChange::Remove(app) => self.state.read().app(app).is_some(),
                _ => true,
            })
            .collect::<Vec<_>>();
        self.events.publish(Event::deployment_failed(&d));
        let r = self.deploy_replacing(changes, &d).await?;
        Ok(Some(r))
    }

    /// A deployment that replaces `old` (a rollback).
    async fn deploy_replacing(
        &mut self,
        changes: Vec<AppChange>,
        old: &Deployment,
    ) -> Result<(String, Millis), Refusal> {
        // Apps the deployment removed come back as `Put` of their old
        // definition (they are no longer visible, so a rollback would 404).
        let changes = changes
            .into_iter()
            .map(|c| match c {
                AppChange::Rollback { id, to } if self.state.read().app(&id).is_none() => {
                    AppChange::Put(to.definition)
                }
                c => c,
            })
            .collect();
        let mut prepared = self.state.read().prepare(changes, true, now(), &self.ctx)?;
        if !prepared.cancelled.contains(&old.id) {
            prepared.cancelled.push(old.id.clone());
        }
        let changes = prepared.changes(&self.state.read());
        self.store_change(changes).await?;
        self.state.write().apply(&prepared);
        self.events
            .publish(Event::deployment_info(&prepared.deployment));
        Ok((prepared.deployment.id.clone(), prepared.deployment.version))
    }

    async fn on_sdk_event(&mut self, scheduler: &Scheduler, ev: SdkEvent) {
        match ev {
            SdkEvent::Subscribed {
                framework_id,
                resubscribed,
                ..
            } => {
                tracing::info!(%framework_id, resubscribed, "subscribed");
                self.state.write().framework_id = Some(framework_id);
                self.tracker.on_subscribed(Instant::now());
                self.reconciled = false;
                // Nothing launches before every known task answered: no
                // offers until then. Said at once, whatever an earlier
                // instance left the master thinking.
                if let Err(e) = scheduler.suppress(Vec::new()) {
                    tracing::debug!("cannot suppress offers now: {e}");
                }
                self.suppressed = true;
            }
            SdkEvent::Offers(offers) => self.on_offers(scheduler, offers).await,
            SdkEvent::Updates(statuses) => self.on_updates(scheduler, statuses).await,
            SdkEvent::Rescind(_) | SdkEvent::Failure { .. } => {}
            SdkEvent::Error(e) => tracing::warn!("the master says: {e}"),
            SdkEvent::Disconnected { reason, retry_in } => {
                tracing::warn!(?retry_in, "disconnected from the master: {reason}");
            }
            SdkEvent::Stopped { .. } => {}
        }
    }

    async fn on_updates(&mut self, scheduler: &Scheduler, statuses: Vec<TaskStatus>) {
        let now_i = Instant::now();
        let now_ms = now();
        let mut critical = false;
        let mut events = Vec::new();
        // Events only for someone to read (10,000 updates make 20,000).
        let listening = self.events.has_subscribers();
        for status in &statuses {
            self.metrics.status_updates.inc();
            let observed = self.tracker.on_update(status, now_i);
            if matches!(observed, Observed::Unknown) {
                continue;
            }
            let Some(app_id) = self.index.get(&status.task_id).cloned() else {
                continue;
            };
            let state = status.state();
            let mut s = self.state.write();
            let Some(app) = s.apps.get_mut(&app_id) else {
                continue;
            };
            let Some(inst) = app.instances.get_mut(&status.task_id) else {
                continue;
            };
            let health_changed = status.healthy.is_some() && inst.healthy != status.healthy;
            let changed = inst.state != state
                || health_changed
                || (status.ready.is_some() && inst.ready != status.ready);
            inst.state = state;
            if status.healthy.is_some() {
                inst.healthy = status.healthy;
            }
            if health_changed && status.healthy == Some(false) {
                inst.health_failure = Some(status.message.clone());
            }
            if status.ready.is_some() {
                inst.ready = status.ready;
            }
            if state == TaskState::TaskRunning && inst.started_at.is_none() {
                inst.started_at = Some(time::from_seconds(status.timestamp));
            }
            inst.unreachable_since = match state {
                TaskState::TaskUnreachable => inst.unreachable_since.or(Some(now_ms)),
                _ => None,
            };
            if changed && listening {
                events.push(Event::status_update(inst, &status.message));
                events.push(Event::instance_changed(inst));
            }
            if let (true, true, Some(alive)) = (listening, health_changed, inst.healthy) {
                events.push(Event::health_changed(inst, alive));
            }
            // The master does not know the task (never launched, or gone
            // long ago): it is not running anywhere.
            if is_terminal(state) || state == TaskState::TaskUnknown {
                let inst = app.instances.remove(&status.task_id).expect("present");
                self.index.remove(&inst.task_id);
                self.tracker.forget(&inst.task_id);
                self.placed.remove(&inst.app_id, &inst.agent_id);
                // Killed by its agent for failing its health check: a
                // failure too (backoff, `lastTaskFailure`), as Marathon
                // counts a task it killed for failing its checks.
                let failed = !inst.killing
                    && (matches!(state, TaskState::TaskFailed | TaskState::TaskError)
                        || health::killed_by_check(status));
                if failed {
                    self.metrics.failed.inc();
                    let def = &app.current.definition;
                    app.launch.failures += 1;
                    let delay = backoff::delay(
                        app.launch.failures,
                        Duration::from_secs(def.backoff_seconds.max(0) as u64),
                        def.backoff_factor,
                        Duration::from_secs(def.max_launch_delay_seconds.max(0) as u64),
                    );
                    app.launch.delay_until = now_ms + time::duration_millis(delay);
                    let failure = TaskFailure {
                        app_id: inst.app_id.clone(),
                        host: inst.host.clone(),
                        message: status.message.clone(),
                        state: state.as_str_name().to_string(),
                        task_id: inst.task_id.clone(),
                        timestamp: time::format(time::from_seconds(status.timestamp)),
                        version: time::format(inst.version),
                        slave_id: inst.agent_id.clone(),
                    };
                    self.pending.put(store::failure_key(&inst.app_id), &failure);
                    app.last_failure = Some(failure);
                }
                drop(s);
                self.mark(&app_id, &status.task_id);
                critical = true;
            } else if changed {
                drop(s);
                self.mark(&app_id, &status.task_id);
            }
        }
        if critical && !self.flush().await {
            // Not stored: do not acknowledge; the agent resends.
            return;
        }
        for e in events {
            self.events.publish(e);
        }
        if let Err(e) = scheduler.acknowledge(&statuses) {
            tracing::debug!("cannot acknowledge now ({e}); the agent resends");
        }
    }

    async fn on_offers(&mut self, scheduler: &Scheduler, offers: Vec<Offer>) {
        self.metrics.offers_processed.inc_by(offers.len() as u64);
        let now_ms = now();
        let offer_ids: Vec<String> = offers.iter().map(|o| o.id.clone()).collect();
        if !self.reconciled {
            let _ = scheduler.decline(offer_ids, Some(1.0));
            return;
        }
        // Requests for every instance waiting to launch.
        let mut requests = Vec::new();
        let mut apps: HashMap<String, StoredApp> = HashMap::new();
        // The earliest end of a launch backoff: offers are refused until then.
        let mut delayed_until: Option<Millis> = None;
        {
            let s = self.state.read();
            for a in s
                .apps
                .values()
                .filter(|a| !a.removed && a.launch.wanted > 0)
            {
                if now_ms < a.launch.delay_until {
                    delayed_until =
                        Some(delayed_until.map_or(a.launch.delay_until, |d: Millis| {
                            d.min(a.launch.delay_until)
                        }));
                    continue;
                }
                let def = &a.current.definition;
                let Ok(template) = request_for(&a.current) else {
                    continue;
                };
                for n in 0..a.launch.wanted {
                    let mut r = template.clone();
                    r.key = format!("{}\u{1}{n}", def.id);
                    requests.push(r);
                }
                apps.insert(def.id.clone(), a.current.clone());
            }
        }
        if requests.is_empty() {
            self.metrics.offers_declined.inc_by(offer_ids.len() as u64);
            let refuse = match delayed_until {
                Some(until) => {
                    ((until - now_ms) as f64 / 1000.0).clamp(0.5, self.config.refuse_seconds)
                }
                None => self.config.refuse_seconds.max(30.0),
            };
            let _ = scheduler.decline(offer_ids, Some(refuse));
            return;
        }
        let result = match_offers(&offers, &requests, &self.placed);
        let hostnames: HashMap<&str, &Offer> = offers.iter().map(|o| (o.id.as_str(), o)).collect();
        // Records first, then the launch.
        let mut launches = Vec::new();
        let mut placed_per_app: BTreeMap<String, u32> = BTreeMap::new();
        {
            let mut s = self.state.write();
            for (ids, placements) in &result.launches {
                let mut tasks = Vec::new();
                for p in placements {
                    let app_id = p.key.split('\u{1}').next().unwrap_or_default().to_string();
                    let Some(stored) = apps.get(&app_id) else {
                        continue;
                    };
                    let Ok(pid) = PathId::parse(&app_id) else {
                        continue;
                    };
                    let task_id = new_task_id(&pid);
                    let offer = hostnames.get(p.offer_id.as_str());
                    let role = p
                        .resources
                        .first()
                        .map(|r| r.role.clone())
                        .unwrap_or_else(|| "*".into());
                    let inst = Instance {
                        task_id: task_id.clone(),
                        app_id: app_id.clone(),
                        version: stored.version,
                        config_version: stored.last_config_change_at,
                        agent_id: p.agent_id.clone(),
                        host: p.hostname.clone(),
                        ports: p.ports.clone(),
                        state: TaskState::TaskStaging,
                        staged_at: now_ms,
                        started_at: None,
                        healthy: None,
                        health_failure: None,
                        ready: None,
                        health_checked: !stored.definition.health_checks.is_empty(),
                        readiness_checked: !stored.definition.readiness_checks.is_empty(),
                        unreachable_since: None,
                        killing: false,
                        role,
                        attributes: offer
                            .map(|o| agora_proto::format_attributes(&o.attributes))
                            .unwrap_or_default(),
                    };
                    tasks.push(taskinfo::task_info(
                        stored,
                        Slot {
                            task_id: &task_id,
                            agent_id: &p.agent_id,
                            hostname: &p.hostname,
                            resources: p.resources.clone(),
                            ports: &p.ports,
                        },
                    ));
                    self.tracker.expect(&task_id, Some(p.agent_id.clone()));
                    self.placed.add(&app_id, facts(&inst));
                    self.index.insert(task_id.clone(), app_id.clone());
                    *placed_per_app.entry(app_id.clone()).or_default() += 1;
                    if let Some(a) = s.apps.get_mut(&app_id) {
                        a.instances.insert(task_id.clone(), inst);
                    }
                    self.dirty
                        .entry(app_id)
                        .or_default()
                        .insert(store::shard_of(&task_id));
                }
                launches.push((ids.clone(), tasks));
            }
            // What the offers said, per app.
            let mut reasons: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
            for (key, why) in &result.unplaced {
                let app = key.split('\u{1}').next().unwrap_or_default();
                *reasons
                    .entry(app.to_string())
                    .or_default()
                    .entry(why.clone())
                    .or_default() += 1;
            }
            for (app_id, _) in apps.iter() {
                let Some(a) = s.apps.get_mut(app_id) else {
                    continue;
                };
                let placed = placed_per_app.get(app_id).copied().unwrap_or(0);
                a.launch.wanted = a.launch.wanted.saturating_sub(placed);
                a.launch.processed_offers += offers.len() as u64;
                if placed > 0 {
                    a.launch.last_used_at = Some(now_ms);
                }
                match reasons.remove(app_id) {
                    Some(r) => {
                        a.launch.unused_offers += result.unused_offers.len() as u64;
                        a.launch.last_unused_at = Some(now_ms);
                        for id in &result.unused_offers {
                            if let Some(o) = hostnames.get(id.as_str()) {
                                a.launch.last_unused.push_back(UnusedOffer {
                                    offer_id: o.id.clone(),
                                    agent_id: o.agent_id.clone(),
                                    hostname: o.hostname.clone(),
                                    reason: r.keys().next().cloned().unwrap_or_default(),
                                    at: now_ms,
                                });
                            }
                        }
                        while a.launch.last_unused.len() > LAST_UNUSED {
                            a.launch.last_unused.pop_front();
                        }
                        a.launch.reasons = r;
                    }
                    None => a.launch.reasons.clear(),
                }
            }
        }
        // Durable before launched: the instances are stored first. If the
        // store does not take them, nothing is launched and the term ends
        // (the next one starts from what the store holds).
        if !launches.is_empty() && !self.flush().await {
            return;
        }
        for (ids, tasks) in launches {
            self.metrics.launched.inc_by(tasks.len() as u64);
            if let Err(e) = scheduler.accept(ids, tasks, Some(self.config.refuse_seconds)) {
                tracing::warn!("cannot launch now: {e}; reconciliation will find the tasks lost");
            }
        }
        if !result.unused_offers.is_empty() {
            self.metrics
                .offers_declined
                .inc_by(result.unused_offers.len() as u64);
            let _ = scheduler.decline(result.unused_offers, Some(self.config.refuse_seconds));
        }
    }

    /// One pass over every app and deployment: decide kills and launch
    /// demand, carry steps forward.
    fn reconcile(&mut self, scheduler: &Scheduler) {
        if !self.reconciled && self.tracker.reconciled() {
            self.reconciled = true;
            tracing::info!("every known task has answered; launching and killing from now on");
        }
        let now_ms = now();
        let now_i = Instant::now();
        let mut kills: Vec<(String, String)> = Vec::new();
        let mut expunged: Vec<(String, String)> = Vec::new();
        let mut done_actions: BTreeSet<(String, String)> = BTreeSet::new();
        let mut any_wanted = false;
        {
            let mut s = self.state.write();
            let actions: HashMap<String, (String, ActionKind)> = s
                .deployments
                .values()
                .flat_map(|d| {
                    d.current_actions()
                        .iter()
                        .map(move |a| (a.app.clone(), (d.id.clone(), a.kind)))
                })
                .collect();
            let locked: BTreeSet<String> = s
                .deployments
                .values()
                .flat_map(|d| d.target.keys().cloned())
                .collect();
            for a in s.apps.values_mut() {
                let id = a.id().to_string();
                let def = &a.current.definition;
                let waits = def.unreachable_waits();
                // Unreachable for longer than expungeAfterSeconds: forgotten
                // (killed if it ever comes back).
                if let Some((_, expunge)) = waits {
                    for i in a.instances.values() {
                        if i.unreachable_since.is_some_and(|t| now_ms - t >= expunge) {
                            expunged.push((id.clone(), i.task_id.clone()));
                        }
                    }
                }
                for (_, t) in expunged.iter().filter(|(app, _)| *app == id) {
                    a.instances.remove(t);
                }
                let inactive = waits.map(|(i, _)| i);
                let action = actions.get(&id).cloned();
                let mut wanted = 0u32;
                let mut done = false;
                if !self.reconciled {
                    a.launch.wanted = 0;
                    continue;
                }
                let counted: Vec<&Instance> = a
                    .instances
                    .values()
                    .filter(|i| i.counts(inactive, now_ms))
                    .collect();
                match (a.removed, action.as_ref().map(|(_, k)| *k)) {
                    (true, _) | (_, Some(ActionKind::StopApplication)) => {
                        for i in a.instances.values().filter(|i| i.is_active() && !i.killing) {
                            kills.push((id.clone(), i.task_id.clone()));
                        }
                        done = a.instances.values().all(|i| !i.is_active());
                    }
                    (false, Some(ActionKind::StartApplication)) => done = true,
                    (false, Some(ActionKind::RestartApplication)) => {
                        let target = a.current.last_config_change_at;
                        let n = def.instances.max(0) as u32;
                        let mut c = Counts::default();
                        let mut old_healthy = Vec::new();
                        let mut old_unhealthy = Vec::new();
                        let mut new_list = Vec::new();
                        for i in a.instances.values().filter(|i| i.is_active()) {
                            if i.killing || !i.counts(inactive, now_ms) {
                                c.killing += u32::from(i.killing);
                                if !i.killing {
                                    old_unhealthy.push(i);
                                    c.old_unhealthy += 1;
                                }
                                continue;
                            }
                            let healthy = health::is_serving(i);
                            match (i.config_version == target, healthy) {
                                (true, true) => {
                                    c.new_healthy += 1;
                                    new_list.push(i);
                                }
                                (true, false) => {
                                    c.new_unhealthy += 1;
                                    new_list.push(i);
                                }
                                (false, true) => {
                                    c.old_healthy += 1;
                                    old_healthy.push(i);
                                }
                                (false, false) => {
                                    c.old_unhealthy += 1;
                                    old_unhealthy.push(i);
                                }
                            }
                        }
                        let d = rolling::decide(n, &def.upgrade_strategy, c);
                        for i in old_unhealthy.iter().take(d.kill_old_unhealthy as usize) {
                            kills.push((id.clone(), i.task_id.clone()));
                        }
                        let pick = scale::decide(
                            old_healthy
                                .len()
                                .saturating_sub(d.kill_old_healthy as usize)
                                as u32,
                            &old_healthy.iter().map(|i| candidate(i)).collect::<Vec<_>>(),
                            def.kill_selection,
                        );
                        kills.extend(pick.kill.into_iter().map(|t| (id.clone(), t)));
                        let pick = scale::decide(
                            new_list.len().saturating_sub(d.kill_new as usize) as u32,
                            &new_list.iter().map(|i| candidate(i)).collect::<Vec<_>>(),
                            def.kill_selection,
                        );
                        kills.extend(pick.kill.into_iter().map(|t| (id.clone(), t)));
                        wanted = d.launch;
                        done = d.done;
                    }
                    (false, scale_or_none) => {
                        // Scale step, or steady state (self-healing).
                        let in_later_step = scale_or_none.is_none() && locked.contains(&id);
                        if !in_later_step {
                            let n = def.instances.max(0) as u32;
                            let d = if counted.len() as u32 <= n {
                                // Nothing to kill: no candidates to build.
                                scale::ScaleDecision {
                                    launch: n - counted.len() as u32,
                                    kill: Vec::new(),
                                }
                            } else {
                                scale::decide(
                                    n,
                                    &counted.iter().map(|i| candidate(i)).collect::<Vec<_>>(),
                                    def.kill_selection,
                                )
                            };
                            kills.extend(d.kill.into_iter().map(|t| (id.clone(), t)));
                            wanted = d.launch;
                            done = counted.len() as u32 == n
                                && counted.iter().all(|i| health::is_serving(i))
                                && a.instances.values().all(|i| !i.killing || !i.is_active());
                        }
                    }
                }
                a.launch.wanted = wanted;
                if wanted > 0 {
                    any_wanted = true;
                    a.launch.since.get_or_insert(now_ms);
                } else {
                    a.launch.since = None;
                    a.launch.reasons.clear();
                }
                if done && let Some((d, _)) = action {
                    done_actions.insert((d, id.clone()));
                }
            }
            for (app, task) in &kills {
                if let Some(i) = s.apps.get_mut(app).and_then(|a| a.instances.get_mut(task)) {
                    i.killing = true;
                }
            }
        }
        for (app, task) in &expunged {
            tracing::info!(%task, %app, "unreachable for longer than expungeAfterSeconds: forgotten");
            self.index.remove(task);
            self.tracker.forget(task);
            self.mark(app, task);
        }
        for (app, task) in &kills {
            self.tracker.kill(task, now_i);
            self.metrics.killed.inc();
            self.mark(app, task);
        }
        self.advance_deployments(&done_actions);
        // Offers only while something waits.
        if any_wanted && self.suppressed {
            if scheduler.revive(Vec::new()).is_ok() {
                self.suppressed = false;
            }
        } else if !any_wanted
            && !self.suppressed
            && self.reconciled
            && scheduler.suppress(Vec::new()).is_ok()
        {
            self.suppressed = true;
        }
    }

    /// Moves deployments whose current step is complete to the next step;
    /// finishes those that have none left.
    fn advance_deployments(&mut self, done: &BTreeSet<(String, String)>) {
        let mut finished = Vec::new();
        let mut stepped = Vec::new();
        {
            let mut s = self.state.write();
            for d in s.deployments.values_mut() {
                let complete = d.current_actions().iter().all(|a| {
                    a.kind == ActionKind::StartApplication
                        || done.contains(&(d.id.clone(), a.app.clone()))
                });
                if complete && !d.is_done() {
                    d.current_step += 1;
                    stepped.push(d.clone());
                }
                if d.is_done() {
                    finished.push(d.id.clone());
                }
            }
        }
        for d in stepped {
            self.events.publish(Event::deployment_step_success(&d));
            if !d.is_done() {
                self.pending.put(store::deployment_key(&d.id), &d);
            }
        }
        for id in finished {
            let d = {
                let mut s = self.state.write();
                let Some(d) = s.deployments.remove(&id) else {
                    continue;
                };
                // Apps this deployment removed are gone once stopped.
                for (app, target) in &d.target {
                    if target.is_none()
                        && let Some(a) = s.apps.get(app)
                        && a.removed
                        && a.instances.values().all(|i| !i.is_active())
                    {
                        let a = s.apps.remove(app).expect("present");
                        for v in &a.versions {
                            self.pending.delete(store::version_key(app, *v));
                        }
                        self.pending.delete(store::failure_key(app));
                        for shard in 0..store::SHARDS {
                            self.pending.delete(store::shard_key(app, shard));
                        }
                        self.placed.clear_group(app);
                        self.events.publish(Event::app_terminated(app));
                    }
                }
                d
            };
            self.pending.delete(store::deployment_key(&id));
            self.metrics.deployments_succeeded.inc();
            self.events.publish(Event::deployment_success(&d));
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn facts(i: &Instance) -> AgentFacts {
    AgentFacts {
        agent_id: i.agent_id.clone(),
        hostname: i.host.clone(),
        attributes: agora_proto::parse_attributes(&i.attributes).unwrap_or_default(),
    }
}

fn candidate(i: &Instance) -> Candidate {
    Candidate {
        id: i.task_id.clone(),
        starting_or_lost: i.is_launching() || i.unreachable_since.is_some(),
        staged_at: i.staged_at,
    }
}

/// The matcher request for one instance of `app` (its key is set by the
/// caller).
fn request_for(app: &StoredApp) -> Result<TaskRequest, String> {
    let def = &app.definition;
    let mut text = format!("cpus:{};mem:{}", def.cpus, def.mem);
    if def.disk > 0.0 {
        text.push_str(&format!(";disk:{}", def.disk));
    }
    if def.gpus > 0 {
        text.push_str(&format!(";gpus:{}", def.gpus));
    }
    let resources = Resources::parse(&text).map_err(|e| e.to_string())?;
    let ports: Vec<u64> = def
        .port_definitions()
        .iter()
        .map(|p| if def.require_ports { p.port as u64 } else { 0 })
        .chain(
            def.port_mappings()
                .iter()
                .map(|m| m.host_port.unwrap_or(0).max(0) as u64),
        )
        .collect();
    let constraints = def
        .constraints
        .iter()
        .map(|c| Constraint::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TaskRequest {
        key: String::new(),
        group: def.id.clone(),
        resources,
        ports: if ports.is_empty() {
            PortRequest::None
        } else {
            PortRequest::Exact(ports)
        },
        accepted_roles: def.accepted_resource_roles.clone().unwrap_or_default(),
        constraints,
    })
}
