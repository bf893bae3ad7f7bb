//! Allocator configuration: role weights and the minimum allocatable
//! resources, with the validating parser behind the CLI's `--weights`.

use std::collections::HashMap;

use agora_proto::Scalar;
use agora_proto::resources::validate_role;

use crate::AllocatorError;

/// How the allocator divides the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocatorConfig {
    /// Weight per role for weighted DRF: a role of weight 3 is entitled to
    /// three times the dominant share of a role of weight 1. Roles not listed
    /// weigh 1.0. Each weight must be finite and > 0 (see
    /// [`AllocatorConfig::validate`]); invalid ones are treated as 1.0.
    pub weights: HashMap<String, f64>,
    /// An offer is made only if it holds at least this many cpus or at least
    /// [`Self::min_allocatable_mem`] of memory, so that frameworks are not
    /// flooded with slivers nobody can launch a task on (Mesos: 0.01 cpus).
    pub min_allocatable_cpus: Scalar,
    /// The memory half of the minimum, in MB (Mesos: 32 MB).
    pub min_allocatable_mem: Scalar,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            weights: HashMap::new(),
            min_allocatable_cpus: Scalar::from_milli(10),
            min_allocatable_mem: Scalar::from_milli(32_000),
        }
    }
}

impl AllocatorConfig {
    /// Checks every weight, so that a bad configuration is refused before the
    /// master starts rather than silently replaced by 1.0.
    pub fn validate(&self) -> Result<(), AllocatorError> {
        let mut roles: Vec<&String> = self.weights.keys().collect();
        roles.sort();
        for role in roles {
            validate_weight(role, self.weights[role])?;
        }
        Ok(())
    }
}

/// Checks one role's weight: finite and greater than zero.
pub fn validate_weight(role: &str, weight: f64) -> Result<(), AllocatorError> {
    if weight.is_finite() && weight > 0.0 {
        Ok(())
    } else {
        Err(AllocatorError::InvalidWeight {
            role: role.to_string(),
            value: weight,
        })
    }
}

/// Parses the CLI form of role weights, `web=3,batch=1` (spaces around items
/// allowed, an empty string means no weights). Refuses entries without `=`,
/// invalid role names, non-numbers, weights that are not finite and > 0, and
/// roles listed twice.
pub fn parse_weights(text: &str) -> Result<HashMap<String, f64>, AllocatorError> {
    let mut weights = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (role, value) = entry
            .split_once('=')
            .ok_or_else(|| AllocatorError::MissingEquals(entry.to_string()))?;
        let (role, value) = (role.trim(), value.trim());
        validate_role(role).map_err(|source| AllocatorError::BadRole {
            entry: entry.to_string(),
            source,
        })?;
        let weight: f64 = value.parse().map_err(|_| AllocatorError::NotANumber {
            role: role.to_string(),
            text: value.to_string(),
        })?;
        validate_weight(role, weight)?;
        if weights.insert(role.to_string(), weight).is_some() {
            return Err(AllocatorError::DuplicateRole(role.to_string()));
        }
    }
    Ok(weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weights_with_spaces_and_trailing_comma() {
        let w = parse_weights(" web=3, batch = 1.5 ,").unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w["web"], 3.0);
        assert_eq!(w["batch"], 1.5);
        assert!(parse_weights("").unwrap().is_empty());
    }

    #[test]
    fn refuses_bad_weights_with_a_reason() {
        for (text, needle) in [
            ("web", "has no `=`"),
            ("web:3", "has no `=`"),
            ("=3", "invalid role"),
            ("w b=3", "invalid role"),
            ("web=three", "not a number"),
            ("web=", "not a number"),
            ("web=0", "greater than 0"),
            ("web=-1", "greater than 0"),
            ("web=NaN", "finite"),
            ("web=inf", "finite"),
            ("web=1,web=2", "more than one weight"),
        ] {
            let err = parse_weights(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn validate_reports_the_first_bad_role() {
        let mut config = AllocatorConfig::default();
        assert!(config.validate().is_ok());
        config.weights.insert("web".into(), 2.0);
        config.weights.insert("batch".into(), 0.0);
        let err = config.validate().unwrap_err();
        assert_eq!(
            err,
            AllocatorError::InvalidWeight {
                role: "batch".into(),
                value: 0.0
            }
        );
    }

    #[test]
    fn default_minimum_is_the_mesos_one() {
        let c = AllocatorConfig::default();
        assert_eq!(c.min_allocatable_cpus.to_string(), "0.01");
        assert_eq!(c.min_allocatable_mem.to_string(), "32");
    }
}
