//! One sign-in: the authorization request (OAuth 2.1 §4.1.1), sign-in, consent (per user and client:
//! the MCP confused-deputy rule), and the code sent back with `state` and the RFC 9207 `iss`.
//!
//! Failures about the client or its redirect URI are shown on a page and never redirected (RFC 6749
//! §4.1.2.1: an unverified redirect URI must not receive anything); every other failure goes back to the
//! client's redirect URI with `error`, `state` and `iss`.

use std::net::IpAddr;

use portcullis_store::{ClientSource, CodeRecord, ConsentRecord, PendingRecord};
use portcullis_types::ErrorCode;
use serde::{Deserialize, Serialize};
use url::Url;

use super::error::AuthzError;
use super::gateway::{ClientLookup, Gateway, GatewayError, hash};
use super::pkce;
use super::redirect::{self, RedirectKind};
use super::register::ClientMetadata;
use super::register::random_string;
use super::throttle;
use portcullis_oauth::audience::same_resource;

/// How long a sign-in may take from `/authorize` to the final redirect.
pub const FLOW_TTL_SECS: i64 = 600;
/// Wrong passwords allowed within one flow.
pub const MAX_LOGIN_ATTEMPTS: u32 = 5;

/// The authorization request's parameters, as received.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub resource: Option<String>,
    pub nonce: Option<String>,
}

/// A flow's CSRF double-submit token: in the page's form and in a `__Host-` cookie, compared in
/// constant time. Redacted in `Debug`, so a logged flow does not carry it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The token, for the form and the cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfToken([redacted])")
    }
}

/// A sign-in in progress, kept in the store between the pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uri: String,
    pub scope: String,
    pub resource: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub nonce: Option<String>,
    /// Double-submit token: in the form and in a cookie.
    pub csrf: CsrfToken,
    pub subject: Option<String>,
    pub auth_time: Option<i64>,
    pub attempts: u32,
}

impl Flow {
    /// For a client known by its metadata document: the host that published it, shown on the consent
    /// page (the only part of the client's identity that was verified).
    pub fn metadata_host(&self) -> Option<String> {
        super::cimd::is_document_url(&self.client_id)
            .then(|| Url::parse(&self.client_id).ok()?.host_str().map(str::to_owned))
            .flatten()
    }

    /// Whether the code goes to a program on the user's own machine (a loopback redirect URI). For a
    /// client known by its metadata document that is worth a warning: any local program can name a
    /// well-known document and receive the code on a loopback port.
    pub fn loopback_redirect(&self) -> bool {
        redirect::classify(&self.redirect_uri) == Ok(RedirectKind::Loopback)
    }

    /// Where the code goes, as the consent page says it: the redirect URI's host, or for a private-use
    /// scheme the application that opens such links on the user's device (any application may claim a
    /// scheme, so the page names the scheme rather than a host it cannot vouch for).
    pub fn redirect_host(&self) -> String {
        let Ok(url) = Url::parse(&self.redirect_uri) else { return String::new() };
        match (url.scheme(), url.host_str()) {
            ("https" | "http", Some(host)) => host.to_owned(),
            (scheme, _) => format!("the application that opens {scheme}: links on this device"),
        }
    }
}

/// What to show next.
#[derive(Debug)]
pub enum Step {
    /// The sign-in page (with an error message and the username tried, after a failed attempt).
    Login { handle: String, flow: Flow, error: Option<String>, username: Option<String> },
    /// The consent page.
    Consent { handle: String, flow: Flow },
    /// Send the browser here (the client's redirect URI with the code).
    Done(String),
}

fn page(title: &str, detail: impl Into<String>) -> AuthzError {
    AuthzError::page(title, detail)
}

impl Gateway {
    /// The authorization response URL: `redirect_uri` plus `params`, `state` and `iss` (RFC 9207 §2).
    pub fn response_url(&self, redirect_uri: &str, params: &[(&str, &str)], state: Option<&str>) -> String {
        let Ok(mut url) = Url::parse(redirect_uri) else { return redirect_uri.to_owned() };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", self.issuer.as_str());
        }
        url.to_string()
    }

    /// The error response (RFC 6749 §4.1.2.1) at the client's verified redirect URI.
    fn error_url(&self, redirect_uri: &str, state: Option<&str>, error: ErrorCode, description: &str) -> String {
        self.response_url(redirect_uri, &[("error", error.as_str()), ("error_description", description)], state)
    }

    fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        error: ErrorCode,
        description: &str,
    ) -> AuthzError {
        AuthzError::Redirect(self.error_url(redirect_uri, state, error, description))
    }

    /// [`Self::error_redirect`] for a request the user has not acted on yet: redirected at once only where
    /// `vouched` (see [`AuthzError::Notice`]).
    fn early_refusal(
        &self,
        vouched: bool,
        redirect_uri: &str,
        state: Option<&str>,
        error: ErrorCode,
        description: &str,
    ) -> AuthzError {
        let url = self.error_url(redirect_uri, state, error, description);
        if vouched {
            AuthzError::Redirect(url)
        } else {
            AuthzError::Notice { url, description: description.to_owned() }
        }
    }

    /// Validates an authorization request and starts a flow. `requester` is the address it came from.
    pub async fn begin(&self, p: &AuthorizeParams, requester: Option<IpAddr>) -> Result<Step, AuthzError> {
        // Long by design: the checks of RFC 6749 §4.1.2.1 / OAuth 2.1 §4.1.1 in the order the spec sets
        // (client, then redirect URI, then everything that may be reported to it), numbered below.
        // 1. The client and its redirect URI, before anything can be sent anywhere.
        let client_id = p
            .client_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| page("Missing client", "The authorization request has no client_id."))?;
        let (source, metadata) = match self.find_client(client_id, requester).await? {
            ClientLookup::Known(record, metadata, _) => (record.source, metadata),
            ClientLookup::Unknown(why) => {
                return Err(page("Unknown client", format!("This application cannot be used here: {why}.")));
            }
        };
        let registered = &metadata.redirect_uris;
        let redirect_uri = match p.redirect_uri.as_deref() {
            Some(r) if redirect::matches(r, registered) => r.to_owned(),
            Some(r) => {
                return Err(page(
                    "Redirect URI not registered",
                    format!("{r:?} is not a redirect URI registered for this client."),
                ));
            }
            // RFC 6749 §3.1.2.3: optional only when exactly one is registered; OAuth 2.1 requires it.
            None if registered.len() == 1 => registered[0].clone(),
            None => return Err(page("Missing redirect URI", "The authorization request has no redirect_uri.")),
        };
        let state = p.state.as_deref();
        // 2. Everything else goes back to the client: at once where the operator configured the client
        // or the code would go to the user's own machine; otherwise after a page (an open redirect).
        let vouched =
            source == ClientSource::Configured || redirect::classify(&redirect_uri) == Ok(RedirectKind::Loopback);
        let refuse =
            |error: ErrorCode, description: &str| self.early_refusal(vouched, &redirect_uri, state, error, description);
        if p.response_type.as_deref() != Some("code") {
            return Err(refuse(ErrorCode::UnsupportedResponseType, "response_type must be code"));
        }
        let code_challenge = pkce::check_challenge(p.code_challenge.as_deref(), p.code_challenge_method.as_deref())
            .map_err(|e| refuse(ErrorCode::InvalidRequest, &e.to_string()))?;
        // RFC 8707 §2: the resource must be one we protect.
        let resource = match p.resource.as_deref() {
            Some(r) => {
                self.settings.resources.iter().find(|ours| same_resource(r, ours)).cloned().ok_or_else(|| {
                    refuse(ErrorCode::InvalidTarget, &format!("{r:?} is not a resource this server protects"))
                })?
            }
            None if self.settings.resources.len() == 1 => self.settings.resources[0].clone(),
            None => {
                return Err(refuse(ErrorCode::InvalidTarget, "resource is required (RFC 8707)"));
            }
        };
        let scope = match p.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => s.to_owned(),
            None => self.default_scope(&resource, &metadata),
        };
        let registered_scope: Option<Vec<&str>> = metadata.scope.as_deref().map(|s| s.split(' ').collect());
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            let offered = self.settings.scopes.iter().any(|a| a == s);
            let allowed_for_client = registered_scope.as_ref().is_none_or(|r| r.contains(&s));
            if !offered || !allowed_for_client {
                return Err(refuse(ErrorCode::InvalidScope, &format!("scope {s:?} is not available to this client")));
            }
        }
        let flow = Flow {
            client_id: client_id.to_owned(),
            client_name: metadata.client_name.clone(),
            redirect_uri,
            scope,
            resource,
            state: p.state.clone(),
            code_challenge,
            nonce: p.nonce.clone(),
            csrf: CsrfToken(random_string(32)),
            subject: None,
            auth_time: None,
            attempts: 0,
        };
        if let Some(username) = &self.settings.auto_approve_as {
            return self.auto_approve(flow, username).await;
        }
        let handle = random_string(32);
        self.save(&handle, &flow).await?;
        // With an upstream IdP, consent comes first: nothing is forwarded to a third-party IdP on behalf
        // of a client the user has not approved (MCP security best practices, confused deputy).
        if self.upstream.is_some() {
            return Ok(Step::Consent { handle, flow });
        }
        Ok(Step::Login { handle, flow, error: None, username: None })
    }

    pub(crate) fn default_scope(&self, resource: &str, metadata: &ClientMetadata) -> String {
        if let Some(s) = &metadata.scope {
            return s.clone();
        }
        self.settings.default_scopes.iter().find(|(r, _)| r == resource).map(|(_, s)| s.clone()).unwrap_or_default()
    }

    async fn save(&self, handle: &str, flow: &Flow) -> Result<(), AuthzError> {
        let data = serde_json::to_value(flow).map_err(|e| AuthzError::Internal(GatewayError::Other(e.to_string())))?;
        self.store
            .put_pending(PendingRecord {
                id_hash: hash(handle),
                kind: "authorize".into(),
                data,
                expires_at: self.now() + FLOW_TTL_SECS,
            })
            .await?;
        Ok(())
    }

    /// Takes a flow by its handle, checking the double-submitted CSRF token.
    async fn take(&self, handle: &str, csrf_form: &str, csrf_cookies: &[String]) -> Result<Flow, AuthzError> {
        let expired = || page("Sign-in expired", "This sign-in is no longer valid. Start again from your application.");
        let record = self.store.take_pending(&hash(handle), self.now()).await?.ok_or_else(expired)?;
        if record.kind != "authorize" {
            return Err(expired());
        }
        let flow: Flow = serde_json::from_value(record.data).map_err(|_| expired())?;
        if !same(csrf_form, flow.csrf.expose()) || !csrf_cookies.iter().any(|c| same(c, flow.csrf.expose())) {
            return Err(page(
                "Request refused",
                "The form did not come from this sign-in (CSRF check failed). Start again.",
            ));
        }
        Ok(flow)
    }

    /// The sign-in form was posted, from `requester`.
    pub async fn login(
        &self,
        handle: &str,
        csrf_form: &str,
        csrf_cookies: &[String],
        username: &str,
        password: &str,
        requester: Option<IpAddr>,
    ) -> Result<Step, AuthzError> {
        let mut flow = self.take(handle, csrf_form, csrf_cookies).await?;
        // With an upstream IdP, users sign in there only: local accounts (left from before, or added
        // since) would get around its sign-in policy (MFA, deprovisioning).
        if self.upstream.is_some() {
            tracing::info!(client_id = %flow.client_id, "a local sign-in was posted to a gateway that signs in at its IdP");
            return Err(page(
                "Request refused",
                "Sign in at the identity provider: this gateway has no local sign-in.",
            ));
        }
        // Throttled: the password is not even checked (the same answer whether the account exists). One
        // being checked for the account already is waited for (its failure is not written yet), for a
        // while; past that it counts as a wait.
        let claim = self.checking.claim_in_turn(username, requester).await;
        let wait = match &claim {
            Some(_) => self.sign_in_wait(username, requester).await?,
            None => Some(1),
        };
        if let Some(secs) = wait {
            tracing::info!(client_id = %flow.client_id, wait_secs = secs, "sign-in throttled");
            self.emit_sign_in(self.account_named(username).await?, &flow, crate::events::SignIn::Throttled, requester);
            self.save(handle, &flow).await?;
            return Ok(Step::Login {
                handle: handle.to_owned(),
                flow,
                error: Some(format!("Too many failed sign-ins. Try again in {}.", throttle::in_words(secs))),
                username: Some(username.to_owned()),
            });
        }
        let Some(subject) = self.check_password(username, password).await? else {
            flow.attempts += 1;
            let next_wait = self.sign_in_failed(username, requester).await?;
            tracing::info!(client_id = %flow.client_id, attempts = flow.attempts, "failed sign-in");
            self.emit_sign_in(self.account_named(username).await?, &flow, crate::events::SignIn::Failed, requester);
            if flow.attempts >= MAX_LOGIN_ATTEMPTS {
                return Err(self.error_redirect(
                    &flow.redirect_uri,
                    flow.state.as_deref(),
                    ErrorCode::AccessDenied,
                    "too many failed sign-in attempts",
                ));
            }
            self.save(handle, &flow).await?;
            let error = match next_wait {
                Some(secs) => format!(
                    "Wrong username or password. Too many failed sign-ins: try again in {}.",
                    throttle::in_words(secs)
                ),
                None => "Wrong username or password.".to_owned(),
            };
            return Ok(Step::Login {
                handle: handle.to_owned(),
                flow,
                error: Some(error),
                username: Some(username.to_owned()),
            });
        };
        self.sign_in_succeeded(username).await?;
        self.emit_sign_in(Some(username), &flow, crate::events::SignIn::Succeeded, requester);
        flow.subject = Some(subject.clone());
        flow.auth_time = Some(self.now());
        // Consent already given for at least these scopes: no second question. A consent is kept per
        // client and scopes, not per resource: with several protected resources, each request is asked
        // again (the page names the resource the user approves). A client known by its metadata document
        // whose code goes to a loopback address is asked every time, with the page's warning: any local
        // program can name a document the user once approved and take the code on a loopback port.
        let remembered =
            self.settings.resources.len() == 1 && !(flow.metadata_host().is_some() && flow.loopback_redirect());
        if let Some(c) = self.store.get_consent(&subject, &flow.client_id).await?.filter(|_| remembered) {
            let granted: Vec<&str> = c.scope.split(' ').collect();
            if flow.scope.split(' ').filter(|s| !s.is_empty()).all(|s| granted.contains(&s)) {
                return Ok(Step::Done(self.issue_code(&flow).await?));
            }
        }
        self.save(handle, &flow).await?;
        Ok(Step::Consent { handle: handle.to_owned(), flow })
    }

    /// The consent form was posted.
    pub async fn consent(
        &self,
        handle: &str,
        csrf_form: &str,
        csrf_cookies: &[String],
        approve: bool,
    ) -> Result<String, AuthzError> {
        let flow = self.take(handle, csrf_form, csrf_cookies).await?;
        let subject = flow.subject.as_deref().unwrap_or_default();
        let answered = crate::events::Event::Consent {
            subject,
            client_id: flow.client_id.as_str(),
            scope: &flow.scope,
            granted: approve,
        };
        self.emit(answered);
        if !approve {
            return Err(self.error_redirect(
                &flow.redirect_uri,
                flow.state.as_deref(),
                ErrorCode::AccessDenied,
                "the user declined",
            ));
        }
        let Some(subject) = flow.subject.clone() else {
            return self.to_upstream(flow).await;
        };
        self.store
            .put_consent(ConsentRecord {
                subject,
                client_id: flow.client_id.as_str().into(),
                scope: flow.scope.clone(),
                granted_at: self.now(),
            })
            .await?;
        self.issue_code(&flow).await
    }

    fn emit_sign_in(
        &self,
        username: Option<&str>,
        flow: &Flow,
        outcome: crate::events::SignIn,
        address: Option<IpAddr>,
    ) {
        let client_id = flow.client_id.as_str();
        self.emit(crate::events::Event::SignIn { username, client_id, outcome, address });
    }

    /// `username` when it names an account: what a refused sign-in's event may say of who it was for
    /// (a name that is no account may be a password typed into the wrong box).
    async fn account_named<'a>(&self, username: &'a str) -> Result<Option<&'a str>, AuthzError> {
        Ok(self.store.get_user(username).await?.map(|_| username))
    }

    /// `dangerous.auto_approve_as`: the fixed account, no pages.
    async fn auto_approve(&self, mut flow: Flow, username: &str) -> Result<Step, AuthzError> {
        let user = self.store.get_user(username).await?.ok_or_else(|| {
            page(
                "Automatic approval misconfigured",
                format!("dangerous.auto_approve_as names {username:?}, which is no local account."),
            )
        })?;
        tracing::warn!(client_id = %flow.client_id, username, "DANGEROUS: authorization approved without sign-in or consent");
        flow.subject = Some(user.subject);
        flow.auth_time = Some(self.now());
        Ok(Step::Done(self.issue_code(&flow).await?))
    }

    /// Where the upstream IdP sends the browser back.
    pub fn callback_url(&self) -> String {
        super::metadata::endpoint(&self.issuer, "/callback")
    }

    /// After consent: the upstream `state` is created now (never before consent), single-use and short-lived.
    async fn to_upstream(&self, flow: Flow) -> Result<String, AuthzError> {
        let Some(upstream) = &self.upstream else {
            return Err(page("Request refused", "Sign in first."));
        };
        let state = random_string(32);
        let (url, attempt) = match upstream.authorization_url(&self.callback_url(), &state) {
            Ok(found) => found,
            // The IdP could not be reached when the gate started, and still cannot: the client may try
            // again later (RFC 6749 §4.1.2.1).
            Err(e) => {
                tracing::warn!(error = %e, client_id = %flow.client_id, "no sign-in at the upstream IdP now");
                return Err(self.error_redirect(
                    &flow.redirect_uri,
                    flow.state.as_deref(),
                    e.code,
                    "the identity provider could not be reached",
                ));
            }
        };
        let data = serde_json::json!({"flow": flow, "attempt": attempt});
        self.store
            .put_pending(PendingRecord {
                id_hash: hash(&state),
                kind: "upstream".into(),
                data,
                expires_at: self.now() + FLOW_TTL_SECS,
            })
            .await?;
        Ok(url)
    }

    /// The upstream IdP's redirect back to us, in the browser whose flow cookies are `csrf_cookies`.
    pub async fn callback(
        &self,
        code: Option<&str>,
        state: Option<&str>,
        error: Option<&str>,
        csrf_cookies: &[String],
    ) -> Result<String, AuthzError> {
        let expired = || page("Sign-in expired", "This sign-in is no longer valid. Start again from your application.");
        let (Some(upstream), Some(state)) = (&self.upstream, state) else { return Err(expired()) };
        let record = self.store.take_pending(&hash(state), self.now()).await?.ok_or_else(expired)?;
        if record.kind != "upstream" {
            return Err(expired());
        }
        let mut flow: Flow = serde_json::from_value(record.data["flow"].clone()).map_err(|_| expired())?;
        let attempt: super::upstream::UpstreamAttempt =
            serde_json::from_value(record.data["attempt"].clone()).map_err(|_| expired())?;
        // The browser that comes back must be the one that gave consent: else whoever approved a client
        // could send the IdP link on, and the code for whoever signs in there would go to that client
        // (MCP security best practices, confused deputy; RFC 9700 §4.7).
        if !csrf_cookies.iter().any(|c| same(c, flow.csrf.expose())) {
            tracing::info!(client_id = %flow.client_id, "an upstream sign-in came back to another browser than the one that approved it");
            return Err(page(
                "Request refused",
                "This sign-in did not start in this browser (CSRF check failed). Start again from your application.",
            ));
        }
        if let Some(e) = error {
            tracing::info!(error = e, client_id = %flow.client_id, "the upstream IdP refused the sign-in");
            // An outage at the IdP is told as one, so that the client may try again; anything else the
            // IdP says (`access_denied`, `login_required`, `interaction_required`, …) is a refusal.
            let (code, description) = match e {
                "temporarily_unavailable" | "server_error" => {
                    (ErrorCode::TemporarilyUnavailable, "the identity provider could not sign the user in now")
                }
                _ => (ErrorCode::AccessDenied, "the identity provider refused the sign-in"),
            };
            return Err(self.error_redirect(&flow.redirect_uri, flow.state.as_deref(), code, description));
        }
        let Some(code) = code else {
            tracing::warn!(client_id = %flow.client_id, "the upstream IdP came back with neither a code nor an error");
            return Err(self.error_redirect(
                &flow.redirect_uri,
                flow.state.as_deref(),
                ErrorCode::ServerError,
                "the identity provider sent neither a code nor an error",
            ));
        };
        let identity = match upstream.finish(code, &self.callback_url(), &attempt).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, client_id = %flow.client_id, "upstream sign-in failed");
                let description = match e.code {
                    ErrorCode::AccessDenied => "the identity provider's user is not allowed here",
                    ErrorCode::TemporarilyUnavailable => "the identity provider could not be reached",
                    _ => "signing in at the identity provider failed",
                };
                return Err(self.error_redirect(&flow.redirect_uri, flow.state.as_deref(), e.code, description));
            }
        };
        let now = self.now();
        self.store_upstream_tokens(&identity.subject, &super::upstream::Upstream::stored_tokens(&identity)).await?;
        flow.subject = Some(identity.subject.clone());
        flow.auth_time = Some(now);
        self.store
            .put_consent(ConsentRecord {
                subject: identity.subject,
                client_id: flow.client_id.as_str().into(),
                scope: flow.scope.clone(),
                granted_at: now,
            })
            .await?;
        self.issue_code(&flow).await
    }

    async fn issue_code(&self, flow: &Flow) -> Result<String, AuthzError> {
        let code = random_string(43);
        let now = self.now();
        self.store
            .put_code(CodeRecord {
                code_hash: hash(&code),
                client_id: flow.client_id.as_str().into(),
                subject: flow.subject.clone().unwrap_or_default(),
                redirect_uri: flow.redirect_uri.clone(),
                resource: flow.resource.clone(),
                scope: flow.scope.clone(),
                code_challenge: flow.code_challenge.clone(),
                nonce: flow.nonce.clone(),
                auth_time: flow.auth_time.unwrap_or(now),
                expires_at: now + self.settings.code_ttl as i64,
                family_id: random_string(22),
            })
            .await?;
        Ok(self.response_url(&flow.redirect_uri, &[("code", &code)], flow.state.as_deref()))
    }
}

/// Equal, compared in constant time.
fn same(a: &str, b: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(a.as_bytes(), b.as_bytes()).into()
}
