//! IdP presets: what each derives from its few parameters, in verify mode and as the gateway's upstream,
//! and the errors for parameters that are missing, malformed or belong to another preset.

#![allow(clippy::unwrap_used)]

use portcullis_config::{
    Config, Idp, MapEnv, ServerAuth, TokenAuth, TokenInfoKind, UpstreamKind, UpstreamLogin, VerifyConfig,
};

fn verify(preset: &str) -> Result<VerifyConfig, Vec<String>> {
    let text = format!(
        r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
[server.verify]
{preset}
"#
    );
    match Config::from_toml(&text, &MapEnv::default()) {
        Ok(c) => match &c.servers[0].auth {
            ServerAuth::Verify(v) => Ok((**v).clone()),
            _ => panic!("verify mode expected"),
        },
        Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
    }
}

fn upstream(preset: &str, extra: &str) -> Result<UpstreamLogin, Vec<String>> {
    let text = format!(
        r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
gateway = true
[gateway.upstream]
client_id = "portcullis"
client_secret = "s3cret"
{preset}
{extra}
"#
    );
    match Config::from_toml(&text, &MapEnv::default()) {
        Ok(c) => Ok(c.gateway.unwrap().upstream.unwrap()),
        Err(e) => Err(e.0.iter().map(ToString::to_string).collect()),
    }
}

fn issuers(v: &VerifyConfig) -> Vec<String> {
    std::iter::once(&v.issuer).chain(&v.extra_issuers).map(ToString::to_string).collect()
}

fn has(errors: &[String], path: &str, words: &str) {
    assert!(
        errors.iter().any(|e| e.starts_with(&format!("{path}: ")) && e.contains(words)),
        "no error at {path} saying {words:?} in {errors:#?}"
    );
}

#[test]
fn entra_single_tenant_accepts_v1_and_v2_issuers() {
    let v = verify(
        r#"idp = "entra"
tenant = "72F988BF-86F1-41AF-91AB-2D7CD011DB47"
audiences = ["api://mcp", "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"]
clients = ["11111111-2222-3333-4444-555555555555"]"#,
    )
    .unwrap();
    assert_eq!(
        issuers(&v),
        [
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
            "https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/"
        ]
    );
    assert_eq!(v.audiences, ["api://mcp", "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"]);
    assert_eq!(v.preset, Some(Idp::Entra));
    assert!(v.tenants.is_none() && v.published_issuer.is_none());
}

#[test]
fn entra_multi_tenant_needs_an_allow_list_and_checks_tid() {
    let errs = verify(
        r#"idp = "entra"
tenant = "organizations"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.tenants", "every Entra ID tenant in the world");
    let v = verify(
        r#"idp = "entra"
tenant = "organizations"
tenants = ["72f988bf-86f1-41af-91ab-2d7cd011db47"]
clients = ["c"]"#,
    )
    .unwrap();
    assert_eq!(v.issuer.as_str(), "https://login.microsoftonline.com/organizations/v2.0");
    assert_eq!(v.published_issuer.as_deref(), Some("https://login.microsoftonline.com/{tenantid}/v2.0"));
    let t = v.tenants.unwrap();
    let ours = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    assert!(t.accepts(&format!("https://login.microsoftonline.com/{ours}/v2.0"), Some(ours)));
    assert!(t.accepts(&format!("https://sts.windows.net/{ours}/"), Some(ours)));
    let theirs = "0b5c6f2e-1f9a-4c3e-9b1d-7a2e4c6d8f10";
    assert!(!t.accepts(&format!("https://login.microsoftonline.com/{theirs}/v2.0"), Some(theirs)));
    assert!(!t.accepts(&format!("https://login.microsoftonline.com/{theirs}/v2.0"), Some(ours)), "iss and tid agree");
    assert!(!t.accepts(&format!("https://login.microsoftonline.com/{ours}/v2.0"), None));
}

#[test]
fn entra_tenant_must_be_a_guid() {
    let errs = verify(
        r#"idp = "entra"
tenant = "contoso.onmicrosoft.com"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.tenant", "not by a domain");
    let errs = verify(
        r#"idp = "entra"
tenant = "72f988bf-86f1-41af-91ab"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.tenant", "is not a Directory (tenant) ID");
    let errs = verify(
        r#"idp = "entra"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.tenant", "required");
    let errs = verify(
        r#"idp = "entra"
tenant = "organizations"
tenants = ["contoso"]
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.tenants[0]", "not a tenant id");
}

#[test]
fn idps_without_registration_need_the_clients_registered_there() {
    for (preset, title) in [
        ("idp = \"entra\"\ntenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"", "Microsoft Entra ID"),
        ("idp = \"okta\"\ndomain = \"example.okta.com\"", "Okta"),
        ("idp = \"keycloak\"\ndomain = \"sso.example.com\"\nrealm = \"mcp\"", "Keycloak"),
        ("idp = \"cognito\"\nregion = \"eu-west-1\"\nuser_pool_id = \"eu-west-1_AbCdEf123\"", "Amazon Cognito"),
        ("idp = \"authentik\"\ndomain = \"auth.example.com\"\napplication = \"mcp\"", "authentik"),
    ] {
        let errs = verify(preset).unwrap_err();
        has(&errs, "server[0].verify.clients", &format!("{title} has no client registration"));
        has(&errs, "server[0].verify.clients", "use gateway mode");
        assert!(verify(&format!("{preset}\nclients = [\"app\"]")).is_ok(), "{preset}");
    }
}

#[test]
fn opaque_token_idps_are_refused_in_verify_mode_unless_their_token_info_is_asked() {
    for (name, title, how) in
        [("google", "Google", "list in clients"), ("github", "GitHub", "give [server.verify.introspection]")]
    {
        let errs = verify(&format!("idp = \"{name}\"")).unwrap_err();
        has(&errs, "server[0].verify.idp", &format!("{title} issues opaque access tokens"));
        has(&errs, "server[0].verify.idp", &format!("[gateway.upstream] idp = \"{name}\""));
        has(&errs, "server[0].verify.idp", how);
    }
    // Google: each token's tokeninfo aud must be one of the listed clients.
    let google = verify("idp = \"google\"\nclients = [\"123.apps.googleusercontent.com\"]").unwrap();
    let i = google.introspection.unwrap();
    assert_eq!(
        (i.endpoint.as_str(), i.kind),
        ("https://oauth2.googleapis.com/tokeninfo", TokenInfoKind::GoogleTokenInfo)
    );
    assert!(i.client.is_none());
    assert_eq!(google.audiences, ["123.apps.googleusercontent.com"]);
    // GitHub: the check-token API of the app made for this server, which is then the audience.
    let github =
        verify("idp = \"github\"\n[server.verify.introspection]\nclient_id = \"Iv1.abc123\"\nclient_secret = \"s\"")
            .unwrap();
    let i = github.introspection.unwrap();
    assert_eq!(i.endpoint.as_str(), "https://api.github.com/applications/Iv1.abc123/token");
    assert_eq!(i.kind, TokenInfoKind::GithubCheckToken);
    assert_eq!(github.audiences, ["Iv1.abc123"]);
    let errs = verify(
        "idp = \"github\"\n[server.verify.introspection]\nendpoint = \"https://x.example\"\nclient_id = \"Iv1.abc\"",
    )
    .unwrap_err();
    has(&errs, "server[0].verify.introspection.endpoint", "set by the github preset");
    has(&errs, "server[0].verify.introspection.client_secret", "required");
}

#[test]
fn cognito_binds_by_client_id_and_token_use() {
    let v = verify(
        r#"idp = "cognito"
region = "eu-west-1"
user_pool_id = "eu-west-1_AbCdEf123"
clients = ["4kq2abcdefgh"]"#,
    )
    .unwrap();
    assert_eq!(v.issuer.as_str(), "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123");
    assert_eq!(v.client_id_audiences, ["4kq2abcdefgh"]);
    assert_eq!(v.required_claims, [("token_use".to_owned(), "access".to_owned())]);
    assert!(v.audiences.is_empty(), "Cognito's client id never counts as an aud");
}

#[test]
fn cognito_parameters_are_checked_against_each_other() {
    let errs = verify(
        r#"idp = "cognito"
region = "eu-west-1"
user_pool_id = "us-east-1_AbCdEf123"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.user_pool_id", "is a pool in region \"us-east-1\", not in region \"eu-west-1\"");
    let errs = verify(
        r#"idp = "cognito"
region = "eu-wets-1"
user_pool_id = "eu-wets-1_AbCdEf123"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.region", "not an AWS region where Cognito user pools run");
    let errs = verify(
        r#"idp = "cognito"
region = "eu-west-1"
user_pool_id = "AbCdEf123"
clients = ["c"]"#,
    )
    .unwrap_err();
    has(&errs, "server[0].verify.user_pool_id", "is not a user pool id");
    let errs = verify("idp = \"cognito\"\nclients = [\"c\"]").unwrap_err();
    has(&errs, "server[0].verify.region", "required");
    has(&errs, "server[0].verify.user_pool_id", "required");
}

#[test]
fn clerk_tokens_without_audience_are_bound_by_their_client() {
    let errs = verify("idp = \"clerk\"\ndomain = \"clerk.example.com\"").unwrap_err();
    has(&errs, "server[0].verify.clients", "access tokens name no audience of this server");
    // Stytch's name the project, not the server: the same.
    let errs =
        verify("idp = \"stytch\"\ndomain = \"x.customers.stytch.com\"\nproject_id = \"project-live-1\"").unwrap_err();
    has(&errs, "server[0].verify.clients", "required with idp = \"stytch\"");
    let v = verify("idp = \"clerk\"\ndomain = \"clerk.example.com\"\nclients = [\"oauth-app-1\"]").unwrap();
    assert_eq!(v.client_id_audiences, ["oauth-app-1"]);
}

#[test]
fn authentik_tokens_name_the_client_as_audience() {
    let v = verify(
        r#"idp = "authentik"
domain = "auth.example.com"
application = "mcp"
clients = ["Xy12clientid"]"#,
    )
    .unwrap();
    assert_eq!(v.issuer.as_str(), "https://auth.example.com/application/o/mcp/");
    assert_eq!(v.audiences, ["Xy12clientid"]);
}

#[test]
fn keycard_zone_is_an_audience_only_with_a_resource_claim() {
    let v = verify("idp = \"keycard\"\nzone = \"z1a2b3c4d5\"").unwrap();
    assert_eq!(v.issuer.as_str(), "https://z1a2b3c4d5.keycard.cloud");
    assert_eq!(v.resource_claim_audiences, ["https://z1a2b3c4d5.keycard.cloud"]);
    assert!(v.audiences.is_empty());
}

#[test]
fn domain_presets_derive_their_issuers() {
    for (preset, issuer) in [
        ("idp = \"auth0\"\ndomain = \"example.us.auth0.com\"", "https://example.us.auth0.com/"),
        ("idp = \"okta\"\ndomain = \"example.okta.com\"\nclients = [\"c\"]", "https://example.okta.com/oauth2/default"),
        (
            "idp = \"okta\"\ndomain = \"example.okta.com\"\nauthorization_server = \"aus1a2b3c4\"\nclients = [\"c\"]",
            "https://example.okta.com/oauth2/aus1a2b3c4",
        ),
        (
            "idp = \"keycloak\"\ndomain = \"sso.example.com\"\nrealm = \"mcp\"\nclients = [\"c\"]",
            "https://sso.example.com/realms/mcp",
        ),
        (
            "idp = \"keycloak\"\ndomain = \"sso.example.com/auth\"\nrealm = \"mcp\"\nclients = [\"c\"]",
            "https://sso.example.com/auth/realms/mcp",
        ),
        ("idp = \"clerk\"\ndomain = \"clerk.example.com\"\nclients = [\"c\"]", "https://clerk.example.com"),
        ("idp = \"workos\"\ndomain = \"example.authkit.app\"", "https://example.authkit.app"),
        ("idp = \"descope\"\nproject_id = \"P2abc123def456\"", "https://api.descope.com/v1/apps/P2abc123def456"),
        (
            "idp = \"descope\"\nproject_id = \"P2abc123def456\"\nmcp_server = \"MS2xyz\"",
            "https://api.descope.com/v1/apps/agentic/P2abc123def456/MS2xyz",
        ),
        (
            "idp = \"stytch\"\ndomain = \"example.customers.stytch.com\"\nproject_id = \"project-live-0a1b\"\nclients = [\"c\"]",
            "https://example.customers.stytch.com",
        ),
    ] {
        let v = verify(preset).unwrap_or_else(|e| panic!("{preset}: {e:?}"));
        assert_eq!(v.issuer.as_str(), issuer, "{preset}");
    }
    let okta = verify("idp = \"okta\"\ndomain = \"example.okta.com\"\nclients = [\"c\"]").unwrap();
    assert_eq!(okta.audiences, ["api://default"]);
}

#[test]
fn bad_preset_parameters_name_the_path_and_what_is_expected() {
    let errs = verify("idp = \"auth0\"").unwrap_err();
    has(&errs, "server[0].verify.domain", "required: the IdP's domain");
    let errs = verify("idp = \"auth0\"\ndomain = \"https://example.us.auth0.com/\"").unwrap_err();
    has(&errs, "server[0].verify.domain", "the host name only, without https://");
    let errs = verify("idp = \"auth0\"\ndomain = \"exa mple.auth0.com\"").unwrap_err();
    has(&errs, "server[0].verify.domain", "is not a domain");
    let errs =
        verify("idp = \"okta\"\ndomain = \"example.okta.com\"\nauthorization_server = \"org\"\nclients = [\"c\"]")
            .unwrap_err();
    has(&errs, "server[0].verify.authorization_server", "meant for Okta's own APIs only");
    let errs = verify("idp = \"auth0\"\ndomain = \"example.us.auth0.com\"\nrealm = \"mcp\"").unwrap_err();
    has(&errs, "server[0].verify.realm", "not a parameter of the auth0 preset (its parameters: domain)");
    let errs = verify("idp = \"okto\"").unwrap_err();
    has(&errs, "server[0].verify.idp", "\"okto\" is not a known IdP preset (known: entra, auth0, okta");
    let errs = verify("idp = \"auth0\"\ndomain = \"example.us.auth0.com\"\nissuer = \"https://example.us.auth0.com/\"")
        .unwrap_err();
    has(&errs, "server[0].verify.issuer", "set by the auth0 preset");
    let errs = verify("issuer = \"https://idp.example.com\"\ntenant = \"x\"").unwrap_err();
    has(&errs, "server[0].verify.tenant", "set idp = \"<name>\" too");
    let errs = verify("idp = \"descope\"\nproject_id = \"my-project\"").unwrap_err();
    has(&errs, "server[0].verify.project_id", "not a Descope project id");
    let errs = verify("idp = \"keycard\"\nzone = \"my zone\"").unwrap_err();
    has(&errs, "server[0].verify.zone", "not a zone id");
}

#[test]
fn generic_oidc_is_the_plain_configuration() {
    let v = verify("idp = \"generic-oidc\"\nissuer = \"https://idp.example.com\"").unwrap();
    assert_eq!(v.issuer.as_str(), "https://idp.example.com");
    let errs = verify("idp = \"generic-oidc\"").unwrap_err();
    has(&errs, "server[0].verify.issuer", "required");
}

#[test]
fn upstream_presets_derive_endpoints_parameters_and_client_authentication() {
    let github = upstream("idp = \"github\"", "").unwrap();
    let UpstreamKind::OAuth2 { authorization_endpoint, token_endpoint, userinfo_endpoint, subject_field } =
        &github.kind
    else {
        panic!("GitHub is plain OAuth 2")
    };
    assert_eq!(authorization_endpoint.as_str(), "https://github.com/login/oauth/authorize");
    assert_eq!(token_endpoint.as_str(), "https://github.com/login/oauth/access_token");
    assert_eq!(userinfo_endpoint.as_str(), "https://api.github.com/user");
    assert_eq!(subject_field, "id");
    assert_eq!(github.token_auth, TokenAuth::ClientSecretPost);

    // Google: a refresh token only with access_type=offline, asked for only when the token is kept.
    let google = upstream("idp = \"google\"", "").unwrap();
    assert!(google.authorization_params.is_empty());
    let kept = upstream("idp = \"google\"", "forward_token_header = \"authorization\"").unwrap();
    assert_eq!(
        kept.authorization_params,
        [("access_type".to_owned(), "offline".to_owned()), ("prompt".to_owned(), "consent".to_owned())]
    );

    // Auth0: the API is named by `audience`; refresh needs offline_access.
    let auth0 = upstream(
        "idp = \"auth0\"\ndomain = \"example.us.auth0.com\"",
        "audience = \"https://api.example.com\"\nforward_token_header = \"authorization\"",
    )
    .unwrap();
    assert!(auth0.authorization_params.contains(&("audience".to_owned(), "https://api.example.com".to_owned())));
    assert!(auth0.scopes.contains(&"offline_access".to_owned()));

    // Entra ID: the API is named in the scope, never by resource or audience.
    let entra = upstream(
        "idp = \"entra\"\ntenant = \"72f988bf-86f1-41af-91ab-2d7cd011db47\"",
        "audience = \"api://mcp\"\nforward_token_header = \"authorization\"",
    )
    .unwrap();
    assert!(entra.authorization_params.is_empty());
    assert_eq!(entra.scopes, ["openid", "email", "profile", "offline_access", "api://mcp/.default"]);
    let UpstreamKind::Oidc { issuer, .. } = &entra.kind else { panic!("OpenID Connect") };
    assert_eq!(issuer.as_str(), "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0");

    // Multi-tenant: the ID token's issuer is checked against the allowed tenants.
    let multi =
        upstream("idp = \"entra\"\ntenant = \"common\"\ntenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]", "")
            .unwrap();
    let UpstreamKind::Oidc { published_issuer, tenants, .. } = &multi.kind else { panic!("OpenID Connect") };
    assert_eq!(published_issuer.as_deref(), Some("https://login.microsoftonline.com/{tenantid}/v2.0"));
    assert!(tenants.is_some());
    // The tenant is read off the ID token: scopes without `openid` would sign users in by userinfo alone.
    let errs = upstream(
        "idp = \"entra\"\ntenant = \"common\"\ntenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]",
        "scopes = [\"User.Read\"]",
    )
    .unwrap_err();
    has(&errs, "gateway.upstream.scopes", "must include \"openid\"");

    // The preset decides the endpoints: naming them too is a mistake.
    let errs = upstream("idp = \"github\"", "token_endpoint = \"https://github.com/token\"").unwrap_err();
    has(&errs, "gateway.upstream.token_endpoint", "set by the github preset");
}

#[test]
fn test_origin_moves_every_derived_url_to_loopback_only() {
    let text = r#"
public_url = "http://127.0.0.1:8080"
[dangerous]
idp_origin = "http://127.0.0.1:9000"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:3001/mcp"
[server.verify]
idp = "entra"
tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
clients = ["c"]
"#;
    let c = Config::from_toml(text, &MapEnv::default()).unwrap();
    let ServerAuth::Verify(v) = &c.servers[0].auth else { panic!("verify") };
    assert_eq!(
        issuers(v),
        [
            "http://127.0.0.1:9000/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
            "http://127.0.0.1:9000/72f988bf-86f1-41af-91ab-2d7cd011db47/"
        ]
    );
    let elsewhere = text.replace("idp_origin = \"http://127.0.0.1:9000\"", "idp_origin = \"https://idp.example.com\"");
    let errs: Vec<String> =
        Config::from_toml(&elsewhere, &MapEnv::default()).unwrap_err().0.iter().map(ToString::to_string).collect();
    has(&errs, "dangerous.idp_origin", "must be a loopback http origin");
}

#[test]
fn every_preset_is_recognised_from_its_issuer() {
    for (issuer, idp) in [
        ("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", Idp::Entra),
        ("https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/", Idp::Entra),
        ("https://example.us.auth0.com/", Idp::Auth0),
        ("https://example.okta.com/oauth2/default", Idp::Okta),
        ("https://sso.example.com/realms/mcp", Idp::Keycloak),
        ("https://accounts.google.com", Idp::Google),
        ("https://github.com", Idp::Github),
        ("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123", Idp::Cognito),
        ("https://auth.example.com/application/o/mcp/", Idp::Authentik),
        ("https://clerk.example.com", Idp::Clerk),
        ("https://example.authkit.app", Idp::Workos),
        ("https://api.descope.com/v1/apps/P2abc", Idp::Descope),
        ("https://example.customers.stytch.com", Idp::Stytch),
        ("https://z1.keycard.cloud", Idp::Keycard),
    ] {
        assert_eq!(Idp::recognise(issuer), Some(idp), "{issuer}");
    }
    assert_eq!(Idp::recognise("https://idp.example.com"), None);
    assert_eq!(Idp::all().count(), 14);
}
