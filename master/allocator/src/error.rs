//! The one error type of the crate.
//!
//! The allocator's operations never fail (they clamp and report through their
//! return values, because the master must keep running whatever a framework or
//! an agent sends); only configuration can be refused, before anything starts.

use agora_proto::ResourceError;

/// Why a piece of allocator configuration was refused. Each message says
/// what was wrong and how to write it instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocatorError {
    /// A `--weights` entry without `=`.
    #[error("weight entry `{0}` has no `=`: write weights as role=weight, e.g. web=3,batch=1")]
    MissingEquals(String),
    /// A `--weights` entry whose role is not a valid role name.
    #[error("weight entry `{entry}` names an invalid role: {source}")]
    BadRole {
        /// The entry as written.
        entry: String,
        /// Why the role name is invalid.
        source: ResourceError,
    },
    /// A weight that does not parse as a number.
    #[error(
        "the weight of role `{role}` is `{text}`, which is not a number: write e.g. {role}=2.5"
    )]
    NotANumber {
        /// The role the weight is for.
        role: String,
        /// The weight as written.
        text: String,
    },
    /// A weight that is zero, negative, NaN or infinite.
    #[error(
        "the weight of role `{role}` is {value}: weights must be finite and greater than 0 (a role \
         with weight 2 is entitled to twice the share of a role with weight 1)"
    )]
    InvalidWeight {
        /// The role the weight is for.
        role: String,
        /// The weight refused.
        value: f64,
    },
    /// The same role listed twice.
    #[error("role `{0}` is given more than one weight: list each role once")]
    DuplicateRole(String),
}
