//! The one error type of the kit.

use agora_coord::CoordError;
use agora_scheduler::SchedulerError;

/// What went wrong in the kit.
///
/// "The store refused or could not take a write" ([`Store`](Self::Store),
/// [`Batch`](Self::Batch)) is kept apart from "the value is not what was
/// expected" ([`Decode`](Self::Decode), [`Encode`](Self::Encode)), from
/// "this instance no longer leads" ([`NotLeading`](Self::NotLeading)) and
/// from configuration mistakes ([`Config`](Self::Config)).
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    /// The store refused the operation (a version conflict, a fenced write
    /// of a deposed leader) or could not be reached.
    #[error("store: {0}")]
    Store(#[from] CoordError),

    /// A batch larger than one atomic write failed part way: the first
    /// `applied` of its `total` ops are written (each chunk is atomic).
    #[error("store: a batch failed after {applied} of its {total} writes were applied: {source}")]
    Batch {
        applied: usize,
        total: usize,
        #[source]
        source: CoordError,
    },

    /// A stored value is not what the reader expected (a different type,
    /// or corrupted).
    #[error("the value stored at `{key}` cannot be read: {source}")]
    Decode {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// A value cannot be written as JSON (e.g. a map with non-string keys).
    #[error("the value for `{key}` cannot be written as JSON: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },

    /// The scheduler driver refused to start or to send a call.
    #[error("scheduler: {0}")]
    Scheduler(#[from] SchedulerError),

    /// This instance's leadership ended; what it was doing must stop.
    #[error("this instance no longer leads; stop acting and stand by")]
    NotLeading,

    /// Settings that cannot work.
    #[error("invalid settings: {0}")]
    Config(String),
}
