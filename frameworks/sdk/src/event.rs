//! What the driver tells the framework.

use std::time::Duration;

use agora_proto::v1::{MasterInfo, Offer, TaskStatus};

/// One thing that happened, delivered in order on the receiver that
/// [`Scheduler::start`](crate::Scheduler::start) returns.
///
/// A session looks like: `Subscribed`, then any number of `Offers`,
/// `Rescind`, `Updates`, `Failure` and `Error`, then `Disconnected` (and a
/// new `Subscribed` with `resubscribed: true` once the driver is back) or
/// `Stopped`, which is always the last event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The master accepted the subscription. Calls are accepted from now on.
    Subscribed {
        framework_id: String,
        master: MasterInfo,
        /// Whether the driver subscribed with a framework id (after a
        /// reconnection, or because the configuration carried one) and so
        /// reclaimed the framework's tasks. The master sends again the latest
        /// unacknowledged update of each task; offers from before are void.
        resubscribed: bool,
    },
    /// New offers. Accept or decline each of them.
    Offers(Vec<Offer>),
    /// Offers (by id) that are no longer valid.
    Rescind(Vec<String>),
    /// Task status updates, in the order the master sent them. Acknowledge
    /// them with [`Scheduler::acknowledge`](crate::Scheduler::acknowledge).
    Updates(Vec<TaskStatus>),
    /// An agent became unreachable or was removed.
    Failure { agent_id: String },
    /// The master refused a call. The session goes on.
    Error(String),
    /// The connection to the master broke, could not be made, or went
    /// silent. The driver reconnects by itself after `retry_in`; calls fail
    /// with [`SchedulerError::NotConnected`](crate::SchedulerError::NotConnected)
    /// until the next `Subscribed`.
    Disconnected { reason: String, retry_in: Duration },
    /// The driver stopped for good; nothing follows. `reason` says why: the
    /// framework asked for it, was torn down, or the master refused it.
    Stopped { reason: String },
}
