//! `agora-batch`: Agora's batch framework.
//!
//! One-off and cron jobs over a REST API in Metronome's shape, run on the
//! cluster through the scheduler SDK, with exactly one run per scheduled
//! time through restarts and failovers. `docs/batch.md` describes the API,
//! the guarantees and how they are kept.

pub mod cron;
pub mod due;
pub mod graph;
pub mod run;
pub mod spec;
