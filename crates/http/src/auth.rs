//! The authentication layer of a protected server: the bearer token from the `Authorization` header
//! (RFC 6750 §2.1; never the query string, MCP authorization "Token Requirements") is verified and the
//! proof inserted into the request for the proxy. Scope checks need the JSON-RPC body, so they happen in
//! [`authorize`] once the proxy has read and classified it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use portcullis_oauth::VerifiedToken;
use portcullis_types::ScopeSet;

use crate::error::{AuthError, ChallengeContext};
use crate::rpc;
use crate::{AppState, ServerRuntime};

/// The request with the proof of its token inserted, or the answer refusing it; requests to a server
/// without authentication pass as they are.
pub(crate) async fn authenticate(
    state: &AppState,
    server: &ServerRuntime,
    mut req: Request,
) -> Result<Request, Response> {
    let Some(verifier) = &server.verifier else {
        return Ok(req);
    };
    let source = crate::address::of_request(&state.config.proxy, req.headers(), req.extensions());
    let result = match bearer(req.headers().get_all(header::AUTHORIZATION).iter()) {
        // RFC 6750 §2.3's query parameter is no credential here, and the query goes upstream as it is:
        // a token in it, beside the header or not, is refused rather than passed on.
        _ if req.uri().query().is_some_and(names_a_token) => Err(AuthError::BadRequest(
            "an access token in the query string (access_token) is not accepted; send it in the Authorization header only"
                .to_owned(),
        )),
        Ok(token) => verify(state, verifier, token, source).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(token) => {
            req.extensions_mut().insert(token);
            Ok(req)
        }
        Err(e) => {
            let (parts, _) = req.into_parts();
            let decision = crate::observe::Decision::refused(e.reason());
            Err(decision.attach(&state.observe, e.into_response(&challenge_context(state, server, &parts))))
        }
    }
}

/// How long a token refused for its address's failures waits before the 429 is sent.
const THROTTLED_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Verifies `token` from `source` within the address's allowance of failures: an address that spent it
/// gets only what the verifier already knows (its valid tokens keep working), and 429 for anything new,
/// without a signature check.
async fn verify(
    state: &AppState,
    verifier: &portcullis_oauth::Verifier,
    token: &str,
    source: Option<IpAddr>,
) -> Result<Arc<VerifiedToken>, AuthError> {
    // A token the verifier knows costs a hash: it gets its answer whatever the address has spent.
    let hash = portcullis_oauth::verify::TokenHash::of(token);
    if let Some(known) = verifier.cached(&hash) {
        return known.map_err(AuthError::Invalid);
    }
    // An IdP not discovered yet: nothing is checked, so nothing is charged to the address.
    if let Some(why) = verifier.awaiting_idp() {
        return Err(AuthError::Invalid(portcullis_oauth::TokenError::Unavailable(why)));
    }
    // A new token's check is boxed: it may fetch keys or introspect, and its future is several KiB
    // that every request's future (copied whole into its box as hyper takes it) would otherwise carry.
    let (Some(budget), Some(ip)) = (&state.failures, source) else {
        return Box::pin(verifier.verify_hashed(token, hash)).await.map_err(AuthError::Invalid);
    };
    if !budget.take(ip, Instant::now()) {
        // Held back before the answer: a flood waits on its own connections instead of being answered
        // as fast as it can send, which would still take the CPU from everyone else.
        tokio::time::sleep(THROTTLED_WAIT).await;
        return Err(AuthError::Throttled { retry_after: budget.retry_after() });
    }
    let outcome = Box::pin(verifier.verify_hashed(token, hash)).await;
    // Every new token that fails costs what its check took, an IdP that could not be reached included:
    // such a check (an introspection, a key set fetch) is a call to the IdP, and a flood of new tokens
    // would otherwise keep the IdP busy for free.
    if outcome.is_ok() {
        budget.refund(ip, Instant::now());
    }
    outcome.map_err(AuthError::Invalid)
}

/// Whether `query` has an `access_token` parameter (RFC 6750 §2.3), however it is encoded.
fn names_a_token(query: &str) -> bool {
    crate::query_names(query).iter().any(|name| name == "access_token")
}

/// The token of a `Bearer` credential (scheme case-insensitive, RFC 9110 §11.1).
fn bearer<'a>(mut values: impl Iterator<Item = &'a HeaderValue>) -> Result<&'a str, AuthError> {
    let Some(value) = values.next() else { return Err(AuthError::Missing) };
    if values.next().is_some() {
        return Err(AuthError::BadRequest("more than one Authorization header".to_owned()));
    }
    let value =
        value.to_str().map_err(|_| AuthError::BadRequest("the Authorization header is not ASCII".to_owned()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, DPoP, …) is not a bearer token: challenge for one.
        return Err(AuthError::Missing);
    }
    let token = token.trim();
    // RFC 6750 §2.1 b64token syntax.
    let valid = !token.is_empty()
        && token.trim_end_matches('=').bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !valid {
        return Err(AuthError::Invalid(portcullis_oauth::TokenError::NotAJwt(
            "the Bearer credential is empty or not in b64token syntax".to_owned(),
        )));
    }
    Ok(token)
}

/// Scopes the request needs: the server's base scopes, plus those of every rule matching the name of any
/// `tools/call` in the body, every element of a batch included (MCP 2026-07-28: all scopes for the
/// operation in one challenge).
pub(crate) fn required_scopes(server: &ServerRuntime, body: &rpc::Body<'_>) -> ScopeSet {
    let mut needed = server.config.scopes.clone();
    for tool in body.messages().iter().filter_map(rpc::Message::tool) {
        for rule in server.config.tool_scopes.iter().filter(|r| r.matcher.is_match(tool)) {
            needed = needed.union(&rule.scopes);
        }
    }
    needed
}

/// 403 `insufficient_scope` unless the token carries every scope the request needs. `body` is what the
/// gate itself parsed; `None` for requests without one (GET, DELETE), which need the base scopes.
pub(crate) fn authorize(
    server: &ServerRuntime,
    token: &VerifiedToken,
    body: Option<&rpc::Body<'_>>,
) -> Result<(), AuthError> {
    let rules = &server.config.tool_scopes;
    // The common case (no tool rule applies) is checked without building a new set.
    let tool_rule_applies = body.is_some_and(|b| {
        b.messages().iter().filter_map(rpc::Message::tool).any(|t| rules.iter().any(|r| r.matcher.is_match(t)))
    });
    if !tool_rule_applies && token.scopes.contains_all(&server.config.scopes) {
        return Ok(());
    }
    let needed = match body {
        Some(b) => required_scopes(server, b),
        None => server.config.scopes.clone(),
    };
    if token.scopes.contains_all(&needed) { Ok(()) } else { Err(AuthError::InsufficientScope { needed }) }
}

/// Why the server's policy refused a request: the rule that decided, and the answer.
pub(crate) struct PolicyRefusal {
    pub(crate) rule: String,
    pub(crate) answer: PolicyAnswer,
}

pub(crate) enum PolicyAnswer {
    /// A scope rule: the caller lacks scopes (403 `insufficient_scope` naming all of them).
    Scopes(AuthError),
    /// A condition refused.
    Denied(crate::ProxyError),
}

/// The caller as policy conditions see it: the verified token, or nobody (a server without
/// authentication).
pub(crate) fn policy_caller(token: Option<&VerifiedToken>) -> portcullis_policy::Caller<'_> {
    static NOBODY: std::sync::LazyLock<(serde_json::Map<String, serde_json::Value>, ScopeSet)> =
        std::sync::LazyLock::new(|| (serde_json::Map::new(), ScopeSet::new()));
    match token {
        Some(t) => portcullis_policy::Caller {
            subject: t.subject.as_deref(),
            client_id: t.client_id.as_ref().map(|c| c.as_str()),
            scopes: &t.scopes,
            claims: &t.claims,
            machine: t.machine,
        },
        None => portcullis_policy::Caller {
            subject: None,
            client_id: None,
            scopes: &NOBODY.1,
            claims: &NOBODY.0,
            machine: false,
        },
    }
}

/// An evaluation of `policy` for the caller, its variables kept with the verified token.
pub(crate) fn policy_evaluation<'p>(
    policy: &'p portcullis_policy::Policy,
    token: Option<&'p VerifiedToken>,
) -> portcullis_policy::Evaluation<'p> {
    let caller = policy_caller(token);
    match token.and_then(|t| t.derived.get_or_init(portcullis_policy::CallerCache::default)) {
        Some(cache) => policy.evaluate_cached(caller, cache),
        None => policy.evaluate(caller),
    }
}

/// The server's `[[server.policy]]` rules applied to every message of the body (every element of a
/// batch: one refusal refuses the batch), or to the bare request for GET, DELETE and answers.
pub(crate) fn apply_policy(
    server: &ServerRuntime,
    token: Option<&VerifiedToken>,
    body: Option<&rpc::Body<'_>>,
) -> Result<(), PolicyRefusal> {
    use portcullis_policy::{Action, Target, Verdict};
    let policy = &server.config.policy;
    if policy.is_empty() {
        return Ok(());
    }
    let mut evaluation = policy_evaluation(policy, token);
    let messages = body.into_iter().flat_map(|b| b.messages());
    let actions = messages.filter_map(|m| {
        let method = m.method()?;
        Some(match (m.completes(), m.target()) {
            // Completing an argument of a prompt or resource template is governed as using it.
            (Some(rpc::Completes::Prompt), Some(name)) => {
                Action { method, target: Target::Prompt(name), arguments: None }
            }
            (Some(rpc::Completes::Resource), Some(uri)) => {
                Action { method, target: Target::Resource(uri), arguments: None }
            }
            _ => Action::of(method, m.target()).with_arguments(m.arguments()),
        })
    });
    // GET and DELETE, and a body of answers only (to the server's own requests): the bare request, which
    // the rules without targets govern.
    let bare = body.is_none_or(|b| b.messages().iter().all(|m| m.method().is_none())).then(|| Action::of("", None));
    for action in actions.chain(bare) {
        match evaluation.decide(&action) {
            Verdict::Allow => {}
            Verdict::Deny { rule, error } => {
                if error {
                    tracing::warn!(rule, "a policy condition could not be evaluated; the request is refused");
                }
                let e = crate::ProxyError::PolicyDenied { rule: rule.to_owned(), error };
                return Err(PolicyRefusal { rule: rule.to_owned(), answer: PolicyAnswer::Denied(e) });
            }
            Verdict::NeedsScopes { rule, needed } => {
                let all = match body {
                    Some(b) => required_scopes(server, b),
                    None => server.config.scopes.clone(),
                };
                let e = AuthError::InsufficientScope { needed: all.union(&needed) };
                return Err(PolicyRefusal { rule: rule.to_owned(), answer: PolicyAnswer::Scopes(e) });
            }
        }
    }
    Ok(())
}

pub(crate) fn challenge_context(
    state: &AppState,
    server: &ServerRuntime,
    parts: &axum::http::request::Parts,
) -> ChallengeContext {
    let origin = state.public_origin(crate::request_host(parts));
    ChallengeContext {
        resource_metadata: crate::well_known::prm_url(origin, &server.config.path),
        scopes: server.config.scopes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(values: &[&str]) -> Result<String, AuthError> {
        let hv: Vec<HeaderValue> = values.iter().map(|v| HeaderValue::from_str(v).unwrap()).collect();
        bearer(hv.iter()).map(str::to_owned)
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(parse(&["Bearer abc.def-_~+/="]).unwrap(), "abc.def-_~+/=");
        assert_eq!(parse(&["bearer abc"]).unwrap(), "abc");
        assert_eq!(parse(&[]).unwrap_err(), AuthError::Missing);
        assert_eq!(parse(&["Basic dXNlcjpwYXNz"]).unwrap_err(), AuthError::Missing);
        assert!(matches!(parse(&["Bearer a", "Bearer b"]).unwrap_err(), AuthError::BadRequest(_)));
        assert!(matches!(parse(&["Bearer "]).unwrap_err(), AuthError::Invalid(_)));
        assert!(matches!(parse(&["Bearer a b"]).unwrap_err(), AuthError::Invalid(_)));
    }
}
