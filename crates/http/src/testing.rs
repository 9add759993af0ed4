//! What the crate's unit tests share.

use std::sync::Arc;

use portcullis_oauth::VerifiedToken;
use serde_json::{Value, json};

/// A token verified as the gate verifies them (only the verifier makes a `VerifiedToken`).
pub(crate) fn verified(extra: Value) -> Arc<VerifiedToken> {
    use portcullis_oauth::{JwksCache, KeySet, Verifier, VerifierConfig};
    use portcullis_test_support::{TestKey, jwks, mint};
    const NOW: u64 = 1_800_000_000;
    let config = portcullis_config::Config::from_toml(
        r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
[server.verify]
issuer = "https://idp.example.com/"
"#,
        &portcullis_config::MapEnv::default(),
    )
    .unwrap();
    let server = &config.servers[0];
    let portcullis_config::ServerAuth::Verify(v) = &server.auth else { panic!("verify mode") };
    let clock = Arc::new(portcullis_types::ManualClock::at(NOW));
    let (set, _) = KeySet::parse(jwks(&[TestKey::Es256]).to_string().as_bytes()).unwrap();
    let verifier =
        Verifier::new(VerifierConfig::for_server(server, v), JwksCache::fixed(set, clock.clone()), clock, None);
    let mut claims = json!({"iss": "https://idp.example.com/", "sub": "u", "aud": "https://mcp.example.com/mcp",
        "exp": NOW + 600, "iat": NOW});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let token = mint(TestKey::Es256, &claims);
    futures_util::FutureExt::now_or_never(verifier.verify(&token)).unwrap().unwrap()
}
