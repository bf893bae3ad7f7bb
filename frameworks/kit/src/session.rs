//! The framework's session with the master, with its framework id kept in
//! the framework's store.
//!
//! * The id is read from the store and the driver subscribes with it, so a
//!   restarted or failed-over instance takes its tasks back.
//! * A new id (first start) is written to the store before the
//!   `Subscribed` event is passed on, so nothing is launched under an id
//!   that a crash could forget. If it cannot be written (e.g. this instance
//!   was deposed and its fenced store refuses), the new framework is torn
//!   down (it has no tasks yet) and the session ends with `Error` and
//!   `Stopped`.
//! * If the master refuses the stored id (the framework was torn down, or
//!   its failover timeout expired), the id is deleted from the store and
//!   the driver subscribes as a new framework; an `Error` event saying so
//!   comes first.

use std::time::Duration;

use agora_coord::{CoordError, Expected};
use agora_scheduler::{Event, Scheduler, SchedulerConfig};
use tokio::sync::mpsc;

use crate::KitError;
use crate::store::FrameworkStore;

/// The key under which the framework id is stored by default.
pub const DEFAULT_ID_KEY: &str = "framework-id";

/// Attempts at writing a new framework id before giving up.
const PERSIST_ATTEMPTS: u32 = 5;

/// What a session needs.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// The driver's settings (master, framework name, roles, failover
    /// timeout ...). Its framework id is ignored: the stored one is used.
    pub scheduler: SchedulerConfig,
    /// Where the framework id lives in the store.
    pub id_key: String,
}

impl SessionConfig {
    pub fn new(scheduler: SchedulerConfig) -> SessionConfig {
        SessionConfig {
            scheduler,
            id_key: DEFAULT_ID_KEY.to_string(),
        }
    }
}

/// Starts the scheduler driver with the stored framework id (see the
/// module docs).
///
/// Without a stored id this returns at once. With one it returns once the
/// master has answered the subscription (the answer is the first event
/// queued: `Subscribed`, or the `Error` about the refused id), so the
/// returned handle is the driver that goes on; while the master cannot be
/// reached the driver's `Disconnected` events are queued meanwhile. Drop
/// the future to give up.
pub async fn start_session(
    config: SessionConfig,
    store: &FrameworkStore,
) -> Result<(Scheduler, mpsc::UnboundedReceiver<Event>), KitError> {
    let (out, events_out) = mpsc::unbounded_channel();
    let stored = store.get::<String>(&config.id_key).await?;
    let mut scheduler_config = config.scheduler.clone();
    scheduler_config.framework.id = String::new();
    let Some(stored) = stored.filter(|s| !s.value.is_empty()) else {
        let scheduler = start_forwarding(scheduler_config, out, store, config.id_key)?;
        return Ok((scheduler, events_out));
    };

    let id = stored.value.clone();
    tracing::info!(framework_id = %id, "subscribing with the stored framework id");
    scheduler_config.framework.id = id.clone();
    let (scheduler, mut events) = Scheduler::start(scheduler_config.clone())?;
    let mut refusal: Option<String> = None;
    loop {
        let Some(event) = events.recv().await else {
            return Ok((scheduler, events_out));
        };
        match event {
            Event::Subscribed { .. } => {
                let _ = out.send(event);
                tokio::spawn(forward(
                    events,
                    out,
                    store.clone(),
                    config.id_key,
                    scheduler.clone(),
                    Some(id),
                ));
                return Ok((scheduler, events_out));
            }
            // Before any subscription there are no calls to refuse: an error
            // is the master refusing the id, and `Stopped` follows.
            Event::Error(message) => refusal = Some(message),
            Event::Stopped { reason } => {
                let Some(message) = refusal else {
                    let _ = out.send(Event::Stopped { reason });
                    return Ok((scheduler, events_out));
                };
                tracing::error!(
                    framework_id = %id,
                    %message,
                    "the master refused the stored framework id; subscribing as a new framework"
                );
                let _ = out.send(Event::Error(format!(
                    "the master refused the stored framework id {id} ({message}); \
                     subscribing as a new framework"
                )));
                match store
                    .delete(&config.id_key, Expected::Version(stored.version))
                    .await
                {
                    Ok(()) | Err(KitError::Store(CoordError::Conflict { .. })) => {}
                    Err(e) => return Err(e),
                }
                scheduler_config.framework.id = String::new();
                let scheduler = start_forwarding(scheduler_config, out, store, config.id_key)?;
                return Ok((scheduler, events_out));
            }
            other => {
                let _ = out.send(other);
            }
        }
    }
}

/// Starts a driver for a framework without a stored id, its events passed
/// on through `out`.
fn start_forwarding(
    config: SchedulerConfig,
    out: mpsc::UnboundedSender<Event>,
    store: &FrameworkStore,
    key: String,
) -> Result<Scheduler, KitError> {
    let (scheduler, events) = Scheduler::start(config)?;
    tokio::spawn(forward(
        events,
        out,
        store.clone(),
        key,
        scheduler.clone(),
        None,
    ));
    Ok(scheduler)
}

/// Passes the driver's events on, writing a new framework id to the store
/// before its `Subscribed`.
async fn forward(
    mut events: mpsc::UnboundedReceiver<Event>,
    out: mpsc::UnboundedSender<Event>,
    store: FrameworkStore,
    key: String,
    scheduler: Scheduler,
    mut persisted: Option<String>,
) {
    while let Some(event) = events.recv().await {
        if let Event::Subscribed { framework_id, .. } = &event
            && persisted.as_deref() != Some(framework_id.as_str())
        {
            match persist(&store, &key, framework_id).await {
                Ok(()) => {
                    tracing::info!(%framework_id, "framework id stored");
                    persisted = Some(framework_id.clone());
                }
                Err(e) => {
                    tracing::error!(%framework_id, "cannot store the framework id: {e}; tearing the new framework down");
                    let _ = scheduler.teardown().await;
                    let _ = out.send(Event::Error(format!(
                        "cannot store the framework id {framework_id}: {e}"
                    )));
                    let _ = out.send(Event::Stopped {
                        reason: "the framework id could not be stored".into(),
                    });
                    return;
                }
            }
        }
        if out.send(event).is_err() {
            return;
        }
    }
}

/// Writes the framework id, retrying what may pass (not a fenced write).
async fn persist(store: &FrameworkStore, key: &str, id: &str) -> Result<(), KitError> {
    let mut wait = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match store.put(key, id, Expected::Any).await {
            Ok(_) => return Ok(()),
            Err(e @ KitError::Store(CoordError::Fenced { .. })) => return Err(e),
            Err(e) if attempt >= PERSIST_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(attempt, retry_in = ?wait, "cannot store the framework id: {e}");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
