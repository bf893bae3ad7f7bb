//! App and group ids: Marathon's path ids such as `/team/web`.
//!
//! An id is a list of segments separated by `/`. Each segment is one or more
//! DNS-style labels (lower-case letters, digits and inner dashes) joined by
//! dots, e.g. `web`, `web-v2`, `api.v1`. In a group definition, ids may be
//! relative (`web`, `../db`) to the group that holds them; everywhere else a
//! missing leading `/` is read as absolute, as Marathon does.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// One segment: labels of `[a-z0-9]` with inner dashes, joined by dots.
static SEGMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])\.)*([a-z0-9]|[a-z0-9][a-z0-9\-]*[a-z0-9])$",
    )
    .expect("segment pattern")
});

/// What a user is told about a malformed id.
pub const ID_RULE: &str = "must be a path of segments separated by '/', each of lower-case letters, digits, inner dashes and dots between labels (e.g. /team/web)";

/// An absolute, normalised id: `/` (the root group) or `/a/b`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PathId(Vec<String>);

impl PathId {
    /// The root group `/`.
    pub fn root() -> PathId {
        PathId(Vec::new())
    }

    /// Parses `text`, resolving it against `base` when it is relative
    /// (`..` goes one level up). `Err` says what is wrong.
    pub fn parse_in(text: &str, base: &PathId) -> Result<PathId, String> {
        let mut segments = if text.starts_with('/') {
            Vec::new()
        } else {
            base.0.clone()
        };
        for part in text.split('/').filter(|s| !s.is_empty()) {
            match part {
                "." => {}
                ".." => {
                    if segments.pop().is_none() {
                        return Err(format!("'{text}' goes above the root group"));
                    }
                }
                p if SEGMENT.is_match(p) => segments.push(p.to_string()),
                p => return Err(format!("segment '{p}' of '{text}' {ID_RULE}")),
            }
        }
        Ok(PathId(segments))
    }

    /// Parses an absolute id (a missing leading `/` is added).
    pub fn parse(text: &str) -> Result<PathId, String> {
        PathId::parse_in(text, &PathId::root())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The group holding this id (the root's parent is the root).
    pub fn parent(&self) -> PathId {
        let mut s = self.0.clone();
        s.pop();
        PathId(s)
    }

    /// Whether `self` is `other` or lies under it.
    pub fn is_within(&self, other: &PathId) -> bool {
        self.0.len() >= other.0.len() && self.0[..other.0.len()] == other.0[..]
    }

    /// Every group from the root down to this id's parent (`/`, `/a`, ...).
    pub fn ancestors(&self) -> Vec<PathId> {
        (0..self.0.len())
            .map(|n| PathId(self.0[..n].to_vec()))
            .collect()
    }

    /// Marathon's task id prefix: the segments joined by `_`.
    pub fn safe_name(&self) -> String {
        self.0.join("_")
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(PathId::parse("/team/web").unwrap().to_string(), "/team/web");
        assert_eq!(PathId::parse("team/web/").unwrap().to_string(), "/team/web");
        assert_eq!(PathId::parse("//a//b").unwrap().to_string(), "/a/b");
        assert_eq!(PathId::parse("/api.v1").unwrap().to_string(), "/api.v1");
        assert!(PathId::parse("/").unwrap().is_root());
    }

    #[test]
    fn refuses_bad_segments() {
        for bad in [
            "/Web", "/-web", "/web-", "/a..b", "/a b", "/a_b", "/ünï", "/.x",
        ] {
            assert!(PathId::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(PathId::parse("/..").is_err());
    }

    #[test]
    fn relative_ids_resolve_against_their_group() {
        let base = PathId::parse("/team/web").unwrap();
        assert_eq!(
            PathId::parse_in("db", &base).unwrap().to_string(),
            "/team/web/db"
        );
        assert_eq!(
            PathId::parse_in("../db", &base).unwrap().to_string(),
            "/team/db"
        );
        assert_eq!(PathId::parse_in("/x", &base).unwrap().to_string(), "/x");
    }

    #[test]
    fn ancestry() {
        let id = PathId::parse("/a/b/c").unwrap();
        assert!(id.is_within(&PathId::parse("/a").unwrap()));
        assert!(id.is_within(&PathId::root()));
        assert!(!id.is_within(&PathId::parse("/a/bc").unwrap()));
        let names: Vec<String> = id.ancestors().iter().map(|p| p.to_string()).collect();
        assert_eq!(names, ["/", "/a", "/a/b"]);
        assert_eq!(id.safe_name(), "a_b_c");
    }
}
