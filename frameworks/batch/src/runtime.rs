//! The batch framework's runtime: its HTTP server, leader election, and
//! while it leads, one actor that owns the [`Core`] and executes its
//! effects in the order the guarantees need (Store first, then the master,
//! then the caller).
//!
//! A term of leadership: load jobs, cursors and runs from the (fenced)
//! Store, subscribe with the stored framework id, reconcile the tasks of
//! unfinished runs, then serve. Any failed Store write, or the loss of
//! leadership, ends the term at once: the core is dropped (nothing it
//! decided after the last durable write is acted on) and the next term
//! starts from the Store again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_coord::Expected;
use agora_framework_kit::election::{Election, Elector, Role, Term};
use agora_framework_kit::session::{SessionConfig, start_session};
use agora_framework_kit::store::{FrameworkStore, StoreBackend};
use agora_framework_kit::tracker;
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{self, ApiState};
use crate::core::{Answer, Command, Core, CoreConfig, Effects, Now, Refusal, Write};
use crate::error::BatchError;
use crate::layout::{self, Cursor, JobRecord};
use crate::metrics::Metrics;
use crate::run::Run;

/// The framework's name at the master.
pub const FRAMEWORK_NAME: &str = "agora-batch";

/// How the batch framework runs.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// The master: `host:port`, or `zk://...` to follow the leading master.
    pub master: String,
    /// The REST API's address (port 0: any free port).
    pub listen: SocketAddr,
    /// Where jobs, schedules and runs are kept.
    pub store: StoreBackend,
    /// Standalone (always leads) or ZooKeeper leader election.
    pub election: Election,
    /// How long the master keeps the framework's tasks while no instance is
    /// connected.
    pub failover_timeout: Duration,
    pub core: CoreConfig,
}

impl BatchConfig {
    /// Standalone, in memory, on `listen`.
    pub fn new(master: impl Into<String>, listen: SocketAddr) -> BatchConfig {
        BatchConfig {
            master: master.into(),
            listen,
            store: StoreBackend::Memory,
            election: Election::Standalone,
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            core: CoreConfig::default(),
        }
    }

    /// Checks the settings before anything binds.
    pub fn validate(&self) -> Result<(), String> {
        if self.core.history_count == 0 {
            return Err("--history-count must be at least 1".into());
        }
        if self.core.role.trim().is_empty() {
            return Err("--role must not be empty".into());
        }
        if !(self.core.backoff_factor.is_finite() && self.core.backoff_factor >= 1.0) {
            return Err("the backoff factor must be a number >= 1".into());
        }
        // Port 0 (any free port) is known once bound; check with a stand-in.
        let stand_in = SocketAddr::new(self.listen.ip(), self.listen.port().max(1));
        self.scheduler_config(stand_in)
            .validate()
            .map_err(|e| e.to_string())
    }

    fn scheduler_config(&self, http: SocketAddr) -> SchedulerConfig {
        let mut c = SchedulerConfig::new(self.master.clone(), FRAMEWORK_NAME);
        c.framework.roles = vec![self.core.role.clone()];
        c.framework.failover_timeout = self.failover_timeout.as_secs_f64();
        c.framework.webui_url = format!("http://{http}");
        c
    }
}

/// A request to the leading actor.
pub(crate) enum Request {
    Command(Box<Command>, oneshot::Sender<Result<Answer, ApiFailure>>),
    Query(Box<dyn FnOnce(&Core) + Send>),
}

/// Why a command did not happen.
#[derive(Debug, Clone)]
pub(crate) enum ApiFailure {
    Refused(Refusal),
    /// Not leading, still loading, or the Store refused the write.
    Unavailable(String),
}

/// The API's way to the actor.
#[derive(Clone)]
pub(crate) struct ActorHandle {
    tx: mpsc::Sender<Request>,
}

impl ActorHandle {
    pub(crate) async fn command(&self, cmd: Command) -> Result<Answer, ApiFailure> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Request::Command(Box::new(cmd), tx))
            .await
            .map_err(|_| ApiFailure::Unavailable("the batch framework is shutting down".into()))?;
        rx.await.unwrap_or_else(|_| {
            Err(ApiFailure::Unavailable(
                "leadership changed while the request was handled; retry".into(),
            ))
        })
    }

    /// Runs `f` on the core; `None` while no term serves.
    pub(crate) async fn query<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Core) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let q = Box::new(move |core: &Core| {
            let _ = tx.send(f(core));
        });
        self.tx.send(Request::Query(q)).await.ok()?;
        rx.await.ok()
    }
}

/// A running batch framework.
pub struct RunningBatch {
    addr: SocketAddr,
    role: watch::Receiver<Role>,
    done: tokio::task::JoinHandle<()>,
}

impl RunningBatch {
    /// The REST API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// This instance's role.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Waits until it has stopped (after the shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: BatchConfig, shutdown: CancellationToken) -> Result<(), BatchError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Binds the API, starts the election, and returns once it serves.
pub async fn start(
    config: BatchConfig,
    shutdown: CancellationToken,
) -> Result<RunningBatch, BatchError> {
    config.validate().map_err(BatchError::Config)?;
    let base = FrameworkStore::open(&config.store)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| BatchError::Bind {
            addr: config.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| BatchError::Bind {
        addr: config.listen,
        source: e,
    })?;
    let mut elector = Elector::start(config.election.clone(), addr, shutdown.clone());
    let role = elector.role();
    let (tx, mut requests) = mpsc::channel::<Request>(1024);
    let metrics = Arc::new(Metrics::new());
    let framework_id = Arc::new(RwLock::new(None::<String>));
    let state = ApiState {
        actor: ActorHandle { tx },
        role: role.clone(),
        metrics: metrics.clone(),
        events: agora_framework_kit::http::EventBus::new(1024),
        framework_id: framework_id.clone(),
        http: reqwest::Client::new(),
    };
    let events = state.events.clone();
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(api::serve(listener, state, server_shutdown));
    tracing::info!(%addr, "batch framework API listening");

    let ctx = Ctx {
        config,
        base,
        http_addr: addr,
        metrics,
        events,
        framework_id,
    };
    let done = tokio::spawn(
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    term = elector.next_term() => {
                        let Some(term) = term else { break };
                        ctx.metrics.leader.set(1);
                        loop {
                            let result = run_term(&ctx, &term, &mut requests, &shutdown)
                                .instrument(tracing::info_span!("term", term = term.number()))
                                .await;
                            match result {
                                Ok(()) => tracing::info!("leadership ended"),
                                Err(e) => tracing::error!("the term ended: {e}; loading again from the store"),
                            }
                            if shutdown.is_cancelled() || term.is_lost() {
                                break;
                            }
                            // Still leading: a failed write (or a stopped
                            // driver) ended the term; start again from the
                            // Store after a moment.
                            tokio::select! {
                                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                                _ = term.lost() => break,
                                _ = shutdown.cancelled() => break,
                            }
                        }
                        ctx.metrics.leader.set(0);
                    }
                    Some(req) = requests.recv() => refuse_unavailable(req, "this instance is not serving yet (it is starting or standing by)"),
                }
            }
            elector.shutdown();
            let _ = server.await;
        }
        .instrument(tracing::info_span!("batch")),
    );
    Ok(RunningBatch { addr, role, done })
}

fn refuse_unavailable(req: Request, why: &str) {
    if let Request::Command(_, reply) = req {
        let _ = reply.send(Err(ApiFailure::Unavailable(why.to_string())));
    }
    // A query's sender is dropped: the caller sees `None`.
}

/// What every term shares.
struct Ctx {
    config: BatchConfig,
    base: FrameworkStore,
    http_addr: SocketAddr,
    metrics: Arc<Metrics>,
    events: agora_framework_kit::http::EventBus<serde_json::Value>,
    framework_id: Arc<RwLock<Option<String>>>,
}

/// Job buckets read at once when a term starts.
const LOAD_CONCURRENCY: usize = 64;

/// Loads what the Store holds.
async fn load(store: &FrameworkStore, config: &CoreConfig, now: Now) -> Result<Core, BatchError> {
    let started = Instant::now();
    let jobs: Vec<JobRecord> = store
        .load_prefix::<JobRecord>(layout::JOBS)
        .await?
        .into_iter()
        .map(|(_, v)| v.value)
        .collect();
    let cursors: Vec<(String, String, Cursor)> = store
        .load_prefix::<Cursor>(layout::CURSORS)
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let (j, s) = layout::parse_cursor_key(&k)?;
            Some((j.to_string(), s.to_string(), v.value))
        })
        .collect();
    // One bucket per job: read many at once (with ZooKeeper each is a
    // round trip, and 10,000 of them one after another take seconds).
    let mut runs: Vec<Run> = Vec::new();
    let mut prefixes = jobs.iter().map(|j| layout::runs_prefix(&j.spec.id));
    let mut loads = tokio::task::JoinSet::new();
    loop {
        while loads.len() < LOAD_CONCURRENCY {
            let Some(prefix) = prefixes.next() else { break };
            let store = store.clone();
            loads.spawn(async move { store.load_prefix::<Run>(&prefix).await });
        }
        let Some(loaded) = loads.join_next().await else {
            break;
        };
        let loaded = loaded.map_err(|e| BatchError::Stopped(format!("loading runs: {e}")))?;
        runs.extend(loaded?.into_iter().map(|(_, v)| v.value));
    }
    tracing::info!(
        jobs = jobs.len(),
        runs = runs.len(),
        ms = started.elapsed().as_millis() as u64,
        "loaded from the store"
    );
    Ok(Core::load(config.clone(), jobs, cursors, runs, now))
}

/// One term of leadership.
async fn run_term(
    ctx: &Ctx,
    term: &Term,
    requests: &mut mpsc::Receiver<Request>,
    shutdown: &CancellationToken,
) -> Result<(), BatchError> {
    let store = term.store(&ctx.base);
    let mut core = tokio::select! {
        core = load(&store, &ctx.config.core, Now::read()) => core?,
        _ = term.lost() => return Ok(()),
    };
    let session = SessionConfig::new(ctx.config.scheduler_config(ctx.http_addr));
    let (scheduler, mut events) = tokio::select! {
        s = start_session(session, &store) => s?,
        _ = term.lost() => return Ok(()),
    };
    let mut actor = Actor {
        ctx,
        store,
        scheduler: scheduler.clone(),
    };
    let result = async {
        // What was due while no leader ran is decided at once.
        let fx = core.tick(Now::read());
        actor.apply(&mut core, fx, None).await?;
        loop {
            let wake = next_wake(&mut core, &scheduler);
            tokio::select! {
                _ = term.lost() => return Ok(()),
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(wake) => {
                    let started = Instant::now();
                    let fx = core.tick(Now::read());
                    tracing::trace!(ms = started.elapsed().as_secs_f64() * 1e3, "tick decided");
                    actor.apply(&mut core, fx, None).await?;
                }
                Some(req) = requests.recv() => {
                    // Commands already waiting are decided with it and
                    // written in one commit; each is answered once that
                    // commit is durable. Queries run after it, so they see
                    // only what is durable.
                    let mut fx = Effects::default();
                    let mut replies = Vec::new();
                    let mut queries = Vec::new();
                    let mut next = Some(req);
                    while let Some(req) = next.take() {
                        match req {
                            Request::Query(q) => queries.push(q),
                            Request::Command(cmd, reply) => {
                                let (f, answer) = core.command(*cmd, Now::read());
                                fx.merge(f);
                                replies.push((answer, reply));
                            }
                        }
                        if replies.len() + queries.len() < MAX_REQUESTS_PER_STEP {
                            next = requests.try_recv().ok();
                        }
                    }
                    if let Err(e) = actor.apply(&mut core, fx, None).await {
                        for (_, reply) in replies {
                            let _ = reply.send(Err(ApiFailure::Unavailable(format!(
                                "the store did not take the change: {e}; retry"
                            ))));
                        }
                        return Err(e);
                    }
                    for (answer, reply) in replies {
                        let _ = reply.send(answer.map_err(ApiFailure::Refused));
                    }
                    for q in queries {
                        q(&core);
                    }
                }
                event = events.recv() => {
                    let Some(event) = event else {
                        return Err(BatchError::Stopped("the scheduler driver stopped".into()));
                    };
                    // Every event already waiting is decided with it, and
                    // their writes go to the Store in one commit (one fsync
                    // for many task updates, not one each).
                    let started = Instant::now();
                    let mut step = Step::default();
                    actor.on_event(&mut core, event, &mut step)?;
                    let mut more = 0;
                    while more < MAX_EVENTS_PER_STEP {
                        let Ok(event) = events.try_recv() else { break };
                        actor.on_event(&mut core, event, &mut step)?;
                        more += 1;
                    }
                    tracing::trace!(
                        events = more + 1,
                        ms = started.elapsed().as_secs_f64() * 1e3,
                        "events decided"
                    );
                    let acks = (!step.acks.is_empty()).then_some(step.acks.as_slice());
                    actor.apply(&mut core, step.fx, acks).await?;
                }
            }
        }
    }
    .await;
    scheduler.stop().await;
    result
}

/// When the actor must next act: the core's next scheduled time or
/// deadline, the tracker's next reconciliation or kill, and at least every
/// second (a level-triggered check that heals anything missed).
fn next_wake(core: &mut Core, scheduler: &Scheduler) -> tokio::time::Instant {
    let now = Now::read();
    let mut wake = Instant::now() + Duration::from_secs(1);
    if let Some(t) = tracker::drive(core.tracker_mut(), scheduler, now.mono) {
        wake = wake.min(t);
    }
    if let Some(t) = core.next_wakeup(now) {
        let delay = t.duration_since(now.wall);
        let delay = Duration::try_from(delay).unwrap_or(Duration::ZERO);
        wake = wake.min(now.mono + delay);
    }
    tokio::time::Instant::from_std(wake)
}

/// Adds a write to `batch`, its value serialized straight from the core
/// (a value gone since is deleted).
fn put(
    core: &Core,
    batch: &mut agora_framework_kit::store::Batch,
    w: &Write,
    expected: Expected,
) -> Result<(), BatchError> {
    let key = w.key();
    let done = match w {
        Write::Job(j) => core
            .jobs
            .get(j)
            .map(|j| batch.put(&key, &j.record, expected).map(|_| ())),
        Write::Cursor(j, s) => core.jobs.get(j).and_then(|j| j.cursors.get(s)).map(|c| {
            let cursor = Cursor { handled_until: *c };
            batch.put(&key, &cursor, expected).map(|_| ())
        }),
        Write::Run(j, r) => core
            .jobs
            .get(j)
            .and_then(|j| j.runs.get(r))
            .map(|r| batch.put(&key, r, expected).map(|_| ())),
        Write::Delete(_) => None,
    };
    match done {
        Some(result) => Ok(result?),
        None => {
            batch.delete(&key, Expected::Any);
            Ok(())
        }
    }
}

/// API requests decided together before their writes are committed.
const MAX_REQUESTS_PER_STEP: usize = 256;

/// Events decided together before their writes are committed.
const MAX_EVENTS_PER_STEP: usize = 256;

/// What events decided, to be executed together.
#[derive(Default)]
struct Step {
    fx: Effects,
    /// Task updates to acknowledge once the writes are durable.
    acks: Vec<agora_proto::v1::TaskStatus>,
}

struct Actor<'a> {
    ctx: &'a Ctx,
    store: FrameworkStore,
    scheduler: Scheduler,
}

impl Actor<'_> {
    /// Decides `event` into `step` (executed by [`Actor::apply`]).
    fn on_event(
        &mut self,
        core: &mut Core,
        event: Event,
        step: &mut Step,
    ) -> Result<(), BatchError> {
        match event {
            Event::Subscribed { framework_id, .. } => {
                tracing::info!(%framework_id, "subscribed");
                *self.ctx.framework_id.write() = Some(framework_id);
                step.fx.merge(core.on_subscribed(Now::read()));
            }
            Event::Offers(offers) => {
                step.fx.merge(core.on_offers(&offers, Now::read()));
            }
            Event::Rescind(_) => {}
            Event::Updates(statuses) => {
                step.fx.merge(core.on_updates(&statuses, Now::read()));
                step.acks.extend(statuses);
            }
            Event::Failure { agent_id } => {
                tracing::info!(%agent_id, "agent failure reported");
            }
            Event::Error(message) => tracing::warn!("the master says: {message}"),
            Event::Disconnected { reason, retry_in } => {
                tracing::warn!(?retry_in, "disconnected from the master: {reason}");
                core.on_disconnected();
            }
            Event::Stopped { reason } => {
                return Err(BatchError::Stopped(reason));
            }
        }
        Ok(())
    }

    /// Executes `fx`: the writes (all of them durable, or the term ends),
    /// then the calls to the master, then acknowledgements of `acks`.
    async fn apply(
        &mut self,
        core: &mut Core,
        fx: Effects,
        acks: Option<&[agora_proto::v1::TaskStatus]>,
    ) -> Result<(), BatchError> {
        // Asking for offers launches nothing: it goes first, so the master
        // allocates while the runs that want them are written.
        if fx.revive {
            let _ = self.scheduler.revive(Vec::new());
        }
        if !fx.writes.is_empty() {
            let started = Instant::now();
            let mut batch = self.store.batch();
            for (w, expected) in &fx.writes {
                put(core, &mut batch, w, *expected)?;
            }
            let encoded = started.elapsed();
            let n = fx.writes.len();
            if let Err(e) = batch.commit().await {
                self.ctx.metrics.store_failures.inc();
                return Err(e.into());
            }
            self.ctx.metrics.store_writes.inc_by(n as u64);
            tracing::debug!(
                writes = n,
                launches = fx.launches.iter().map(|(_, t)| t.len()).sum::<usize>(),
                encode_ms = encoded.as_secs_f64() * 1e3,
                commit_ms = (started.elapsed() - encoded).as_secs_f64() * 1e3,
                "step written"
            );
        }
        for (offer_ids, tasks) in fx.launches {
            if let Err(e) = self.scheduler.accept(offer_ids, tasks, None) {
                // Reconciliation finds these tasks unknown and launches
                // them again.
                tracing::warn!("cannot send the launch: {e}");
            }
        }
        if !fx.declines.is_empty() {
            let _ = self.scheduler.decline(fx.declines, Some(5.0));
        }
        if fx.suppress {
            let _ = self.scheduler.suppress(Vec::new());
        }
        if let Some(statuses) = acks {
            let _ = self.scheduler.acknowledge(statuses);
        }
        let m = &self.ctx.metrics;
        for late in &fx.lateness {
            m.lateness.observe(*late);
            m.runs_launched.inc();
        }
        for status in &fx.ended {
            m.runs_ended(*status);
        }
        m.jobs.set(core.jobs.len() as i64);
        m.active_runs.set(core.active_run_count() as i64);
        if self.ctx.events.subscribers() > 0 {
            for (kind, job) in &fx.job_events {
                let data = match core.jobs.get(job) {
                    Some(j) => api::job_json(j, &[]),
                    None => serde_json::json!({ "id": job }),
                };
                self.ctx.events.publish(kind, &data);
            }
            for (job, run) in &fx.changed_runs {
                if let Some(r) = core.jobs.get(job).and_then(|j| j.runs.get(run)) {
                    self.ctx
                        .events
                        .publish("run_update", &api::run_json(core, r));
                }
            }
        }
        Ok(())
    }
}
