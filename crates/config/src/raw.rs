//! The configuration file exactly as written: serde shapes with `deny_unknown_fields`, so a typo is an
//! error rather than a silently ignored key. [`crate::resolve`] turns this into a validated `Config`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Declares a raw table that also takes an IdP preset (`idp = "<name>"`) and the values identifying a
/// tenant there, the same keys wherever a preset may be used.
macro_rules! with_preset {
    ($(#[$meta:meta])* pub(crate) struct $name:ident { $($field:tt)* }) => {
        $(#[$meta])*
        pub(crate) struct $name {
            $($field)*
            pub(crate) idp: Option<String>,
            pub(crate) tenant: Option<String>,
            #[serde(default)]
            pub(crate) tenants: Vec<String>,
            pub(crate) domain: Option<String>,
            pub(crate) realm: Option<String>,
            pub(crate) authorization_server: Option<String>,
            pub(crate) application: Option<String>,
            pub(crate) region: Option<String>,
            pub(crate) user_pool_id: Option<String>,
            pub(crate) zone: Option<String>,
            pub(crate) project_id: Option<String>,
            pub(crate) mcp_server: Option<String>,
        }

        impl $name {
            pub(crate) fn preset_params(&self) -> crate::idp::PresetParams {
                crate::idp::PresetParams {
                    tenant: self.tenant.clone(),
                    tenants: self.tenants.clone(),
                    domain: self.domain.clone(),
                    realm: self.realm.clone(),
                    authorization_server: self.authorization_server.clone(),
                    application: self.application.clone(),
                    region: self.region.clone(),
                    user_pool_id: self.user_pool_id.clone(),
                    zone: self.zone.clone(),
                    project_id: self.project_id.clone(),
                    mcp_server: self.mcp_server.clone(),
                }
            }
        }
    };
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) public_url: Option<String>,
    #[serde(default)]
    pub(crate) extra_public_urls: Vec<String>,
    pub(crate) listen: Option<String>,
    pub(crate) landing_page: Option<bool>,
    #[serde(default)]
    pub(crate) log: RawLog,
    #[serde(default)]
    pub(crate) proxy: RawProxy,
    #[serde(default)]
    pub(crate) origins: RawOrigins,
    #[serde(default)]
    pub(crate) dangerous: RawDangerous,
    #[serde(default)]
    pub(crate) server: Vec<RawServer>,
    pub(crate) gateway: Option<RawGateway>,
    #[serde(default)]
    pub(crate) store: RawStore,
    #[serde(default)]
    pub(crate) metrics: crate::observe::RawMetrics,
    #[serde(default)]
    pub(crate) audit: crate::observe::RawAudit,
    #[serde(default)]
    pub(crate) traces: crate::observe::RawTraces,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) url: Option<String>,
    pub(crate) max_connections: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) issuer: Option<String>,
    pub(crate) signing_alg: Option<String>,
    pub(crate) operator_key_file: Option<String>,
    pub(crate) access_token_ttl_secs: Option<u64>,
    pub(crate) refresh_token_ttl_secs: Option<u64>,
    pub(crate) session_max_secs: Option<u64>,
    pub(crate) refresh_reuse_grace_secs: Option<u64>,
    pub(crate) code_ttl_secs: Option<u64>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) registration: Option<bool>,
    pub(crate) registrations_per_minute: Option<u32>,
    pub(crate) registrations_per_hour: Option<u32>,
    pub(crate) unused_registration_ttl_secs: Option<u64>,
    pub(crate) idle_registration_ttl_secs: Option<u64>,
    pub(crate) client_metadata_documents: Option<bool>,
    pub(crate) templates_dir: Option<String>,
    pub(crate) keys_reload_secs: Option<u64>,
    #[serde(default)]
    pub(crate) clients: Vec<RawClient>,
    pub(crate) upstream: Option<RawUpstream>,
    #[serde(default)]
    pub(crate) trusted_idps: Vec<RawTrustedIdp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrustedIdp {
    pub(crate) issuer: Option<String>,
    pub(crate) jwks_uri: Option<String>,
    #[serde(default)]
    pub(crate) clients: Vec<String>,
    pub(crate) subject_claim: Option<String>,
    pub(crate) subject_prefix: Option<String>,
}

with_preset! {
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub(crate) kind: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) authorization_endpoint: Option<String>,
    pub(crate) token_endpoint: Option<String>,
    pub(crate) userinfo_endpoint: Option<String>,
    pub(crate) subject_field: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_secret_file: Option<String>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) forward_token_header: Option<String>,
    /// The API whose tokens are asked for (Auth0's `audience`, Entra ID's App ID URI).
    pub(crate) audience: Option<String>,
}
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClient {
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_secret_file: Option<String>,
    #[serde(default)]
    pub(crate) redirect_uris: Vec<String>,
    pub(crate) name: Option<String>,
    pub(crate) grant_types: Option<Vec<String>>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) jwks: Option<String>,
    pub(crate) jwks_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) format: Option<String>,
    pub(crate) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub(crate) connect_timeout_ms: Option<u64>,
    pub(crate) header_timeout_ms: Option<u64>,
    pub(crate) max_upstream_requests: Option<usize>,
    pub(crate) idle_timeout_ms: Option<u64>,
    pub(crate) max_body_bytes: Option<u64>,
    pub(crate) shutdown_grace_ms: Option<u64>,
    pub(crate) client_header_timeout_ms: Option<u64>,
    pub(crate) client_body_timeout_ms: Option<u64>,
    pub(crate) client_send_timeout_ms: Option<u64>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_address: Option<usize>,
    pub(crate) failed_tokens_per_minute: Option<u32>,
    #[serde(default)]
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) forwarded_header: Option<String>,
    pub(crate) workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOrigins {
    pub(crate) allowed: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDangerous {
    #[serde(default)]
    pub(crate) allow_unauthenticated: bool,
    pub(crate) auto_approve_as: Option<String>,
    #[serde(default)]
    pub(crate) client_metadata_from_loopback: bool,
    pub(crate) idp_origin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub(crate) path: Option<String>,
    pub(crate) upstream: Option<String>,
    #[serde(default)]
    pub(crate) upstream_http2: bool,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
    pub(crate) verify: Option<RawVerify>,
    #[serde(default)]
    pub(crate) gateway: bool,
    #[serde(default)]
    pub(crate) tool_scopes: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub(crate) identity_headers: BTreeMap<String, String>,
    /// `[[server.policy]]`: who may call which tool.
    #[serde(default)]
    pub(crate) policy: Vec<RawRule>,
    /// `[server.policy_claims]`: where policy variables come from.
    pub(crate) policy_claims: Option<RawPolicyClaims>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) tools: Vec<String>,
    #[serde(default)]
    pub(crate) resources: Vec<String>,
    #[serde(default)]
    pub(crate) prompts: Vec<String>,
    pub(crate) allow_if: Option<String>,
    pub(crate) deny_if: Option<String>,
    #[serde(default)]
    pub(crate) scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicyClaims {
    pub(crate) groups: Option<String>,
    pub(crate) roles: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) tenant: Option<String>,
    pub(crate) email_verified: Option<String>,
    pub(crate) email_always_verified: Option<bool>,
}

with_preset! {
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVerify {
    pub(crate) issuer: Option<String>,
    #[serde(default)]
    pub(crate) extra_issuers: Vec<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    #[serde(default)]
    pub(crate) resource_claim_audiences: Vec<String>,
    pub(crate) leeway_secs: Option<u64>,
    pub(crate) cache_secs: Option<u64>,
    #[serde(default)]
    pub(crate) require_at_jwt: bool,
    #[serde(default)]
    pub(crate) algorithms: Option<Vec<String>>,
    pub(crate) hs256_secret: Option<String>,
    pub(crate) hs256_secret_file: Option<String>,
    pub(crate) jwks_uri: Option<String>,
    pub(crate) introspection: Option<RawIntrospection>,
    /// The clients registered at the IdP whose tokens are accepted (empty: any).
    #[serde(default)]
    pub(crate) clients: Vec<String>,
}
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntrospection {
    pub(crate) endpoint: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) client_secret_file: Option<String>,
}
