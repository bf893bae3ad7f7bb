//! Scaling and self-healing: how many instances to launch, and which to
//! kill, so that an app runs exactly its `instances`. Pure.

use crate::app::KillSelection;

/// An instance as scaling sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Not running yet, or not answering: the first to go.
    pub starting_or_lost: bool,
    /// When it was staged (milliseconds).
    pub staged_at: i64,
}

/// What to do to reach `target` counted instances.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScaleDecision {
    pub launch: u32,
    pub kill: Vec<String>,
}

/// Launch what is missing, or kill the extras: instances not running (or
/// not answering) first, then by `selection` (youngest or oldest first).
pub fn decide(target: u32, counted: &[Candidate], selection: KillSelection) -> ScaleDecision {
    let have = counted.len() as u32;
    if have <= target {
        return ScaleDecision {
            launch: target - have,
            kill: Vec::new(),
        };
    }
    let mut order: Vec<&Candidate> = counted.iter().collect();
    order.sort_by(|a, b| {
        b.starting_or_lost
            .cmp(&a.starting_or_lost)
            .then_with(|| match selection {
                KillSelection::YoungestFirst => b.staged_at.cmp(&a.staged_at),
                KillSelection::OldestFirst => a.staged_at.cmp(&b.staged_at),
            })
            .then_with(|| a.id.cmp(&b.id))
    });
    ScaleDecision {
        launch: 0,
        kill: order
            .into_iter()
            .take((have - target) as usize)
            .map(|c| c.id.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(id: &str, starting: bool, at: i64) -> Candidate {
        Candidate {
            id: id.into(),
            starting_or_lost: starting,
            staged_at: at,
        }
    }

    #[test]
    fn launches_what_is_missing() {
        assert_eq!(
            decide(3, &[c("a", false, 1)], KillSelection::YoungestFirst).launch,
            2
        );
    }

    #[test]
    fn kills_starting_first_then_by_selection() {
        let all = [
            c("old", false, 1),
            c("young", false, 3),
            c("mid", false, 2),
            c("staging", true, 0),
        ];
        assert_eq!(
            decide(2, &all, KillSelection::YoungestFirst).kill,
            ["staging", "young"]
        );
        assert_eq!(
            decide(2, &all, KillSelection::OldestFirst).kill,
            ["staging", "old"]
        );
    }

    proptest! {
        #[test]
        fn ends_at_the_target(target in 0u32..50, have in 0usize..50) {
            let all: Vec<Candidate> = (0..have).map(|i| c(&i.to_string(), i % 3 == 0, i as i64)).collect();
            let d = decide(target, &all, KillSelection::YoungestFirst);
            prop_assert_eq!(have as u32 + d.launch - d.kill.len() as u32, target);
            prop_assert!(d.launch == 0 || d.kill.is_empty());
        }
    }
}
