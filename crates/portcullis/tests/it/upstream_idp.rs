//! Gateway mode with an upstream IdP: users sign in at `oidc-provider` through portcullis, which keeps
//! one issuer everywhere, binds the IdP's answer to the browser that approved, and forwards (and
//! refreshes) the user's upstream token where configured.

use serde_json::{Value, json};

use crate::gateway::{
    Landed, PASSWORD, Via, authorize_page, config, drive, follow_until, no_redirects, pkce, post_step, token, whoami,
};
use crate::support::{Gate, Sample, admin, call, claims_of, client, mcp_post};

/// A gateway signing users in at `idp` (client `client-rs`), with `extra` in `[gateway.upstream]`.
async fn start_with_upstream(idp: &crate::support::Idp, extra: &str) -> (Sample, Gate) {
    start_with_issuer(&idp.issuer, extra).await
}

/// [`start_with_upstream`] for the IdP that is (or will be) at `issuer`.
async fn start_with_issuer(issuer: &str, extra: &str) -> (Sample, Gate) {
    let (sample, text) = with_issuer(issuer, extra).await;
    let gate = Gate::start(&text).await;
    (sample, gate)
}

/// The sample upstream, and the configuration of a gateway signing users in at `issuer`.
async fn with_issuer(issuer: &str, extra: &str) -> (Sample, String) {
    let sample = Sample::start().await;
    let upstream = format!(
        "[gateway.upstream]\nkind = \"oidc\"\nissuer = \"{issuer}\"\nclient_id = \"client-rs\"\nclient_secret = \"secret-rs\"\nscopes = [\"openid\"]\n{extra}"
    );
    let text = config(&sample.mcp()).replace("[[gateway.clients]]", &format!("{upstream}[[gateway.clients]]"));
    (sample, text)
}

/// One sign-in through the upstream IdP for the configured client: the token response, and the URL the
/// IdP sent the browser back to.
async fn sign_in_upstream(gate: &Gate, idp: &crate::support::Idp) -> (Value, String) {
    let (verifier, challenge) = pkce();
    let redirect_uri = "http://127.0.0.1:40002/cb";
    let params = [
        ("client_id", "configured"),
        ("redirect_uri", redirect_uri),
        ("code_challenge", &challenge),
        ("state", "up-1"),
        ("scope", "mcp:tools openid"),
        ("nonce", "client-nonce"),
    ];
    let Landed { query: q, callback } = drive(gate, &params, Via::Upstream(idp)).await;
    let back = callback.unwrap();
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("up-1", gate.base.as_str()));

    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body, _) = token(gate, Some(("configured", "a+b %c:d")), &form).await;
    assert_eq!(status, 200, "{body}");
    (body, back)
}

#[tokio::test]
async fn sign_in_at_an_upstream_openid_provider() {
    let idp = crate::support::Idp::start("aud-client-id").await;
    let (_sample, gate) = start_with_upstream(&idp, "").await;
    let (body, back) = sign_in_upstream(&gate, &idp).await;
    // Seed 000: every token carries our issuer; the upstream's ID token never leaves portcullis.
    let id_token = claims_of(body["id_token"].as_str().unwrap());
    assert_eq!(id_token["iss"], gate.base.as_str());
    assert_eq!(id_token["aud"], "configured");
    assert_eq!(id_token["nonce"], "client-nonce");
    assert_eq!(id_token["sub"], "test-user", "the upstream user");
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(claims_of(access)["iss"], gate.base.as_str());
    let seen = whoami(&gate, access, &[]).await;
    assert!(!seen.keys().any(|k| k == "authorization" || k.contains("upstream")), "nothing forwarded: {seen:?}");

    // A replayed or forged upstream state is refused on a page.
    let stale = no_redirects().get(&back).send().await.unwrap();
    assert_eq!(stale.status(), 400);
}

/// An upstream IdP that cannot be reached when the gateway starts (an outage, a restart at the wrong
/// moment) does not keep the gateway down: it starts and is ready (the tokens it issued never needed the
/// IdP), a sign-in meanwhile reaches the client as `temporarily_unavailable`, and sign-ins go through
/// once the IdP answers.
#[tokio::test]
async fn an_upstream_idp_down_at_start_is_awaited_and_sign_ins_go_through_once_it_answers() {
    // Held, not listening, until the IdP comes up on it.
    let held = crate::support::HeldPort::new();
    let port = held.port;
    let (_sample, gate) = start_with_issuer(&format!("http://127.0.0.1:{port}"), "").await;
    assert_eq!(client().get(gate.url("/readyz")).send().await.unwrap().status(), 200);
    let (_, challenge) = pkce();
    let params = [
        ("client_id", "configured"),
        ("redirect_uri", "http://127.0.0.1:40002/cb"),
        ("code_challenge", &challenge),
        ("state", "up-wait"),
    ];
    // Where a consented sign-in goes: the client with an error, or the IdP.
    let consented = || async {
        let (cookie, page) = authorize_page(&gate, &params).await;
        let r = post_step(&gate, &cookie, &page, "consent", &[("decision", "approve")]).await;
        assert_eq!(r.status(), 303);
        url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap()
    };
    let landed = consented().await;
    assert!(landed.as_str().starts_with("http://127.0.0.1:40002/cb?"), "{landed}");
    let q: std::collections::HashMap<String, String> = landed.query_pairs().into_owned().collect();
    assert_eq!(q["error"], "temporarily_unavailable");
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("up-wait", gate.base.as_str()));

    let idp = crate::support::Idp::start_at("aud-client-id", port, &[]).await;
    // Found again 1 s after start, then 2 s later, and so on.
    let mut found = false;
    for _ in 0..100 {
        if consented().await.as_str().starts_with(&idp.issuer) {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "sign-ins go to the IdP once it answers");
    let (body, _) = sign_in_upstream(&gate, &idp).await;
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["sub"], "test-user");
}

/// A trusted enterprise IdP (identity assertion grants) that cannot be reached at start does not keep
/// the gateway down either: it starts and is ready, and finds the IdP's keys once the IdP answers.
#[tokio::test]
async fn a_trusted_idp_down_at_start_is_awaited_until_it_answers() {
    let sample = Sample::start().await;
    // Held, not listening, until the IdP comes up on it.
    let held = crate::support::HeldPort::new();
    let port = held.port;
    let issuer = format!("http://127.0.0.1:{port}");
    let trusted = format!(
        "[[gateway.trusted_idps]]\nissuer = \"{issuer}\"\nclients = [\"chat-app\"]\n[[gateway.clients]]\nclient_id = \"chat-app\"\n\
         client_secret = \"chat-secret\"\ngrant_types = [\"urn:ietf:params:oauth:grant-type:jwt-bearer\"]\n"
    );
    let text = config(&sample.mcp()).replace("[[gateway.clients]]", &format!("{trusted}[[gateway.clients]]"));
    let (gate, mut log) = Gate::start_logging(&format!("{text}[log]\nformat = \"json\"\n"), &[]).await;
    let said = log.find("a trusted IdP cannot be discovered now").await.expect("the start-up log says so");
    assert!(
        said.contains(&format!("http://127.0.0.1:{port}/.well-known/oauth-authorization-server → unreachable")),
        "{said}"
    );
    assert_eq!(client().get(gate.url("/readyz")).send().await.unwrap().status(), 200);
    // An assertion of that IdP meanwhile: nothing to check it with, so not now (rather than invalid).
    let assertion = crate::support::KeyIdp { issuer: issuer.clone() }.token(&gate.url("/mcp"), "mcp:tools");
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
    let (status, body, _) = token(&gate, Some(("chat-app", "chat-secret")), &form).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")), "{body}");
    let _idp = crate::support::KeyIdp::start_at(port).await;
    assert!(log.find("the trusted IdP is discovered").await.is_some(), "found once it answers");
    // Its assertions are checked from then on: one the IdP signed is exchanged for a token.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = json!({"iss": issuer, "sub": "user-9", "aud": gate.base, "client_id": "chat-app",
        "resource": gate.url("/mcp"), "jti": "jag-1", "iat": now, "exp": now + 300});
    let key = portcullis_test_support::TestKey::Es256;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid().to_owned());
    header.typ = Some("oauth-id-jag+jwt".to_owned());
    let assertion = portcullis_test_support::mint_with(&header, key, &claims);
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.as_str())];
    let (status, body, _) = token(&gate, Some(("chat-app", "chat-secret")), &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims_of(body["access_token"].as_str().unwrap())["sub"], "user-9");
}

/// An upstream IdP that answers, but names another issuer than the configured one, is a configuration
/// to fix: the gateway does not start, and says why.
#[tokio::test]
async fn an_upstream_idp_that_names_another_issuer_stops_the_start() {
    let idp = crate::support::KeyIdp::start().await;
    let configured = format!("{}/", idp.issuer);
    let (_sample, text) = with_issuer(&configured, "").await;
    let stderr = crate::support::serve_fails(&text, &[]).await;
    assert!(stderr.contains(&format!("configured: {configured}")), "{stderr}");
    assert!(stderr.contains("differ only by a trailing slash"), "{stderr}");
}

#[tokio::test]
async fn what_the_upstream_idp_answers_reaches_the_client_as_an_oauth_error() {
    let idp = crate::support::Idp::start("aud-client-id").await;
    let (_sample, gate) = start_with_upstream(&idp, "").await;
    let (_, challenge) = pkce();
    let params = [
        ("client_id", "configured"),
        ("redirect_uri", "http://127.0.0.1:40002/cb"),
        ("code_challenge", &challenge),
        ("state", "up-err"),
    ];
    // (what the IdP sends back, the error the client gets)
    for (answer, expected) in [
        ("error=temporarily_unavailable", "temporarily_unavailable"),
        ("error=server_error", "temporarily_unavailable"),
        ("error=login_required", "access_denied"),
        ("error=access_denied&error_description=no", "access_denied"),
        ("", "server_error"),
    ] {
        let (cookie, page) = authorize_page(&gate, &params).await;
        let r = post_step(&gate, &cookie, &page, "consent", &[("decision", "approve")]).await;
        let link = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        let state = link.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
        // The IdP sends the browser back with its answer instead of a code.
        let back = format!("{}?state={state}&{answer}", gate.url("/callback"));
        let r = no_redirects().get(&back).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 303, "{answer:?}");
        let landed = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
        assert!(landed.as_str().starts_with("http://127.0.0.1:40002/cb?"), "{landed}");
        let q: std::collections::HashMap<String, String> = landed.query_pairs().into_owned().collect();
        assert_eq!(q["error"], expected, "{answer:?}");
        assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("up-err", gate.base.as_str()), "{answer:?}");
        assert!(!q.contains_key("code"));
    }
}

#[tokio::test]
async fn an_upstream_sign_in_comes_back_only_to_the_browser_that_approved_it() {
    let idp = crate::support::Idp::start("aud-client-id").await;
    let (_sample, gate) = start_with_upstream(&idp, "").await;
    let (_, challenge) = pkce();
    let params =
        [("client_id", "configured"), ("redirect_uri", "http://127.0.0.1:40002/cb"), ("code_challenge", &challenge)];
    for cookie in ["", "__Host-portcullis-csrf-0123456789ab=another-flows-token"] {
        // Someone approves the client in their browser and sends the IdP link on instead of following it.
        let (theirs, page) = authorize_page(&gate, &params).await;
        let r = post_step(&gate, &theirs, &page, "consent", &[("decision", "approve")]).await;
        let link = r.headers()["location"].to_str().unwrap().to_owned();
        // Whoever signs in there comes back without that flow's cookie: no code goes anywhere.
        let back = follow_until(&link, &gate.url("/callback"), "").await;
        let r = no_redirects().get(&back).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), 400, "{cookie:?}");
        assert!(r.headers().get("location").is_none());
        assert!(r.text().await.unwrap().contains("did not start in this browser"), "{cookie:?}");
    }
}

#[tokio::test]
async fn local_accounts_do_not_sign_in_where_an_upstream_idp_does() {
    let idp = crate::support::Idp::start("aud-client-id").await;
    let (_sample, gate) = start_with_upstream(&idp, "").await;
    // An account in the store from before the IdP was configured (`users add` refuses one beside it).
    let before = gate.dir.path.join("before-the-idp.toml");
    let store = gate.dir.path.join("state/portcullis.db");
    let text = format!(
        "public_url = \"{}\"\n[store]\nurl = \"sqlite://{}\"\n[[server]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\ngateway = true\n",
        gate.base,
        store.display()
    );
    std::fs::write(&before, text).unwrap();
    assert!(store.exists());
    admin(&["users", "add", "alice", "--config", &before.display().to_string()], &format!("{PASSWORD}\n")).await;
    let (_, challenge) = pkce();
    let params =
        [("client_id", "configured"), ("redirect_uri", "http://127.0.0.1:40002/cb"), ("code_challenge", &challenge)];
    // The consent page's form, posted as the sign-in step that only local sign-in shows.
    let (cookie, page) = authorize_page(&gate, &params).await;
    let r = post_step(&gate, &cookie, &page, "login", &[("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no local sign-in"));
}

#[tokio::test]
async fn the_upstream_token_is_forwarded_and_refreshed() {
    // The IdP's access tokens live 4 s, so the gateway refreshes them from 3 s on. The IdP is another
    // process on its own clock: this test has to let real time pass (twice 3.2 s).
    let idp = crate::support::Idp::start_with("aud-client-id", &[("IDP_AT_TTL", "4")]).await;
    let (_sample, gate) = start_with_upstream(&idp, "forward_token_header = \"X-Upstream-Token\"\n").await;
    let (body, _) = sign_in_upstream(&gate, &idp).await;
    let access = body["access_token"].as_str().unwrap();
    let refresh = body["refresh_token"].as_str().unwrap();

    // The upstream gets the IdP's token for this user, never the client's, and a client cannot forge it.
    let seen = whoami(&gate, access, &[("X-Upstream-Token", "forged")]).await;
    let first = seen["x-upstream-token"].as_str().unwrap().to_owned();
    assert!(!seen.contains_key("authorization"));
    assert_ne!(first, access);
    let claims = claims_of(&first);
    assert_eq!((claims["iss"].as_str(), claims["sub"].as_str()), (Some(idp.issuer.as_str()), Some("test-user")));
    assert_eq!(claims["aud"], "client-rs", "issued to portcullis's client at the IdP");
    assert_eq!(whoami(&gate, access, &[]).await["x-upstream-token"], first.as_str(), "reused while fresh");

    // Near its expiry it is refreshed at the IdP before being forwarded.
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let second = whoami(&gate, access, &[]).await["x-upstream-token"].as_str().unwrap().to_owned();
    assert_ne!(second, first, "refreshed");
    assert_eq!(claims_of(&second)["sub"], "test-user");
    assert!(claims_of(&second)["exp"].as_i64() > claims["exp"].as_i64());
    let (status, body, _) =
        token(&gate, Some(("configured", "a+b %c:d")), &[("grant_type", "refresh_token"), ("refresh_token", refresh)])
            .await;
    assert_eq!(status, 200, "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();

    // Once the IdP ends the session, the next refresh is refused: requests get invalid_token and the
    // gateway's own refresh grant invalid_grant, so the client signs the user in again.
    assert!(idp.end_sessions().await >= 1);
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let r = mcp_post(&client(), &gate.url("/mcp"), call(6, "echo", json!({"text": "x"})))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.contains("error=\"invalid_token\"") && challenge.contains("authorize again"), "{challenge}");
    let (status, body, _) =
        token(&gate, Some(("configured", "a+b %c:d")), &[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
}

#[tokio::test]
async fn the_upstream_token_cannot_be_forged_under_another_spelling_of_its_header() {
    // Named with `_`: CGI and WSGI upstreams read `X-Upstream-Token` as the same header.
    let idp = crate::support::Idp::start("aud-client-id").await;
    let (_sample, gate) = start_with_upstream(&idp, "forward_token_header = \"X_Upstream_Token\"\n").await;
    let (body, _) = sign_in_upstream(&gate, &idp).await;
    let access = body["access_token"].as_str().unwrap();
    let seen = whoami(&gate, access, &[("X-Upstream-Token", "forged"), ("X_UPSTREAM_TOKEN", "forged")]).await;
    assert!(!seen.contains_key("x-upstream-token"), "{seen:?}");
    let forwarded = seen["x_upstream_token"].as_str().unwrap();
    assert_eq!(claims_of(forwarded)["sub"], "test-user", "the IdP's token, not a forged one");
}
