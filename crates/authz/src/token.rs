//! The token endpoint (OAuth 2.1 §3.2, RFC 6749 §5), revocation (RFC 7009) and introspection
//! (RFC 7662). Access tokens are RFC 9068 JWTs: `typ` `at+jwt`, `iss` = our issuer, `aud` = the
//! resource, `sub`, `client_id`, `scope`, `exp`, `iat`, `jti`. An ID token is minted only for `openid`,
//! by us, with our `iss`: an upstream IdP's ID token never leaves portcullis.

use std::net::IpAddr;

use portcullis_store::{ClientRecord, CodeRecord, CodeRedemption, RefreshRecord, Rotation};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::assertion::{self, JWT_BEARER};
use super::client_auth::{AuthMethod, presented};
use super::error::{AuthzError, Refusal};
use super::gateway::{ClientLookup, Gateway, GatewayError, hash};
use super::pkce;
use super::register::{ClientMetadata, TokenAuthMethod, random_string};
use portcullis_config::{CLIENT_CREDENTIALS, JWT_BEARER_GRANT};
use portcullis_oauth::audience::same_resource;
use portcullis_oauth::jwks::KeySet;

mod headless;
use portcullis_types::{ErrorCode, Secret};

/// A `grant_type` (RFC 6749 §4.1.3, §6); unknown ones are kept to be named in the refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    /// RFC 6749 §4.4, for pre-registered confidential clients (MCP's client credentials extension).
    ClientCredentials,
    /// RFC 7523 §2.1 with an identity assertion grant (MCP's enterprise-managed authorization).
    JwtBearer,
    Extension(String),
}

const AUTHORIZATION_CODE: &str = "authorization_code";
const REFRESH_TOKEN: &str = "refresh_token";

impl GrantType {
    /// Its name on the wire for the grants served, `other` for any extension: a bounded label for
    /// metrics and the audit log.
    pub fn label(&self) -> &'static str {
        match self {
            Self::AuthorizationCode => AUTHORIZATION_CODE,
            Self::RefreshToken => REFRESH_TOKEN,
            Self::ClientCredentials => CLIENT_CREDENTIALS,
            Self::JwtBearer => JWT_BEARER_GRANT,
            Self::Extension(_) => "other",
        }
    }
}

/// The parameters of a token, revocation or introspection request, read once at the boundary. Empty
/// values count as absent; unknown parameters are ignored (RFC 6749 §3.2). Credentials and tokens are
/// [`Secret`]s, so a logged request carries none of them.
#[derive(Debug, Default)]
pub struct TokenRequest {
    pub grant_type: Option<GrantType>,
    pub code: Option<Secret>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<Secret>,
    /// The authorization grant of the `jwt-bearer` grant (RFC 7523 §2.1).
    pub assertion: Option<Secret>,
    /// The token to revoke or introspect (RFC 7009 §2.1, RFC 7662 §2.1).
    pub token: Option<Secret>,
}

impl TokenRequest {
    /// From form pairs, each name at most once (the HTTP layer refuses repeats).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut r = Self::default();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            match name.as_str() {
                "grant_type" => {
                    r.grant_type = Some(match value.as_str() {
                        AUTHORIZATION_CODE => GrantType::AuthorizationCode,
                        REFRESH_TOKEN => GrantType::RefreshToken,
                        CLIENT_CREDENTIALS => GrantType::ClientCredentials,
                        JWT_BEARER_GRANT => GrantType::JwtBearer,
                        _ => GrantType::Extension(value),
                    })
                }
                "code" => r.code = Some(Secret::new(value)),
                "redirect_uri" => r.redirect_uri = Some(value),
                "code_verifier" => r.code_verifier = Some(Secret::new(value)),
                "refresh_token" => r.refresh_token = Some(Secret::new(value)),
                "scope" => r.scope = Some(value),
                "resource" => r.resource = Some(value),
                "client_id" => r.client_id = Some(value),
                "client_secret" => r.client_secret = Some(Secret::new(value)),
                "client_assertion_type" => r.client_assertion_type = Some(value),
                "client_assertion" => r.client_assertion = Some(Secret::new(value)),
                "assertion" => r.assertion = Some(Secret::new(value)),
                "token" => r.token = Some(Secret::new(value)),
                _ => {}
            }
        }
        r
    }
}

/// Whether a redeemed code may be exchanged by this request: issued to this client, for this redirect URI
/// and resource, and the PKCE verifier matches (RFC 7636 §4.6).
fn code_fits(record: &CodeRecord, client: &ClientRecord, req: &TokenRequest, verifier: &str) -> Result<(), AuthzError> {
    if record.client_id != client.client_id {
        return Err(Refusal::new(ErrorCode::InvalidGrant, "the authorization code was issued to another client").into());
    }
    if req.redirect_uri.as_ref().is_none_or(|r| *r != record.redirect_uri) {
        return Err(Refusal::new(ErrorCode::InvalidGrant, "redirect_uri differs from the authorization request").into());
    }
    if req.resource.as_ref().is_some_and(|r| !same_resource(r, &record.resource)) {
        return Err(Refusal::new(ErrorCode::InvalidTarget, "resource differs from the authorization request").into());
    }
    pkce::verify(verifier, &record.code_challenge).map_err(|e| Refusal::new(ErrorCode::InvalidGrant, e.to_string()))?;
    Ok(())
}

impl Gateway {
    /// Authenticates the client of a token, revocation or introspection request.
    async fn authenticate_client(
        &self,
        req: &TokenRequest,
        authorization: Option<&str>,
        requester: Option<IpAddr>,
    ) -> Result<(ClientRecord, ClientMetadata), AuthzError> {
        if let Some(kind) = &req.client_assertion_type {
            return self.authenticate_assertion(req, authorization, kind, requester).await;
        }
        let creds = presented(authorization, req.client_id.as_deref(), req.client_secret.as_ref().map(Secret::expose))
            .map_err(|e| match e {
                super::client_auth::ClientAuthError::Missing => {
                    Refusal::client("client authentication is required", false)
                }
                // Credentials that cannot be read are a failed client authentication (RFC 6749 §5.2).
                super::client_auth::ClientAuthError::MalformedBasic => Refusal::client(e.to_string(), true),
                other => Refusal::new(ErrorCode::InvalidRequest, other.to_string()),
            })?;
        let basic = creds.method == AuthMethod::ClientSecretBasic;
        // Unknown clients get invalid_client, so that clients which lost their registration register
        // again (Claude Code and the MCP SDKs do exactly that).
        let (client, metadata) = match self.find_client(&creds.client_id, requester).await? {
            ClientLookup::Known(client, metadata, _) => (client, *metadata),
            ClientLookup::Unknown(why) => return Err(Refusal::client(why, basic).into()),
        };
        if metadata.token_endpoint_auth_method == TokenAuthMethod::PrivateKeyJwt {
            return Err(Refusal::client("this client must authenticate with private_key_jwt", basic).into());
        }
        match (&client.secret_hash, &creds.secret) {
            (Some(expected), Some(_)) => {
                let matches =
                    creds.secret_candidates().any(|c| bool::from(hash(c).as_bytes().ct_eq(expected.as_bytes())));
                if !matches {
                    return Err(Refusal::client("the client secret is wrong", basic).into());
                }
            }
            (Some(_), None) => {
                return Err(Refusal::client("this client must authenticate with its secret", basic).into());
            }
            (None, Some(_)) => {
                return Err(Refusal::client("this is a public client: send client_id only (method none)", basic).into());
            }
            (None, None) => {}
        }
        Ok((client, metadata))
    }

    /// `private_key_jwt` (RFC 7523 §2.2): a signed assertion instead of a secret, for clients whose
    /// metadata document publishes their keys or who registered them. Each assertion is accepted once.
    async fn authenticate_assertion(
        &self,
        req: &TokenRequest,
        authorization: Option<&str>,
        kind: &str,
        requester: Option<IpAddr>,
    ) -> Result<(ClientRecord, ClientMetadata), AuthzError> {
        if kind != JWT_BEARER {
            return Err(Refusal::client(format!("client_assertion_type {kind:?} is not supported"), false).into());
        }
        if authorization.is_some_and(|a| a.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("basic ")))
            || req.client_secret.is_some()
        {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "client credentials were sent in more than one way (RFC 6749 §2.3)",
            )
            .into());
        }
        let assertion = req
            .client_assertion
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "client_assertion is required"))?;
        let client_id = assertion::claimed_client(assertion).map_err(|e| Refusal::client(e, false))?;
        if req.client_id.as_ref().is_some_and(|c| *c != client_id) {
            return Err(Refusal::client("client_id differs from the client_assertion's sub", false).into());
        }
        let (client, metadata, document) = match self.find_client(&client_id, requester).await? {
            ClientLookup::Known(client, metadata, document)
                if metadata.token_endpoint_auth_method == TokenAuthMethod::PrivateKeyJwt =>
            {
                (client, *metadata, document)
            }
            ClientLookup::Known(..) => {
                return Err(Refusal::client("this client does not authenticate with private_key_jwt", false).into());
            }
            ClientLookup::Unknown(why) => return Err(Refusal::client(why, false).into()),
        };
        // Keys from the metadata document, or registered with the client (RFC 7591 `jwks`).
        let registered = match &document {
            Some(_) => None,
            None => {
                metadata.jwks.as_ref().and_then(|j| KeySet::parse(j.to_string().as_bytes()).ok()).map(|(keys, _)| keys)
            }
        };
        let keys = document
            .as_ref()
            .and_then(|d| d.keys.as_ref())
            .or(registered.as_ref())
            .ok_or_else(|| Refusal::client("the client has no usable keys", false))?;
        let audiences: Vec<String> = std::iter::once(self.issuer.to_string())
            .chain(["/token", "/revoke", "/introspect"].iter().map(|p| super::metadata::endpoint(&self.issuer, p)))
            .collect();
        let accepted = assertion::verify(assertion, keys, &client_id, &audiences, self.now())
            .map_err(|e| Refusal::client(e, false))?;
        if !self.first_use("client_assertion", &client_id, &accepted.jti, accepted.remember_until).await? {
            tracing::warn!(client_id, "client assertion replayed");
            return Err(Refusal::client("this client_assertion was already used (jti)", false).into());
        }
        Ok((client, metadata))
    }

    /// Handles a token request: `grant_type` `authorization_code` or `refresh_token`. `requester` is the
    /// address the request came from.
    pub async fn token(
        &self,
        req: &TokenRequest,
        authorization: Option<&str>,
        requester: Option<IpAddr>,
    ) -> Result<Value, AuthzError> {
        let grant_type = req.grant_type.as_ref().map_or("none", GrantType::label);
        let result = self.token_grant(req, authorization, requester).await;
        if let Err(AuthzError::Refused(r)) = &result {
            self.emit(crate::events::Event::TokenRefused { grant_type, error: r.code.as_str() });
        }
        result
    }

    async fn token_grant(
        &self,
        req: &TokenRequest,
        authorization: Option<&str>,
        requester: Option<IpAddr>,
    ) -> Result<Value, AuthzError> {
        let (client, metadata) = self.authenticate_client(req, authorization, requester).await?;
        match &req.grant_type {
            Some(GrantType::AuthorizationCode) => self.code_grant(&client, &metadata, req).await,
            Some(GrantType::RefreshToken) => self.refresh_grant(&client, req).await,
            Some(GrantType::ClientCredentials) => self.client_credentials_grant(&client, &metadata, req).await,
            Some(GrantType::JwtBearer) => self.jwt_bearer_grant(&client, &metadata, req).await,
            Some(GrantType::Extension(other)) => {
                Err(Refusal::new(ErrorCode::UnsupportedGrantType, format!("grant_type {other:?} is not supported"))
                    .into())
            }
            None => Err(Refusal::new(ErrorCode::InvalidRequest, "grant_type is required").into()),
        }
    }

    async fn code_grant(
        &self,
        client: &ClientRecord,
        metadata: &ClientMetadata,
        req: &TokenRequest,
    ) -> Result<Value, AuthzError> {
        let code = req.code.as_ref().map(Secret::expose);
        let code = code.ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "code is required"))?;
        let verifier = req
            .code_verifier
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "code_verifier is required (PKCE)"))?;
        // The refresh token is stored in the transaction that spends the code (one durable commit), made
        // only when the code fits this request; the checks are repeated below to answer why not.
        let now = self.now();
        let refresh = metadata.refreshes().then(|| random_string(43));
        let issue = |record: &CodeRecord| -> Option<RefreshRecord> {
            let token = refresh.as_ref()?;
            code_fits(record, client, req, verifier).ok()?;
            Some(RefreshRecord {
                token_hash: hash(token),
                // The code's family; the store sets it.
                family_id: String::new(),
                client_id: client.client_id.clone(),
                subject: record.subject.clone(),
                resource: record.resource.clone(),
                scope: record.scope.clone(),
                expires_at: (now + self.settings.refresh_token_ttl as i64).min(self.session_end(record.auth_time)),
                created_at: now,
                session_ends_at: Some(self.session_end(record.auth_time)),
            })
        };
        let record = match self.store.redeem_code_issuing(&hash(code), now, &issue).await? {
            CodeRedemption::Redeemed(r) => r,
            // OAuth 2.1 §4.1.3: a code used twice revokes what the first use issued.
            CodeRedemption::Replayed(r) => {
                let revoked = self.store.revoke_family(&r.family_id).await?;
                tracing::warn!(client_id = %r.client_id, revoked, "authorization code replayed; its tokens are revoked");
                return Err(Refusal::new(ErrorCode::InvalidGrant, "the authorization code was already used").into());
            }
            CodeRedemption::Expired => {
                return Err(Refusal::new(ErrorCode::InvalidGrant, "the authorization code expired").into());
            }
            CodeRedemption::Unknown => {
                return Err(Refusal::new(ErrorCode::InvalidGrant, "the authorization code is not valid").into());
            }
        };
        code_fits(&record, client, req, verifier)?;

        let mut body =
            self.access_token(client.client_id.as_str(), &record.subject, &record.resource, &record.scope)?;
        if let Some(refresh) = refresh {
            body["refresh_token"] = json!(refresh);
        }
        if record.scope.split(' ').any(|s| s == "openid") {
            body["id_token"] = json!(self.id_token(
                client.client_id.as_str(),
                &record.subject,
                record.auth_time,
                record.nonce.as_deref()
            )?);
        }
        self.emit(crate::events::Event::TokenIssued {
            grant_type: GrantType::AuthorizationCode.label(),
            client_id: client.client_id.as_str(),
            subject: &record.subject,
            scope: &record.scope,
            resource: &record.resource,
        });
        Ok(body)
    }

    async fn refresh_grant(&self, client: &ClientRecord, req: &TokenRequest) -> Result<Value, AuthzError> {
        let token = req
            .refresh_token
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "refresh_token is required"))?;
        let old_hash = hash(token);
        let old = self
            .store
            .get_refresh(&old_hash)
            .await?
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidGrant, "the refresh token is not valid"))?;
        if old.client_id != client.client_id {
            return Err(Refusal::new(ErrorCode::InvalidGrant, "the refresh token was issued to another client").into());
        }
        if req.resource.as_ref().is_some_and(|r| !same_resource(r, &old.resource)) {
            return Err(Refusal::new(ErrorCode::InvalidTarget, "resource differs from the original grant").into());
        }
        // RFC 6749 §6: a narrower scope may be asked for, never a wider one.
        let scope = match req.scope.as_deref() {
            Some(s) => {
                let granted: Vec<&str> = old.scope.split(' ').collect();
                if let Some(extra) = s.split(' ').filter(|x| !x.is_empty()).find(|x| !granted.contains(x)) {
                    return Err(
                        Refusal::new(ErrorCode::InvalidScope, format!("scope {extra:?} was not granted")).into()
                    );
                }
                s.to_owned()
            }
            None => old.scope.clone(),
        };
        // When the upstream receives the user's IdP token, a grant outlives it only as long as the IdP's
        // refresh does: once that has ended, the client must sign the user in again.
        if self.forward_token_header().is_some()
            && let Err(super::forward::ForwardError::Ended(why)) = self.upstream_access_token(&old.subject).await
        {
            return Err(Refusal::new(ErrorCode::InvalidGrant, format!("sign in again: {why}")).into());
        }
        let new_token = random_string(43);
        let now = self.now();
        // A grant lasts no longer than `session_max` from the sign-in, however often it is refreshed: a
        // user the IdP no longer lets in (whose tokens this gate cannot ask it about) is let go by then.
        // A token stored before the end was kept starts the count now.
        let session_ends_at = old.session_ends_at.unwrap_or_else(|| self.session_end(now));
        let new = RefreshRecord {
            token_hash: hash(&new_token),
            family_id: old.family_id.clone(),
            client_id: old.client_id.clone(),
            subject: old.subject.clone(),
            resource: old.resource.clone(),
            scope: old.scope.clone(),
            expires_at: (now + self.settings.refresh_token_ttl as i64).min(session_ends_at),
            created_at: now,
            session_ends_at: Some(session_ends_at),
        };
        let grace = i64::try_from(self.settings.refresh_reuse_grace).unwrap_or(i64::MAX);
        match self.store.rotate_refresh(&old_hash, new, now, grace).await? {
            Rotation::Rotated(_) => {}
            // OAuth 2.1 §4.3.1: reuse of a rotated refresh token revokes the whole family (past the
            // reuse grace, within which the store rotated it again).
            Rotation::Reused { family_id } => {
                tracing::warn!(client_id = %client.client_id, %family_id, "refresh token reused; its family is revoked");
                let reuse =
                    crate::events::Event::RefreshReuse { client_id: client.client_id.as_str(), subject: &old.subject };
                self.emit(reuse);
                return Err(Refusal::new(ErrorCode::InvalidGrant, "the refresh token was already used").into());
            }
            Rotation::Revoked => {
                return Err(Refusal::new(ErrorCode::InvalidGrant, "the refresh token was revoked").into());
            }
            Rotation::Expired => return Err(Refusal::new(ErrorCode::InvalidGrant, "the refresh token expired").into()),
            Rotation::Unknown => {
                return Err(Refusal::new(ErrorCode::InvalidGrant, "the refresh token is not valid").into());
            }
        }
        let mut body = self.access_token(client.client_id.as_str(), &old.subject, &old.resource, &scope)?;
        body["refresh_token"] = json!(new_token);
        self.emit(crate::events::Event::TokenIssued {
            grant_type: GrantType::RefreshToken.label(),
            client_id: client.client_id.as_str(),
            subject: &old.subject,
            scope: &scope,
            resource: &old.resource,
        });
        Ok(body)
    }

    /// When a sign-in at `auth_time` ends: its grant's refresh tokens expire by then.
    fn session_end(&self, auth_time: i64) -> i64 {
        auth_time.saturating_add(i64::try_from(self.settings.session_max).unwrap_or(i64::MAX))
    }

    /// The token response with a fresh RFC 9068 access token.
    fn access_token(&self, client_id: &str, subject: &str, resource: &str, scope: &str) -> Result<Value, AuthzError> {
        self.sign_access_token(client_id, subject, resource, scope, None)
    }

    /// The token response with a fresh RFC 9068 access token; `gty` names the grant when no user took
    /// part (`client_credentials`), so that the server's policy and audit log can tell machines apart.
    fn sign_access_token(
        &self,
        client_id: &str,
        subject: &str,
        resource: &str,
        scope: &str,
        gty: Option<&str>,
    ) -> Result<Value, AuthzError> {
        let now = self.now();
        let ttl = self.settings.access_token_ttl as i64;
        let mut claims = json!({
            "iss": self.issuer.as_str(),
            "sub": subject,
            "aud": resource,
            "client_id": client_id,
            "scope": scope,
            "iat": now,
            "exp": now + ttl,
            "jti": random_string(22),
        });
        if let Some(g) = gty {
            claims["gty"] = json!(g);
        }
        let jwt = self.ring().sign(&claims, "at+jwt", now).map_err(GatewayError::from)?;
        Ok(json!({"access_token": jwt, "token_type": "Bearer", "expires_in": ttl, "scope": scope}))
    }

    fn id_token(
        &self,
        client_id: &str,
        subject: &str,
        auth_time: i64,
        nonce: Option<&str>,
    ) -> Result<String, AuthzError> {
        let now = self.now();
        let mut claims = json!({
            "iss": self.issuer.as_str(),
            "sub": subject,
            "aud": client_id,
            "iat": now,
            "exp": now + self.settings.access_token_ttl as i64,
            "auth_time": auth_time,
        });
        if let Some(n) = nonce {
            claims["nonce"] = json!(n);
        }
        Ok(self.ring().sign(&claims, "JWT", now).map_err(GatewayError::from)?)
    }

    /// RFC 7009: revokes a refresh token (and its family). Access tokens are self-contained JWTs and
    /// expire on their own. Unknown tokens are not an error (§2.2).
    pub async fn revoke(
        &self,
        req: &TokenRequest,
        authorization: Option<&str>,
        requester: Option<IpAddr>,
    ) -> Result<(), AuthzError> {
        let (client, _) = self.authenticate_client(req, authorization, requester).await?;
        let token = req
            .token
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "token is required"))?;
        if let Some(r) = self.store.get_refresh(&hash(token)).await?
            && r.client_id == client.client_id
        {
            self.store.revoke_family(&r.family_id).await?;
        }
        Ok(())
    }

    /// RFC 7662 for confidential clients: our access tokens (by signature) and refresh tokens.
    pub async fn introspect(
        &self,
        req: &TokenRequest,
        authorization: Option<&str>,
        requester: Option<IpAddr>,
        verify_access: impl AsyncFnOnce(&str) -> Option<Value>,
    ) -> Result<Value, AuthzError> {
        let (client, metadata) = self.authenticate_client(req, authorization, requester).await?;
        let confidential =
            client.secret_hash.is_some() || metadata.token_endpoint_auth_method == TokenAuthMethod::PrivateKeyJwt;
        if !confidential {
            return Err(Refusal::client("introspection is for confidential clients", false).into());
        }
        let token = req
            .token
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "token is required"))?;
        if let Some(mut claims) = verify_access(token).await {
            claims["active"] = json!(true);
            claims["token_type"] = json!("Bearer");
            return Ok(claims);
        }
        if let Some(r) = self.store.get_refresh(&hash(token)).await?
            && r.expires_at > self.now()
            && self.store.family_active(&r.family_id).await?
            // A rotated token was replaced: presented again past the reuse grace, it would revoke its
            // family rather than refresh anything.
            && !self.store.refresh_rotated(&r.token_hash).await?
        {
            return Ok(
                json!({"active": true, "token_type": "refresh_token", "client_id": r.client_id, "sub": r.subject,
                "scope": r.scope, "aud": r.resource, "exp": r.expires_at, "iss": self.issuer.as_str()}),
            );
        }
        Ok(json!({"active": false}))
    }
}
