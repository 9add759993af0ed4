//! Configuration loading: every error at once with its path, secrets indirection, environment mode,
//! and every example config in the repository.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use portcullis_config::{AuditSink, Config, MapEnv, ServerAuth};

const MINIMAL: &str = r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
scopes = ["mcp:tools"]
[server.verify]
issuer = "https://idp.example.com/"
"#;

fn errors(text: &str) -> Vec<String> {
    Config::from_toml(text, &MapEnv::default()).unwrap_err().0.iter().map(ToString::to_string).collect()
}

#[test]
fn minimal_verify_config_resolves_with_secure_defaults() {
    let c = Config::from_toml(MINIMAL, &MapEnv::default()).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    let s = &c.servers[0];
    assert_eq!(s.resource.as_str(), "https://mcp.example.com/mcp");
    let ServerAuth::Verify(v) = &s.auth else { panic!("verify expected") };
    assert_eq!(v.issuer.as_str(), "https://idp.example.com/");
    assert_eq!(v.leeway.as_secs(), 60);
    assert!(!v.algorithms.iter().any(|a| a.is_symmetric()), "HS256 is off without a shared secret");
}

#[test]
fn reports_every_error_at_once_with_paths() {
    let errs = errors(
        r#"
public_url = "http://mcp.example.com/base"
listen = "nowhere"
[log]
format = "xml"
[[server]]
path = "mcp/"
upstream = "ftp://x"
scopes = ["bad scope"]
[server.verify]
issuer = "https://idp.example.com/?tenant=1"
algorithms = ["none", "HS256"]
[[server]]
path = "/b"
upstream = "http://127.0.0.1:1/"
"#,
    );
    let joined = errs.join("\n");
    for expected in [
        "public_url: \"http://mcp.example.com/base\" must use https",
        "listen: \"nowhere\" is not an IP address",
        "log.format: \"xml\" is not a log format",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
    // public_url failed, so servers are not resolved; fix it and the server errors appear, all at once.
    let errs = errors(
        r#"
public_url = "https://mcp.example.com"
[[server]]
path = "mcp/"
upstream = "ftp://x"
scopes = ["bad scope"]
[server.verify]
issuer = "https://idp.example.com/?tenant=1"
algorithms = ["none", "HS256"]
[[server]]
path = "/b"
upstream = "http://127.0.0.1:1/"
"#,
    );
    let joined = errs.join("\n");
    for expected in [
        "server[0].path: \"mcp/\" must start with '/'",
        "server[0].upstream: \"ftp://x\" must be an http or https URL",
        "server[0].scopes[0]: scope \"bad scope\" contains ' '",
        "server[0].verify.issuer: \"https://idp.example.com/?tenant=1\" must not contain a query",
        "server[0].verify.algorithms[0]: unsupported algorithm \"none\"",
        "server[0].verify.algorithms[1]: HS256 needs a shared secret",
        "server[1]: no authentication configured",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
}

#[test]
fn unknown_keys_are_errors() {
    let errs = errors(&MINIMAL.replace("scopes =", "scope ="));
    assert!(errs[0].starts_with("server[0].scope: unknown key, expected one of"), "{errs:?}");
}

#[test]
fn reserved_and_duplicate_paths_are_refused() {
    let errs = errors(
        r#"
public_url = "https://mcp.example.com"
[dangerous]
allow_unauthenticated = true
[[server]]
path = "/.well-known/x"
upstream = "http://127.0.0.1:1/"
[[server]]
path = "/a"
upstream = "http://127.0.0.1:1/"
[[server]]
path = "/a"
upstream = "http://127.0.0.1:2/"
"#,
    );
    assert_eq!(
        errs,
        vec![
            "server[0].path: \"/.well-known/x\" is reserved for portcullis itself".to_owned(),
            "server[2].path: \"/a\" is used by another server".to_owned(),
        ]
    );
}

#[test]
fn server_paths_are_plain_paths() {
    for path in ["/mcp?x", "/mcp#x", "/mcp/*", "/a//b", "/{id}", "/tenants/:id", "/:mcp"] {
        let text = format!(
            "public_url = \"https://mcp.example.com\"\n[dangerous]\nallow_unauthenticated = true\n[[server]]\npath = {path:?}\nupstream = \"http://127.0.0.1:1/\"\n"
        );
        let errs = errors(&text);
        assert!(errs.iter().any(|e| e.starts_with("server[0].path") && e.contains("plain path")), "{path}: {errs:?}");
    }
}

#[test]
fn env_references_expand_and_missing_ones_are_named() {
    let text = MINIMAL.replace("https://idp.example.com/", "${ISSUER}");
    let c = Config::from_toml(&text, &MapEnv::from_pairs([("ISSUER", "https://login.example.org")])).unwrap();
    let ServerAuth::Verify(v) = &c.servers[0].auth else { panic!() };
    assert_eq!(v.issuer.as_str(), "https://login.example.org");
    assert_eq!(errors(&text), vec!["server[0].verify.issuer: environment variable ISSUER is not set".to_owned()]);
}

#[test]
fn secrets_come_from_files_and_never_print() {
    let dir = std::env::temp_dir().join(format!("portcullis-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hs");
    std::fs::write(&file, "s3cret-value\n").unwrap();
    let text = format!("{MINIMAL}hs256_secret_file = {:?}\n", file.display().to_string());
    let c = Config::from_toml(&text, &MapEnv::default()).unwrap();
    let ServerAuth::Verify(v) = &c.servers[0].auth else { panic!() };
    assert_eq!(v.hs256_secret.as_ref().unwrap().expose(), "s3cret-value");
    assert!(v.algorithms.iter().any(|a| a.is_symmetric()));
    assert!(!format!("{c:?}").contains("s3cret-value"), "Debug must redact secrets");

    let both = format!("{MINIMAL}hs256_secret = \"x\"\nhs256_secret_file = \"/nonexistent\"\n");
    assert_eq!(
        errors(&both),
        vec!["server[0].verify.hs256_secret: set either hs256_secret or hs256_secret_file, not both".to_owned()]
    );
    let missing = format!("{MINIMAL}hs256_secret_file = \"/nonexistent/portcullis\"\n");
    assert!(errors(&missing)[0].starts_with("server[0].verify.hs256_secret_file: cannot read /nonexistent/portcullis"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn extra_public_urls_give_each_server_one_resource_per_origin() {
    let text = MINIMAL.replace(
        "public_url = \"https://mcp.example.com\"",
        "public_url = \"https://mcp.example.com\"\nextra_public_urls = [\"https://internal.example.net:8443\"]",
    );
    let c = Config::from_toml(&text, &MapEnv::default()).unwrap();
    let r: Vec<&str> = c.servers[0].resources.iter().map(|r| r.as_str()).collect();
    assert_eq!(r, ["https://mcp.example.com/mcp", "https://internal.example.net:8443/mcp"]);
}

#[test]
fn environment_only_mode() {
    let env = MapEnv::from_pairs([
        ("OAUTH_ISSUER_URL", "https://idp.example.com/application/o/app/"),
        ("OAUTH_AUDIENCE", "client-a, client-b"),
        ("PORTCULLIS_UPSTREAM", "http://127.0.0.1:3001/mcp"),
        ("PORTCULLIS_PUBLIC_URL", "https://mcp.example.com"),
    ]);
    let c = Config::from_env(&env).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.servers[0].path, "/mcp");
    let ServerAuth::Verify(v) = &c.servers[0].auth else { panic!() };
    assert_eq!(v.audiences, ["client-a", "client-b"]);

    let errs = Config::from_env(&MapEnv::from_pairs([("OAUTH_ISSUER_URL", "https://idp.example.com")])).unwrap_err();
    let paths: Vec<&str> = errs.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["PORTCULLIS_UPSTREAM", "PORTCULLIS_PUBLIC_URL"]);

    let mut bad = env.clone();
    bad.0.insert("PORTCULLIS_PATH".into(), "mcp".into());
    bad.0.insert("OAUTH_ISSUER_URL".into(), "http://idp.example.com".into());
    let errs: Vec<String> = Config::from_env(&bad).unwrap_err().0.iter().map(ToString::to_string).collect();
    assert_eq!(
        errs,
        [
            "PORTCULLIS_PATH: \"mcp\" must start with '/'",
            "OAUTH_ISSUER_URL: \"http://idp.example.com\" must use https (http is allowed only for loopback hosts)"
        ]
    );
}

#[test]
fn every_example_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let env = MapEnv::from_pairs([
        ("IDP_HS256_SECRET", "example-secret"),
        ("INTROSPECTION_SECRET", "example-secret"),
        ("AGENT_CLIENT_SECRET", "example-secret"),
    ]);
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path, &env).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected example configs in {}", dir.display());
}

#[test]
fn gateway_defaults_and_errors() {
    let text = r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
scopes = ["mcp:tools"]
gateway = true
"#;
    let c = Config::from_toml(text, &MapEnv::default()).unwrap();
    let g = c.gateway.unwrap();
    assert_eq!(g.issuer.as_str(), "https://mcp.example.com", "no trailing slash");
    assert_eq!(g.scopes, ["mcp:tools", "offline_access", "openid"]);
    assert_eq!(c.store.url, "sqlite://./portcullis-data/portcullis.db");
    assert!(matches!(c.servers[0].auth, ServerAuth::Gateway));
    // Registrations never used go after a week; idle ones are kept.
    assert_eq!(g.unused_registration_ttl, Some(std::time::Duration::from_secs(7 * 86_400)));
    assert_eq!(g.idle_registration_ttl, None);
    let kept = text.replace(
        "[[server]]",
        "[gateway]\nunused_registration_ttl_secs = 0\nidle_registration_ttl_secs = 0\n[[server]]",
    );
    let g = Config::from_toml(&kept, &MapEnv::default()).unwrap().gateway.unwrap();
    assert_eq!((g.unused_registration_ttl, g.idle_registration_ttl), (None, None));

    let bad = format!("{text}[server.verify]\nissuer = \"https://idp.example.com\"\n");
    assert!(errors(&bad)[0].starts_with("server[0]: choose one mode"));
    let bad = text.replace("public_url = \"https://mcp.example.com\"", "public_url = \"https://mcp.example.com\"\n[gateway]\nissuer = \"https://mcp.example.com/\"\nsigning_alg = \"HS256\"\ncode_ttl_secs = 3600\nunused_registration_ttl_secs = 600\nidle_registration_ttl_secs = 3600\n[[gateway.clients]]\nclient_id = \"https://app.example/cm.json\"\n[store]\nurl = \"mysql://portcullis:hunter2@db/x\"");
    let joined = errors(&bad).join("\n");
    assert!(!joined.contains("hunter2"), "a store URL's password is never repeated: {joined}");
    for expected in [
        "store.url: a \"mysql\" URL is not a store URL",
        "gateway.issuer: \"https://mcp.example.com/\" must not end with '/'",
        "gateway.signing_alg: \"HS256\" is not supported",
        "gateway.code_ttl_secs: authorization codes must be short-lived",
        "gateway.unused_registration_ttl_secs: at least 3600 (or 0 to keep every client)",
        "gateway.idle_registration_ttl_secs: at least 86400 (or 0 to keep every client)",
        "gateway.clients[0].client_id: must not be an https URL",
        "gateway.clients[0].redirect_uris: at least one redirect URI is required",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
}

#[test]
fn upstream_token_forwarding_header() {
    let text = |header: &str| {
        format!(
            r#"
public_url = "https://mcp.example.com"
[gateway.upstream]
issuer = "https://idp.example.com"
client_id = "portcullis"
client_secret = "s"
forward_token_header = "{header}"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
gateway = true
"#
        )
    };
    let c = Config::from_toml(&text("X-Upstream-Token"), &MapEnv::default()).unwrap();
    let up = c.gateway.unwrap().upstream.unwrap();
    assert_eq!(up.forward_token_header.as_deref(), Some("x-upstream-token"));
    let c = Config::from_toml(&text("Authorization"), &MapEnv::default()).unwrap();
    assert_eq!(c.gateway.unwrap().upstream.unwrap().forward_token_header.as_deref(), Some("authorization"));
    assert!(errors(&text("Cookie"))[0].starts_with("gateway.upstream.forward_token_header: \"cookie\" is managed"));
    assert!(errors(&text("bad header"))[0].contains("is not a valid header name"));
}

#[test]
fn auto_approval_only_on_loopback() {
    let text = r#"
public_url = "https://mcp.example.com"
listen = "0.0.0.0:8080"
[dangerous]
auto_approve_as = "alice"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
gateway = true
"#;
    assert_eq!(errors(text), ["dangerous.auto_approve_as: only allowed when listening on a loopback address"]);
    let ok = text.replace("0.0.0.0:8080", "127.0.0.1:8080");
    let c = Config::from_toml(&ok, &MapEnv::default()).unwrap();
    assert_eq!(c.dangerous.auto_approve_as.as_deref(), Some("alice"));
}

#[test]
fn gateway_endpoints_are_reserved() {
    let text = r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/token"
upstream = "http://127.0.0.1:3001/mcp"
gateway = true
"#;
    assert_eq!(errors(text), ["server[0].path: \"/token\" is an endpoint of the gateway's authorization server"]);
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let text = r#"
public_url = "https://mcp.example.com"
listn = "x"
[proxy]
connect_timeout_ms = "five"
bogus = 1
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:1/mcp"
scopes = "mcp:tools"
colour = "red"
[server.verify]
issuer = 5
"#;
    let errors = Config::from_toml(text, &MapEnv::default()).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listn",
            "proxy.bogus",
            "proxy.connect_timeout_ms",
            "server[0].colour",
            "server[0].scopes",
            "server[0].verify.issuer"
        ],
        "{errors}"
    );
    let text = errors.to_string();
    assert!(
        text.contains("proxy.connect_timeout_ms: invalid type: string \"five\", expected a whole number"),
        "{text}"
    );
    assert!(text.contains("server[0].colour: unknown key, expected one of `path`"), "{text}");
    assert!(!text.contains("\nin `"), "one line per problem: {text}");
}

#[test]
fn metrics_and_audit_are_off_until_configured_and_never_on_the_public_listener() {
    let c = Config::from_toml(MINIMAL, &MapEnv::default()).unwrap();
    assert_eq!((c.metrics.listen, &c.audit), (None, &None));

    let text = format!(
        "{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n[audit]\npath = \"/var/log/portcullis/audit.jsonl\"\n"
    );
    let c = Config::from_toml(&text, &MapEnv::default()).unwrap();
    assert_eq!(c.metrics.listen.map(|a| a.to_string()).as_deref(), Some("127.0.0.1:9464"));
    assert_eq!(c.audit, Some(AuditSink::File("/var/log/portcullis/audit.jsonl".into())));
    let c = Config::from_toml(&format!("{MINIMAL}\n[audit]\npath = \"-\"\n"), &MapEnv::default()).unwrap();
    assert_eq!(c.audit, Some(AuditSink::Stdout));

    let errs = errors(&format!("{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:8080\"\n[audit]\npath = \"\"\n"));
    assert!(errs.iter().any(|e| e.starts_with("metrics.listen: 127.0.0.1:8080 is the public listener")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("audit.path: empty")), "{errs:?}");
    let errs = errors(&format!("listen = \"0.0.0.0:9000\"\n{MINIMAL}\n[metrics]\nlisten = \"127.0.0.1:9000\"\n"));
    assert!(
        errs.iter().any(|e| e.starts_with("metrics.listen:")),
        "a wildcard public listener owns the port: {errs:?}"
    );
}

#[test]
fn traces_are_off_until_an_otlp_endpoint_is_configured() {
    let c = Config::from_toml(MINIMAL, &MapEnv::default()).unwrap();
    assert!(c.traces.is_none());
    let text = format!("{MINIMAL}\n[traces]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n");
    let t = Config::from_toml(&text, &MapEnv::default()).unwrap().traces.unwrap();
    assert_eq!(
        (t.otlp_endpoint.as_str(), t.sample_ratio, t.service_name.as_str()),
        ("http://127.0.0.1:4318/v1/traces", 1.0, "portcullis")
    );
    let errs = errors(&format!("{MINIMAL}\n[traces]\notlp_endpoint = \"collector:4318\"\nsample_ratio = 1.5\n"));
    assert!(errs.iter().any(|e| e.starts_with("traces.otlp_endpoint:")), "{errs:?}");
    let errs =
        errors(&format!("{MINIMAL}\n[traces]\notlp_endpoint = \"http://c:4318/v1/traces\"\nsample_ratio = 1.5\n"));
    assert!(errs.iter().any(|e| e.starts_with("traces.sample_ratio: 1.5 is not between 0 and 1")), "{errs:?}");
}

#[test]
fn policy_rules_compile_at_start_up_and_report_at_their_path() {
    let base = r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
[server.verify]
issuer = "https://idp.example.com"
"#;
    let good = format!(
        r#"{base}
[[server.policy]]
name = "finance"
tools = ["payments_*"]
allow_if = '"finance" in groups'
[server.policy_claims]
groups = "/realm_access/groups"
"#
    );
    let config = Config::from_toml(&good, &MapEnv::default()).unwrap();
    assert_eq!(config.servers[0].policy.rules().len(), 1);
    assert_eq!(config.servers[0].policy.rules()[0].name(), "finance");
    let names = config.servers[0].policy.claim_names();
    assert_eq!(
        (names.groups.as_str(), names.email_verified.as_deref()),
        ("/realm_access/groups", Some("email_verified"))
    );

    // Which claim says an address was verified, or that the IdP sends no other.
    let verified = |lines: &str| format!("{good}{lines}\n");
    let entra = Config::from_toml(&verified(r#"email_verified = "xms_edov""#), &MapEnv::default()).unwrap();
    assert_eq!(entra.servers[0].policy.claim_names().email_verified.as_deref(), Some("xms_edov"));
    let always = Config::from_toml(&verified("email_always_verified = true"), &MapEnv::default()).unwrap();
    assert_eq!(always.servers[0].policy.claim_names().email_verified, None);
    let both = errors(&verified("email_verified = \"xms_edov\"\nemail_always_verified = true"));
    let path = "server[0].policy_claims.email_always_verified";
    assert!(both.iter().any(|e| e.starts_with(path) && e.contains("not both")), "{both:?}");
    let empty = errors(&verified(r#"email_verified = """#));
    assert!(
        empty.iter().any(|e| e.starts_with("server[0].policy_claims") && e.contains("cannot be empty")),
        "{empty:?}"
    );

    let bad = format!(
        r#"{base}
[[server.policy]]
name = "a"
allow_if = 'subject =='
[[server.policy]]
name = "a"
deny_if = '"x" in group'
[[server.policy]]
tools = ["x["]
scopes = ["ok"]
[[server.policy]]
name = "nothing"
tools = ["*"]
"#
    );
    let errs = errors(&bad);
    let find = |path: &str| errs.iter().find(|e| e.starts_with(path)).unwrap_or_else(|| panic!("{path}: {errs:?}"));
    assert!(find("server[0].policy[0].allow_if").contains("does not parse"));
    assert!(find("server[0].policy[1].name").contains("another rule"));
    assert!(find("server[0].policy[1].deny_if").contains("\"group\""));
    assert!(find("server[0].policy[2].name").contains("needs a name"));
    assert!(find("server[0].policy[2].tools").contains("glob"));
    assert!(find("server[0].policy[3].allow_if").contains("let everything through"));
}

#[test]
fn clients_without_a_browser_and_trusted_idps() {
    let base = r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
scopes = ["mcp:tools"]
gateway = true
"#;
    let good = format!(
        r#"{base}
[[gateway.clients]]
client_id = "nightly"
client_secret = "s"
grant_types = ["client_credentials"]
scopes = ["mcp:tools"]
[[gateway.clients]]
client_id = "chat"
jwks = '{{"keys": [{{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}}]}}'
grant_types = ["urn:ietf:params:oauth:grant-type:jwt-bearer", "client_credentials"]
[[gateway.trusted_idps]]
issuer = "https://acme.okta.example"
clients = ["chat"]
subject_claim = "email"
"#
    );
    let c = Config::from_toml(&good, &MapEnv::default()).unwrap();
    let g = c.gateway.unwrap();
    assert_eq!(g.clients[0].grant_types, ["client_credentials"]);
    assert!(g.clients[0].redirect_uris.is_empty() && g.clients[1].jwks.is_some());
    assert_eq!(g.trusted_idps[0].issuer.as_str(), "https://acme.okta.example");
    assert_eq!((g.trusted_idps[0].subject_claim.as_str(), g.trusted_idps[0].subject_prefix.as_str()), ("email", ""));

    // Where the users' upstream tokens are forwarded by subject, another IdP's subjects need a prefix.
    let upstream = |issuer: &str| {
        format!(
            "[gateway.upstream]\nissuer = \"{issuer}\"\nclient_id = \"gate\"\nclient_secret = \"s\"\nforward_token_header = \"authorization\"\n"
        )
    };
    let joined = errors(&format!("{good}{}", upstream("https://login.example"))).join("\n");
    assert!(
        joined.contains("gateway.trusted_idps[0].subject_prefix: required with gateway.upstream.forward_token_header"),
        "{joined}"
    );
    let prefixed = good.replace("subject_claim = \"email\"", "subject_claim = \"email\"\nsubject_prefix = \"okta:\"");
    Config::from_toml(&format!("{prefixed}{}", upstream("https://login.example")), &MapEnv::default()).unwrap();
    // The upstream's own issuer, trusted for assertions too, names the same users.
    Config::from_toml(&format!("{good}{}", upstream("https://acme.okta.example")), &MapEnv::default()).unwrap();

    let bad = format!(
        r#"{base}
[[gateway.clients]]
client_id = "public"
grant_types = ["client_credentials", "jwt-bearer", "password"]
redirect_uris = ["http://127.0.0.1/cb"]
scopes = ["mcp:admin"]
[[gateway.clients]]
client_id = "both"
client_secret = "s"
jwks = '{{"keys": []}}'
grant_types = ["refresh_token"]
[[gateway.clients]]
client_id = "orphan"
client_secret = "s"
grant_types = ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
[[gateway.trusted_idps]]
clients = ["nobody", "both"]
[[gateway.trusted_idps]]
issuer = "https://idp.example"
jwks_uri = "http://idp.example/jwks"
"#
    );
    let joined = errors(&bad).join("\n");
    for expected in [
        "gateway.clients[0].grant_types[1]: \"jwt-bearer\" is not a grant served here",
        "(that grant is named \"urn:ietf:params:oauth:grant-type:jwt-bearer\")",
        "gateway.clients[0].grant_types[2]: \"password\" is not a grant served here",
        "gateway.clients[0].redirect_uris: only clients with the authorization_code grant are redirected",
        "gateway.clients[0].grant_types: client_credentials and jwt-bearer are for confidential clients",
        "gateway.clients[0].scopes[0]: \"mcp:admin\" is not in gateway.scopes",
        "gateway.clients[1].grant_types: refresh_token comes only with authorization_code",
        "gateway.clients[1].jwks: must be a JWK Set",
        "gateway.clients[1].jwks: a client authenticates either with a secret or with keys",
        "gateway.clients[2].grant_types: has the jwt-bearer grant, but no [[gateway.trusted_idps]] entry lists this client",
        "gateway.trusted_idps[0].issuer: required",
        "gateway.trusted_idps[0].clients[0]: \"nobody\" is not a [[gateway.clients]] client_id",
        "gateway.trusted_idps[1].jwks_uri: \"http://idp.example/jwks\" must be an https URL",
        "gateway.trusted_idps[1].clients: list the configured clients",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
}

#[test]
fn trusted_proxies_are_addresses_or_networks() {
    let text = |list: &str| {
        format!(
            "public_url = \"https://mcp.example.com\"\n[proxy]\ntrusted_proxies = {list}\n[[server]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:3001/mcp\"\n[server.verify]\nissuer = \"https://idp.example.com\"\n"
        )
    };
    let c = Config::from_toml(&text(r#"["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]"#), &MapEnv::default()).unwrap();
    assert_eq!(c.proxy.trusted_proxies.len(), 3);
    assert_eq!(c.proxy.trusted_proxies[1].to_string(), "127.0.0.1/32");
    let joined = errors(&text(r#"["10.0.0.0/8", "lb.internal"]"#)).join("\n");
    assert!(joined.contains("proxy.trusted_proxies[1]: \"lb.internal\" is not an IP address or network"), "{joined}");
    // The header they write: X-Forwarded-For unless said otherwise.
    assert_eq!(c.proxy.forwarded_header, portcullis_config::ForwardedHeader::XForwardedFor);
    let header = |h: &str| text(&format!("[\"10.0.0.0/8\"]\nforwarded_header = \"{h}\""));
    let c = Config::from_toml(&header("Forwarded"), &MapEnv::default()).unwrap();
    assert_eq!(c.proxy.forwarded_header, portcullis_config::ForwardedHeader::Forwarded);
    let joined = errors(&header("x-real-ip")).join("\n");
    assert!(joined.contains("proxy.forwarded_header: \"x-real-ip\" is neither"), "{joined}");
}

#[test]
fn workers_default_to_one_per_cpu_and_are_bounded() {
    let with = |n: &str| format!("{MINIMAL}\n[proxy]\nworkers = {n}\n");
    assert_eq!(Config::from_toml(MINIMAL, &MapEnv::default()).unwrap().proxy.workers, None);
    assert_eq!(Config::from_toml(&with("1"), &MapEnv::default()).unwrap().proxy.workers, Some(1));
    assert_eq!(Config::from_toml(&with("8"), &MapEnv::default()).unwrap().proxy.workers, Some(8));
    assert_eq!(errors(&with("0")), ["proxy.workers: must be greater than 0 (leave it out for one per CPU)"]);
    assert_eq!(errors(&with("100000")), ["proxy.workers: at most 1024"]);
}

#[test]
fn an_upstream_can_be_a_unix_socket_with_an_http_path() {
    let upstream = |u: &str| {
        let c = Config::from_toml(&MINIMAL.replace("http://127.0.0.1:3001/mcp", u), &MapEnv::default()).unwrap();
        c.servers[0].upstream.clone()
    };
    let u = upstream("unix:/run/mcp.sock:/mcp");
    assert_eq!(u.socket.as_deref(), Some(std::path::Path::new("/run/mcp.sock")));
    assert_eq!(u.url.as_str(), "http://localhost/mcp");
    assert_eq!(u.to_string(), "unix:/run/mcp.sock:/mcp");
    let u = upstream("unix:/run/mcp.sock");
    assert_eq!(u.url.as_str(), "http://localhost/");
    let u = upstream("unix:/run/mcp.sock:/mcp?tenant=a");
    assert_eq!(u.url.query(), Some("tenant=a"));
    assert_eq!(u.to_string(), "unix:/run/mcp.sock:/mcp?tenant=a");
    let u = upstream("http://127.0.0.1:3001/mcp");
    assert_eq!((u.to_string(), u.socket, u.http2), ("http://127.0.0.1:3001/mcp".to_owned(), None, false));
    let c = Config::from_toml(&MINIMAL.replace("scopes =", "upstream_http2 = true\nscopes ="), &MapEnv::default());
    assert!(c.unwrap().servers[0].upstream.http2);

    for (bad, why) in [
        ("unix:run/mcp.sock:/mcp", "the socket path must be absolute"),
        ("unix:", "the socket path must be absolute"),
        ("unix:/run/mcp.sock:/mcp#x", "carries no fragment"),
        ("unix:/run/mcp.sock:/a/../mcp", "is not a plain HTTP path"),
        ("ftp://x", "must be an http or https URL without a fragment, or unix:<socket path>"),
    ] {
        let errs = errors(&MINIMAL.replace("http://127.0.0.1:3001/mcp", bad));
        assert!(errs.iter().any(|e| e.starts_with("server[0].upstream:") && e.contains(why)), "{bad}: {errs:?}");
    }
}
