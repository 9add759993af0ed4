//! The process environment as a dependency, and `${VAR}` expansion of configuration strings.
//!
//! Tests pass a map instead of mutating the real environment.

use std::collections::HashMap;
use std::fmt;

/// Where environment variables come from.
pub trait Env: fmt::Debug + Send + Sync {
    /// The value of `name`, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// A fixed set of variables, for tests and embedding.
#[derive(Debug, Clone, Default)]
pub struct MapEnv(pub HashMap<String, String>);

impl MapEnv {
    /// Builds from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
    }
}

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

/// Replaces every `${NAME}` in `s` with the variable's value; `$$` stands for a literal `$`.
/// Fails naming the first variable that is unset, or an unterminated `${`.
pub(crate) fn expand(s: &str, env: &dyn Env) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{name}}}` is not a valid environment variable reference"));
            }
            let value = env.var(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_and_escapes() {
        let env = MapEnv::from_pairs([("A", "x"), ("B_2", "y")]);
        assert_eq!(expand("${A}-${B_2}", &env).unwrap(), "x-y");
        assert_eq!(expand("cost $$5 and $x", &env).unwrap(), "cost $5 and $x");
        assert_eq!(expand("plain", &env).unwrap(), "plain");
    }

    #[test]
    fn names_the_missing_variable() {
        let env = MapEnv::default();
        assert_eq!(expand("${NOPE}", &env).unwrap_err(), "environment variable NOPE is not set");
        assert!(expand("${A", &env).unwrap_err().contains("unterminated"));
        assert!(expand("${A-B}", &env).unwrap_err().contains("not a valid"));
    }
}
