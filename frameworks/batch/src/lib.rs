//! `agora-batch`: Agora's batch framework.
//!
//! One-off and cron jobs over a REST API in Metronome's shape, run on the
//! cluster through the scheduler SDK, with exactly one run per scheduled
//! time through restarts and failovers. `docs/batch.md` describes the API,
//! the guarantees and how they are kept.
//!
//! | module | what | kind |
//! | --- | --- | --- |
//! | [`cron`] | cron expressions in a time zone: the next-run function | pure |
//! | [`due`] | which scheduled times start now and which are missed | pure |
//! | [`spec`] | job and schedule specs, validation | pure |
//! | [`run`] | runs, attempts, the run state machine, run and task ids | pure |
//! | [`graph`] | job dependencies: unknown jobs and cycles | pure |
//! | [`layout`] | what is stored under which key | pure |
//! | [`launch`] | run spec to task request and TaskInfo | pure |
//! | [`core`] | the state and every decision, effects out | pure |
//! | [`runtime`] | election, terms, the actor executing effects | I/O |
//! | `api`, `openapi`, `metrics` | REST, OpenAPI 3, Prometheus | I/O |

mod api;
pub mod core;
pub mod cron;
pub mod due;
mod error;
pub mod graph;
pub mod launch;
pub mod layout;
mod metrics;
mod openapi;
pub mod run;
pub mod runtime;
pub mod spec;

pub use error::BatchError;
pub use runtime::{BatchConfig, FRAMEWORK_NAME, RunningBatch, run, start};
