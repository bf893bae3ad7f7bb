//! `agora-framework-kit`: what Agora's frameworks share, so that each
//! framework is its own domain logic and little else.
//!
//! | module | what it gives | kind |
//! | --- | --- | --- |
//! | [`session`] | the scheduler driver with the framework id kept in the store (reused on restart, written before `Subscribed` is passed on; a refused id is dropped) | I/O |
//! | [`tracker`] | reconciliation with backoff until every known task answered; kills retried until a terminal status; strangers killed | pure, + [`tracker::drive`] |
//! | [`matcher`] | packs task requests into offers: scalars by role, host ports from ranges, constraints | pure |
//! | [`constraints`] | Marathon's UNIQUE CLUSTER GROUP_BY LIKE UNLIKE MAX_PER IS (and EQ) on hostname and attributes | pure |
//! | [`backoff`] | Marathon's launch backoff | pure |
//! | [`store`] | typed JSON values over a coord store; batches split into as few atomic writes as the store allows | I/O |
//! | [`election`] | leader election among a framework's instances (standalone or ZooKeeper), terms with fenced stores | I/O |
//! | [`http`] | warp pieces: leader-only routes (307 to the leader) or a standby forwarding to the leader, bounded bodies, SSE event bus (filtered by kind), JSON errors | I/O |
//!
//! The guide is `docs/framework-kit.md`.

pub mod backoff;
pub mod constraints;
pub mod election;
mod error;
pub mod http;
pub mod matcher;
pub mod session;
pub mod store;
pub mod tracker;

pub use error::KitError;
