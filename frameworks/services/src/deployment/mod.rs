//! Deployments: plans of steps ([`plan`]) and the decisions that carry a
//! step out ([`rolling`] for restarts, [`scale`] for scaling and healing).

pub mod plan;
pub mod rolling;
pub mod scale;

pub use plan::{Action, ActionKind, Deployment};
