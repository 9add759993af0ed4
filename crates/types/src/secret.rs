//! Secrets that cannot leak by accident: formatting shows `[redacted]`, reading needs `.expose()`.

use std::fmt;

/// A secret string (client secret, shared HMAC key, upstream credential).
///
/// `Debug` and `Display` are redacted, and there is no `Serialize`, so a secret cannot end up in a JSON
/// log line or response by a derive.
///
/// `Clone` because the validated configuration is cloned into each server's verifier settings and the
/// gateway's state at start-up; copies stay in process memory, as redacted as the original. Code that
/// handles a secret per request borrows it (`expose`) instead.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
