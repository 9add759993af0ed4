//! What `users` and `keys` need from a configuration file, and nothing else: the store, the operator
//! key file and the signing settings of the gateway. Read without resolving the rest, so that a secret
//! only `serve` needs (an upstream client secret in an unset variable, say) does not stop an
//! administrator from adding an account.

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_types::KeyAlg;

use crate::resolve::{Errors, expand_value};
use crate::{ConfigError, ConfigErrors, DEFAULT_OPERATOR_KEY_FILE, DEFAULT_STORE_URL, Env};

/// The gateway's store and keys, as `users` and `keys` need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub store_url: String,
    pub operator_key_file: PathBuf,
    pub signing_alg: KeyAlg,
    /// How long a retired key stays published after its last token (the access-token lifetime).
    pub access_token_ttl: Duration,
    /// The audit log, which records what administration changes.
    pub audit: Option<crate::AuditSink>,
    /// How often running servers re-read the keys (`gateway.keys_reload_secs`).
    pub keys_reload: Duration,
    /// Whether users sign in at an upstream IdP (`[gateway.upstream]`), where local accounts cannot.
    pub upstream_idp: bool,
}

impl AdminSettings {
    /// Reads `path`; every problem with these settings is reported with its path, and only these are
    /// looked at (`${VAR}` is expanded in them alone).
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigErrors> {
        let single = |message: String| ConfigErrors(vec![ConfigError { path: String::new(), message }]);
        let text = std::fs::read_to_string(path).map_err(|e| single(format!("cannot read {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| single(e.to_string()))?;
        Self::from_table(&table, env)
    }

    fn from_table(table: &toml::Table, env: &dyn Env) -> Result<Self, ConfigErrors> {
        let mut errors = Errors::default();
        let gateway_server = table.get("server").and_then(toml::Value::as_array).is_some_and(|servers| {
            servers.iter().any(|s| s.get("gateway").and_then(toml::Value::as_bool) == Some(true))
        });
        if !gateway_server {
            errors.push(
                "server",
                "no gateway-mode server ([[server]] with gateway = true): there are no accounts or keys to manage",
            );
        }
        let mut text = |section: &str, key: &str, default: &str| -> String {
            let path = format!("{section}.{key}");
            match table.get(section).and_then(|s| s.get(key)) {
                None => default.to_owned(),
                Some(v) => {
                    let mut v = v.clone();
                    expand_value(&mut v, &path, env, &mut errors);
                    match v {
                        toml::Value::String(s) => s,
                        _ => {
                            errors.push(path, "must be a string");
                            default.to_owned()
                        }
                    }
                }
            }
        };
        let store_url = text("store", "url", DEFAULT_STORE_URL);
        let operator_key_file = PathBuf::from(text("gateway", "operator_key_file", DEFAULT_OPERATOR_KEY_FILE));
        let alg = text("gateway", "signing_alg", "ES256");
        let audit_path = text("audit", "path", "");
        let signing_alg = KeyAlg::parse(&alg).unwrap_or_else(|| {
            errors.push("gateway.signing_alg", format!("{alg:?} is not supported (ES256, EdDSA or RS256)"));
            KeyAlg::Es256
        });
        let ttl = match table.get("gateway").and_then(|g| g.get("access_token_ttl_secs")) {
            None => 3_600,
            Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
            Some(_) => {
                errors.push("gateway.access_token_ttl_secs", "must be a positive number of seconds");
                3_600
            }
        };
        let keys_reload = match table.get("gateway").and_then(|g| g.get("keys_reload_secs")) {
            None => 60,
            Some(toml::Value::Integer(n)) if *n > 0 => *n as u64,
            Some(_) => {
                errors.push("gateway.keys_reload_secs", "must be a positive number of seconds");
                60
            }
        };
        let audit = match audit_path.as_str() {
            "" => None,
            "-" => Some(crate::AuditSink::Stdout),
            path => Some(crate::AuditSink::File(PathBuf::from(path))),
        };
        errors.finish(Self {
            store_url,
            operator_key_file,
            signing_alg,
            access_token_ttl: Duration::from_secs(ttl),
            audit,
            keys_reload: Duration::from_secs(keys_reload),
            upstream_idp: table.get("gateway").and_then(|g| g.get("upstream")).is_some(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapEnv;

    fn load(text: &str, env: &MapEnv) -> Result<AdminSettings, ConfigErrors> {
        AdminSettings::from_table(&toml::from_str(text).unwrap(), env)
    }

    #[test]
    fn only_what_administration_needs_is_read() {
        let text = r#"
public_url = "https://mcp.example.com"
[store]
url = "sqlite://${DATA}/p.db"
[gateway]
signing_alg = "EdDSA"
[[gateway.clients]]
client_id = "c"
client_secret = "${UNSET_SECRET}"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:1/mcp"
gateway = true
"#;
        let env = MapEnv::from_pairs([("DATA", "/var/lib/p")]);
        let s = load(text, &env).unwrap();
        assert_eq!(s.store_url, "sqlite:///var/lib/p/p.db");
        assert_eq!(s.signing_alg, KeyAlg::EdDsa);
        assert_eq!(s.operator_key_file, PathBuf::from(DEFAULT_OPERATOR_KEY_FILE));
        assert!(!s.upstream_idp);
        let upstream = format!("{text}[gateway.upstream]\nissuer = \"https://idp.example.com\"\n");
        assert!(load(&upstream, &env).unwrap().upstream_idp);
        // The store's own variable is still required.
        let e = load(text, &MapEnv::default()).unwrap_err().to_string();
        assert!(e.contains("store.url"), "{e}");
        // Without a gateway-mode server there is nothing to administer.
        let e = load("[[server]]\npath = \"/mcp\"\n", &MapEnv::default()).unwrap_err().to_string();
        assert!(e.contains("gateway-mode server"), "{e}");
    }
}
