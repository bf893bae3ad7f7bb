//! `agora-proto`: the wire protocol of Agora (generated gRPC code), the
//! resource model, agent attributes, the task-state rules and the rules of
//! tasks' health and readiness checks. No I/O.

pub mod attributes;
pub mod duration;
pub mod health;
pub mod resources;
pub mod task_state;
pub mod webui;
pub mod wire;

/// The generated protobuf messages and gRPC services (`agora.v1`).
#[allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
pub mod v1 {
    tonic::include_proto!("agora.v1");
}

pub use attributes::{format_attributes, parse_attributes};
pub use duration::parse_duration;
pub use resources::{Ranges, Resource, ResourceError, Resources, Scalar, UNRESERVED};
pub use task_state::{IllegalTransition, is_terminal, transition};
pub use webui::{WebUiUrl, parse_webui_url};

/// The version of Agora, as `/version` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Seconds since the Unix epoch, as status updates carry them.
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
