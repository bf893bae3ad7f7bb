//! [`Scheduler`]: the cheap, cloneable handle a framework calls.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use agora_proto::v1::{Call, TaskInfo, TaskStatus};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::driver::Driver;
use crate::master::MasterDetector;
use crate::{Event, SchedulerConfig, SchedulerError, calls};

/// A handle on the scheduler driver: send calls, learn the framework id,
/// stop or tear down. Clone it freely; every clone talks to the same driver.
///
/// Calls are sent on the current stream to the master without waiting: a
/// successful return means the call is on its way, not that the master
/// accepted it (refusals arrive as [`Event::Error`] or as `TASK_ERROR`
/// updates). Every call made while the driver is between two connections
/// fails with [`SchedulerError::NotConnected`].
///
/// The driver stops when [`stop`](Self::stop) or [`teardown`](Self::teardown)
/// is called, when the master refuses the framework, when every handle is
/// dropped, or when the event receiver is dropped (so keep the receiver until
/// after `teardown` returns).
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let link = self.shared.link.lock();
        f.debug_struct("Scheduler")
            .field("framework_id", &link.framework_id)
            .field("connected", &link.calls.is_some())
            .field("stopped", &link.stopped)
            .finish()
    }
}

/// State the handles and the driver share. Only the driver changes the
/// connection; handles only read it and record what their calls changed.
pub(crate) struct Shared {
    pub(crate) link: Mutex<Link>,
    /// The framework's roles, what `suppress` with no roles means.
    pub(crate) roles: Vec<String>,
}

/// What a handle needs to send a call.
#[derive(Default)]
pub(crate) struct Link {
    /// Set from the first `subscribed` on.
    pub(crate) framework_id: Option<String>,
    /// The request stream of the current session; `None` while disconnected.
    pub(crate) calls: Option<mpsc::UnboundedSender<Call>>,
    pub(crate) stopped: bool,
    /// Outstanding offers of this session (offer id -> agent id), so that
    /// `accept` can fill in the agent id of tasks that leave it empty.
    pub(crate) offers: HashMap<String, String>,
    /// Roles suppressed by the framework, suppressed again after a
    /// resubscription so that suppression survives a reconnection.
    pub(crate) suppressed: BTreeSet<String>,
}

impl Link {
    fn send(&self, call: Call) -> Result<(), SchedulerError> {
        if self.stopped {
            return Err(SchedulerError::Stopped);
        }
        let calls = self.calls.as_ref().ok_or(SchedulerError::NotConnected)?;
        calls.send(call).map_err(|_| SchedulerError::NotConnected)
    }
}

/// What only the driver task can do.
pub(crate) enum Command {
    Stop {
        done: oneshot::Sender<()>,
    },
    Teardown {
        done: oneshot::Sender<Result<(), SchedulerError>>,
    },
}

impl Scheduler {
    /// Checks `config`, spawns the driver on the current Tokio runtime and
    /// returns a handle and the stream of [`Event`]s. The driver connects and
    /// subscribes at once; the first event is [`Event::Subscribed`] (or
    /// [`Event::Disconnected`] while the master cannot be reached).
    ///
    /// Fails on a configuration that cannot work, or outside a Tokio runtime.
    pub fn start(
        config: SchedulerConfig,
    ) -> Result<(Scheduler, mpsc::UnboundedReceiver<Event>), SchedulerError> {
        config.validate()?;
        let detector = MasterDetector::parse(&config.master)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            SchedulerError::InvalidConfig(
                "Scheduler::start must be called from within a Tokio runtime".into(),
            )
        })?;
        let framework_id = Some(config.framework.id.clone()).filter(|id| !id.is_empty());
        let shared = Arc::new(Shared {
            link: Mutex::new(Link {
                framework_id: framework_id.clone(),
                ..Link::default()
            }),
            roles: config.roles(),
        });
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let span = tracing::info_span!(
            "scheduler",
            framework = %config.framework.name,
            framework_id = tracing::field::Empty,
        );
        if let Some(id) = &framework_id {
            span.record("framework_id", id.as_str());
        }
        let driver = Driver::new(
            config,
            detector,
            shared.clone(),
            commands_rx,
            events_tx,
            span.clone(),
        );
        runtime.spawn(driver.run().instrument(span));
        Ok((
            Scheduler {
                shared,
                commands: commands_tx,
            },
            events_rx,
        ))
    }

    /// The framework id, once the master gave one (or the one the
    /// configuration carried).
    pub fn framework_id(&self) -> Option<String> {
        self.shared.link.lock().framework_id.clone()
    }

    /// Whether the driver is subscribed right now (calls would be sent).
    pub fn is_connected(&self) -> bool {
        let link = self.shared.link.lock();
        !link.stopped && link.calls.is_some()
    }

    /// Accepts offers (all on one agent) and launches `tasks` on them. A task
    /// whose `agent_id` is empty gets the offers' agent. Resources of the
    /// offers that no task uses are not offered again to this framework for
    /// `refuse_seconds` (the master's default, 5 s, when `None`). With no
    /// tasks this uses the offers up, like a decline.
    pub fn accept(
        &self,
        offer_ids: Vec<String>,
        mut tasks: Vec<TaskInfo>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SchedulerError> {
        let mut link = self.shared.link.lock();
        let agents: BTreeSet<&String> = offer_ids
            .iter()
            .filter_map(|id| link.offers.get(id))
            .collect();
        if agents.len() == 1 && offer_ids.iter().all(|id| link.offers.contains_key(id)) {
            let agent = agents.into_iter().next().cloned().unwrap_or_default();
            for task in tasks.iter_mut().filter(|t| t.agent_id.is_empty()) {
                task.agent_id = agent.clone();
            }
        }
        let call = calls::accept(offer_ids.clone(), tasks, refuse_seconds)?;
        link.send(call)?;
        for id in &offer_ids {
            link.offers.remove(id);
        }
        Ok(())
    }

    /// Declines offers; their resources are not offered again to this
    /// framework for `refuse_seconds` (the master's default, 5 s, when `None`).
    pub fn decline(
        &self,
        offer_ids: Vec<String>,
        refuse_seconds: Option<f64>,
    ) -> Result<(), SchedulerError> {
        let mut link = self.shared.link.lock();
        link.send(calls::decline(offer_ids.clone(), refuse_seconds)?)?;
        for id in &offer_ids {
            link.offers.remove(id);
        }
        Ok(())
    }

    /// Asks for offers again for `roles` (empty: every role of the
    /// framework), clearing refuse filters and suppression.
    pub fn revive(&self, roles: Vec<String>) -> Result<(), SchedulerError> {
        let mut link = self.shared.link.lock();
        link.send(calls::revive(roles.clone()))?;
        if roles.is_empty() {
            link.suppressed.clear();
        } else {
            for role in &roles {
                link.suppressed.remove(role);
            }
        }
        Ok(())
    }

    /// Stops offers for `roles` (empty: every role of the framework) until
    /// [`revive`](Self::revive). The driver suppresses them again after a
    /// reconnection.
    pub fn suppress(&self, roles: Vec<String>) -> Result<(), SchedulerError> {
        let mut link = self.shared.link.lock();
        link.send(calls::suppress(roles.clone()))?;
        let roles = if roles.is_empty() {
            self.shared.roles.clone()
        } else {
            roles
        };
        link.suppressed.extend(roles);
        Ok(())
    }

    /// Kills a task: SIGTERM, then SIGKILL after `grace` (the task's kill
    /// policy, else the agent's default, when `None`). The outcome arrives as
    /// an update (`TASK_KILLED`, or `TASK_LOST` for a task nobody knows).
    pub fn kill(
        &self,
        task_id: &str,
        agent_id: &str,
        grace: Option<Duration>,
    ) -> Result<(), SchedulerError> {
        self.shared
            .link
            .lock()
            .send(calls::kill(task_id, agent_id, grace)?)
    }

    /// Acknowledges updates, in one call. Only updates that carry a uuid are
    /// acknowledged (the master's own updates need none); when none does,
    /// nothing is sent and this succeeds.
    pub fn acknowledge(&self, statuses: &[TaskStatus]) -> Result<(), SchedulerError> {
        match calls::acknowledge(statuses) {
            Some(call) => self.shared.link.lock().send(call),
            None => Ok(()),
        }
    }

    /// Asks the master for the latest status of tasks, as `(task id, agent
    /// id)` pairs; the answers arrive as updates. Empty: every task the
    /// master knows for this framework (implicit reconciliation).
    pub fn reconcile(&self, tasks: Vec<(String, String)>) -> Result<(), SchedulerError> {
        self.shared.link.lock().send(calls::reconcile(tasks))
    }

    /// Removes the framework: the master kills all its tasks and forgets it.
    /// Then the driver stops ([`Event::Stopped`] is the last event).
    ///
    /// Waits until the master confirms by closing the stream, at most
    /// [`SchedulerConfig::teardown_timeout`]. While disconnected this fails
    /// with [`SchedulerError::NotConnected`] and the driver goes on, so the
    /// framework can retry after the next `Subscribed` (or [`stop`](Self::stop)
    /// and let the master drop it after its failover timeout).
    pub async fn teardown(&self) -> Result<(), SchedulerError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Teardown { done })
            .map_err(|_| SchedulerError::Stopped)?;
        result.await.unwrap_or(Err(SchedulerError::Stopped))
    }

    /// Disconnects and stops the driver without removing the framework: the
    /// master keeps its tasks for its `failover_timeout`, so a new driver
    /// started with the same framework id takes them over. Returns once the
    /// driver has stopped; does nothing if it already had.
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Stop { done }).is_ok() {
            let _ = stopped.await;
        }
    }
}
