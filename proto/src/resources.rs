//! The resource model: scalars (`cpus`, `mem`, `disk`, `gpus`, ...), ranges
//! (`ports`) and sets, each optionally reserved for a role.
//!
//! Scalars are fixed-point with three decimal places, as in Mesos, so that
//! `0.1 + 0.2 == 0.3` and adding then subtracting never drifts.
//!
//! The text form is Mesos's: `cpus:4;mem:8192;ports:[31000-32000]`, with an
//! optional role in parentheses for a static reservation: `cpus(web):2`.

use std::collections::BTreeSet;
use std::fmt;

use crate::v1;

/// The role of unreserved resources.
pub const UNRESERVED: &str = "*";

/// What went wrong when reading resources or attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("empty resource name in `{0}`")]
    EmptyName(String),
    #[error("`{0}` has no value: write it as name:value, e.g. cpus:4")]
    MissingValue(String),
    #[error("`{text}`: {what}")]
    BadValue { text: String, what: String },
    #[error("resource `{name}` is given both as {first} and as {second}")]
    TypeMismatch {
        name: String,
        first: &'static str,
        second: &'static str,
    },
    #[error("invalid role `{0}`: roles are non-empty and use letters, digits, '-', '_' and '.'")]
    BadRole(String),
}

/// A non-negative fixed-point quantity with three decimal places.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scalar(i64);

impl Scalar {
    pub const ZERO: Scalar = Scalar(0);
    const SCALE: f64 = 1000.0;

    /// Rounds to three decimal places. Returns `None` for NaN, infinities,
    /// negative values and values too large to represent.
    pub fn from_f64(value: f64) -> Option<Scalar> {
        if !value.is_finite() || value < 0.0 || value > (i64::MAX / 2) as f64 / Self::SCALE {
            return None;
        }
        Some(Scalar((value * Self::SCALE).round() as i64))
    }

    /// Builds a scalar from thousandths.
    pub const fn from_milli(milli: i64) -> Scalar {
        Scalar(milli)
    }

    pub const fn milli(self) -> i64 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn saturating_sub(self, other: Scalar) -> Scalar {
        Scalar((self.0 - other.0).max(0))
    }
}

impl std::ops::Add for Scalar {
    type Output = Scalar;
    fn add(self, rhs: Scalar) -> Scalar {
        Scalar(self.0 + rhs.0)
    }
}

impl std::ops::AddAssign for Scalar {
    fn add_assign(&mut self, rhs: Scalar) {
        self.0 += rhs.0;
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        let frac = self.0 % 1000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let s = format!("{frac:03}");
            write!(f, "{whole}.{}", s.trim_end_matches('0'))
        }
    }
}

/// A set of integers as sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Builds ranges from any inclusive `(begin, end)` pairs; pairs with
    /// `begin > end` are ignored. Overlapping and adjacent ranges merge.
    pub fn new(pairs: impl IntoIterator<Item = (u64, u64)>) -> Ranges {
        let mut v: Vec<(u64, u64)> = pairs.into_iter().filter(|(b, e)| b <= e).collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (b, e) in v {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Ranges(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The inclusive ranges, sorted.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.0
    }

    /// How many integers the ranges hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    pub fn contains_value(&self, v: u64) -> bool {
        // Binary search over the sorted ranges.
        let i = self.0.partition_point(|&(_, e)| e < v);
        self.0.get(i).is_some_and(|&(b, _)| b <= v)
    }

    /// Whether every integer of `other` is in `self`.
    pub fn contains(&self, other: &Ranges) -> bool {
        let mut i = 0;
        for &(b, e) in &other.0 {
            while i < self.0.len() && self.0[i].1 < b {
                i += 1;
            }
            match self.0.get(i) {
                Some(&(sb, se)) if sb <= b && e <= se => {}
                _ => return false,
            }
        }
        true
    }

    pub fn add(&mut self, other: &Ranges) {
        if other.is_empty() {
            return;
        }
        let merged = Ranges::new(self.0.iter().chain(other.0.iter()).copied());
        *self = merged;
    }

    /// Removes every integer of `other` from `self` (those not in `self` are
    /// ignored).
    pub fn subtract(&mut self, other: &Ranges) {
        if other.is_empty() || self.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut j = 0;
        for &(mut b, e) in &self.0 {
            while j < other.0.len() && other.0[j].1 < b {
                j += 1;
            }
            let mut k = j;
            let mut done = false;
            while k < other.0.len() && other.0[k].0 <= e {
                let (ob, oe) = other.0[k];
                if ob > b {
                    out.push((b, ob - 1));
                }
                if oe >= e {
                    done = true;
                    break;
                }
                b = oe + 1;
                k += 1;
            }
            if !done {
                out.push((b, e));
            }
        }
        self.0 = out;
    }

    /// The first `n` integers of the ranges, as ranges (fewer if there are
    /// not that many).
    pub fn take(&self, n: u64) -> Ranges {
        let mut left = n;
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = e - b + 1;
            if len <= left {
                out.push((b, e));
                left -= len;
            } else {
                out.push((b, b + left - 1));
                left = 0;
            }
        }
        Ranges(out)
    }
}

impl fmt::Debug for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Ranges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// The value of one resource.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Scalar(Scalar),
    Ranges(Ranges),
    Set(BTreeSet<String>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "a scalar",
            Value::Ranges(_) => "ranges",
            Value::Set(_) => "a set",
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Value::Scalar(s) => s.is_zero(),
            Value::Ranges(r) => r.is_empty(),
            Value::Set(s) => s.is_empty(),
        }
    }

    fn contains(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => a >= b,
            (Value::Ranges(a), Value::Ranges(b)) => a.contains(b),
            (Value::Set(a), Value::Set(b)) => b.is_subset(a),
            _ => other.is_empty(),
        }
    }

    fn add(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a += *b,
            (Value::Ranges(a), Value::Ranges(b)) => a.add(b),
            (Value::Set(a), Value::Set(b)) => a.extend(b.iter().cloned()),
            // Callers check types before adding.
            _ => {}
        }
    }

    fn subtract(&mut self, other: &Value) {
        match (self, other) {
            (Value::Scalar(a), Value::Scalar(b)) => *a = a.saturating_sub(*b),
            (Value::Ranges(a), Value::Ranges(b)) => a.subtract(b),
            (Value::Set(a), Value::Set(b)) => a.retain(|x| !b.contains(x)),
            _ => {}
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Scalar(s) => write!(f, "{s}"),
            Value::Ranges(r) => write!(f, "{r}"),
            Value::Set(s) => {
                f.write_str("{")?;
                for (i, x) in s.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    f.write_str(x)?;
                }
                f.write_str("}")
            }
        }
    }
}

/// One named resource, reserved for `role` or unreserved (`*`).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Resource {
    pub name: String,
    pub role: String,
    pub value: Value,
}

impl Resource {
    pub fn scalar(name: &str, value: f64) -> Resource {
        Resource {
            name: name.to_string(),
            role: UNRESERVED.to_string(),
            value: Value::Scalar(Scalar::from_f64(value).unwrap_or_default()),
        }
    }

    pub fn ranges(name: &str, ranges: Ranges) -> Resource {
        Resource {
            name: name.to_string(),
            role: UNRESERVED.to_string(),
            value: Value::Ranges(ranges),
        }
    }

    pub fn with_role(mut self, role: &str) -> Resource {
        self.role = role.to_string();
        self
    }

    pub fn is_unreserved(&self) -> bool {
        self.role == UNRESERVED
    }
}

/// A bag of resources: at most one entry per (name, role), sorted, with no
/// empty entries. Equality is therefore structural.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    items: Vec<Resource>,
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    /// Parses the Mesos text form, e.g.
    /// `cpus:4;mem:8192;disk:10000;ports:[31000-32000];cpus(web):2`.
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let mut out = Resources::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once(':')
                .ok_or_else(|| ResourceError::MissingValue(part.to_string()))?;
            let key = key.trim();
            let (name, role) = match key.split_once('(') {
                Some((name, rest)) => {
                    let role = rest
                        .strip_suffix(')')
                        .ok_or_else(|| ResourceError::BadValue {
                            text: part.to_string(),
                            what: "a role is written in parentheses, e.g. cpus(web):2".into(),
                        })?;
                    (name.trim(), role.trim())
                }
                None => (key, UNRESERVED),
            };
            if name.is_empty() {
                return Err(ResourceError::EmptyName(part.to_string()));
            }
            validate_role(role)?;
            let value = parse_value(part, value.trim())?;
            out.try_add_resource(Resource {
                name: name.to_string(),
                role: role.to_string(),
                value,
            })?;
        }
        Ok(out)
    }

    /// Reads resources from the wire, refusing negative or non-finite
    /// scalars, reversed ranges, bad roles and type conflicts.
    pub fn from_proto(resources: &[v1::Resource]) -> Result<Resources, ResourceError> {
        let mut out = Resources::new();
        for r in resources {
            if r.name.is_empty() {
                return Err(ResourceError::EmptyName(format!("{r:?}")));
            }
            let role = if r.role.is_empty() {
                UNRESERVED
            } else {
                r.role.as_str()
            };
            validate_role(role)?;
            let value = match r.r#type() {
                v1::resource::Type::Scalar => {
                    Value::Scalar(Scalar::from_f64(r.scalar).ok_or_else(|| {
                        ResourceError::BadValue {
                            text: format!("{}:{}", r.name, r.scalar),
                            what: "a scalar must be a finite number >= 0".into(),
                        }
                    })?)
                }
                v1::resource::Type::Ranges => {
                    for range in &r.ranges {
                        if range.begin > range.end {
                            return Err(ResourceError::BadValue {
                                text: format!("{}:[{}-{}]", r.name, range.begin, range.end),
                                what: "a range's begin must not exceed its end".into(),
                            });
                        }
                    }
                    Value::Ranges(Ranges::new(r.ranges.iter().map(|x| (x.begin, x.end))))
                }
                v1::resource::Type::Set => Value::Set(r.set.iter().cloned().collect()),
            };
            out.try_add_resource(Resource {
                name: r.name.clone(),
                role: role.to_string(),
                value,
            })?;
        }
        // Resources of tasks are kept for as long as the tasks run: no
        // spare capacity (a task's two or three items would otherwise sit
        // in room for four).
        out.items.shrink_to_fit();
        Ok(out)
    }

    pub fn to_proto(&self) -> Vec<v1::Resource> {
        self.items
            .iter()
            .map(|r| {
                let mut p = v1::Resource {
                    name: r.name.clone(),
                    role: r.role.clone(),
                    ..Default::default()
                };
                match &r.value {
                    Value::Scalar(s) => {
                        p.set_type(v1::resource::Type::Scalar);
                        p.scalar = s.as_f64();
                    }
                    Value::Ranges(rs) => {
                        p.set_type(v1::resource::Type::Ranges);
                        p.ranges = rs
                            .ranges()
                            .iter()
                            .map(|&(begin, end)| v1::Range { begin, end })
                            .collect();
                    }
                    Value::Set(s) => {
                        p.set_type(v1::resource::Type::Set);
                        p.set = s.iter().cloned().collect();
                    }
                }
                p
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Resource> {
        self.items.iter()
    }

    fn position(&self, name: &str, role: &str) -> Result<usize, usize> {
        self.items
            .binary_search_by(|r| (r.name.as_str(), r.role.as_str()).cmp(&(name, role)))
    }

    /// Adds one resource, refusing a type that conflicts with an entry of the
    /// same name.
    pub fn try_add_resource(&mut self, resource: Resource) -> Result<(), ResourceError> {
        if let Some(existing) = self.items.iter().find(|r| r.name == resource.name)
            && std::mem::discriminant(&existing.value) != std::mem::discriminant(&resource.value)
        {
            return Err(ResourceError::TypeMismatch {
                name: resource.name,
                first: existing.value.kind(),
                second: resource.value.kind(),
            });
        }
        if resource.value.is_empty() {
            return Ok(());
        }
        match self.position(&resource.name, &resource.role) {
            Ok(i) => self.items[i].value.add(&resource.value),
            Err(i) => self.items.insert(i, resource),
        }
        Ok(())
    }

    /// Adds `other` into `self`. Entries whose type conflicts with an entry of
    /// the same name are skipped (both sides are validated on the way in).
    pub fn add(&mut self, other: &Resources) {
        for r in &other.items {
            let _ = self.try_add_resource(r.clone());
        }
    }

    /// Whether `self` holds at least everything in `other`, role by role.
    pub fn contains(&self, other: &Resources) -> bool {
        other
            .items
            .iter()
            .all(|o| match self.position(&o.name, &o.role) {
                Ok(i) => self.items[i].value.contains(&o.value),
                Err(_) => o.value.is_empty(),
            })
    }

    /// Removes `other` from `self`, flooring at zero. Check `contains` first
    /// where taking more than there is would be a mistake.
    pub fn subtract(&mut self, other: &Resources) {
        for o in &other.items {
            if let Ok(i) = self.position(&o.name, &o.role) {
                self.items[i].value.subtract(&o.value);
                if self.items[i].value.is_empty() {
                    self.items.remove(i);
                }
            }
        }
    }

    /// `self - other` when `self` contains `other`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut out = self.clone();
        out.subtract(other);
        Some(out)
    }

    /// The sum of a scalar over every role.
    pub fn scalar(&self, name: &str) -> Scalar {
        let mut total = Scalar::ZERO;
        for r in self.items.iter().filter(|r| r.name == name) {
            if let Value::Scalar(s) = r.value {
                total += s;
            }
        }
        total
    }

    pub fn cpus(&self) -> Scalar {
        self.scalar("cpus")
    }

    pub fn mem(&self) -> Scalar {
        self.scalar("mem")
    }

    pub fn disk(&self) -> Scalar {
        self.scalar("disk")
    }

    pub fn gpus(&self) -> Scalar {
        self.scalar("gpus")
    }

    /// The union of a ranges resource over every role.
    pub fn ranges(&self, name: &str) -> Ranges {
        let mut out = Ranges::default();
        for r in self.items.iter().filter(|r| r.name == name) {
            if let Value::Ranges(rs) = &r.value {
                out.add(rs);
            }
        }
        out
    }

    pub fn ports(&self) -> Ranges {
        self.ranges("ports")
    }

    /// Only the resources that satisfy `keep`.
    pub fn filter(&self, keep: impl Fn(&Resource) -> bool) -> Resources {
        Resources {
            items: self.items.iter().filter(|r| keep(r)).cloned().collect(),
        }
    }

    pub fn unreserved(&self) -> Resources {
        self.filter(Resource::is_unreserved)
    }

    /// What a framework acting in `role` may use: unreserved resources and
    /// those reserved for `role`.
    pub fn allocatable_to(&self, role: &str) -> Resources {
        self.filter(|r| r.is_unreserved() || r.role == role)
    }

    /// The same resources with every reservation dropped (role `*`).
    pub fn flatten(&self) -> Resources {
        let mut out = Resources::new();
        for r in &self.items {
            let _ = out.try_add_resource(Resource {
                role: UNRESERVED.to_string(),
                ..r.clone()
            });
        }
        out
    }
}

impl fmt::Display for Resources {
    /// The Mesos text form, which [`Resources::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.items.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            f.write_str(&r.name)?;
            if !r.is_unreserved() {
                write!(f, "({})", r.role)?;
            }
            write!(f, ":{}", r.value)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Resources({self})")
    }
}

impl std::str::FromStr for Resources {
    type Err = ResourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Resources::parse(s)
    }
}

/// Whether `role` is a valid role name (`*` included).
pub fn validate_role(role: &str) -> Result<(), ResourceError> {
    let ok = role == UNRESERVED
        || (!role.is_empty()
            && role != "."
            && role != ".."
            && !role.starts_with('-')
            && role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')));
    if ok {
        Ok(())
    } else {
        Err(ResourceError::BadRole(role.to_string()))
    }
}

fn parse_value(part: &str, value: &str) -> Result<Value, ResourceError> {
    let bad = |what: &str| ResourceError::BadValue {
        text: part.to_string(),
        what: what.to_string(),
    };
    if value.is_empty() {
        return Err(ResourceError::MissingValue(part.to_string()));
    }
    if let Some(inner) = value.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad("ranges are written [begin-end, ...] and need a closing ']'"))?;
        let mut pairs = Vec::new();
        for r in inner.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (b, e) = r
                .split_once('-')
                .ok_or_else(|| bad("each range is written begin-end, e.g. 31000-32000"))?;
            let b: u64 = b
                .trim()
                .parse()
                .map_err(|_| bad("a range bound must be a whole number"))?;
            let e: u64 = e
                .trim()
                .parse()
                .map_err(|_| bad("a range bound must be a whole number"))?;
            if b > e {
                return Err(bad("a range's begin must not exceed its end"));
            }
            pairs.push((b, e));
        }
        return Ok(Value::Ranges(Ranges::new(pairs)));
    }
    if let Some(inner) = value.strip_prefix('{') {
        let inner = inner
            .strip_suffix('}')
            .ok_or_else(|| bad("sets are written {a,b} and need a closing '}'"))?;
        return Ok(Value::Set(
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        ));
    }
    let v: f64 = value
        .parse()
        .map_err(|_| bad("a scalar must be a number, e.g. cpus:0.5"))?;
    Scalar::from_f64(v)
        .map(Value::Scalar)
        .ok_or_else(|| bad("a scalar must be a finite number >= 0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_mesos_text_form() {
        let r =
            Resources::parse("cpus:4;mem:8192;disk:10000;ports:[31000-32000];cpus(web):2").unwrap();
        assert_eq!(r.cpus(), Scalar::from_milli(6000));
        assert_eq!(r.unreserved().cpus(), Scalar::from_milli(4000));
        assert_eq!(r.mem().as_f64(), 8192.0);
        assert_eq!(r.ports(), Ranges::new([(31000, 32000)]));
        assert_eq!(r.allocatable_to("web").cpus().as_f64(), 6.0);
        assert_eq!(r.allocatable_to("batch").cpus().as_f64(), 4.0);
        assert_eq!(Resources::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn parses_sets_fractions_and_spaces() {
        let r = Resources::parse(" cpus : 0.1 ; disks:{a, b} ; ports:[1-2,4-5, 3-3]").unwrap();
        assert_eq!(r.cpus(), Scalar::from_milli(100));
        assert_eq!(r.ports(), Ranges::new([(1, 5)]));
        assert_eq!(r.to_string(), "cpus:0.1;disks:{a,b};ports:[1-5]");
    }

    #[test]
    fn rejects_bad_text_with_a_reason() {
        for (text, needle) in [
            ("cpus", "no value"),
            ("cpus:", "no value"),
            (":4", "empty resource name"),
            ("cpus:four", "must be a number"),
            ("cpus:-1", ">= 0"),
            ("ports:[2-1]", "must not exceed"),
            ("ports:[1-2", "closing"),
            ("ports:[a-b]", "whole number"),
            ("cpus(web:2", "parentheses"),
            ("cpus(w b):2", "invalid role"),
            ("cpus:1;cpus:[1-2]", "both as"),
        ] {
            let err = Resources::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn fixed_point_does_not_drift() {
        let a = Resources::parse("cpus:0.1").unwrap();
        let b = Resources::parse("cpus:0.2").unwrap();
        let mut sum = a.clone();
        sum.add(&b);
        assert_eq!(sum, Resources::parse("cpus:0.3").unwrap());
    }

    #[test]
    fn ranges_subtract_splits_and_trims() {
        let mut r = Ranges::new([(1, 10), (20, 30)]);
        r.subtract(&Ranges::new([(3, 4), (10, 21), (30, 40)]));
        assert_eq!(r, Ranges::new([(1, 2), (5, 9), (22, 29)]));
        assert!(r.contains_value(22) && !r.contains_value(21) && !r.contains_value(30));
        assert_eq!(r.take(3), Ranges::new([(1, 2), (5, 5)]));
    }

    #[test]
    fn proto_round_trip_and_validation() {
        let r = Resources::parse("cpus:1.5;mem(web):64;ports:[1-3];s:{x}").unwrap();
        assert_eq!(Resources::from_proto(&r.to_proto()).unwrap(), r);
        let bad = v1::Resource {
            name: "cpus".into(),
            scalar: f64::NAN,
            ..Default::default()
        };
        assert!(Resources::from_proto(&[bad]).is_err());
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        let scalar = (
            prop::sample::select(vec!["cpus", "mem", "disk"]),
            prop::sample::select(vec!["*", "web"]),
            0u32..5000,
        )
            .prop_map(|(n, role, milli)| Resource {
                name: n.into(),
                role: role.into(),
                value: Value::Scalar(Scalar::from_milli(milli as i64)),
            });
        let ranges = (
            prop::sample::select(vec!["*", "web"]),
            prop::collection::vec((0u64..200, 0u64..20), 0..4),
        )
            .prop_map(|(role, v)| Resource {
                name: "ports".into(),
                role: role.into(),
                value: Value::Ranges(Ranges::new(v.into_iter().map(|(b, l)| (b, b + l)))),
            });
        prop::collection::vec(prop_oneof![scalar, ranges], 0..6).prop_map(|items| {
            let mut r = Resources::new();
            for i in items {
                r.try_add_resource(i).unwrap();
            }
            r
        })
    }

    fn arb_ranges() -> impl Strategy<Value = Ranges> {
        prop::collection::vec((0u64..300, 0u64..30), 0..6)
            .prop_map(|v| Ranges::new(v.into_iter().map(|(b, l)| (b, b + l))))
    }

    proptest! {
        #[test]
        fn add_then_subtract_is_identity(a in arb_resources(), b in arb_resources()) {
            // Ranges may overlap, so only disjoint ranges subtract back exactly;
            // scalars always do.
            let mut sum = a.clone();
            sum.add(&b);
            prop_assert!(sum.contains(&a));
            prop_assert!(sum.contains(&b));
            let back = sum.checked_sub(&b).unwrap();
            prop_assert_eq!(back.filter(|r| matches!(r.value, Value::Scalar(_))),
                            a.filter(|r| matches!(r.value, Value::Scalar(_))));
        }

        #[test]
        fn add_is_commutative(a in arb_resources(), b in arb_resources()) {
            let mut ab = a.clone();
            ab.add(&b);
            let mut ba = b.clone();
            ba.add(&a);
            prop_assert_eq!(ab, ba);
        }

        #[test]
        fn contains_is_reflexive_and_subtract_is_contained(a in arb_resources(), b in arb_resources()) {
            prop_assert!(a.contains(&a));
            prop_assert!(a.contains(&Resources::new()));
            let mut d = a.clone();
            d.subtract(&b);
            prop_assert!(a.contains(&d));
        }

        #[test]
        fn text_form_round_trips(a in arb_resources()) {
            prop_assert_eq!(Resources::parse(&a.to_string()).unwrap(), a);
        }

        #[test]
        fn ranges_match_a_model(a in arb_ranges(), b in arb_ranges()) {
            let set = |r: &Ranges| -> BTreeSet<u64> {
                r.ranges().iter().flat_map(|&(b, e)| b..=e).collect()
            };
            let (sa, sb) = (set(&a), set(&b));
            let mut u = a.clone();
            u.add(&b);
            prop_assert_eq!(set(&u), sa.union(&sb).copied().collect::<BTreeSet<_>>());
            let mut d = a.clone();
            d.subtract(&b);
            prop_assert_eq!(set(&d), sa.difference(&sb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(a.contains(&b), sb.is_subset(&sa));
            prop_assert_eq!(a.count() as usize, sa.len());
            // Normal form: sorted, disjoint, non-adjacent.
            for w in u.ranges().windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0);
            }
        }
    }
}
