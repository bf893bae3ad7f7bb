//! Health and readiness checks, run by the agent beside each task.
//!
//! * [`verdict`]: what the results of one task's checks mean (grace period,
//!   failures in a row, health, readiness, when to kill): pure.
//! * `probe`: HTTP, HTTPS and TCP checks from the agent's own runtime.
//!   COMMAND checks go to the task's containerizer
//!   ([`Containerizer::run_check`](crate::Containerizer::run_check)).
//! * `runner`: the actor that runs every task's checks on time, within a
//!   bound on how many run at once, and tells the core what changed.
//! * [`stats`]: counters and the lateness histogram.
//!
//! The rules and defaults of the checks themselves are
//! [`agora_proto::health`]'s. See `docs/health-checks.md`.

mod probe;
mod runner;
pub mod stats;
pub(crate) mod verdict;

pub(crate) use runner::{HealthChecks, HealthEvent, Start};
pub use stats::{HealthStatsSnapshot, LatenessHistogram};
