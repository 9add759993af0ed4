//! The grants with no browser, for pre-registered confidential clients: client credentials (RFC 6749
//! §4.4; MCP's `oauth-client-credentials` extension), where the client is the caller, and identity
//! assertion grants (RFC 7523 §2.1; MCP's `enterprise-managed-authorization` extension), where a trusted
//! enterprise IdP vouches for the user. Both issue an access token bound to one resource and no refresh
//! token: the client asks again, or exchanges a fresh assertion.

use portcullis_store::ClientRecord;
use serde_json::Value;

use super::{GrantType, TokenRequest};
use crate::error::{AuthzError, Refusal};
use crate::gateway::Gateway;
use crate::id_jag;
use crate::register::{ClientMetadata, TokenAuthMethod};
use portcullis_config::{CLIENT_CREDENTIALS, JWT_BEARER_GRANT};
use portcullis_oauth::audience::same_resource;
use portcullis_types::{ErrorCode, Secret};

/// Scopes that mean a user and a browser: never granted without one.
const USER_SCOPES: [&str; 2] = ["openid", "offline_access"];

impl Gateway {
    /// `grant_type=client_credentials`: a token whose `sub` is the client itself, `client:<id>` (RFC 9068
    /// §2.2), apart from users' subjects (local accounts are `local:…`; an upstream IdP's subjects, a
    /// login name among them, could otherwise equal a client's id).
    pub(super) async fn client_credentials_grant(
        &self,
        client: &ClientRecord,
        metadata: &ClientMetadata,
        req: &TokenRequest,
    ) -> Result<Value, AuthzError> {
        may_use(client, metadata, CLIENT_CREDENTIALS)?;
        let resource = self.requested_resource(req.resource.as_deref())?;
        let scope = self.headless_scope(&resource, metadata, req.scope.as_deref(), None)?;
        let client_id = client.client_id.as_str();
        let subject = format!("client:{client_id}");
        let body = self.sign_access_token(client_id, &subject, &resource, &scope, Some(CLIENT_CREDENTIALS))?;
        self.emit(crate::events::Event::TokenIssued {
            grant_type: GrantType::ClientCredentials.label(),
            client_id,
            subject: &subject,
            scope: &scope,
            resource: &resource,
        });
        Ok(body)
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` with an ID-JAG: a token for the user the
    /// assertion names, for the resource it names, each assertion accepted once.
    pub(super) async fn jwt_bearer_grant(
        &self,
        client: &ClientRecord,
        metadata: &ClientMetadata,
        req: &TokenRequest,
    ) -> Result<Value, AuthzError> {
        may_use(client, metadata, JWT_BEARER_GRANT)?;
        let assertion = req
            .assertion
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| Refusal::new(ErrorCode::InvalidRequest, "assertion is required"))?;
        let invalid = |why: String| AuthzError::from(Refusal::new(ErrorCode::InvalidGrant, why));
        let issuer = id_jag::unverified_issuer(assertion).map_err(invalid)?;
        let idp = self
            .trusted_idps
            .iter()
            .find(|t| t.issuer == issuer)
            .ok_or_else(|| invalid(format!("{issuer:?} is not an identity provider trusted here")))?;
        let client_id = client.client_id.as_str();
        if !idp.clients.iter().any(|c| c == client_id) {
            return Err(invalid(format!("this client may not present assertions of {issuer:?}")));
        }
        // An IdP that could not be reached at start: nothing to check its assertion with yet.
        if let Some(why) = idp.keys.awaiting_reason() {
            return Err(Refusal::new(ErrorCode::TemporarilyUnavailable, why).into());
        }
        let grant =
            id_jag::verify(assertion, idp, self.issuer.as_str(), client_id, &self.settings.resources, self.now())
                .await
                .map_err(invalid)?;
        if let Some(asked) = req.resource.as_deref()
            && !same_resource(asked, &grant.resource)
        {
            return Err(Refusal::new(ErrorCode::InvalidTarget, "resource differs from the assertion's").into());
        }
        let scope = self.headless_scope(&grant.resource, metadata, req.scope.as_deref(), grant.scope.as_deref())?;
        if !self.first_use("id_jag", &issuer, &grant.jti, grant.remember_until).await? {
            tracing::warn!(client_id, issuer, "identity assertion replayed");
            return Err(invalid("this assertion was already used (jti)".into()));
        }
        let body = self.sign_access_token(client_id, &grant.subject, &grant.resource, &scope, None)?;
        self.emit(crate::events::Event::TokenIssued {
            grant_type: GrantType::JwtBearer.label(),
            client_id,
            subject: &grant.subject,
            scope: &scope,
            resource: &grant.resource,
        });
        Ok(body)
    }

    /// The `resource` a request names (RFC 8707), in our spelling; the only one when it names none.
    fn requested_resource(&self, asked: Option<&str>) -> Result<String, AuthzError> {
        let resources = &self.settings.resources;
        match asked {
            Some(r) => resources.iter().find(|ours| same_resource(r, ours)).cloned().ok_or_else(|| {
                Refusal::new(ErrorCode::InvalidTarget, format!("{r:?} is not a resource this server protects")).into()
            }),
            None if resources.len() == 1 => Ok(resources[0].clone()),
            None => Err(Refusal::new(ErrorCode::InvalidTarget, "resource is required (RFC 8707)").into()),
        }
    }

    /// The scopes granted without a user: what was asked for, each offered here, allowed to the client,
    /// within `cap` (what an IdP approved) and not a user's scope; when nothing was asked for, the
    /// defaults (`cap`, else the client's scopes, else the resource's base scopes) narrowed the same way.
    fn headless_scope(
        &self,
        resource: &str,
        metadata: &ClientMetadata,
        asked: Option<&str>,
        cap: Option<&str>,
    ) -> Result<String, AuthzError> {
        let allowed: Option<Vec<&str>> = metadata.scope.as_deref().map(|s| s.split(' ').collect());
        let capped: Option<Vec<&str>> = cap.map(|s| s.split(' ').collect());
        let grantable = |s: &str| {
            !USER_SCOPES.contains(&s)
                && self.settings.scopes.iter().any(|o| o == s)
                && allowed.as_ref().is_none_or(|a| a.contains(&s))
                && capped.as_ref().is_none_or(|c| c.contains(&s))
        };
        match asked.map(str::trim).filter(|s| !s.is_empty()) {
            Some(asked) => {
                let wanted: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
                if let Some(s) = wanted.iter().find(|s| !grantable(s)) {
                    let why = match USER_SCOPES.contains(s) {
                        true => format!("scope {s:?} needs a user's sign-in"),
                        false => format!("scope {s:?} is not available to this client"),
                    };
                    return Err(Refusal::new(ErrorCode::InvalidScope, why).into());
                }
                Ok(wanted.join(" "))
            }
            None => {
                let defaults = match cap {
                    Some(c) => c.to_owned(),
                    None => self.default_scope(resource, metadata),
                };
                Ok(defaults.split(' ').filter(|s| !s.is_empty() && grantable(s)).collect::<Vec<_>>().join(" "))
            }
        }
    }
}

/// The client must be confidential and registered for `grant`: anything else is `unauthorized_client`
/// (RFC 6749 §5.2).
fn may_use(client: &ClientRecord, metadata: &ClientMetadata, grant: &str) -> Result<(), AuthzError> {
    let confidential =
        client.secret_hash.is_some() || metadata.token_endpoint_auth_method == TokenAuthMethod::PrivateKeyJwt;
    if !confidential {
        return Err(Refusal::new(ErrorCode::UnauthorizedClient, format!("{grant} is for confidential clients")).into());
    }
    if !metadata.grant_types.iter().any(|g| g == grant) {
        return Err(Refusal::new(ErrorCode::UnauthorizedClient, format!("this client may not use {grant}")).into());
    }
    Ok(())
}
