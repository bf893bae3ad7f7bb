//! The one error type of the driver's API.

/// Why the driver refused a call, or could not start.
///
/// "The call could not be sent" errors ([`NotConnected`](Self::NotConnected),
/// [`Stopped`](Self::Stopped)) are kept apart from "the call is wrong"
/// ([`InvalidCall`](Self::InvalidCall)) and from configuration mistakes
/// ([`InvalidMaster`](Self::InvalidMaster), [`InvalidConfig`](Self::InvalidConfig)).
/// What the master thinks of a call arrives later, as an event
/// ([`Event::Error`](crate::Event::Error), or a `TASK_ERROR` update).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// The driver is between two connections to the master. Offers received
    /// before the disconnection are void; acknowledgements may be dropped
    /// (the agent resends its updates). Retry after the next
    /// [`Event::Subscribed`](crate::Event::Subscribed).
    #[error(
        "not connected to the master: the driver is reconnecting; \
         retry after the next Subscribed event (offers received before it are void)"
    )]
    NotConnected,

    /// The driver has stopped ([`Scheduler::stop`](crate::Scheduler::stop),
    /// [`Scheduler::teardown`](crate::Scheduler::teardown), or the master
    /// refused the framework). Start a new driver to talk to the master again.
    #[error("the scheduler driver has stopped: start a new one to talk to the master again")]
    Stopped,

    /// The master address cannot be used.
    #[error("invalid master address `{address}`: {reason}")]
    InvalidMaster { address: String, reason: String },

    /// The configuration cannot work (e.g. a reconnect backoff whose minimum
    /// exceeds its maximum).
    #[error("invalid scheduler configuration: {0}")]
    InvalidConfig(String),

    /// The call is malformed and was not sent.
    #[error("invalid call: {0}")]
    InvalidCall(String),

    /// The teardown call was sent but the master did not close the stream
    /// in time to confirm it. The driver has stopped anyway; the master
    /// removes the framework at the latest `failover_timeout` after it
    /// noticed the disconnection.
    #[error(
        "the master did not confirm the teardown within {waited:?}; the driver stopped anyway \
         and the master will remove the framework after its failover timeout"
    )]
    TeardownUnconfirmed { waited: std::time::Duration },
}
