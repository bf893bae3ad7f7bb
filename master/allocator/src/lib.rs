//! `agora-allocator`: decides which framework is offered which agent's
//! resources, by weighted Dominant Resource Fairness over roles and, within
//! each role, over frameworks, as Mesos's hierarchical allocator does.
//!
//! It is pure and synchronous: no I/O, no async, no clock. The master's actor
//! tells it what happens (agents and frameworks come and go, resources are
//! recovered, frameworks suppress, revive and decline) and calls
//! [`Allocator::allocate`] with the current time; it returns
//! [`Allocation`]s for the master to turn into offers. Time is an argument,
//! so tests and simulations drive hours of filters in microseconds.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use agora_allocator::{Allocator, AllocatorConfig, parse_weights};
//! use agora_proto::Resources;
//!
//! let config = AllocatorConfig {
//!     weights: parse_weights("web=3,batch=1")?,
//!     ..AllocatorConfig::default()
//! };
//! let mut allocator = Allocator::new(config);
//! allocator.add_agent("agent-1", Resources::parse("cpus:8;mem:16384;cpus(web):2")?, &[]);
//! allocator.add_framework("services", &["web".to_string()], true);
//! let now = Instant::now();
//! let offers = allocator.allocate(now);
//! assert_eq!(offers[0].resources.cpus().to_string(), "10");
//! // The framework declines: not again for five seconds.
//! let o = &offers[0];
//! allocator.recover(&o.framework_id, &o.role, &o.agent_id, &o.resources, Some(Duration::from_secs(5)), now);
//! assert!(allocator.allocate(now + Duration::from_secs(1)).is_empty());
//! assert_eq!(allocator.allocate(now + Duration::from_secs(5)).len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Built for large clusters: one `allocate` over 50,000 agents and 2,000
//! frameworks takes about ten milliseconds (`examples/alloc_cycle.rs`
//! measures it; the design notes are at the top of `src/allocator.rs`).

#![warn(missing_docs)]

mod agent;
mod allocator;
mod config;
mod error;
mod filter;
mod order;
mod quantities;
mod value;

#[cfg(test)]
mod tests;

pub use allocator::{Allocation, Allocator, FrameworkSummary, MAX_REFUSE, RoleSummary};
pub use config::{AllocatorConfig, parse_weights, validate_weight};
pub use error::AllocatorError;
pub use quantities::Quantities;
