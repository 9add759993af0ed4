//! The authorization server in process, over the memory store and a manual clock: a whole sign-in
//! (authorization request, sign-in, consent, code, tokens), refresh rotation and reuse detection, code
//! and refresh expiry, sign-in throttling that lifts when its wait is over, and the upstream IdP token
//! forwarded, refreshed ahead of its expiry and reported ended when the IdP refuses. Time moves by
//! `clock.advance`, never by sleeping.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use portcullis_authz::authorize::{AuthorizeParams, Step};
use portcullis_authz::error::AuthzError;
use portcullis_authz::forward::ForwardError;
use portcullis_authz::gateway::{Gateway, Serves};
use portcullis_authz::keys::OperatorKey;
use portcullis_authz::token::TokenRequest;
use portcullis_authz::upstream::{StoredTokens, Upstream};
use portcullis_config::{Config, MapEnv};
use portcullis_store::{MemoryStore, Store};
use portcullis_types::ManualClock;
use serde_json::Value;
use sha2::{Digest, Sha256};

const NOW: u64 = 1_800_000_000;
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const REDIRECT: &str = "http://127.0.0.1:40001/cb";
const PASSWORD: &str = "correct horse battery";
const RESOURCE: &str = "https://mcp.example.com/mcp";

struct Harness {
    gateway: Arc<Gateway>,
    clock: Arc<ManualClock>,
    config: Config,
}

async fn harness() -> Harness {
    harness_with("").await
}

/// The gateway, with `upstream` as its `[gateway.upstream]` section (none when empty).
async fn harness_with(upstream: &str) -> Harness {
    harness_on(upstream, Arc::new(MemoryStore::new()), Arc::new(ManualClock::at(NOW))).await
}

/// [`harness_with`] on `store` and `clock`, which other gateways (replicas) may share.
async fn harness_on(upstream: &str, store: Arc<MemoryStore>, clock: Arc<ManualClock>) -> Harness {
    let config = Config::from_toml(
        &format!(
            r#"
public_url = "https://mcp.example.com"
[store]
url = "memory:"
[gateway]
operator_key_file = "/nonexistent/operator.key"
refresh_token_ttl_secs = 86400
{upstream}
[[gateway.clients]]
client_id = "app"
redirect_uris = ["http://127.0.0.1/cb"]
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
scopes = ["mcp:tools"]
gateway = true
"#
        ),
        &MapEnv::default(),
    )
    .unwrap();
    if store.get_user("alice").await.unwrap().is_none() {
        Gateway::add_user(store.as_ref(), "alice", PASSWORD, NOW as i64).await.unwrap();
    }
    let operator = OperatorKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    let g = config.gateway.clone().unwrap();
    let mut serves = Serves::from_config(&config);
    if let Some(u) = &g.upstream {
        serves.upstream = Some(Upstream::start(u, reqwest::Client::new(), clock.clone()).await.unwrap());
    }
    let gateway = Gateway::start(&g, serves, store, operator, clock.clone()).await.unwrap();
    Harness { gateway, clock, config }
}

fn request() -> AuthorizeParams {
    request_for("app")
}

/// [`request`] for another client.
fn request_for(client_id: &str) -> AuthorizeParams {
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    AuthorizeParams {
        response_type: Some("code".into()),
        client_id: Some(client_id.into()),
        redirect_uri: Some(REDIRECT.into()),
        scope: Some("mcp:tools".into()),
        state: Some("st".into()),
        code_challenge: Some(challenge),
        code_challenge_method: Some("S256".into()),
        resource: Some(RESOURCE.into()),
        nonce: None,
    }
}

/// The sign-in page's handle and CSRF token.
fn login_page(step: Step) -> (String, String, Option<String>) {
    match step {
        Step::Login { handle, flow, error, .. } => (handle, flow.csrf.expose().to_owned(), error),
        other => panic!("expected the sign-in page, got {other:?}"),
    }
}

/// A sign-in attempt in a fresh flow: the next step, or the error shown on the page.
async fn attempt(h: &Harness, username: &str, password: &str) -> Result<Step, String> {
    attempt_for(h, "app", username, password).await
}

/// [`attempt`] for another client.
async fn attempt_for(h: &Harness, client_id: &str, username: &str, password: &str) -> Result<Step, String> {
    let (handle, csrf, _) = login_page(h.gateway.begin(&request_for(client_id), None).await.unwrap());
    match h.gateway.login(&handle, &csrf, std::slice::from_ref(&csrf), username, password, None).await.unwrap() {
        Step::Login { error, .. } => Err(error.unwrap()),
        step => Ok(step),
    }
}

/// A full sign-in: the code that reached the redirect URI.
async fn code(h: &Harness) -> String {
    code_for(h, "app").await
}

/// [`code`] for another client.
async fn code_for(h: &Harness, client_id: &str) -> String {
    let step = attempt_for(h, client_id, "alice", PASSWORD).await.unwrap();
    let url = match step {
        Step::Consent { handle, flow } => {
            h.gateway.consent(&handle, flow.csrf.expose(), &[flow.csrf.expose().to_owned()], true).await.unwrap()
        }
        Step::Done(url) => url,
        Step::Login { .. } => unreachable!(),
    };
    let url = url::Url::parse(&url).unwrap();
    let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert!(url.as_str().starts_with(REDIRECT));
    assert_eq!((q["state"].as_str(), q["iss"].as_str()), ("st", "https://mcp.example.com"));
    q["code"].clone()
}

async fn token(h: &Harness, pairs: &[(&str, &str)]) -> Result<Value, (String, String)> {
    let request = TokenRequest::from_pairs(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    match h.gateway.token(&request, None, None).await {
        Ok(v) => Ok(v),
        Err(AuthzError::Refused(r)) => Err((r.code.as_str().to_owned(), r.description)),
        Err(other) => panic!("not a refusal: {other}"),
    }
}

async fn exchange(h: &Harness, code: &str) -> Result<Value, (String, String)> {
    exchange_for(h, "app", code).await
}

/// [`exchange`] for another client.
async fn exchange_for(h: &Harness, client_id: &str, code: &str) -> Result<Value, (String, String)> {
    token(
        h,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn refresh(h: &Harness, refresh_token: &str) -> Result<Value, (String, String)> {
    token(h, &[("grant_type", "refresh_token"), ("client_id", "app"), ("refresh_token", refresh_token)]).await
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_consent_code_tokens_and_rotation() {
    let h = harness().await;
    let code = code(&h).await;
    let tokens = exchange(&h, &code).await.unwrap();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp:tools");
    // A code works once; its replay revokes what it granted.
    assert_eq!(exchange(&h, &code).await.unwrap_err().0, "invalid_grant");
    assert_eq!(refresh(&h, &text(&tokens, "refresh_token")).await.unwrap_err().0, "invalid_grant");

    // A second sign-in: consent is remembered, so no second question.
    let step = attempt(&h, "alice", PASSWORD).await.unwrap();
    assert!(matches!(step, Step::Done(_)), "{step:?}");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let h = harness().await;
    let tokens = exchange(&h, &code(&h).await).await.unwrap();
    let r1 = text(&tokens, "refresh_token");
    h.clock.advance(60);
    let rotated = refresh(&h, &r1).await.unwrap();
    let r2 = text(&rotated, "refresh_token");
    assert_ne!(r1, r2);
    // The old one again, past the reuse grace (10 s): reuse. The whole family is revoked, the current
    // token too.
    h.clock.advance(10);
    assert_eq!(refresh(&h, &r1).await.unwrap_err().0, "invalid_grant");
    assert_eq!(refresh(&h, &r2).await.unwrap_err().0, "invalid_grant");
}

#[tokio::test]
async fn a_refresh_retried_within_the_grace_is_answered_and_both_answers_stay_usable() {
    // A client that lost the answer to its refresh and sent it again, or two of its processes that
    // refreshed with the same token at once.
    let h = harness().await;
    let tokens = exchange(&h, &code(&h).await).await.unwrap();
    let r1 = text(&tokens, "refresh_token");
    let first = text(&refresh(&h, &r1).await.unwrap(), "refresh_token");
    h.clock.advance(9);
    let retried = text(&refresh(&h, &r1).await.unwrap(), "refresh_token");
    assert_ne!(first, retried);
    h.clock.advance(60);
    for r in [&first, &retried] {
        assert!(refresh(&h, r).await.is_ok(), "a token the grace issued was revoked");
    }
}

#[tokio::test]
async fn codes_and_refresh_tokens_expire() {
    let h = harness().await;
    let stale = code(&h).await;
    h.clock.advance(3_600);
    assert_eq!(exchange(&h, &stale).await.unwrap_err().0, "invalid_grant");
    let tokens = exchange(&h, &code(&h).await).await.unwrap();
    h.clock.advance(86_400 + 1);
    assert_eq!(refresh(&h, &text(&tokens, "refresh_token")).await.unwrap_err().0, "invalid_grant");
}

#[tokio::test]
async fn a_grant_ends_session_max_after_the_sign_in_however_often_it_is_refreshed() {
    // Refresh tokens live a day from each rotation; the grant two days from the sign-in.
    let h = harness_with("session_max_secs = 172800").await;
    let tokens = exchange(&h, &code(&h).await).await.unwrap();
    let mut current = text(&tokens, "refresh_token");
    for _ in 0..2 {
        h.clock.advance(20 * 3_600);
        current = text(&refresh(&h, &current).await.unwrap(), "refresh_token");
    }
    // 40 h in, refreshed just now: a day's lifetime would reach 64 h, but the grant ends at 48 h.
    h.clock.advance(8 * 3_600 - 1);
    let last = text(&refresh(&h, &current).await.unwrap(), "refresh_token");
    h.clock.advance(2);
    let (error, description) = refresh(&h, &last).await.unwrap_err();
    assert_eq!((error.as_str(), description.as_str()), ("invalid_grant", "the refresh token expired"));
}

#[tokio::test]
async fn access_tokens_are_accepted_until_they_expire_and_not_beyond_the_replicas_skew() {
    use portcullis_authz::gateway::OWN_TOKEN_LEEWAY_SECS;
    use portcullis_oauth::{TokenError, Verifier};
    let h = harness().await;
    let tokens = exchange(&h, &code(&h).await).await.unwrap();
    let access = text(&tokens, "access_token");
    let lifetime = tokens["expires_in"].as_u64().unwrap();
    let cfg = h.gateway.verifier_config(&h.config.servers[0]);
    let verifier = Verifier::new(cfg, h.gateway.public_keys(), h.clock.clone(), None);
    let verified = verifier.verify(&access).await.unwrap();
    assert_eq!(verified.subject.as_deref(), Some("local:alice"));
    assert!(!verified.machine, "a user's token");
    h.clock.advance(lifetime + OWN_TOKEN_LEEWAY_SECS);
    assert!(verifier.verify(&access).await.is_ok(), "refused within the skew allowed");
    h.clock.advance(1);
    let refused = verifier.verify(&access).await.unwrap_err();
    assert!(matches!(refused, TokenError::Expired { .. }), "{refused:?}");
}

#[tokio::test]
async fn a_replica_accepts_a_token_signed_with_a_key_it_has_not_loaded_yet() {
    use portcullis_oauth::Verifier;
    // Two replicas on one store; a key is added (a rotation that signs at once, as after a
    // `signing_alg` change) and only the first has read it.
    let (store, clock) = (Arc::new(MemoryStore::new()), Arc::new(ManualClock::at(NOW)));
    let a = harness_on("", store.clone(), clock.clone()).await;
    let b = harness_on("", store.clone(), clock.clone()).await;
    let operator = OperatorKey::from_text("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
    let (kid, _) =
        Gateway::rotate_keys(store.as_ref(), &operator, portcullis_authz::keys::KeyAlg::EdDsa, NOW as i64, 0)
            .await
            .unwrap();
    a.gateway.reload_keys().await.unwrap();
    let access = text(&exchange(&a, &code(&a).await).await.unwrap(), "access_token");
    assert_eq!(jsonwebtoken::decode_header(&access).unwrap().kid.as_deref(), Some(kid.as_str()));
    assert!(b.gateway.public_keys().current().by_kid(&kid).is_none(), "the second replica knew the key already");
    let verifier =
        Verifier::new(b.gateway.verifier_config(&b.config.servers[0]), b.gateway.public_keys(), clock.clone(), None);
    let verified = verifier.verify(&access).await.expect("the second replica refused the first one's token");
    assert_eq!(verified.kid.as_ref().map(|k| k.as_str()), Some(kid.as_str()));
}

#[tokio::test]
async fn throttled_sign_ins_wait_and_then_may_try_again() {
    let h = harness().await;
    for _ in 0..5 {
        let error = attempt(&h, "alice", "wrong").await.unwrap_err();
        assert!(error.starts_with("Wrong username or password"), "{error}");
    }
    let error = attempt(&h, "alice", PASSWORD).await.unwrap_err();
    assert_eq!(error, "Too many failed sign-ins. Try again in 30 seconds.");
    h.clock.advance(29);
    assert!(attempt(&h, "alice", PASSWORD).await.is_err());
    h.clock.advance(1);
    // The wait is over: the right password works, and forgets the failures.
    assert!(attempt(&h, "alice", PASSWORD).await.is_ok());
    let error = attempt(&h, "alice", "wrong").await.unwrap_err();
    assert_eq!(error, "Wrong username or password.");
}

#[tokio::test]
async fn a_consent_is_not_taken_for_another_resource() {
    // One resource: a client approved once is not asked again.
    let h = harness().await;
    code(&h).await;
    assert!(matches!(attempt(&h, "alice", PASSWORD).await.unwrap(), Step::Done(_)));
    // Two: approving the client for one does not approve it for the other.
    let h = harness_with(
        "[[server]]\npath = \"/other\"\nupstream = \"http://127.0.0.1:9/mcp\"\nscopes = [\"mcp:tools\"]\ngateway = true\n",
    )
    .await;
    code(&h).await;
    let other = AuthorizeParams { resource: Some("https://mcp.example.com/other".into()), ..request() };
    let (handle, csrf, _) = login_page(h.gateway.begin(&other, None).await.unwrap());
    let step = h.gateway.login(&handle, &csrf, std::slice::from_ref(&csrf), "alice", PASSWORD, None).await.unwrap();
    assert!(matches!(&step, Step::Consent { flow, .. } if flow.resource.ends_with("/other")), "{step:?}");
}

#[tokio::test]
async fn concurrent_sign_ins_cannot_outrun_the_throttle() {
    let h = harness().await;
    // Twenty guesses at once: each would read the count before any failure was written. One is checked
    // at a time, each after the previous failure was counted; once the account's free failures are
    // spent, the rest are answered as throttled without a password check.
    let answers = futures_util::future::join_all((0..20).map(|_| attempt(&h, "alice", "wrong"))).await;
    let checked = answers.iter().filter(|a| a.as_ref().unwrap_err().starts_with("Wrong username or password")).count();
    assert!((1..=5).contains(&checked), "{checked} guesses were checked: {answers:?}");
    let throttled = answers.iter().filter(|a| a.as_ref().unwrap_err().starts_with("Too many failed sign-ins")).count();
    assert_eq!(checked + throttled, 20);
}

#[tokio::test]
async fn concurrent_sign_ins_to_one_account_all_go_through() {
    let h = harness().await;
    // Three at once to one account (a shared account, or one user's several clients): each waits its
    // turn to be checked, none is turned away.
    let answers = futures_util::future::join_all((0..3).map(|_| attempt(&h, "alice", PASSWORD))).await;
    for answer in answers {
        assert!(matches!(answer, Ok(Step::Consent { .. } | Step::Done(_))), "{answer:?}");
    }
}

#[tokio::test]
async fn a_flow_expires_and_a_wrong_csrf_token_is_refused() {
    let h = harness().await;
    let (handle, csrf, _) = login_page(h.gateway.begin(&request(), None).await.unwrap());
    let refused = h.gateway.login(&handle, &csrf, &["another".to_owned()], "alice", PASSWORD, None).await;
    assert!(matches!(refused, Err(AuthzError::Page { .. })), "{refused:?}");
    let (handle, csrf, _) = login_page(h.gateway.begin(&request(), None).await.unwrap());
    h.clock.advance(601);
    let expired = h.gateway.login(&handle, &csrf, std::slice::from_ref(&csrf), "alice", PASSWORD, None).await;
    assert!(matches!(expired, Err(AuthzError::Page { .. })), "{expired:?}");
}

/// A plain OAuth 2 IdP on loopback whose token endpoint rotates `r1` into `r2` once and refuses
/// everything else; its base URL and the number of token requests it got.
async fn refreshing_idp() -> (String, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let token = axum::routing::post(move |axum::Form(form): axum::Form<HashMap<String, String>>| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            match form.get("refresh_token").map(String::as_str) {
                Some("r1") => (
                    axum::http::StatusCode::OK,
                    axum::Json(serde_json::json!({"access_token": "a2", "refresh_token": "r2", "expires_in": 60})),
                ),
                _ => (axum::http::StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({"error": "invalid_grant"}))),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().route("/token", token)).await });
    (base, calls)
}

#[tokio::test]
async fn the_upstream_token_is_refreshed_before_it_expires_and_the_end_is_reported() {
    let (idp, calls) = refreshing_idp().await;
    let h = harness_with(&format!(
        "[gateway.upstream]\nkind = \"oauth2\"\nauthorization_endpoint = \"{idp}/authorize\"\n\
         token_endpoint = \"{idp}/token\"\nuserinfo_endpoint = \"{idp}/user\"\nclient_id = \"gate\"\n\
         client_secret = \"s\"\nforward_token_header = \"x-upstream-token\""
    ))
    .await;
    let g = &h.gateway;
    assert_eq!(g.forward_token_header(), Some("x-upstream-token"));
    let first = StoredTokens {
        access_token: Some("a1".into()),
        refresh_token: Some("r1".into()),
        expires_at: Some(NOW as i64 + 60),
    };
    g.store_upstream_tokens("local:alice", &first).await.unwrap();
    // Fresh: forwarded as it is, from memory the second time.
    assert_eq!(&*g.upstream_access_token("local:alice").await.unwrap(), "a1");
    assert_eq!(&*g.upstream_access_token("local:alice").await.unwrap(), "a1");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A quarter of its lifetime before expiry (15 s of 60), it is refreshed, once.
    h.clock.advance(45);
    assert_eq!(&*g.upstream_access_token("local:alice").await.unwrap(), "a2");
    assert_eq!(&*g.upstream_access_token("local:alice").await.unwrap(), "a2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // The IdP refuses the next refresh: the sign-in has ended.
    h.clock.advance(60);
    assert!(matches!(g.upstream_access_token("local:alice").await, Err(ForwardError::Ended(_))));
    // A user whose sign-in kept nothing has no token to forward.
    assert!(matches!(g.upstream_access_token("local:bob").await, Err(ForwardError::Ended(_))));
}

#[tokio::test]
async fn the_upstream_tokens_are_kept_only_when_they_are_forwarded() {
    let (idp, _) = refreshing_idp().await;
    let store = Arc::new(MemoryStore::new());
    let upstream = format!(
        "[gateway.upstream]\nkind = \"oauth2\"\nauthorization_endpoint = \"{idp}/authorize\"\n\
         token_endpoint = \"{idp}/token\"\nuserinfo_endpoint = \"{idp}/user\"\nclient_id = \"gate\"\n\
         client_secret = \"s\"\n"
    );
    let provider = "oauth2:127.0.0.1";
    let tokens = StoredTokens { access_token: Some("a1".into()), refresh_token: Some("r1".into()), expires_at: None };
    // Forwarded: kept (sealed) for the proxy.
    let forwarding = format!("{upstream}forward_token_header = \"x-upstream-token\"");
    let h = harness_on(&forwarding, store.clone(), Arc::new(ManualClock::at(NOW))).await;
    h.gateway.store_upstream_tokens("bob", &tokens).await.unwrap();
    assert!(store.get_upstream_token("bob", provider).await.unwrap().is_some());
    // Not forwarded: nothing uses them, nothing is kept.
    let h = harness_on(&upstream, store.clone(), Arc::new(ManualClock::at(NOW))).await;
    assert_eq!(h.gateway.forward_token_header(), None);
    h.gateway.store_upstream_tokens("alice", &tokens).await.unwrap();
    assert_eq!(store.get_upstream_token("alice", provider).await.unwrap(), None);
}

#[tokio::test]
async fn replicas_refresh_one_upstream_token_once() {
    let (idp, calls) = refreshing_idp().await;
    let upstream = format!(
        "[gateway.upstream]\nkind = \"oauth2\"\nauthorization_endpoint = \"{idp}/authorize\"\n\
         token_endpoint = \"{idp}/token\"\nuserinfo_endpoint = \"{idp}/user\"\nclient_id = \"gate\"\n\
         client_secret = \"s\"\nforward_token_header = \"x-upstream-token\""
    );
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::at(NOW));
    let a = harness_on(&upstream, store.clone(), clock.clone()).await;
    let b = harness_on(&upstream, store, clock.clone()).await;
    let first = StoredTokens {
        access_token: Some("a1".into()),
        refresh_token: Some("r1".into()),
        expires_at: Some(NOW as i64 + 60),
    };
    a.gateway.store_upstream_tokens("local:alice", &first).await.unwrap();
    clock.advance(50);
    // Both replicas find the token due at once: one refreshes (the IdP would refuse r1 a second time and
    // end the sign-in), the other waits for the token it stores.
    let (x, y) =
        tokio::join!(a.gateway.upstream_access_token("local:alice"), b.gateway.upstream_access_token("local:alice"));
    assert_eq!((&*x.unwrap(), &*y.unwrap()), ("a2", "a2"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn registrations_nobody_uses_are_deleted_and_clients_in_use_kept() {
    const DAY: u64 = 86_400;
    // Never used: a week (the default). Idle, with no live grant: 30 days.
    let h = harness_with("idle_registration_ttl_secs = 2592000").await;
    let register = async || {
        let body = serde_json::json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"});
        text(&h.gateway.register(body.to_string().as_bytes()).await.unwrap(), "client_id")
    };
    let (used, unused) = (register().await, register().await);
    let purged = Arc::new(Purged::default());
    h.gateway.set_events(purged.clone());
    let tokens = exchange_for(&h, &used, &code_for(&h, &used).await).await.unwrap();
    assert!(tokens.get("access_token").is_some());
    let known = async |client_id: &str| match h.gateway.begin(&request_for(client_id), None).await {
        Ok(step) => {
            login_page(step);
            true
        }
        Err(e) => {
            assert!(e.to_string().contains("is not registered here"), "{e}");
            false
        }
    };

    h.clock.advance(7 * DAY - 1);
    h.gateway.purge_expired().await.unwrap();
    assert!(known(&unused).await, "kept for a week");
    h.clock.advance(1);
    h.gateway.purge_expired().await.unwrap();
    assert!(!known(&unused).await, "never used for a week");
    assert_eq!(purged.take(), [(unused.clone(), true)], "the audit log's event");
    assert!(known(&used).await);
    assert!(known("app").await);

    // Its refresh token expired after a day; 30 days after its last sign-in (noted to the day, so a
    // day more) it goes too, the configured client never.
    h.clock.advance(24 * DAY - 1);
    h.gateway.purge_expired().await.unwrap();
    assert!(known(&used).await, "used 31 days ago less a second");
    h.clock.advance(1);
    h.gateway.purge_expired().await.unwrap();
    assert!(!known(&used).await, "idle for 30 days and a day");
    assert_eq!(purged.take(), [(used.clone(), false)]);
    assert!(known("app").await);
}

/// The clients the gateway said it deleted, and whether each was never used.
#[derive(Debug, Default)]
struct Purged(std::sync::Mutex<Vec<(String, bool)>>);

impl Purged {
    fn take(&self) -> Vec<(String, bool)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl portcullis_authz::events::EventSink for Purged {
    fn record(&self, event: &portcullis_authz::events::Event<'_>) {
        if let portcullis_authz::events::Event::ClientPurged { client_id, never_used } = *event {
            self.0.lock().unwrap().push((client_id.to_owned(), never_used));
        }
    }
}
