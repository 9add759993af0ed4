//! Signing keys, upstream tokens, housekeeping, and what survives a restart.

use portcullis_store::{
    ClientRecord, ClientSource, CodeRedemption, ConsentRecord, KeyRecord, PendingRecord, Rotation, StoreError,
    UpstreamTokenRecord, UserRecord,
};

use super::{NOW, client, code, h, refresh};
use crate::harness::Backend;

const WINDOW: i64 = portcullis_store::CODE_REPLAY_WINDOW;

fn key(kid: &str, created_at: i64) -> KeyRecord {
    KeyRecord {
        kid: kid.into(),
        alg: "ES256".into(),
        public_jwk: serde_json::json!({ "kty": "EC", "crv": "P-256", "kid": kid, "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }),
        // Every byte value, so that nothing on the way treats the blob as text.
        private_sealed: (0..=255).collect(),
        created_at,
        not_before: created_at + 300,
        retired_at: None,
    }
}

pub(crate) async fn keys(b: &mut Backend) {
    let s = &b.store;
    let (newest, oldest, tied) = (key("k1", NOW), key("k0", NOW - 100), key("a-key", NOW));
    for k in [&newest, &oldest, &tied] {
        s.put_key(k.clone()).await.unwrap();
    }
    assert_eq!(s.put_key(key("k1", NOW + 1)).await, Err(StoreError::Conflict("key")));
    assert_eq!(s.list_keys().await.unwrap(), vec![oldest.clone(), tied.clone(), newest.clone()]);

    assert!(s.retire_key("k1", NOW + 5).await.unwrap());
    assert!(!s.retire_key("k1", NOW + 9).await.unwrap(), "the first retirement time stays");
    assert!(!s.retire_key("unknown", NOW).await.unwrap());
    let retired = KeyRecord { retired_at: Some(NOW + 5), ..newest };
    assert_eq!(s.list_keys().await.unwrap(), vec![oldest, tied.clone(), retired.clone()]);

    assert!(s.delete_key("k0").await.unwrap());
    assert!(!s.delete_key("k0").await.unwrap());
    assert_eq!(s.list_keys().await.unwrap(), vec![tied, retired]);
}

pub(crate) async fn upstream_tokens(b: &mut Backend) {
    let s = &b.store;
    let token = UpstreamTokenRecord {
        subject: "user-1".into(),
        provider: "clerk".into(),
        sealed: vec![0, 159, 146, 150, 255],
        expires_at: Some(NOW + 3600),
        updated_at: NOW,
    };
    s.put_upstream_token(token.clone()).await.unwrap();
    assert_eq!(s.get_upstream_token("user-1", "clerk").await.unwrap(), Some(token.clone()));
    assert_eq!(s.get_upstream_token("user-1", "github").await.unwrap(), None);
    assert_eq!(s.get_upstream_token("user-2", "clerk").await.unwrap(), None);

    let renewed = UpstreamTokenRecord { sealed: vec![7; 40], expires_at: None, updated_at: NOW + 60, ..token };
    s.put_upstream_token(renewed.clone()).await.unwrap();
    assert_eq!(s.get_upstream_token("user-1", "clerk").await.unwrap(), Some(renewed));
}

pub(crate) async fn purge(b: &mut Backend) {
    let s = &b.store;
    let flow = |label: &str, expires_at| PendingRecord {
        id_hash: h(label),
        kind: "upstream_state".into(),
        data: serde_json::json!({ "code_verifier": "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" }),
        expires_at,
    };
    s.put_pending(flow("flow-live", NOW + 1)).await.unwrap();
    s.put_pending(flow("flow-expired", NOW)).await.unwrap();

    s.put_code(code("code-gone", "family-a", NOW - WINDOW)).await.unwrap();
    s.put_code(code("code-tombstone", "family-b", NOW - 10)).await.unwrap();
    assert!(matches!(s.redeem_code(&h("code-tombstone"), NOW - 20).await.unwrap(), CodeRedemption::Redeemed(_)));
    s.put_code(code("code-live", "family-c", NOW + 60)).await.unwrap();

    s.put_refresh(refresh("rt-expired", "family-e", NOW)).await.unwrap();
    s.put_refresh(refresh("rt-live", "family-l", NOW + 3600)).await.unwrap();
    s.put_refresh(refresh("rt-revoked-expired", "family-r", NOW - 5)).await.unwrap();
    s.revoke_family("family-r").await.unwrap();
    s.put_refresh(refresh("rt-revoked-live", "family-rl", NOW + 3600)).await.unwrap();
    s.revoke_family("family-rl").await.unwrap();

    let upstream = UpstreamTokenRecord {
        subject: "user-1".into(),
        provider: "clerk".into(),
        sealed: vec![1, 2, 3],
        expires_at: Some(NOW - 100),
        updated_at: NOW - 200,
    };
    s.put_upstream_token(upstream.clone()).await.unwrap();

    // One flow, one code past its replay window, two tokens and their two families.
    assert_eq!(s.purge_expired(NOW).await.unwrap(), 6);
    assert_eq!(s.purge_expired(NOW).await.unwrap(), 0);

    assert!(s.take_pending(&h("flow-live"), NOW).await.unwrap().is_some());
    assert_eq!(s.redeem_code(&h("code-gone"), NOW).await.unwrap(), CodeRedemption::Unknown);
    assert!(matches!(s.redeem_code(&h("code-tombstone"), NOW).await.unwrap(), CodeRedemption::Replayed(_)));
    assert!(s.family_active("family-b").await.unwrap(), "outlives the tombstone");
    assert!(matches!(s.redeem_code(&h("code-live"), NOW).await.unwrap(), CodeRedemption::Redeemed(_)));
    let next = |label: &str, family: &str| refresh(label, family, NOW + 7200);
    assert_eq!(s.rotate_refresh(&h("rt-expired"), next("n1", "family-e"), NOW, 0).await.unwrap(), Rotation::Unknown);
    assert!(!s.family_active("family-e").await.unwrap());
    let revoked_live = s.rotate_refresh(&h("rt-revoked-live"), next("n2", "family-rl"), NOW, 0).await.unwrap();
    assert_eq!(revoked_live, Rotation::Revoked);
    assert!(matches!(
        s.rotate_refresh(&h("rt-live"), next("n3", "family-l"), NOW, 0).await.unwrap(),
        Rotation::Rotated(_)
    ));
    assert_eq!(s.get_upstream_token("user-1", "clerk").await.unwrap(), Some(upstream.clone()), "kept");

    // Long after, only the upstream token is left.
    let later = NOW + 10 * WINDOW;
    assert!(s.purge_expired(later).await.unwrap() > 0);
    assert_eq!(s.redeem_code(&h("code-tombstone"), later).await.unwrap(), CodeRedemption::Unknown);
    for family in ["family-b", "family-c", "family-l", "family-rl"] {
        assert!(!s.family_active(family).await.unwrap(), "{family}");
    }
    assert_eq!(s.get_refresh(&h("n3")).await.unwrap(), None);
    assert_eq!(s.get_upstream_token("user-1", "clerk").await.unwrap(), Some(upstream));
}

/// A restart never loses a registered client, an account, a key or a grant, nor forgets that a code was
/// spent, a token rotated or a family revoked.
pub(crate) async fn survives_restart(b: &mut Backend) {
    let registered = ClientRecord { secret_hash: Some(h("secret")), ..client("client-1") };
    let configured = ClientRecord { source: ClientSource::Configured, ..client("client-configured") };
    let user = UserRecord {
        username: "ada".into(),
        subject: "user-1".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        created_at: NOW,
    };
    let consent = ConsentRecord {
        subject: "user-1".into(),
        client_id: "client-1".into(),
        scope: "mcp:tools".into(),
        granted_at: NOW,
    };
    let signing = KeyRecord { retired_at: Some(NOW), ..key("k1", NOW - 100) };
    let upstream = UpstreamTokenRecord {
        subject: "user-1".into(),
        provider: "clerk".into(),
        sealed: vec![9; 64],
        expires_at: Some(NOW + 3600),
        updated_at: NOW,
    };
    let flow = PendingRecord {
        id_hash: h("flow"),
        kind: "authorize".into(),
        data: serde_json::json!({ "client_id": "client-1" }),
        expires_at: NOW + 600,
    };
    let s = &b.store;
    s.put_client(registered.clone()).await.unwrap();
    s.upsert_client(configured.clone()).await.unwrap();
    s.put_user(user.clone()).await.unwrap();
    s.put_consent(consent.clone()).await.unwrap();
    s.put_key(signing.clone()).await.unwrap();
    s.put_upstream_token(upstream.clone()).await.unwrap();
    s.put_pending(flow.clone()).await.unwrap();
    s.put_code(code("code-fresh", "family-1", NOW + 60)).await.unwrap();
    s.put_code(code("code-spent", "family-2", NOW + 60)).await.unwrap();
    s.redeem_code(&h("code-spent"), NOW).await.unwrap();
    s.put_refresh(refresh("rt-old", "family-3", NOW + 3600)).await.unwrap();
    s.rotate_refresh(&h("rt-old"), refresh("rt-live", "family-3", NOW + 3600), NOW, 0).await.unwrap();
    s.put_refresh(refresh("rt-revoked", "family-4", NOW + 3600)).await.unwrap();
    s.revoke_family("family-4").await.unwrap();

    if !b.restart().await {
        return; // memory: nothing to survive
    }
    let s = &b.store;
    // Redeeming its code noted the client as used.
    assert_eq!(s.get_client("client-1").await.unwrap(), Some(ClientRecord { used_at: Some(NOW), ..registered }));
    assert_eq!(s.get_client("client-configured").await.unwrap(), Some(configured));
    assert_eq!(s.list_users().await.unwrap(), vec![user]);
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), Some(consent));
    assert_eq!(s.list_keys().await.unwrap(), vec![signing]);
    assert_eq!(s.get_upstream_token("user-1", "clerk").await.unwrap(), Some(upstream));
    assert_eq!(s.take_pending(&h("flow"), NOW).await.unwrap(), Some(flow));
    assert!(matches!(s.redeem_code(&h("code-fresh"), NOW).await.unwrap(), CodeRedemption::Redeemed(_)));
    assert!(matches!(s.redeem_code(&h("code-spent"), NOW).await.unwrap(), CodeRedemption::Replayed(_)));
    let next = |label: &str| refresh(label, "family-3", NOW + 7200);
    assert!(matches!(s.rotate_refresh(&h("rt-live"), next("rt-next"), NOW, 0).await.unwrap(), Rotation::Rotated(_)));
    assert_eq!(s.rotate_refresh(&h("rt-revoked"), next("rt-x"), NOW, 0).await.unwrap(), Rotation::Revoked);
    let reused = s.rotate_refresh(&h("rt-old"), next("rt-y"), NOW, 0).await.unwrap();
    assert_eq!(reused, Rotation::Reused { family_id: "family-3".into() });
}
