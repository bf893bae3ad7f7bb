//! Placement constraints, with Marathon's semantics: `[field, OPERATOR,
//! value?]` where the field is `hostname` or an agent attribute.
//!
//! | operator | value | an agent is allowed when |
//! | --- | --- | --- |
//! | `UNIQUE` | none | no instance of the group runs on an agent with the same value |
//! | `CLUSTER` | optional | its value equals the constraint's value (when given) and every instance of the group runs on that value (the first placement pins it when no value is given) |
//! | `GROUP_BY` | optional count | its value is not used yet, or (once at least `count` values are used) it is among the values with the fewest instances |
//! | `MAX_PER` | count | fewer than `count` instances run on its value |
//! | `LIKE` | regex | its value matches the regular expression (the whole value) |
//! | `UNLIKE` | regex | its value does not match it (the whole value) |
//! | `IS` (`EQ`) | value | its value equals the constraint's value (numerically for scalar attributes) |
//!
//! An agent without the attribute passes only `UNLIKE`. Scalar attributes
//! are compared in their text form (`3`, `2.5`). `EQ` is Metronome's name
//! for `IS`.
//!
//! Everything here is pure. [`Constraint::allows`] answers for a candidate
//! agent against where the group's instances already run; the matcher keeps
//! [`ValueCounts`] per group and field so that each answer costs O(1)
//! rather than a scan of every instance.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use agora_proto::attributes::attribute_text;
use agora_proto::v1;
use regex::Regex;

/// The field that names the agent's hostname rather than an attribute.
pub const HOSTNAME: &str = "hostname";

/// A constraint operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Unique,
    Cluster,
    GroupBy,
    Like,
    Unlike,
    MaxPer,
    /// Also read as Metronome's `EQ`.
    Is,
}

impl Operator {
    /// Marathon's name of the operator.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
            Operator::Is => "IS",
        }
    }

    /// Reads Marathon's names (and Metronome's `EQ`), upper case as both
    /// write them.
    pub fn parse(s: &str) -> Option<Operator> {
        Some(match s {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster,
            "GROUP_BY" => Operator::GroupBy,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            "MAX_PER" => Operator::MaxPer,
            "IS" | "EQ" => Operator::Is,
            _ => return None,
        })
    }

    /// Whether a refusal stays a refusal as more instances are placed (all
    /// but `GROUP_BY`, where placing elsewhere can make a value the least
    /// used again). The matcher skips offers for good only then.
    pub fn refusal_is_final(self) -> bool {
        self != Operator::GroupBy
    }
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One placement constraint. Build it with [`Constraint::parse`] or
/// [`Constraint::new`]; it serializes as Marathon's `[field, OP, value?]`.
#[derive(Debug, Clone)]
pub struct Constraint {
    field: String,
    op: Operator,
    value: Option<String>,
    /// `LIKE` / `UNLIKE`: the value, anchored to match whole values.
    regex: Option<Regex>,
    /// `GROUP_BY` (0 when not given) / `MAX_PER`: the value as a number.
    count: usize,
}

impl PartialEq for Constraint {
    fn eq(&self, other: &Constraint) -> bool {
        self.field == other.field && self.op == other.op && self.value == other.value
    }
}

impl Eq for Constraint {}

impl std::hash::Hash for Constraint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.field, self.op, &self.value).hash(state);
    }
}

impl Constraint {
    /// Reads Marathon's `[field, OPERATOR]` or `[field, OPERATOR, value]`.
    /// The error says what is wrong, for the user who wrote it.
    pub fn parse<S: AsRef<str>>(parts: &[S]) -> Result<Constraint, String> {
        let shown = || {
            let items: Vec<String> = parts.iter().map(|p| format!("{:?}", p.as_ref())).collect();
            format!("[{}]", items.join(", "))
        };
        if parts.len() < 2 || parts.len() > 3 {
            return Err(format!(
                "a constraint is [field, operator] or [field, operator, value], \
                 e.g. [\"hostname\", \"UNIQUE\"]; {} has {} element{}",
                shown(),
                parts.len(),
                if parts.len() == 1 { "" } else { "s" }
            ));
        }
        let op_text = parts[1].as_ref();
        let op = Operator::parse(op_text).ok_or_else(|| {
            format!(
                "unknown constraint operator `{op_text}` in {}: use one of UNIQUE, CLUSTER, \
                 GROUP_BY, LIKE, UNLIKE, MAX_PER, IS (or EQ)",
                shown()
            )
        })?;
        Constraint::new(
            parts[0].as_ref(),
            op,
            parts.get(2).map(|v| v.as_ref().to_string()),
        )
        .map_err(|e| format!("{e} (in {})", shown()))
    }

    /// A constraint from its parts, checked as [`parse`](Self::parse) does.
    /// An empty value counts as no value.
    pub fn new(field: &str, op: Operator, value: Option<String>) -> Result<Constraint, String> {
        if field.trim().is_empty() {
            return Err(
                "the constraint's field is empty: give `hostname` or an agent attribute name"
                    .into(),
            );
        }
        let value = value.filter(|v| !v.is_empty());
        let mut regex = None;
        let mut count = 0;
        match (op, &value) {
            (Operator::Unique, Some(v)) => {
                return Err(format!("UNIQUE takes no value, but `{v}` was given"));
            }
            (Operator::Unique | Operator::Cluster, _) => {}
            (Operator::GroupBy, None) => {}
            (Operator::GroupBy, Some(v)) => {
                count = v.trim().parse::<usize>().map_err(|_| {
                    format!(
                        "GROUP_BY takes an optional whole number (how many values to spread \
                         over), not `{v}`"
                    )
                })?;
            }
            (Operator::MaxPer, None) => {
                return Err(
                    "MAX_PER needs a value: the most instances per value, e.g. [\"rack\", \
                     \"MAX_PER\", \"2\"]"
                        .into(),
                );
            }
            (Operator::MaxPer, Some(v)) => {
                count = match v.trim().parse::<usize>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        return Err(format!(
                            "MAX_PER takes a whole number of at least 1, not `{v}`"
                        ));
                    }
                };
            }
            (Operator::Like | Operator::Unlike, None) => {
                return Err(format!(
                    "{op} needs a value: a regular expression the {field} must {}match",
                    if op == Operator::Unlike { "not " } else { "" }
                ));
            }
            (Operator::Like | Operator::Unlike, Some(v)) => {
                let invalid = |e: regex::Error| {
                    let why = e.to_string();
                    let why = why.lines().last().unwrap_or_default().trim().to_string();
                    format!("`{v}` is not a valid regular expression: {why}")
                };
                // Checked alone first, so that the anchoring below cannot be
                // unbalanced by the value's own parentheses.
                Regex::new(v).map_err(invalid)?;
                regex = Some(Regex::new(&format!("^(?:{v})$")).map_err(invalid)?);
            }
            (Operator::Is, None) => {
                return Err(format!(
                    "{op} needs a value: what the {field} must be, e.g. [\"{field}\", \"IS\", \"a\"]"
                ));
            }
            (Operator::Is, Some(_)) => {}
        }
        Ok(Constraint {
            field: field.to_string(),
            op,
            value,
            regex,
            count,
        })
    }

    /// `hostname` or an attribute name.
    pub fn field(&self) -> &str {
        &self.field
    }

    pub fn op(&self) -> Operator {
        self.op
    }

    /// The value; `None` when none was given (or it was empty).
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// Marathon's form: `["hostname", "UNIQUE"]`, `["rack", "GROUP_BY", "3"]`.
    pub fn to_parts(&self) -> Vec<String> {
        let mut parts = vec![self.field.clone(), self.op.as_str().to_string()];
        if let Some(v) = &self.value {
            parts.push(v.clone());
        }
        parts
    }

    /// `field:OP` or `field:OP:value`, for messages such as "constraint
    /// hostname:UNIQUE not satisfied by any offer".
    pub fn explain(&self) -> String {
        match &self.value {
            Some(v) => format!("{}:{}:{v}", self.field, self.op),
            None => format!("{}:{}", self.field, self.op),
        }
    }

    /// Whether `candidate` may take one more instance of a group whose
    /// other instances run on `placed` (one entry per instance).
    pub fn allows(&self, candidate: &AgentFacts, placed: &[&AgentFacts]) -> bool {
        let mut counts = ValueCounts::default();
        for p in placed {
            counts.add(p.value_of(&self.field).as_deref());
        }
        self.allows_counted(candidate, &counts)
    }

    /// [`allows`](Self::allows), with the group's instances already counted
    /// by value of [`field`](Self::field).
    pub fn allows_counted(&self, candidate: &AgentFacts, counts: &ValueCounts) -> bool {
        let value = candidate.value_of(&self.field);
        let Some(value) = value.as_deref() else {
            // An agent without the attribute passes only UNLIKE.
            return self.op == Operator::Unlike;
        };
        let on_value = counts.count(Some(value));
        match self.op {
            Operator::Unique => on_value == 0,
            Operator::Cluster => {
                self.value.as_deref().is_none_or(|want| want == value) && on_value == counts.total()
            }
            Operator::GroupBy => {
                on_value == 0 || (counts.groups() >= self.count && Some(on_value) == counts.min())
            }
            Operator::MaxPer => on_value < self.count,
            Operator::Like => self.regex.as_ref().is_some_and(|r| r.is_match(value)),
            Operator::Unlike => self.regex.as_ref().is_none_or(|r| !r.is_match(value)),
            Operator::Is => self
                .value
                .as_deref()
                .is_some_and(|want| same_value(want, value)),
        }
    }
}

/// Text equality, or numeric equality when both are numbers (`3` and
/// `3.0`).
fn same_value(want: &str, have: &str) -> bool {
    if want == have {
        return true;
    }
    match (want.trim().parse::<f64>(), have.trim().parse::<f64>()) {
        (Ok(a), Ok(b)) => a.is_finite() && a == b,
        _ => false,
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain())
    }
}

impl serde::Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_parts().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Constraint, D::Error> {
        let parts = Vec::<String>::deserialize(d)?;
        Constraint::parse(&parts).map_err(serde::de::Error::custom)
    }
}

/// What constraints look at on an agent.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AgentFacts {
    pub agent_id: String,
    pub hostname: String,
    pub attributes: Vec<v1::Attribute>,
}

impl AgentFacts {
    /// The facts an offer carries about its agent.
    pub fn from_offer(offer: &v1::Offer) -> AgentFacts {
        AgentFacts {
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            attributes: offer.attributes.clone(),
        }
    }

    /// The agent's value for `field`: its hostname for `hostname`,
    /// otherwise the attribute's text (`None` when the agent lacks it).
    pub fn value_of(&self, field: &str) -> Option<Cow<'_, str>> {
        if field == HOSTNAME {
            return Some(Cow::Borrowed(&self.hostname));
        }
        self.attributes
            .iter()
            .find(|a| a.name == field)
            .map(|a| match &a.value {
                Some(v1::attribute::Value::Text(t)) => Cow::Borrowed(t.as_str()),
                _ => Cow::Owned(attribute_text(a)),
            })
    }
}

/// How many instances of a group run per value of one field (`None`:
/// instances on agents without the attribute), kept so that the smallest
/// count is known at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValueCounts {
    by_value: HashMap<String, usize>,
    /// Instances on agents without the attribute (a group of its own, as in
    /// Marathon's GROUP_BY).
    missing: usize,
    /// count -> how many values (the missing group included) have it.
    by_count: BTreeMap<usize, usize>,
    total: usize,
}

impl ValueCounts {
    /// One more instance on `value`.
    pub fn add(&mut self, value: Option<&str>) {
        let count = match value {
            Some(v) => match self.by_value.get_mut(v) {
                Some(n) => n,
                None => self.by_value.entry(v.to_string()).or_insert(0),
            },
            None => &mut self.missing,
        };
        let old = *count;
        *count += 1;
        if old > 0 {
            Self::dec(&mut self.by_count, old);
        }
        *self.by_count.entry(old + 1).or_insert(0) += 1;
        self.total += 1;
    }

    /// One instance fewer on `value` (nothing when none was counted).
    pub fn remove(&mut self, value: Option<&str>) {
        let count = match value {
            Some(v) => match self.by_value.get_mut(v) {
                Some(n) => n,
                None => return,
            },
            None if self.missing > 0 => &mut self.missing,
            None => return,
        };
        let old = *count;
        *count -= 1;
        if *count > 0 {
            *self.by_count.entry(old - 1).or_insert(0) += 1;
        } else if let Some(v) = value {
            self.by_value.remove(v);
        }
        Self::dec(&mut self.by_count, old);
        self.total -= 1;
    }

    fn dec(by_count: &mut BTreeMap<usize, usize>, count: usize) {
        if let Some(n) = by_count.get_mut(&count) {
            *n -= 1;
            if *n == 0 {
                by_count.remove(&count);
            }
        }
    }

    /// Instances on `value`.
    pub fn count(&self, value: Option<&str>) -> usize {
        match value {
            Some(v) => self.by_value.get(v).copied().unwrap_or(0),
            None => self.missing,
        }
    }

    /// How many distinct values (agents without the attribute counting as
    /// one) have instances.
    pub fn groups(&self) -> usize {
        self.by_value.len() + usize::from(self.missing > 0)
    }

    /// The fewest instances on any value in use.
    pub fn min(&self) -> Option<usize> {
        self.by_count.keys().next().copied()
    }

    /// Instances counted.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests;
