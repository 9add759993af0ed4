//! Flow state and authorization codes: single use, expiry, replay detection, and exactly one winner
//! under concurrency.

use portcullis_store::{CodeRedemption, PendingRecord, Rotation, StoreError};

use super::{NOW, ROUNDS, code, h, instances, race, refresh};
use crate::harness::Backend;

fn pending(label: &str, expires_at: i64) -> PendingRecord {
    PendingRecord {
        id_hash: h(label),
        kind: "authorize".into(),
        data: serde_json::json!({ "client_id": "client-1", "state": "xyz", "code_challenge_method": "S256" }),
        expires_at,
    }
}

pub(crate) async fn pending_is_single_use(b: &mut Backend) {
    let s = &b.store;
    let flow = pending("flow-1", NOW + 600);
    s.put_pending(flow.clone()).await.unwrap();
    assert_eq!(s.put_pending(flow.clone()).await, Err(StoreError::Conflict("pending flow")));

    assert_eq!(s.take_pending(&h("flow-1"), NOW).await.unwrap(), Some(flow));
    assert_eq!(s.take_pending(&h("flow-1"), NOW).await.unwrap(), None, "taken once only");
    assert_eq!(s.take_pending(&h("flow-unknown"), NOW).await.unwrap(), None);
}

pub(crate) async fn pending_expires(b: &mut Backend) {
    let s = &b.store;
    s.put_pending(pending("at-expiry", NOW)).await.unwrap();
    s.put_pending(pending("past-expiry", NOW - 1)).await.unwrap();
    assert_eq!(s.take_pending(&h("at-expiry"), NOW).await.unwrap(), None, "valid only while now < expires_at");
    assert_eq!(s.take_pending(&h("past-expiry"), NOW).await.unwrap(), None);
    // Even asked with an earlier clock, an expired record that was presented is gone.
    assert_eq!(s.take_pending(&h("past-expiry"), NOW - 100).await.unwrap(), None);
}

pub(crate) async fn pending_concurrent_take(b: &mut Backend) {
    let stores = instances(b).await;
    for round in 0..ROUNDS {
        let id = format!("contested-{round}");
        b.store.put_pending(pending(&id, NOW + 600)).await.unwrap();
        let taken = race(&stores, |s, _| {
            let id = h(&id);
            async move { s.take_pending(&id, NOW).await.unwrap() }
        })
        .await;
        assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 1, "{taken:?}");
    }
}

pub(crate) async fn codes_are_single_use(b: &mut Backend) {
    let s = &b.store;
    let issued = code("code-1", "family-1", NOW + 60);
    s.put_code(issued.clone()).await.unwrap();
    assert_eq!(s.put_code(issued.clone()).await, Err(StoreError::Conflict("code")));
    assert!(!s.family_active("family-1").await.unwrap(), "the family is created at redemption");

    assert_eq!(s.redeem_code(&h("code-1"), NOW).await.unwrap(), CodeRedemption::Redeemed(issued.clone()));
    assert!(s.family_active("family-1").await.unwrap());
    assert_eq!(s.redeem_code(&h("code-1"), NOW + 1).await.unwrap(), CodeRedemption::Replayed(issued.clone()));
    // A replay is a replay even after the code's expiry.
    assert_eq!(s.redeem_code(&h("code-1"), NOW + 3000).await.unwrap(), CodeRedemption::Replayed(issued));
    assert_eq!(s.redeem_code(&h("code-unknown"), NOW).await.unwrap(), CodeRedemption::Unknown);

    let no_nonce = portcullis_store::CodeRecord { nonce: None, ..code("code-2", "family-2", NOW + 60) };
    s.put_code(no_nonce.clone()).await.unwrap();
    assert_eq!(s.redeem_code(&h("code-2"), NOW).await.unwrap(), CodeRedemption::Redeemed(no_nonce));
}

pub(crate) async fn codes_expire(b: &mut Backend) {
    let s = &b.store;
    s.put_code(code("code-1", "family-1", NOW)).await.unwrap();
    assert_eq!(s.redeem_code(&h("code-1"), NOW).await.unwrap(), CodeRedemption::Expired, "valid while now < exp");
    assert_eq!(s.redeem_code(&h("code-1"), NOW).await.unwrap(), CodeRedemption::Expired, "still not redeemed");
    assert!(!s.family_active("family-1").await.unwrap());
}

pub(crate) async fn code_replay_revokes_the_family(b: &mut Backend) {
    let s = &b.store;
    s.put_code(code("code-1", "family-1", NOW + 60)).await.unwrap();
    let CodeRedemption::Redeemed(code) = s.redeem_code(&h("code-1"), NOW).await.unwrap() else { panic!() };
    s.put_refresh(refresh("rt-1", &code.family_id, NOW + 3600)).await.unwrap();

    let CodeRedemption::Replayed(replayed) = s.redeem_code(&h("code-1"), NOW + 5).await.unwrap() else { panic!() };
    assert_eq!(s.revoke_family(&replayed.family_id).await.unwrap(), 1);
    assert!(!s.family_active("family-1").await.unwrap());
    let next = refresh("rt-2", "family-1", NOW + 7200);
    assert_eq!(s.rotate_refresh(&h("rt-1"), next, NOW + 10, 0).await.unwrap(), Rotation::Revoked);

    // The replay may win the race against the legitimate redeemer's token request: a refresh token stored
    // into the family afterwards is revoked from birth.
    s.put_code(super::code("code-2", "family-2", NOW + 60)).await.unwrap();
    s.redeem_code(&h("code-2"), NOW).await.unwrap();
    let CodeRedemption::Replayed(replayed) = s.redeem_code(&h("code-2"), NOW).await.unwrap() else { panic!() };
    assert_eq!(s.revoke_family(&replayed.family_id).await.unwrap(), 0, "no token issued yet");
    s.put_refresh(refresh("rt-3", "family-2", NOW + 3600)).await.unwrap();
    assert!(!s.family_active("family-2").await.unwrap());
    let next = refresh("rt-4", "family-2", NOW + 7200);
    assert_eq!(s.rotate_refresh(&h("rt-3"), next, NOW + 10, 0).await.unwrap(), Rotation::Revoked);
}

pub(crate) async fn code_concurrent_redeem(b: &mut Backend) {
    let stores = instances(b).await;
    for round in 0..ROUNDS {
        let label = format!("contested-{round}");
        b.store.put_code(code(&label, &format!("family-{round}"), NOW + 60)).await.unwrap();
        let outcomes = race(&stores, |s, _| {
            let hash = h(&label);
            async move { s.redeem_code(&hash, NOW).await.unwrap() }
        })
        .await;
        let redeemed = outcomes.iter().filter(|o| matches!(o, CodeRedemption::Redeemed(_))).count();
        let replayed = outcomes.iter().filter(|o| matches!(o, CodeRedemption::Replayed(_))).count();
        assert_eq!((redeemed, replayed), (1, outcomes.len() - 1), "{outcomes:?}");
    }
}

pub(crate) async fn code_redeemed_with_its_refresh_token(b: &mut Backend) {
    let s = &b.store;
    s.put_code(code("code-rt", "family-rt", NOW + 60)).await.unwrap();
    // The refresh token is stored in the code's family, whatever family the caller named.
    let issue = |c: &portcullis_store::CodeRecord| {
        assert_eq!(c.family_id, "family-rt");
        Some(refresh("rt-with-code", "ignored", NOW + 3600))
    };
    assert!(matches!(s.redeem_code_issuing(&h("code-rt"), NOW, &issue).await.unwrap(), CodeRedemption::Redeemed(_)));
    let stored = s.get_refresh(&h("rt-with-code")).await.unwrap().expect("stored with the redemption");
    assert_eq!(stored.family_id, "family-rt");
    assert!(s.family_active("family-rt").await.unwrap());
    // A replay revokes it with the family; a replay never issues.
    let never =
        |_: &portcullis_store::CodeRecord| -> Option<portcullis_store::RefreshRecord> { panic!("issued twice") };
    let CodeRedemption::Replayed(replayed) = s.redeem_code_issuing(&h("code-rt"), NOW + 1, &never).await.unwrap()
    else {
        panic!()
    };
    s.revoke_family(&replayed.family_id).await.unwrap();
    let next = refresh("rt-after", "family-rt", NOW + 7200);
    assert_eq!(s.rotate_refresh(&h("rt-with-code"), next, NOW + 2, 0).await.unwrap(), Rotation::Revoked);
    // A code the caller judges unfit is spent, and nothing is issued.
    s.put_code(code("code-unfit", "family-unfit", NOW + 60)).await.unwrap();
    assert!(matches!(
        s.redeem_code_issuing(&h("code-unfit"), NOW, &|_| None).await.unwrap(),
        CodeRedemption::Redeemed(_)
    ));
    assert!(matches!(s.redeem_code(&h("code-unfit"), NOW).await.unwrap(), CodeRedemption::Replayed(_)));
}
