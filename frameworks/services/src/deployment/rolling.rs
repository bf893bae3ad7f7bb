//! The rolling-restart decision: given what runs now, which old instances
//! to kill and how many new ones to launch. Pure and level-triggered: the
//! reconcile loop asks again after every change, so a missed event costs
//! nothing.
//!
//! Marathon's rule (`TaskReplaceActor`): with `n` target instances,
//! `minHealthy = ceil(n * minimumHealthCapacity)` and
//! `maxCapacity = floor(n * (1 + maximumOverCapacity))`; kill old instances
//! down to `minHealthy`, start new ones up to `maxCapacity`, and kill one old
//! instance for each new one that becomes healthy.
//!
//! Guarantees (checked by the property tests below):
//! * healthy instances never drop below `minHealthy` because of a kill
//!   decided here, except when no progress is possible otherwise
//!   (`minHealthy == maxCapacity` with every instance healthy, e.g.
//!   `minimumHealthCapacity 1, maximumOverCapacity 0`), where one old
//!   instance is killed at a time, as Marathon does;
//! * live instances (old, new and those being killed) never exceed
//!   `maxCapacity` because of a launch decided here;
//! * it ends with exactly `n` new healthy instances and no old one.

use crate::app::UpgradeStrategy;

/// A tolerance for products such as `10 * 0.9 = 9.000000000000002`.
const EPSILON: f64 = 1e-9;

/// `ceil(n * minimumHealthCapacity)`.
pub fn min_healthy(n: u32, strategy: &UpgradeStrategy) -> u32 {
    ((n as f64 * strategy.minimum_health_capacity) - EPSILON)
        .ceil()
        .max(0.0) as u32
}

/// `floor(n * (1 + maximumOverCapacity))`, at least `n`.
pub fn max_capacity(n: u32, strategy: &UpgradeStrategy) -> u32 {
    (((n as f64) * (1.0 + strategy.maximum_over_capacity)) + EPSILON)
        .floor()
        .max(n as f64) as u32
}

/// What runs now, in counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Old-configuration instances that are healthy.
    pub old_healthy: u32,
    /// Old-configuration instances that are not (launching, unreachable...).
    pub old_unhealthy: u32,
    /// New-configuration instances that are healthy.
    pub new_healthy: u32,
    /// New-configuration instances not healthy yet (launching).
    pub new_unhealthy: u32,
    /// Instances being killed that have not ended yet: they still hold
    /// capacity.
    pub killing: u32,
}

impl Counts {
    pub fn alive(&self) -> u32 {
        self.old_healthy + self.old_unhealthy + self.new_healthy + self.new_unhealthy + self.killing
    }
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Old instances that are not healthy: kill them all.
    pub kill_old_unhealthy: u32,
    /// Healthy old instances to kill.
    pub kill_old_healthy: u32,
    /// New instances beyond `n` to kill (not healthy ones first).
    pub kill_new: u32,
    /// New instances to launch.
    pub launch: u32,
    /// The restart is complete: `n` new healthy instances, nothing else.
    pub done: bool,
}

/// The next moves of a rolling restart to `n` instances.
pub fn decide(n: u32, strategy: &UpgradeStrategy, c: Counts) -> Decision {
    let min_h = min_healthy(n, strategy);
    let max_cap = max_capacity(n, strategy);
    let new_total = c.new_healthy + c.new_unhealthy;
    let old_total = c.old_healthy + c.old_unhealthy;
    if old_total == 0 && c.killing == 0 && c.new_healthy == n && c.new_unhealthy == 0 {
        return Decision {
            done: true,
            ..Decision::default()
        };
    }
    let mut d = Decision {
        kill_old_unhealthy: c.old_unhealthy,
        kill_new: new_total.saturating_sub(n),
        ..Decision::default()
    };
    // Healthy instances that may go while `min_h` stay.
    let spare = (c.old_healthy + c.new_healthy).saturating_sub(min_h);
    d.kill_old_healthy = spare.min(c.old_healthy);
    // Launch into the room left under `max_cap` (what is being killed still
    // counts until it has ended).
    let wanted = n.saturating_sub(new_total);
    d.launch = wanted.min(max_cap.saturating_sub(c.alive()));
    let stuck = d.kill_old_unhealthy == 0
        && d.kill_old_healthy == 0
        && d.kill_new == 0
        && d.launch == 0
        && c.killing == 0
        && c.new_unhealthy == 0;
    if stuck && c.old_healthy > 0 {
        // No room to start and no slack to kill (minHealthy == maxCapacity):
        // kill one old instance to make room, as Marathon does.
        d.kill_old_healthy = 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strategy(mhc: f64, moc: f64) -> UpgradeStrategy {
        UpgradeStrategy {
            minimum_health_capacity: mhc,
            maximum_over_capacity: moc,
        }
    }

    #[test]
    fn bounds() {
        assert_eq!(min_healthy(10, &strategy(0.9, 0.0)), 9);
        assert_eq!(min_healthy(3, &strategy(0.5, 0.0)), 2);
        assert_eq!(min_healthy(1000, &strategy(0.9, 0.0)), 900);
        assert_eq!(max_capacity(10, &strategy(1.0, 0.1)), 11);
        assert_eq!(max_capacity(3, &strategy(1.0, 0.5)), 4);
        assert_eq!(max_capacity(3, &strategy(1.0, 0.0)), 3);
    }

    #[test]
    fn default_strategy_starts_all_new_then_kills_old_as_they_become_healthy() {
        let s = UpgradeStrategy::default();
        let d = decide(
            3,
            &s,
            Counts {
                old_healthy: 3,
                ..Counts::default()
            },
        );
        assert_eq!((d.launch, d.kill_old_healthy), (3, 0));
        let d = decide(
            3,
            &s,
            Counts {
                old_healthy: 3,
                new_healthy: 1,
                new_unhealthy: 2,
                ..Counts::default()
            },
        );
        assert_eq!((d.launch, d.kill_old_healthy), (0, 1));
    }

    #[test]
    fn half_capacity_kills_half_first() {
        let d = decide(
            4,
            &strategy(0.5, 0.0),
            Counts {
                old_healthy: 4,
                ..Counts::default()
            },
        );
        assert_eq!(d.kill_old_healthy, 2);
        assert_eq!(
            d.launch, 0,
            "the killed ones still hold capacity until they end"
        );
        let d = decide(
            4,
            &strategy(0.5, 0.0),
            Counts {
                old_healthy: 2,
                ..Counts::default()
            },
        );
        assert_eq!((d.kill_old_healthy, d.launch), (0, 2));
    }

    #[test]
    fn full_health_no_room_kills_one_at_a_time() {
        let d = decide(
            3,
            &strategy(1.0, 0.0),
            Counts {
                old_healthy: 3,
                ..Counts::default()
            },
        );
        assert_eq!((d.kill_old_healthy, d.launch), (1, 0));
        let d = decide(
            3,
            &strategy(1.0, 0.0),
            Counts {
                old_healthy: 2,
                ..Counts::default()
            },
        );
        assert_eq!((d.kill_old_healthy, d.launch), (0, 1));
    }

    #[test]
    fn done_only_when_all_new_are_healthy() {
        let s = UpgradeStrategy::default();
        assert!(
            decide(
                2,
                &s,
                Counts {
                    new_healthy: 2,
                    ..Counts::default()
                }
            )
            .done
        );
        assert!(
            !decide(
                2,
                &s,
                Counts {
                    new_healthy: 2,
                    killing: 1,
                    ..Counts::default()
                }
            )
            .done
        );
        assert!(
            !decide(
                2,
                &s,
                Counts {
                    new_healthy: 1,
                    new_unhealthy: 1,
                    ..Counts::default()
                }
            )
            .done
        );
        assert!(decide(0, &s, Counts::default()).done);
    }

    /// Simulates a restart: each round applies the decision, then the world
    /// moves (some launches become healthy, some kills end), chosen by the
    /// test's random choices.
    fn simulate(
        n: u32,
        old: u32,
        s: UpgradeStrategy,
        moves: &[(bool, bool)],
    ) -> Result<(), TestCaseError> {
        let min_h = min_healthy(n, &s);
        let max_cap = max_capacity(n, &s);
        let forced = min_h == max_cap;
        let mut c = Counts {
            old_healthy: old,
            ..Counts::default()
        };
        let start_alive = c.alive();
        let start_healthy = c.old_healthy;
        let mut rounds = 0usize;
        let mut moves = moves.iter().cycle();
        loop {
            let d = decide(n, &s, c);
            if d.done {
                prop_assert_eq!(c.new_healthy, n);
                return Ok(());
            }
            // Apply the decision.
            let killed_healthy = d.kill_old_healthy;
            prop_assert!(killed_healthy <= c.old_healthy);
            c.old_healthy -= killed_healthy;
            c.old_unhealthy -= d.kill_old_unhealthy;
            let kn = d.kill_new.min(c.new_unhealthy);
            c.new_unhealthy -= kn;
            c.new_healthy -= d.kill_new - kn;
            c.killing += killed_healthy + d.kill_old_unhealthy + d.kill_new;
            c.new_unhealthy += d.launch;
            let healthy = c.old_healthy + c.new_healthy;
            if !forced {
                prop_assert!(
                    healthy >= min_h.min(start_healthy),
                    "healthy {} below {} (n {}, {:?})",
                    healthy,
                    min_h,
                    n,
                    c
                );
            } else {
                prop_assert!(
                    healthy + 1 >= min_h.min(start_healthy),
                    "forced: at most one below"
                );
            }
            prop_assert!(
                c.alive() <= max_cap.max(start_alive),
                "alive {} above {} (n {}, {:?})",
                c.alive(),
                max_cap,
                n,
                c
            );
            // The world moves.
            // (Something always moves: both when the choice is neither.)
            let &(start_one, end_one) = moves.next().expect("cycle");
            let (start_one, end_one) = (start_one || !end_one, end_one || !start_one);
            if c.new_unhealthy > 0 && (start_one || c.killing == 0) {
                c.new_unhealthy -= 1;
                c.new_healthy += 1;
            }
            if c.killing > 0 && (end_one || c.new_unhealthy == 0) {
                c.killing -= 1;
            }
            rounds += 1;
            prop_assert!(rounds < 10_000, "no progress: {:?}", c);
        }
    }

    proptest! {
        #[test]
        fn restart_keeps_health_and_capacity_and_finishes(
            n in 0u32..40,
            old in 0u32..40,
            mhc in 0.0f64..=1.0,
            moc in 0.0f64..=1.0,
            moves in proptest::collection::vec(any::<(bool, bool)>(), 1..16),
        ) {
            simulate(n, old, strategy(mhc, moc), &moves)?;
        }

        #[test]
        fn common_strategies_never_dip(n in 1u32..60, moves in proptest::collection::vec(any::<(bool, bool)>(), 1..16)) {
            for (mhc, moc) in [(0.9, 0.1), (0.5, 0.0), (1.0, 1.0), (0.0, 0.0), (0.75, 0.25)] {
                simulate(n, n, strategy(mhc, moc), &moves)?;
            }
        }
    }
}
