//! Verify mode against a real IdP: `oidc-provider` on loopback mints the tokens, in the three audience
//! profiles real IdPs use, and portcullis checks them in front of the sample upstream.

use serde_json::{Value, json};

use crate::support::{Gate, Idp, Sample, call, claims_of, client, mcp_post, serve_fails};

pub fn config(sample: &Sample, issuer: &str, verify_extra: &str) -> String {
    format!(
        r#"
public_url = "{{public_url}}"
listen = "{{listen}}"
[[server]]
path = "/mcp"
upstream = "{upstream}"
scopes = ["mcp:tools"]
[server.verify]
issuer = "{issuer}"
{verify_extra}
"#,
        upstream = sample.mcp()
    )
}

async fn call_echo(gate: &Gate, token: &str) -> reqwest::Response {
    mcp_post(&client(), &gate.url("/mcp"), call(1, "echo", json!({"text": "through"})))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn assert_passes(gate: &Gate, token: &str) {
    let r = call_echo(gate, token).await;
    let status = r.status();
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "challenge {challenge:?}, body {body}");
    assert!(challenge.is_none());
    assert_eq!(body["result"]["content"][0]["text"], "through");
}

async fn assert_refused(gate: &Gate, token: &str, description_part: &str) {
    let r = call_echo(gate, token).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
    assert!(challenge.contains(description_part), "expected {description_part:?} in {challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"", gate.base))
    );
}

#[tokio::test]
async fn rfc8707_tokens_for_our_resource_pass_and_others_are_refused() {
    let idp = Idp::start("rfc8707").await;
    let sample = Sample::start().await;
    let gate = Gate::start(&config(&sample, &idp.issuer, "")).await;
    let resource = gate.url("/mcp");
    for (client_id, secret, alg) in [("client-rs", "secret-rs", "RS256"), ("client-es256", "secret-es", "ES256")] {
        let token = idp.token(client_id, secret, &resource, "mcp:tools").await;
        assert_eq!(claims_of(&token)["aud"], resource.as_str());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);
        assert_passes(&gate, &token).await;
    }
    let other = idp.token("client-rs", "secret-rs", "http://127.0.0.1:1/other", "mcp:tools").await;
    assert_refused(&gate, &other, "aud was 'http://127.0.0.1:1/other'").await;
    // The PRM names the IdP exactly as configured.
    let prm: Value =
        client().get(gate.url("/.well-known/oauth-protected-resource/mcp")).send().await.unwrap().json().await.unwrap();
    assert_eq!(prm["authorization_servers"], json!([idp.issuer]));
    assert_eq!(prm["resource"], resource.as_str());
}

#[tokio::test]
async fn client_id_audience_for_idps_without_resource_indicators() {
    let idp = Idp::start("aud-client-id").await;
    let sample = Sample::start().await;
    let gate = Gate::start(&config(&sample, &idp.issuer, "audiences = [\"client-rs\"]")).await;
    let token = idp.token("client-rs", "secret-rs", &gate.url("/mcp"), "mcp:tools").await;
    assert_eq!(claims_of(&token)["aud"], "client-rs");
    assert_passes(&gate, &token).await;
    let foreign = idp.token("client-es256", "secret-es", &gate.url("/mcp"), "mcp:tools").await;
    assert_refused(&gate, &foreign, "aud was 'client-es256'").await;
}

#[tokio::test]
async fn zone_audience_with_a_resource_claim() {
    let idp = Idp::start("resource-claim").await;
    let sample = Sample::start().await;
    let extra = format!("resource_claim_audiences = [\"{}\"]", idp.issuer);
    let gate = Gate::start(&config(&sample, &idp.issuer, &extra)).await;
    let token = idp.token("client-rs", "secret-rs", &gate.url("/mcp"), "mcp:tools").await;
    assert_eq!(claims_of(&token)["aud"], idp.issuer.as_str());
    assert_eq!(claims_of(&token)["resource"], gate.url("/mcp").as_str());
    assert_passes(&gate, &token).await;
    let elsewhere = idp.token("client-rs", "secret-rs", "http://127.0.0.1:1/mcp", "mcp:tools").await;
    assert_refused(&gate, &elsewhere, "accepted only with a resource claim").await;
}

#[tokio::test]
async fn key_rotation_is_picked_up_without_restart() {
    let idp = Idp::start("rfc8707").await;
    let sample = Sample::start().await;
    let gate = Gate::start(&config(&sample, &idp.issuer, "")).await;
    let resource = gate.url("/mcp");
    let before = idp.token("client-rs", "secret-rs", &resource, "mcp:tools").await;
    assert_passes(&gate, &before).await;
    let fetches = idp.jwks_fetches().await;

    let new_kid = idp.rotate(false).await;
    let after = idp.token("client-rs", "secret-rs", &resource, "mcp:tools").await;
    assert_eq!(jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(), Some(new_kid.as_str()));
    assert_passes(&gate, &after).await;
    assert_eq!(idp.jwks_fetches().await, fetches + 1, "one refetch for the new kid");
    // The old key is gone from the IdP's key set, so its tokens no longer pass, cached or not.
    assert_refused(&gate, &before, "no signing key with kid").await;
    // A flood of unknown kids inside the window causes no further fetches. Their claims pass (claims are
    // checked first): only the key is unknown.
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let claims = serde_json::json!({"iss": idp.issuer, "aud": resource, "exp": exp, "sub": "u"});
    for i in 0..20 {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(format!("made-up-{i}"));
        let forged = format!(
            "{}.{}.c2ln",
            b64(&serde_json::to_vec(&header).unwrap()),
            b64(&serde_json::to_vec(&claims).unwrap())
        );
        assert_refused(&gate, &forged, "no signing key with kid").await;
    }
    assert_eq!(idp.jwks_fetches().await, fetches + 1);
}

#[tokio::test]
async fn cached_keys_keep_working_when_the_idp_stops() {
    let mut idp = Idp::start("rfc8707").await;
    let sample = Sample::start().await;
    let gate = Gate::start(&config(&sample, &idp.issuer, "")).await;
    let first = idp.token("client-rs", "secret-rs", &gate.url("/mcp"), "mcp:tools").await;
    let unseen = idp.token("client-es256", "secret-es", &gate.url("/mcp"), "mcp:tools").await;
    assert_passes(&gate, &first).await;
    idp.child.kill().await.unwrap();
    // A token portcullis has never seen is verified with the keys it already holds.
    assert_passes(&gate, &unseen).await;
    assert_passes(&gate, &first).await;
}

#[tokio::test]
async fn start_up_refuses_an_issuer_mismatch_naming_both_strings() {
    let idp = Idp::start("rfc8707").await;
    let sample = Sample::start().await;
    let configured = format!("{}/", idp.issuer);
    let stderr = serve_fails(&config(&sample, &configured, ""), &[]).await;
    assert!(stderr.contains(&format!("configured: {configured}")), "{stderr}");
    assert!(stderr.contains(&format!("published:  {}", idp.issuer)), "{stderr}");
    assert!(stderr.contains("differ only by a trailing slash"), "{stderr}");
}

/// An IdP that cannot be reached when the gate starts (an outage, a restart at the wrong moment) does not
/// keep the gate down: it starts, says why it is not ready, answers 503 for the IdP's server (never 401,
/// never a pass), and checks tokens once the IdP answers.
#[tokio::test]
async fn an_unreachable_issuer_is_awaited_and_its_server_answers_503_until_it_answers() {
    let sample = Sample::start().await;
    // Held, not listening, until the IdP comes up on it.
    let held = crate::support::HeldPort::new();
    let port = held.port;
    let issuer = format!("http://127.0.0.1:{port}");
    // JSON lines: the discovery error, several lines long, is one event.
    // A small allowance of failed tokens: refusals while the IdP is awaited must not spend it.
    // And metrics, which say the IdP is awaited.
    let metrics = crate::support::HeldPort::new();
    let metrics_port = metrics.port;
    let text = format!(
        "{}\n[log]\nformat = \"json\"\n[proxy]\nfailed_tokens_per_minute = 2\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        config(&sample, &issuer, "")
    );
    let awaited = || async move {
        let text = client()
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().find(|l| l.starts_with("portcullis_idp_awaited{")).map(str::to_owned)
    };
    let (gate, mut log) = Gate::start_logging(&text, &[]).await;
    let said = log.find("cannot be discovered now").await.expect("the start-up log says the IdP is awaited");
    for url in [
        format!("{issuer}/.well-known/oauth-authorization-server"),
        format!("{issuer}/.well-known/openid-configuration"),
    ] {
        assert!(said.contains(&format!("{url} → unreachable")), "{url} missing in {said}");
    }
    let ready = client().get(gate.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(awaited().await, Some(format!("portcullis_idp_awaited{{issuer=\"{issuer}\"}} 1")));
    assert!(ready.text().await.unwrap().contains("IdP"), "readyz names the reason");

    // Any token, even one the IdP will sign: nothing can check it yet.
    let idp_later = crate::support::KeyIdp { issuer: issuer.clone() };
    let token = idp_later.token(&gate.url("/mcp"), "mcp:tools");
    let r = call_echo(&gate, &token).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(!r.headers().contains_key("www-authenticate"), "not the client's fault: no challenge");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    for n in 0..4 {
        let other = idp_later.token_for(&format!("user-{n}"), &gate.url("/mcp"), "mcp:tools");
        assert_eq!(call_echo(&gate, &other).await.status(), 503, "not 429: nothing was checked");
    }

    // The IdP comes up: the gate finds it on its own (1 s, then 2 s later) and checks tokens.
    let _idp = crate::support::KeyIdp::start_at(port).await;
    let mut ready = false;
    for _ in 0..100 {
        if client().get(gate.url("/readyz")).send().await.unwrap().status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "ready once the IdP answers");
    assert!(log.find("the IdP is discovered").await.is_some());
    assert_eq!(awaited().await, Some(format!("portcullis_idp_awaited{{issuer=\"{issuer}\"}} 0")));
    assert_passes(&gate, &token).await;
    let other = idp_later.token("http://127.0.0.1:1/other", "mcp:tools");
    assert_refused(&gate, &other, "aud was 'http://127.0.0.1:1/other'").await;
}

/// An IdP that answers, but with an error that says it is the configuration (no metadata where the
/// issuer says), still stops the start, naming each URL tried.
#[tokio::test]
async fn start_up_refuses_an_issuer_without_metadata_naming_each_url() {
    let sample = Sample::start().await;
    let idp = crate::support::KeyIdp::start().await;
    let issuer = format!("{}/tenant", idp.issuer);
    let stderr = serve_fails(&config(&sample, &issuer, ""), &[]).await;
    let origin = &idp.issuer;
    for url in [
        format!("{origin}/.well-known/oauth-authorization-server/tenant"),
        format!("{origin}/.well-known/openid-configuration/tenant"),
        format!("{origin}/tenant/.well-known/openid-configuration"),
    ] {
        assert!(stderr.contains(&format!("{url} → HTTP 404")), "{url} missing in {stderr}");
    }
}

#[tokio::test]
async fn environment_only_mode() {
    let idp = Idp::start("aud-client-id").await;
    let sample = Sample::start().await;
    let upstream = sample.mcp();
    let gate = Gate::start_env(&[
        ("OAUTH_ISSUER_URL", idp.issuer.as_str()),
        ("OAUTH_AUDIENCE", "client-rs"),
        ("PORTCULLIS_UPSTREAM", upstream.as_str()),
        ("PORTCULLIS_PUBLIC_URL", "{public_url}"),
        ("PORTCULLIS_LISTEN", "{listen}"),
    ])
    .await;
    let token = idp.token("client-rs", "secret-rs", &gate.url("/mcp"), "mcp:tools").await;
    assert_passes(&gate, &token).await;
    let r = client().post(gate.url("/mcp")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // And a missing variable is named.
    let stderr = serve_fails("", &[("OAUTH_ISSUER_URL", idp.issuer.as_str())]).await;
    assert!(stderr.contains("PORTCULLIS_UPSTREAM: required"), "{stderr}");
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
