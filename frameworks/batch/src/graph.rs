//! Job dependencies: which jobs a job runs after, checked for unknown jobs
//! and cycles before anything is stored.

use std::collections::{BTreeMap, BTreeSet};

/// Why a set of dependencies was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("job `{job}` depends on `{dependency}`, which does not exist: create it first")]
    Unknown { job: String, dependency: String },
    #[error("the dependencies would form a cycle: {}", .path.join(" -> "))]
    Cycle { path: Vec<String> },
}

/// Every job's dependencies: job id -> the ids it runs after.
pub type Dependencies = BTreeMap<String, Vec<String>>;

/// Checks `job` with dependencies `deps` (new or replacing its entry) among
/// `all`: each dependency exists, and no cycle goes through `job` (the other
/// jobs were checked when they were stored).
pub fn check(all: &Dependencies, job: &str, deps: &[String]) -> Result<(), GraphError> {
    for d in deps {
        if d != job && !all.contains_key(d) {
            return Err(GraphError::Unknown {
                job: job.to_string(),
                dependency: d.clone(),
            });
        }
    }
    // A cycle through `job` is a path from one of its dependencies back to
    // it. Depth-first, remembering the path for the message.
    let deps_of = |j: &str| -> &[String] {
        if j == job {
            deps
        } else {
            all.get(j).map(Vec::as_slice).unwrap_or(&[])
        }
    };
    let mut path = vec![job.to_string()];
    let mut seen = BTreeSet::new();
    if find_path_to(job, job, &deps_of, &mut path, &mut seen) {
        return Err(GraphError::Cycle { path });
    }
    Ok(())
}

fn find_path_to<'a>(
    from: &str,
    target: &str,
    deps_of: &impl Fn(&str) -> &'a [String],
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> bool {
    for d in deps_of(from) {
        path.push(d.clone());
        if d == target {
            return true;
        }
        if seen.insert(d.clone()) && find_path_to(d, target, deps_of, path, seen) {
            return true;
        }
        path.pop();
    }
    false
}

/// The jobs that depend on `job` directly, sorted.
pub fn dependents(all: &Dependencies, job: &str) -> Vec<String> {
    all.iter()
        .filter(|(_, deps)| deps.iter().any(|d| d == job))
        .map(|(j, _)| j.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(edges: &[(&str, &[&str])]) -> Dependencies {
        edges
            .iter()
            .map(|(j, ds)| (j.to_string(), ds.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    fn v(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_chain_is_fine() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]);
        check(&g, "d", &v(&["c", "a"])).unwrap();
        assert_eq!(dependents(&g, "a"), ["b"]);
        assert!(dependents(&g, "c").is_empty());
    }

    #[test]
    fn unknown_dependencies_are_named() {
        let g = graph(&[("a", &[])]);
        assert_eq!(
            check(&g, "b", &v(&["a", "zz"])),
            Err(GraphError::Unknown {
                job: "b".into(),
                dependency: "zz".into()
            })
        );
    }

    #[test]
    fn a_cycle_is_refused_with_its_path() {
        let g = graph(&[("a", &[]), ("b", &["a"]), ("c", &["b"])]);
        let e = check(&g, "a", &v(&["c"])).unwrap_err();
        assert_eq!(
            e,
            GraphError::Cycle {
                path: v(&["a", "c", "b", "a"])
            }
        );
        assert_eq!(
            e.to_string(),
            "the dependencies would form a cycle: a -> c -> b -> a"
        );
        assert!(matches!(
            check(&g, "a", &v(&["a"])),
            Err(GraphError::Cycle { .. })
        ));
    }

    proptest! {
        /// Adding edges one by one through `check` never lets a cycle in:
        /// the accepted graph always has a topological order.
        #[test]
        fn accepted_graphs_stay_acyclic(edges in proptest::collection::vec((0u8..8, 0u8..8), 0..40)) {
            let mut g: Dependencies = (0..8).map(|i| (i.to_string(), Vec::new())).collect();
            for (from, to) in edges {
                let (from, to) = (from.to_string(), to.to_string());
                let mut deps = g[&from].clone();
                if deps.contains(&to) { continue; }
                deps.push(to);
                if check(&g, &from, &deps).is_ok() {
                    g.insert(from, deps);
                }
            }
            // Kahn's algorithm removes every node of an acyclic graph.
            let mut left = g.clone();
            loop {
                let ready: Vec<String> = left
                    .iter()
                    .filter(|(_, ds)| ds.iter().all(|d| !left.contains_key(d)))
                    .map(|(j, _)| j.clone())
                    .collect();
                if ready.is_empty() { break; }
                for j in ready { left.remove(&j); }
            }
            prop_assert!(left.is_empty(), "cycle among {:?}", left.keys());
        }
    }
}
