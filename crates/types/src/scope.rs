//! OAuth scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of `%x21 / %x23-5B / %x5D-7E`.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One scope token, e.g. `mcp:tools`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    /// Parses one scope token; RFC 6749 §3.3 forbids spaces, `"` and `\` and control characters.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a scope cannot be empty".into());
        }
        if let Some(c) = s.chars().find(|&c| !(c == '!' || ('#'..='[').contains(&c) || (']'..='~').contains(&c))) {
            return Err(format!("scope {s:?} contains {c:?}, which RFC 6749 §3.3 does not allow"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The scope as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scopes, ordered so that the wire form is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the space-separated form (`scope` claim or parameter). Runs of spaces are tolerated;
    /// tokens that break RFC 6749 §3.3 are dropped rather than trusted.
    pub fn from_space_separated(s: &str) -> Self {
        Self(s.split(' ').filter_map(|t| Scope::parse(t).ok()).collect())
    }

    /// Adds a scope.
    pub fn insert(&mut self, scope: Scope) {
        self.0.insert(scope);
    }

    /// Whether `scope` is in the set.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Whether every scope of `other` is in this set.
    pub fn contains_all(&self, other: &ScopeSet) -> bool {
        other.0.is_subset(&self.0)
    }

    /// The union of two sets.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.union(&other.0).cloned().collect())
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// The space-separated wire form.
    pub fn to_space_separated(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(s.as_str());
        }
        out
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_space_separated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_space_separated_and_prints_sorted() {
        let s = ScopeSet::from_space_separated("mcp:tools  openid mcp:admin");
        assert_eq!(s.to_space_separated(), "mcp:admin mcp:tools openid");
    }

    #[test]
    fn rejects_forbidden_characters() {
        assert!(Scope::parse("a b").is_err());
        assert!(Scope::parse("a\"b").is_err());
        assert!(Scope::parse("a\\b").is_err());
        assert!(Scope::parse("").is_err());
        assert!(Scope::parse("mcp:tools/read").is_ok());
    }

    #[test]
    fn subset_checks() {
        let granted = ScopeSet::from_space_separated("a b c");
        assert!(granted.contains_all(&ScopeSet::from_space_separated("a c")));
        assert!(!granted.contains_all(&ScopeSet::from_space_separated("a d")));
    }
}
