//! Arithmetic on single resource values, for the allocator's compact
//! per-framework records (`agora_proto::Resources` keeps its value arithmetic
//! private). Mismatched kinds never mix: the records are laid out from the
//! agent's total, so a value only ever meets values of its own kind.

use std::collections::BTreeSet;

use agora_proto::resources::Value;
use agora_proto::{Ranges, Scalar};

/// A zero of the same kind, the starting point of a record slot.
pub(crate) fn empty_like(v: &Value) -> Value {
    match v {
        Value::Scalar(_) => Value::Scalar(Scalar::ZERO),
        Value::Ranges(_) => Value::Ranges(Ranges::default()),
        Value::Set(_) => Value::Set(BTreeSet::new()),
    }
}

pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Scalar(s) => s.is_zero(),
        Value::Ranges(r) => r.is_empty(),
        Value::Set(s) => s.is_empty(),
    }
}

pub(crate) fn add(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => *x += *y,
        // Cloning into an empty slot avoids the re-sort of `Ranges::add`.
        (Value::Ranges(x), Value::Ranges(y)) if x.is_empty() => *x = y.clone(),
        (Value::Ranges(x), Value::Ranges(y)) => x.add(y),
        (Value::Set(x), Value::Set(y)) => x.extend(y.iter().cloned()),
        _ => {}
    }
}

pub(crate) fn subtract(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => *x = x.saturating_sub(*y),
        (Value::Ranges(x), Value::Ranges(y)) => x.subtract(y),
        (Value::Set(x), Value::Set(y)) => x.retain(|e| !y.contains(e)),
        _ => {}
    }
}

/// What `a` and `b` have in common (the part of a request that is really
/// there), of `a`'s kind.
pub(crate) fn intersect(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => Value::Scalar((*x).min(*y)),
        (Value::Ranges(x), Value::Ranges(y)) => {
            let mut outside = x.clone();
            outside.subtract(y);
            let mut inside = x.clone();
            inside.subtract(&outside);
            Value::Ranges(inside)
        }
        (Value::Set(x), Value::Set(y)) => Value::Set(x.intersection(y).cloned().collect()),
        _ => empty_like(a),
    }
}

/// Whether `a` holds all of `b`.
pub(crate) fn contains(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Scalar(x), Value::Scalar(y)) => x >= y,
        (Value::Ranges(x), Value::Ranges(y)) => x.contains(y),
        (Value::Set(x), Value::Set(y)) => y.is_subset(x),
        _ => is_empty(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(pairs: &[(u64, u64)]) -> Value {
        Value::Ranges(Ranges::new(pairs.iter().copied()))
    }

    #[test]
    fn intersect_clamps_each_kind() {
        let s = |m| Value::Scalar(Scalar::from_milli(m));
        assert_eq!(intersect(&s(500), &s(800)), s(500));
        assert_eq!(intersect(&s(800), &s(500)), s(500));
        assert_eq!(
            intersect(&ranges(&[(1, 10)]), &ranges(&[(5, 20), (0, 1)])),
            ranges(&[(1, 1), (5, 10)])
        );
        let set = |v: &[&str]| Value::Set(v.iter().map(|x| x.to_string()).collect());
        assert_eq!(intersect(&set(&["a", "b"]), &set(&["b", "c"])), set(&["b"]));
        assert_eq!(intersect(&s(5), &set(&["b"])), s(0));
    }

    #[test]
    fn add_subtract_contains_agree() {
        let mut v = empty_like(&ranges(&[(1, 1)]));
        assert!(is_empty(&v));
        add(&mut v, &ranges(&[(1, 5)]));
        add(&mut v, &ranges(&[(7, 9)]));
        assert!(contains(&v, &ranges(&[(2, 3), (8, 9)])));
        assert!(!contains(&v, &ranges(&[(5, 7)])));
        subtract(&mut v, &ranges(&[(1, 9)]));
        assert!(is_empty(&v));
    }
}
