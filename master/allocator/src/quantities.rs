//! The four resource kinds DRF counts (cpus, mem, disk, gpus), held as a
//! fixed array of milli-units so that shares are computed from integers
//! without touching the general, Vec-based `Resources` bag in the hot loop.

use agora_proto::resources::Value;
use agora_proto::{Resources, Scalar};

/// Milli-units of cpus, mem, disk and gpus, in that order.
pub(crate) type Milli4 = [i64; 4];

pub(crate) const CPUS: usize = 0;
pub(crate) const MEM: usize = 1;

/// Which slot of a [`Milli4`] a resource name counts in, if any.
pub(crate) fn kind_of(name: &str) -> Option<usize> {
    match name {
        "cpus" => Some(0),
        "mem" => Some(1),
        "disk" => Some(2),
        "gpus" => Some(3),
        _ => None,
    }
}

pub(crate) fn add4(a: &mut Milli4, b: &Milli4) {
    for k in 0..4 {
        a[k] += b[k];
    }
}

/// `a -= b`, flooring each kind at zero so that a bookkeeping slip can never
/// produce a negative share.
pub(crate) fn sub4(a: &mut Milli4, b: &Milli4) {
    for k in 0..4 {
        a[k] = (a[k] - b[k]).max(0);
    }
}

/// The DRF scalars of `value` under `name`, added into `into`.
pub(crate) fn add_value(into: &mut Milli4, name: &str, value: &Value) {
    if let (Some(k), Value::Scalar(s)) = (kind_of(name), value) {
        into[k] += s.milli();
    }
}

/// The DRF scalars of a bag, summed over every role.
pub(crate) fn scalars_of(resources: &Resources) -> Milli4 {
    let mut out = [0; 4];
    for r in resources.iter() {
        add_value(&mut out, &r.name, &r.value);
    }
    out
}

/// The largest fraction of the cluster's total of any kind that `allocated`
/// holds; kinds the cluster has none of are ignored.
pub(crate) fn dominant_share(allocated: &Milli4, totals: &Milli4) -> f64 {
    let mut share = 0.0f64;
    for k in 0..4 {
        if totals[k] > 0 {
            share = share.max(allocated[k] as f64 / totals[k] as f64);
        }
    }
    share
}

/// Quantities of the four kinds DRF counts, as reported by the allocator's
/// queries for `/state` and `/metrics`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Quantities {
    /// CPUs, in cores.
    pub cpus: Scalar,
    /// Memory, in MB.
    pub mem: Scalar,
    /// Disk, in MB.
    pub disk: Scalar,
    /// GPUs.
    pub gpus: Scalar,
}

impl From<Milli4> for Quantities {
    fn from(m: Milli4) -> Self {
        Quantities {
            cpus: Scalar::from_milli(m[0]),
            mem: Scalar::from_milli(m[1]),
            disk: Scalar::from_milli(m[2]),
            gpus: Scalar::from_milli(m[3]),
        }
    }
}

impl Quantities {
    /// The DRF kinds of a bag, summed over every role.
    pub fn of(resources: &Resources) -> Quantities {
        scalars_of(resources).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dominant_share_ignores_kinds_the_cluster_lacks() {
        let totals = [10_000, 1_000_000, 0, 0];
        assert_eq!(dominant_share(&[5_000, 100_000, 7, 9], &totals), 0.5);
        assert_eq!(dominant_share(&[1_000, 500_000, 0, 0], &totals), 0.5);
        assert_eq!(dominant_share(&[0; 4], &[0; 4]), 0.0);
    }

    #[test]
    fn sums_every_role_and_floors_subtraction() {
        let r = Resources::parse("cpus:1;cpus(web):2;mem:10;gpus:1;ports:[1-2]").unwrap();
        let mut s = scalars_of(&r);
        assert_eq!(s, [3_000, 10_000, 0, 1_000]);
        sub4(&mut s, &[4_000, 0, 0, 0]);
        assert_eq!(s[0], 0);
        assert_eq!(Quantities::of(&r).cpus.to_string(), "3");
    }
}
