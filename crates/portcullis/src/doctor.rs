//! `portcullis doctor URL`: walks the discovery and registration path of any MCP server as a strict
//! client does, and names each fault with the specification it breaks. It reuses portcullis's own
//! discovery code, so what it accepts is exactly what portcullis accepts.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine;
use portcullis_oauth::discovery::{discovery_urls, fetch_json};
use portcullis_types::IssuerUrl;
use serde_json::{Value, json};
use url::Url;

use crate::cli::DoctorArgs;

mod login;
mod tokens;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
struct Check {
    stage: &'static str,
    id: &'static str,
    status: Status,
    detail: String,
    fix: Option<String>,
}

#[derive(Debug, Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(
        &mut self,
        stage: &'static str,
        id: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<&str>,
    ) {
        self.0.push(Check { stage, id, status, detail: detail.into(), fix: fix.map(str::to_owned) });
    }
    fn pass(&mut self, stage: &'static str, id: &'static str, detail: impl Into<String>) {
        self.add(stage, id, Status::Pass, detail, None);
    }
    fn fail(&mut self, stage: &'static str, id: &'static str, detail: impl Into<String>, fix: &str) {
        self.add(stage, id, Status::Fail, detail, Some(fix));
    }
    fn warn(&mut self, stage: &'static str, id: &'static str, detail: impl Into<String>, fix: &str) {
        self.add(stage, id, Status::Warn, detail, Some(fix));
    }
    fn failed(&self) -> bool {
        self.0.iter().any(|c| c.status == Status::Fail)
    }
}

pub(crate) async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let url = Url::parse(&args.url).map_err(|e| anyhow::anyhow!("{:?} is not a URL: {e}", args.url))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("portcullis-doctor/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let mut report = Report::default();
    let reached = diagnose(&http, &url, &args, &mut report).await;
    if args.json {
        let checks: Vec<Value> = report
            .0
            .iter()
            .map(|c| json!({"stage": c.stage, "id": c.id, "status": c.status.as_str(), "detail": c.detail, "fix": c.fix}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({"url": url.as_str(), "checks": checks}))?);
    } else {
        print_human(&url, &report);
    }
    Ok(match (reached, report.failed()) {
        (false, _) => ExitCode::from(2),
        (true, true) => ExitCode::from(1),
        (true, false) => ExitCode::SUCCESS,
    })
}

fn print_human(url: &Url, report: &Report) {
    let color = std::io::stdout().is_terminal();
    let paint = |s: Status| -> String {
        let (code, text) = match s {
            Status::Pass => ("32", "PASS"),
            Status::Warn => ("33", "WARN"),
            Status::Fail => ("31", "FAIL"),
            Status::Skipped => ("90", "SKIP"),
        };
        if color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    };
    println!("portcullis doctor {url}");
    let mut stage = "";
    for c in &report.0 {
        if c.stage != stage {
            stage = c.stage;
            println!("\n{stage}");
        }
        println!("  {} {:<28} {}", paint(c.status), c.id, c.detail);
        if let Some(fix) = &c.fix {
            println!("       fix: {fix}");
        }
    }
    let count = |s: Status| report.0.iter().filter(|c| c.status == s).count();
    println!("\n{} passed, {} warnings, {} failed", count(Status::Pass), count(Status::Warn), count(Status::Fail));
}

/// Returns whether the server could be reached at all.
async fn diagnose(http: &reqwest::Client, url: &Url, args: &DoctorArgs, r: &mut Report) -> bool {
    const S: &str = "challenge";
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25",
        "capabilities": {}, "clientInfo": {"name": "portcullis-doctor", "version": env!("CARGO_PKG_VERSION")}}});
    let resp = match http
        .post(url.clone())
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&init)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            r.fail(
                S,
                "challenge.reachable",
                format!("{url} could not be reached: {}", portcullis_oauth::error_chain(&e)),
                "check the URL and that the server is running",
            );
            return false;
        }
    };
    let status = resp.status().as_u16();
    let challenges: Vec<String> =
        resp.headers().get_all("www-authenticate").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    if (200..300).contains(&status) {
        r.fail(
            S,
            "challenge.present",
            format!("an unauthenticated initialize got HTTP {status}: the server is not protected"),
            "require a bearer token (MCP authorization)",
        );
        if !challenges.is_empty() {
            r.fail(
                S,
                "challenge.none-on-2xx",
                "a 2xx answer carries WWW-Authenticate",
                "send WWW-Authenticate only with 401 and 403 (RFC 6750 §3)",
            );
        }
        return true;
    }
    if status == 401 {
        r.pass(S, "challenge.present", "an unauthenticated initialize got 401 (MCP authorization)");
    } else {
        r.fail(
            S,
            "challenge.present",
            format!("an unauthenticated initialize got HTTP {status}, expected 401"),
            "answer 401 with a Bearer challenge (RFC 6750 §3)",
        );
    }
    let bearer: Vec<&String> = challenges.iter().filter(|c| c.to_ascii_lowercase().starts_with("bearer")).collect();
    let mut prm_from_header = None;
    let mut challenge_scope = None;
    match bearer.as_slice() {
        [] => r.fail(
            S,
            "challenge.bearer",
            format!("HTTP {status} without a Bearer challenge"),
            "send WWW-Authenticate: Bearer resource_metadata=\"…\" (RFC 6750 §3, RFC 9728 §5.1)",
        ),
        [one] => {
            if challenges.len() > 1 {
                r.warn(
                    S,
                    "challenge.single",
                    format!("{} challenges; MCP SDK clients read only the first", challenges.len()),
                    "send one Bearer challenge",
                );
            } else {
                r.pass(S, "challenge.bearer", "one Bearer challenge");
            }
            prm_from_header = param(one, "resource_metadata");
            challenge_scope = param(one, "scope");
            match &prm_from_header {
                Some(u) => r.pass(S, "challenge.resource-metadata", format!("resource_metadata=\"{u}\"")),
                None => r.warn(
                    S,
                    "challenge.resource-metadata",
                    "no resource_metadata parameter; clients fall back to well-known URLs",
                    "add resource_metadata (RFC 9728 §5.1; required by MCP 2025-06-18)",
                ),
            }
            if param(one, "scope").is_none() {
                r.warn(
                    S,
                    "challenge.scope",
                    "no scope parameter",
                    "name the scopes the request needs (RFC 6750 §3, MCP 2025-11-25)",
                );
            } else {
                r.pass(S, "challenge.scope", "scope named");
            }
        }
        _ => r.fail(
            S,
            "challenge.single",
            format!(
                "{} Bearer challenges, expected one (RFC 6750 §3; MCP SDK clients read only the first)",
                bearer.len()
            ),
            "send exactly one Bearer challenge",
        ),
    }

    // Streamable HTTP transport: an Origin that is present and not allowed MUST get 403 (the DNS
    // rebinding defence); a server that lets any page call it answers as if no Origin had been sent.
    let foreign = http
        .post(url.clone())
        .header("accept", "application/json, text/event-stream")
        .header("origin", "https://portcullis-doctor.invalid")
        .json(&init)
        .send()
        .await;
    match foreign.map(|r| r.status().as_u16()) {
        Ok(403) => r.pass(S, "origin.validated", "a request from a foreign Origin is refused with 403"),
        Ok(other) => r.warn(
            S,
            "origin.validated",
            format!("a request with Origin https://portcullis-doctor.invalid got HTTP {other}, not 403 (MCP transport: servers MUST validate Origin)"),
            "answer 403 to Origins you do not expect",
        ),
        Err(e) => r.warn(S, "origin.validated", format!("the Origin probe failed: {e}"), "check the server"),
    }

    // Protected resource metadata (RFC 9728).
    const P: &str = "protected resource metadata";
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut candidates = Vec::new();
    if let Some(h) = &prm_from_header {
        candidates.push(h.clone());
    }
    if !path.is_empty() {
        candidates.push(format!("{origin}/.well-known/oauth-protected-resource{path}"));
    }
    candidates.push(format!("{origin}/.well-known/oauth-protected-resource"));
    let mut prm = None;
    let mut tried = Vec::new();
    for c in &candidates {
        let Ok(u) = Url::parse(c) else { continue };
        match fetch_json(http, &u).await {
            Ok(doc) => {
                prm = Some((c.clone(), doc));
                break;
            }
            Err(e) => tried.push(format!("{c} → {e}")),
        }
    }
    let Some((prm_url, prm)) = prm else {
        r.fail(
            P,
            "prm.found",
            format!("no metadata found: {}", tried.join("; ")),
            "serve RFC 9728 metadata at /.well-known/oauth-protected-resource<path>",
        );
        return true;
    };
    r.pass(P, "prm.found", prm_url.clone());
    let resource = prm.get("resource").and_then(Value::as_str).unwrap_or_default();
    let expected = url.as_str().trim_end_matches('/');
    if resource == expected || resource == url.as_str() {
        r.pass(P, "prm.resource-matches", format!("resource \"{resource}\""));
    } else {
        let hint =
            if resource.trim_end_matches('/') == expected { " (they differ only by a trailing slash)" } else { "" };
        r.fail(P, "prm.resource-matches", format!("resource is \"{resource}\", the URL used is \"{expected}\"{hint}; RFC 9728 §3.3 requires them identical"), "set resource to the MCP endpoint URL exactly as clients use it");
    }
    let Some(as_issuer) =
        prm.get("authorization_servers").and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str)
    else {
        r.fail(
            P,
            "prm.authorization-servers",
            "no authorization_servers",
            "list the authorization server's issuer (RFC 9728 §2, MCP authorization)",
        );
        return true;
    };
    r.pass(P, "prm.authorization-servers", format!("authorization_servers[0] = \"{as_issuer}\""));

    // Authorization server metadata (RFC 8414 / OIDC discovery).
    const A: &str = "authorization server metadata";
    let issuer = match IssuerUrl::parse(as_issuer) {
        Ok(i) => i,
        Err(e) => {
            r.fail(A, "as.issuer-valid", e.to_string(), "use an https issuer without query or fragment (RFC 8414 §2)");
            return true;
        }
    };
    let mut found = None;
    let mut answered = Vec::new();
    let mut missed = Vec::new();
    for u in discovery_urls(&issuer) {
        match fetch_json(http, &u).await {
            Ok(doc) => {
                answered.push(u.to_string());
                if found.is_none() {
                    found = Some((u.to_string(), doc));
                }
            }
            Err(e) => missed.push(format!("{u} → {e}")),
        }
    }
    let Some((_, meta)) = found else {
        r.fail(
            A,
            "as.found",
            format!("none of the discovery URLs answered: {}", missed.join("; ")),
            "serve RFC 8414 metadata at /.well-known/oauth-authorization-server (path-inserted for a path issuer)",
        );
        return true;
    };
    let detail = format!(
        "{} answered{}",
        answered.join(", "),
        if missed.is_empty() {
            String::new()
        } else {
            format!("; {} of the other discovery URLs clients try did not", missed.len())
        }
    );
    r.pass(A, "as.found", detail);
    let published = meta.get("issuer").and_then(Value::as_str).unwrap_or_default();
    if published == as_issuer {
        r.pass(A, "as.issuer-exact", format!("issuer \"{published}\" equals authorization_servers[0]"));
    } else {
        let hint = if published.trim_end_matches('/') == as_issuer.trim_end_matches('/') {
            " — they differ only by a trailing slash"
        } else {
            ""
        };
        r.fail(A, "as.issuer-exact", format!("issuer is \"{published}\", authorization_servers[0] is \"{as_issuer}\"{hint}; RFC 8414 §3.3 requires them identical"), "publish one issuer string everywhere");
    }
    let has = |field: &str, value: &str| {
        meta.get(field).and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == value))
    };
    if has("code_challenge_methods_supported", "S256") {
        r.pass(A, "as.pkce-s256", "code_challenge_methods_supported contains S256");
    } else {
        r.fail(
            A,
            "as.pkce-s256",
            "code_challenge_methods_supported is missing or lacks S256; MCP clients must refuse to proceed",
            "advertise [\"S256\"] (MCP authorization, OAuth 2.1 §4.1.1)",
        );
    }
    if has("response_types_supported", "code") {
        r.pass(A, "as.response-type-code", "response_types_supported contains code");
    } else {
        r.fail(A, "as.response-type-code", "response_types_supported lacks code", "advertise [\"code\"] (RFC 8414 §2)");
    }
    let mut insecure = false;
    for field in ["authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri"] {
        if let Some(s) = meta.get(field).and_then(Value::as_str) {
            let ok = Url::parse(s).is_ok_and(|u| u.scheme() == "https" || portcullis_types::ids::is_loopback(&u));
            if !ok {
                insecure = true;
                r.fail(
                    A,
                    "as.endpoints-https",
                    format!("{field} \"{s}\" is not https (nor loopback http)"),
                    "serve every endpoint over https (OAuth 2.1 §1.5, MCP authorization)",
                );
            }
        }
    }
    if !insecure {
        r.pass(A, "as.endpoints-https", "every endpoint is https or loopback http");
    }
    match meta.get("registration_endpoint").and_then(Value::as_str) {
        Some(_) => r.pass(A, "as.registration", "dynamic client registration offered"),
        None if meta.get("client_id_metadata_document_supported") == Some(&Value::Bool(true)) => {
            r.pass(A, "as.registration", "client ID metadata documents offered")
        }
        None => r.warn(
            A,
            "as.registration",
            "neither DCR nor client ID metadata documents: clients need pre-registration",
            "offer CIMD or RFC 7591 registration",
        ),
    }
    check_assertion_algs(&meta, r);
    if meta.get("authorization_response_iss_parameter_supported") == Some(&Value::Bool(true)) {
        r.pass(A, "as.iss-parameter", "RFC 9207 iss parameter advertised");
    } else {
        r.warn(
            A,
            "as.iss-parameter",
            "authorization_response_iss_parameter_supported is not true",
            "send iss on authorization responses (RFC 9207; MCP 2026-07-28)",
        );
    }

    if args.register {
        check_registration(http, &meta, r).await;
    } else {
        r.add(
            "registration",
            "dcr.status-201",
            Status::Skipped,
            "not tried (pass --register: it creates a client)",
            None,
        );
    }
    for (kind, token) in [(tokens::Kind::Access, &args.token), (tokens::Kind::Id, &args.id_token)] {
        match token {
            Some(t) => tokens::check(http, kind, t, &meta, url, r).await,
            None => tokens::skipped(kind, r),
        }
    }
    if args.login {
        let wait = Duration::from_secs(args.login_timeout);
        login::login(http, &meta, url, resource, challenge_scope.as_deref(), as_issuer, wait, r).await;
    } else {
        r.add(
            "sign-in",
            "login.tools-list",
            Status::Skipped,
            "not tried (pass --login to sign in through a browser)",
            None,
        );
    }
    true
}

/// RFC 8414 §2: a server that lists `private_key_jwt` or `client_secret_jwt` must say which algorithms
/// it accepts on client assertions, and `none` is never one of them. Clients pick their signing
/// algorithm from that list.
fn check_assertion_algs(meta: &Value, r: &mut Report) {
    const A: &str = "authorization server";
    let methods: Vec<&str> = meta
        .get("token_endpoint_auth_methods_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let jwt_methods: Vec<&str> =
        methods.into_iter().filter(|m| matches!(*m, "private_key_jwt" | "client_secret_jwt")).collect();
    if jwt_methods.is_empty() {
        r.pass(A, "as.assertion-algs", "no JWT client authentication advertised");
        return;
    }
    let algs: Option<Vec<&str>> = meta
        .get("token_endpoint_auth_signing_alg_values_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect());
    match algs {
        Some(algs) if !algs.is_empty() && !algs.contains(&"none") => {
            r.pass(A, "as.assertion-algs", format!("{} with {}", jwt_methods.join(", "), algs.join(", ")))
        }
        Some(algs) if algs.contains(&"none") => r.fail(
            A,
            "as.assertion-algs",
            "token_endpoint_auth_signing_alg_values_supported contains \"none\"",
            "remove \"none\": an unsigned assertion authenticates nobody (RFC 8414 §2)",
        ),
        _ => r.fail(
            A,
            "as.assertion-algs",
            format!(
                "{} is advertised without token_endpoint_auth_signing_alg_values_supported",
                jwt_methods.join(", ")
            ),
            "list the algorithms accepted on client assertions (RFC 8414 §2)",
        ),
    }
}

async fn check_registration(http: &reqwest::Client, meta: &Value, r: &mut Report) {
    const D: &str = "registration";
    let Some(endpoint) = meta.get("registration_endpoint").and_then(Value::as_str) else {
        r.add(D, "dcr.status-201", Status::Skipped, "no registration_endpoint", None);
        return;
    };
    let redirect = "http://127.0.0.1/callback";
    let request = json!({"redirect_uris": [redirect], "client_name": "portcullis doctor", "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]});
    let resp = match http.post(endpoint).json(&request).send().await {
        Ok(r) => r,
        Err(e) => {
            r.fail(
                D,
                "dcr.status-201",
                format!("{endpoint} could not be reached: {e}"),
                "check the registration endpoint",
            );
            return;
        }
    };
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status == 201 {
        r.pass(D, "dcr.status-201", "201 Created");
    } else {
        r.fail(
            D,
            "dcr.status-201",
            format!("HTTP {status}; RFC 7591 §3.2.1 requires 201 Created (strict clients refuse others)"),
            "answer 201",
        );
    }
    let Some(client_id) = body.get("client_id").and_then(Value::as_str) else {
        r.fail(D, "dcr.client-id", "no client_id in the response", "return the registered client (RFC 7591 §3.2.1)");
        return;
    };
    if body.get("redirect_uris") == Some(&json!([redirect])) {
        r.pass(D, "dcr.redirect-uris-echoed", "redirect_uris echoed");
    } else {
        r.fail(
            D,
            "dcr.redirect-uris-echoed",
            "redirect_uris not echoed; MCP SDK clients require them",
            "echo all registered metadata (RFC 7591 §3.2.1)",
        );
    }
    let secret = body.get("client_secret").and_then(Value::as_str);
    match (secret, body.get("client_secret_expires_at")) {
        (Some(_), Some(_)) => r.pass(D, "dcr.secret-expiry", "client_secret_expires_at present"),
        (Some(_), None) => r.fail(
            D,
            "dcr.secret-expiry",
            "a client_secret without client_secret_expires_at",
            "send client_secret_expires_at (0 = never; RFC 7591 §3.2.1)",
        ),
        (None, _) => r.add(D, "dcr.secret-expiry", Status::Skipped, "no secret issued", None),
    }
    let (Some(secret), Some(token_endpoint)) = (secret, meta.get("token_endpoint").and_then(Value::as_str)) else {
        return;
    };
    // Seed 001: a token endpoint that ignores client_secret_basic answers invalid_client or "missing
    // client_id"; one that decodes it correctly fails the bogus code with invalid_grant.
    let enc = portcullis_oauth::introspect::form_encode;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)));
    let resp = http
        .post(token_endpoint)
        .header("authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "portcullis-doctor-invalid-code"),
            ("redirect_uri", redirect),
            ("code_verifier", "portcullis-doctor-verifier-0123456789-abcdefghij"),
        ])
        .send()
        .await;
    let Ok(resp) = resp else {
        r.fail(D, "token.basic-form-decoding", "the token endpoint could not be reached", "check the token endpoint");
        return;
    };
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    match body.get("error").and_then(Value::as_str) {
        Some("invalid_grant") => r.pass(D, "token.basic-form-decoding", "client_secret_basic accepted (a bogus code fails with invalid_grant)"),
        other => r.fail(
            D,
            "token.basic-form-decoding",
            format!("with client_secret_basic and a bogus code the token endpoint answered HTTP {status} {}: it does not authenticate Basic clients (expected invalid_grant)", other.unwrap_or("without an error code")),
            "read client credentials from Authorization: Basic, form-urldecoding both halves (RFC 6749 §2.3.1)",
        ),
    }
}

/// A parameter of a `WWW-Authenticate` challenge, quoted or not.
pub fn param(challenge: &str, name: &str) -> Option<String> {
    let lower = challenge.to_ascii_lowercase();
    let key = format!("{name}=");
    let mut from = 0;
    while let Some(i) = lower[from..].find(&key) {
        let start = from + i;
        let boundary = start == 0 || matches!(lower.as_bytes()[start - 1], b' ' | b',');
        let value = &challenge[start + key.len()..];
        if boundary {
            return Some(match value.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or_default().to_owned(),
                None => value.split([',', ' ']).next().unwrap_or_default().to_owned(),
            });
        }
        from = start + key.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters() {
        let c = r#"Bearer error="invalid_token", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp", scope="a b""#;
        assert_eq!(
            param(c, "resource_metadata").as_deref(),
            Some("https://a.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(param(c, "scope").as_deref(), Some("a b"));
        assert_eq!(param("Bearer realm=x, scope=one", "scope").as_deref(), Some("one"));
        assert_eq!(param("Bearer notscope=x", "scope"), None);
    }
}
