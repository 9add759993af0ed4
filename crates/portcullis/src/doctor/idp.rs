//! A known IdP behind the server: recognised from its metadata document, named with the portcullis
//! preset that absorbs its quirks, and each quirk that stops MCP clients named with what to change
//! (at the IdP, or by putting portcullis in front in gateway mode).

use portcullis_config::Idp;
use portcullis_config::idp::{AccessTokens, Registration, ResourceParameter};
use serde_json::Value;

use super::{Report, Status};

const I: &str = "identity provider";

pub(super) fn check(meta: &Value, r: &mut Report) {
    let Some(idp) = Idp::recognise_metadata(meta) else {
        r.add(I, "idp.recognised", Status::Skipped, "not one of the IdPs portcullis has a preset for", None);
        return;
    };
    let f = idp.facts();
    let gateway = format!(
        "put portcullis in front in gateway mode: `portcullis init --idp {} --mode gateway` (MCP clients then \
         register with portcullis, users still sign in at {})",
        f.name, f.title
    );
    r.pass(I, "idp.recognised", format!("{}: portcullis preset idp = \"{}\"; {}", f.title, f.name, f.mode));
    // A metadata-document flag counts only where the IdP fetches documents itself (Auth0's covers
    // documents an administrator imports).
    let endpoint = meta.get("registration_endpoint").is_some();
    let documents = meta.get("client_id_metadata_document_supported") == Some(&Value::Bool(true));
    match f.registration {
        Registration::Open if endpoint || documents => {
            r.pass(I, "idp.registration", "MCP clients can register (dynamic registration or metadata documents)");
        }
        Registration::WhenEnabled if endpoint => {
            r.pass(I, "idp.registration", "dynamic client registration is on: MCP clients can register");
        }
        Registration::None if endpoint => r.warn(
            I,
            "idp.registration",
            format!(
                "a registration endpoint is advertised, but {} refuses anonymous registration unless its \
                 administrator opened it (`doctor --register` tries it)",
                f.title
            ),
            &gateway,
        ),
        Registration::WhenEnabled => r.fail(
            I,
            "idp.registration",
            format!("dynamic client registration is off at {}: MCP clients cannot register", f.title),
            &format!("switch it on for the tenant ({}), or {gateway}", registration_setting(idp)),
        ),
        _ => r.fail(
            I,
            "idp.registration",
            format!("{} offers no client registration MCP clients can use by themselves", f.title),
            &gateway,
        ),
    }
    match f.resource {
        ResourceParameter::Refused => r.fail(
            I,
            "idp.resource",
            format!(
                "{} refuses the RFC 8707 resource parameter MCP clients send with every authorization request \
                 (Entra ID: AADSTS9010010)",
                f.title
            ),
            &gateway,
        ),
        ResourceParameter::Ignored => r.warn(
            I,
            "idp.resource",
            format!("{} ignores the RFC 8707 resource parameter: its tokens' aud is not this server's URL", f.title),
            &format!(
                "{}; or verify tokens with portcullis's {} preset, which accepts the audience {} uses",
                audience_setting(idp),
                f.name,
                f.title
            ),
        ),
        ResourceParameter::Honoured => {
            r.pass(I, "idp.resource", "the RFC 8707 resource parameter becomes the token's audience");
        }
    }
    match f.access_tokens {
        AccessTokens::Opaque => r.fail(
            I,
            "idp.tokens",
            format!(
                "{}'s access tokens are opaque: only the IdP's token-info endpoint can say whom one was issued for",
                f.title
            ),
            &gateway,
        ),
        AccessTokens::JwtWithoutAudience => r.warn(
            I,
            "idp.tokens",
            format!("{}'s access tokens name no audience of this server: only their client ties them to it", f.title),
            &format!("accept only the clients made for this server (the {} preset's clients), or {gateway}", f.name),
        ),
        AccessTokens::Jwt => r.pass(I, "idp.tokens", "access tokens are JWTs the server can verify"),
    }
}

/// Where a tenant switches dynamic registration on.
fn registration_setting(idp: Idp) -> &'static str {
    match idp {
        Idp::Auth0 => "Settings → Advanced → Dynamic Client Registration",
        Idp::Clerk => "Dashboard → OAuth applications → Dynamic client registration",
        _ => "in its administration console",
    }
}

/// How the IdP is made to put this server in `aud`.
fn audience_setting(idp: Idp) -> &'static str {
    match idp {
        Idp::Auth0 => {
            "create an API whose identifier is this server's URL and switch on the Resource Parameter Compatibility Profile"
        }
        Idp::Keycloak => "add an Audience mapper naming this server's URL to the clients' scopes",
        Idp::Okta => "use a custom authorization server whose audience is this server's URL",
        _ => "make the IdP issue tokens whose audience is this server's URL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn statuses(meta: Value) -> Vec<(&'static str, Status)> {
        let mut r = Report::default();
        check(&meta, &mut r);
        r.0.iter().map(|c| (c.id, c.status)).collect()
    }

    #[test]
    fn entra_is_named_with_what_stops_mcp_clients() {
        let meta = json!({
            "issuer": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
            "authorization_endpoint": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/authorize",
        });
        let mut r = Report::default();
        check(&meta, &mut r);
        assert!(r.0[0].detail.starts_with("Microsoft Entra ID: portcullis preset idp = \"entra\""), "{:?}", r.0[0]);
        assert_eq!(
            statuses(meta),
            [
                ("idp.recognised", Status::Pass),
                ("idp.registration", Status::Fail),
                ("idp.resource", Status::Fail),
                ("idp.tokens", Status::Pass)
            ]
        );
    }

    #[test]
    fn custom_domains_are_recognised_by_what_the_document_contains() {
        let keycloak = json!({"issuer": "https://sso.example.com/realms/mcp",
            "authorization_endpoint": "https://sso.example.com/realms/mcp/protocol/openid-connect/auth"});
        assert_eq!(Idp::recognise_metadata(&keycloak), Some(Idp::Keycloak));
        let auth0 = json!({"issuer": "https://login.example.com/", "mfa_challenge_endpoint": "https://login.example.com/mfa/challenge"});
        assert_eq!(Idp::recognise_metadata(&auth0), Some(Idp::Auth0));
        let entra = json!({"issuer": "http://127.0.0.1:9/{tenantid}/v2.0"});
        assert_eq!(Idp::recognise_metadata(&entra), Some(Idp::Entra));
        let cognito = json!({"issuer": "http://127.0.0.1:9/eu-west-1_AbCdEf123"});
        assert_eq!(Idp::recognise_metadata(&cognito), Some(Idp::Cognito));
        assert_eq!(Idp::recognise_metadata(&json!({"issuer": "https://idp.example.com"})), None);
    }

    #[test]
    fn auth0_with_registration_on_is_warned_only_about_its_audience() {
        let meta = json!({"issuer": "https://example.us.auth0.com/", "registration_endpoint": "https://example.us.auth0.com/oidc/register"});
        assert_eq!(
            statuses(meta),
            [
                ("idp.recognised", Status::Pass),
                ("idp.registration", Status::Pass),
                ("idp.resource", Status::Warn),
                ("idp.tokens", Status::Pass)
            ]
        );
        let off = json!({"issuer": "https://example.us.auth0.com/"});
        assert!(statuses(off).contains(&("idp.registration", Status::Fail)));
    }

    #[test]
    fn an_advertised_registration_the_idp_refuses_by_default_is_a_warning() {
        let keycloak = json!({"issuer": "https://sso.example.com/realms/mcp",
            "registration_endpoint": "https://sso.example.com/realms/mcp/clients-registrations/openid-connect"});
        assert!(statuses(keycloak).contains(&("idp.registration", Status::Warn)));
        // Auth0's metadata-document flag covers documents an administrator imports, not MCP clients'.
        let auth0 = json!({"issuer": "https://example.us.auth0.com/", "client_id_metadata_document_supported": true});
        assert!(statuses(auth0).contains(&("idp.registration", Status::Fail)));
        let google = json!({"issuer": "https://accounts.google.com"});
        let google = statuses(google);
        assert!(google.contains(&("idp.resource", Status::Warn)) && google.contains(&("idp.tokens", Status::Fail)));
    }

    #[test]
    fn an_unknown_idp_is_skipped() {
        assert_eq!(statuses(json!({"issuer": "https://idp.example.com"})), [("idp.recognised", Status::Skipped)]);
    }
}
