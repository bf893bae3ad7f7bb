//! A small framework built on the framework kit (agora-framework-kit), for
//! the kit's integration tests: its session keeps the framework id in a
//! store, its tracker reconciles and retries kills, its matcher places task
//! requests on offers, and it records what happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_coord::Expected;
use agora_framework_kit::constraints::AgentFacts;
use agora_framework_kit::matcher::{self, MatchResult, PlacedIndex, Placement, TaskRequest};
use agora_framework_kit::session::{self, SessionConfig};
use agora_framework_kit::store::FrameworkStore;
use agora_framework_kit::tracker::{self, Observed, TaskTracker, TrackerAction, TrackerConfig};
use agora_proto::v1::{self, TaskState, TaskStatus};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{DEADLINE, eventually};

/// What the framework keeps of each task it launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTask {
    pub task_id: String,
    pub agent_id: String,
    pub ports: Vec<u64>,
}

/// The store key of a task's record.
pub fn task_key(task_id: &str) -> String {
    format!("tasks/{task_id}")
}

/// What the framework saw and did.
#[derive(Debug, Default)]
pub struct KitSeen {
    pub framework_id: Option<String>,
    /// `resubscribed` of each `Subscribed`, in order.
    pub subscribed: Vec<bool>,
    pub errors: Vec<String>,
    pub updates: Vec<TaskStatus>,
    /// Tasks an update revealed that the framework does not know.
    pub unknown: Vec<String>,
    /// Every action the tracker had sent, in order.
    pub actions: Vec<TrackerAction>,
    /// Accept calls that launched tasks, with what they launched.
    pub launches: Vec<(Vec<String>, Vec<Placement>)>,
    pub unplaced: Vec<(String, String)>,
    pub reconciled: bool,
    pub killing: usize,
    pub stopped: Option<String>,
}

impl KitSeen {
    pub fn latest(&self, task_id: &str) -> Option<TaskState> {
        self.updates
            .iter()
            .rev()
            .find(|u| u.task_id == task_id)
            .map(|u| u.state())
    }

    pub fn kills_sent(&self, task_id: &str) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, TrackerAction::Kill { task_id: t, .. } if t == task_id))
            .count()
    }

    pub fn placement(&self, key: &str) -> Option<&Placement> {
        self.launches
            .iter()
            .flat_map(|(_, ps)| ps.iter())
            .find(|p| p.key == key)
    }
}

enum Command {
    Launch(Vec<(TaskRequest, String)>),
    Kill(String),
}

/// The framework: a session, a tracker and a matcher around one loop.
pub struct KitFramework {
    pub scheduler: Scheduler,
    pub seen: Arc<Mutex<KitSeen>>,
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl KitFramework {
    /// Starts the framework `name` with the id and tasks kept in `store`.
    pub async fn start(
        master: &str,
        name: &str,
        store: FrameworkStore,
        tracker_config: TrackerConfig,
    ) -> KitFramework {
        let mut config = SchedulerConfig::new(master, name);
        config.reconnect_min = Duration::from_millis(100);
        config.reconnect_max = Duration::from_millis(500);
        let (scheduler, events) = session::start_session(SessionConfig::new(config), &store)
            .await
            .expect("the session starts");
        let mut tracker = TaskTracker::new(tracker_config);
        for (_, task) in store.load_prefix::<StoredTask>("tasks/").await.unwrap() {
            tracker.expect(&task.value.task_id, Some(task.value.agent_id.clone()));
        }
        let seen = Arc::new(Mutex::new(KitSeen::default()));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(
            scheduler.clone(),
            events,
            commands_rx,
            store,
            tracker,
            seen.clone(),
        ));
        KitFramework {
            scheduler,
            seen,
            commands,
            task,
        }
    }

    /// Places `tasks` (request, shell command) on the next offers.
    pub fn launch(&self, tasks: Vec<(TaskRequest, String)>) {
        self.commands.send(Command::Launch(tasks)).unwrap();
    }

    /// Kills a task, until it ends.
    pub fn kill(&self, task_id: &str) {
        self.commands.send(Command::Kill(task_id.into())).unwrap();
    }

    pub fn id(&self) -> String {
        self.seen.lock().unwrap().framework_id.clone().unwrap()
    }

    pub async fn wait<T>(&self, what: &str, check: impl Fn(&KitSeen) -> Option<T>) -> T {
        let seen = self.seen.clone();
        let check = &check;
        eventually(what, DEADLINE, || {
            let seen = seen.clone();
            async move { check(&seen.lock().unwrap()) }
        })
        .await
    }

    pub async fn wait_state(&self, task_id: &str, state: TaskState) {
        self.wait(&format!("{task_id} in {}", state.as_str_name()), |s| {
            (s.latest(task_id) == Some(state)).then_some(())
        })
        .await
    }

    /// Disconnects without tearing down (as a crash would, but at once):
    /// the master keeps the framework and its tasks for its failover timeout.
    pub async fn stop(self) {
        self.scheduler.stop().await;
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A request for `cpus`/`mem` and `ports`, keyed (and launched) as `task_id`.
pub fn request(
    task_id: &str,
    group: &str,
    resources: &str,
    ports: matcher::PortRequest,
) -> TaskRequest {
    TaskRequest {
        key: task_id.into(),
        group: group.into(),
        resources: agora_proto::Resources::parse(resources).unwrap(),
        ports,
        accepted_roles: Vec::new(),
        constraints: Vec::new(),
    }
}

async fn run(
    scheduler: Scheduler,
    mut events: mpsc::UnboundedReceiver<Event>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    store: FrameworkStore,
    mut tracker: TaskTracker,
    seen: Arc<Mutex<KitSeen>>,
) {
    let mut pending: Vec<(TaskRequest, String)> = Vec::new();
    let mut placed = PlacedIndex::new();
    loop {
        let wake = tracker
            .next_wakeup()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { return };
                let now = Instant::now();
                match event {
                    Event::Subscribed { framework_id, resubscribed, .. } => {
                        tracker.on_subscribed(now);
                        let mut s = seen.lock().unwrap();
                        s.framework_id = Some(framework_id);
                        s.subscribed.push(resubscribed);
                    }
                    Event::Offers(offers) => {
                        let requests: Vec<TaskRequest> = pending.iter().map(|(r, _)| r.clone()).collect();
                        let result = matcher::match_offers(&offers, &requests, &placed);
                        launch(&scheduler, &store, &mut tracker, &mut placed, &offers, &mut pending, result, &seen).await;
                    }
                    Event::Updates(statuses) => {
                        let _ = scheduler.acknowledge(&statuses);
                        let mut s = seen.lock().unwrap();
                        for status in statuses {
                            if tracker.on_update(&status, now) == Observed::Unknown {
                                s.unknown.push(status.task_id.clone());
                            }
                            s.updates.push(status);
                        }
                    }
                    Event::Error(message) => seen.lock().unwrap().errors.push(message),
                    Event::Stopped { reason } => {
                        seen.lock().unwrap().stopped = Some(reason);
                        return;
                    }
                    _ => {}
                }
            }
            command = commands.recv() => match command {
                Some(Command::Launch(tasks)) => pending.extend(tasks),
                Some(Command::Kill(task_id)) => tracker.kill(&task_id, Instant::now()),
                None => return,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
        let actions = tracker.poll(Instant::now());
        tracker::execute(&actions, &scheduler);
        let mut s = seen.lock().unwrap();
        s.actions.extend(actions);
        s.reconciled = tracker.reconciled();
        s.killing = tracker.killing();
    }
}

/// Records and launches what the matcher placed: the tasks' records are
/// stored (one batch) and tracked before the accept goes out.
#[allow(clippy::too_many_arguments)]
async fn launch(
    scheduler: &Scheduler,
    store: &FrameworkStore,
    tracker: &mut TaskTracker,
    placed: &mut PlacedIndex,
    offers: &[v1::Offer],
    pending: &mut Vec<(TaskRequest, String)>,
    result: MatchResult,
    seen: &Arc<Mutex<KitSeen>>,
) {
    let commands: HashMap<String, String> = pending
        .iter()
        .map(|(r, cmd)| (r.key.clone(), cmd.clone()))
        .collect();
    let mut batch = store.batch();
    for (_, placements) in &result.launches {
        for p in placements {
            let record = StoredTask {
                task_id: p.key.clone(),
                agent_id: p.agent_id.clone(),
                ports: p.ports.clone(),
            };
            batch
                .put(&task_key(&p.key), &record, Expected::Any)
                .unwrap();
        }
    }
    batch
        .commit()
        .await
        .expect("task records stored before the launch");
    for (offer_ids, placements) in &result.launches {
        let tasks = placements
            .iter()
            .map(|p| {
                tracker.expect(&p.key, Some(p.agent_id.clone()));
                let offer = offers.iter().find(|o| o.id == p.offer_id).unwrap();
                placed.add(
                    &pending
                        .iter()
                        .find(|(r, _)| r.key == p.key)
                        .unwrap()
                        .0
                        .group,
                    AgentFacts::from_offer(offer),
                );
                v1::TaskInfo {
                    name: p.key.clone(),
                    task_id: p.key.clone(),
                    agent_id: p.agent_id.clone(),
                    resources: p.resources.clone(),
                    command: Some(v1::CommandInfo {
                        value: commands[&p.key].clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            })
            .collect();
        scheduler
            .accept(offer_ids.clone(), tasks, Some(1.0))
            .expect("accept");
    }
    if !result.unused_offers.is_empty() {
        let _ = scheduler.decline(result.unused_offers.clone(), Some(1.0));
    }
    let launched: Vec<&String> = result
        .launches
        .iter()
        .flat_map(|(_, ps)| ps.iter().map(|p| &p.key))
        .collect();
    pending.retain(|(r, _)| !launched.contains(&&r.key));
    let mut s = seen.lock().unwrap();
    s.launches.extend(result.launches);
    s.unplaced = result.unplaced;
}
