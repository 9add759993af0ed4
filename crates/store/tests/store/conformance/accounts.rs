//! Clients, local accounts and consents.

use portcullis_store::{
    ClientRecord, ClientSource, CodeRecord, CodeRedemption, ConsentRecord, RefreshRecord, Rotation, StoreError,
    UserRecord,
};

use super::{NOW, client, code, h, refresh};
use crate::harness::Backend;

pub(crate) async fn clients(b: &mut Backend) {
    let s = &b.store;
    let public = client("client-public");
    let confidential = ClientRecord {
        client_id: "client-confidential".into(),
        secret_hash: Some(h("secret")),
        source: ClientSource::MetadataDocument,
        created_at: NOW + 10,
        ..client("unused")
    };
    s.put_client(public.clone()).await.unwrap();
    s.put_client(confidential.clone()).await.unwrap();
    assert_eq!(s.get_client("client-public").await.unwrap(), Some(public.clone()));
    assert_eq!(s.get_client("client-confidential").await.unwrap(), Some(confidential.clone()));
    assert_eq!(s.get_client("client-other").await.unwrap(), None);

    // A duplicate id is refused and changes nothing.
    let imposter = ClientRecord { secret_hash: Some(h("mine")), ..public.clone() };
    assert_eq!(s.put_client(imposter).await, Err(StoreError::Conflict("client")));
    assert_eq!(s.get_client("client-public").await.unwrap(), Some(public.clone()));

    // Upsert inserts, then replaces everything but `created_at`.
    let configured = ClientRecord { source: ClientSource::Configured, ..client("client-configured") };
    s.upsert_client(configured.clone()).await.unwrap();
    assert_eq!(s.get_client("client-configured").await.unwrap(), Some(configured.clone()));
    let changed = ClientRecord {
        secret_hash: Some(h("rotated")),
        metadata: serde_json::json!({ "client_name": "renamed" }),
        created_at: NOW + 500,
        ..configured.clone()
    };
    s.upsert_client(changed.clone()).await.unwrap();
    assert_eq!(s.get_client("client-configured").await.unwrap(), Some(ClientRecord { created_at: NOW, ..changed }));

    assert_eq!(s.count_clients_created_since(NOW).await.unwrap(), 3);
    assert_eq!(s.count_clients_created_since(NOW + 1).await.unwrap(), 1);
    assert_eq!(s.count_clients_created_since(NOW + 11).await.unwrap(), 0);

    assert!(s.delete_client("client-public").await.unwrap());
    assert!(!s.delete_client("client-public").await.unwrap());
    assert_eq!(s.get_client("client-public").await.unwrap(), None);
    // The id is free again.
    s.put_client(public).await.unwrap();
}

/// Redeeming a code notes its client as used, at most once a day; clients registered and never used,
/// and (when asked) clients idle and holding no live grant, are purged with their consents.
pub(crate) async fn unused_clients_are_purged(b: &mut Backend) {
    const DAY: i64 = 86_400;
    let s = &b.store;
    let registered =
        |id: &str, created_at: i64, used_at: Option<i64>| ClientRecord { created_at, used_at, ..client(id) };
    s.put_client(registered("fresh", NOW - 3_600, None)).await.unwrap();

    // The first redemption notes the client; another within the day does not write again; a day later it does.
    let redeem = async |label: &str, at: i64| {
        let c = CodeRecord { client_id: "fresh".into(), ..code(label, &format!("family-{label}"), at + 60) };
        s.put_code(c).await.unwrap();
        assert!(matches!(s.redeem_code(&h(label), at).await.unwrap(), CodeRedemption::Redeemed(_)));
        s.get_client("fresh").await.unwrap().unwrap().used_at
    };
    assert_eq!(redeem("c1", NOW - 2 * DAY).await, Some(NOW - 2 * DAY));
    assert_eq!(redeem("c2", NOW - DAY - 1).await, Some(NOW - 2 * DAY));
    assert_eq!(redeem("c3", NOW - DAY).await, Some(NOW - DAY));
    s.revoke_family("family-c1").await.unwrap();
    s.revoke_family("family-c2").await.unwrap();
    s.revoke_family("family-c3").await.unwrap();

    s.put_client(registered("never", NOW - 8 * DAY, None)).await.unwrap();
    s.put_client(registered("never-recent", NOW - 6 * DAY, None)).await.unwrap();
    // Never noted as used (a code redeemed by a replica before the upgrade), with a live grant.
    s.put_client(registered("never-granted", NOW - 8 * DAY, None)).await.unwrap();
    s.put_refresh(RefreshRecord { client_id: "never-granted".into(), ..refresh("rt-never", "family-nv", NOW + DAY) })
        .await
        .unwrap();
    s.put_client(registered("idle", NOW - 90 * DAY, Some(NOW - 40 * DAY))).await.unwrap();
    s.put_client(registered("idle-granted", NOW - 90 * DAY, Some(NOW - 40 * DAY))).await.unwrap();
    s.put_refresh(RefreshRecord { client_id: "idle-granted".into(), ..refresh("rt-live", "family-live", NOW + DAY) })
        .await
        .unwrap();
    s.put_client(registered("idle-revoked", NOW - 90 * DAY, Some(NOW - 40 * DAY))).await.unwrap();
    s.put_refresh(RefreshRecord { client_id: "idle-revoked".into(), ..refresh("rt-revoked", "family-rv", NOW + DAY) })
        .await
        .unwrap();
    s.revoke_family("family-rv").await.unwrap();
    s.put_client(registered("idle-expired", NOW - 90 * DAY, Some(NOW - 40 * DAY))).await.unwrap();
    s.put_refresh(RefreshRecord { client_id: "idle-expired".into(), ..refresh("rt-expired", "family-ex", NOW) })
        .await
        .unwrap();
    s.put_client(ClientRecord { source: ClientSource::Configured, ..registered("configured", NOW - 90 * DAY, None) })
        .await
        .unwrap();
    s.put_client(ClientRecord {
        source: ClientSource::MetadataDocument,
        ..registered("https://app.example/client.json", NOW - 90 * DAY, None)
    })
    .await
    .unwrap();
    for (subject, client_id) in [("user-1", "never"), ("user-2", "never"), ("user-1", "idle"), ("user-1", "fresh")] {
        let consent = ConsentRecord {
            subject: subject.into(),
            client_id: client_id.into(),
            scope: "mcp:tools".into(),
            granted_at: NOW - 100 * DAY,
        };
        s.put_consent(consent).await.unwrap();
    }

    // Each purge names the clients it deleted, and when they were last used.
    let purge = async |idle_before: i64| {
        let mut gone: Vec<(String, Option<i64>)> = s
            .purge_unused_clients(NOW - 7 * DAY, idle_before, NOW)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.client_id.to_string(), c.used_at))
            .collect();
        gone.sort();
        gone
    };
    // Idle clients kept (no idle bound): only the registration never used for a week goes.
    assert_eq!(purge(i64::MIN).await, [("never".to_owned(), None)]);
    assert_eq!(s.get_client("never").await.unwrap(), None);
    assert_eq!(s.get_consent("user-1", "never").await.unwrap(), None);
    assert_eq!(s.get_consent("user-2", "never").await.unwrap(), None);
    assert!(s.get_client("idle").await.unwrap().is_some());

    // Unused for 30 days, with no live grant: idle, idle-revoked and idle-expired go.
    let idle = Some(NOW - 40 * DAY);
    assert_eq!(
        purge(NOW - 30 * DAY).await,
        [("idle".to_owned(), idle), ("idle-expired".to_owned(), idle), ("idle-revoked".to_owned(), idle)]
    );
    assert_eq!(purge(NOW - 30 * DAY).await, []);
    for gone in ["idle", "idle-revoked", "idle-expired"] {
        assert_eq!(s.get_client(gone).await.unwrap(), None, "{gone}");
    }
    assert_eq!(s.get_consent("user-1", "idle").await.unwrap(), None);
    for kept in
        ["fresh", "never-recent", "never-granted", "idle-granted", "configured", "https://app.example/client.json"]
    {
        assert!(s.get_client(kept).await.unwrap().is_some(), "{kept}");
    }
    assert!(s.get_consent("user-1", "fresh").await.unwrap().is_some());
    // The id is free again.
    s.put_client(registered("never", NOW, None)).await.unwrap();
}

/// Deleting a client removes its consents and revokes its refresh families, and nobody else's.
pub(crate) async fn delete_client_ends_grants(b: &mut Backend) {
    let s = &b.store;
    s.put_client(client("client-1")).await.unwrap();
    s.put_client(client("client-2")).await.unwrap();
    for client_id in ["client-1", "client-2"] {
        let consent = ConsentRecord {
            subject: "user-1".into(),
            client_id: client_id.into(),
            scope: "mcp".into(),
            granted_at: NOW,
        };
        s.put_consent(consent).await.unwrap();
    }
    s.put_refresh(refresh("rt-1", "family-1", NOW + 600)).await.unwrap();
    let other =
        portcullis_store::RefreshRecord { client_id: "client-2".into(), ..refresh("rt-2", "family-2", NOW + 600) };
    s.put_refresh(other).await.unwrap();

    assert!(s.delete_client("client-1").await.unwrap());
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), None);
    assert!(!s.family_active("family-1").await.unwrap());
    assert_eq!(
        s.rotate_refresh(&h("rt-1"), refresh("rt-1b", "family-1", NOW + 900), NOW, 0).await.unwrap(),
        Rotation::Revoked
    );

    assert!(s.get_consent("user-1", "client-2").await.unwrap().is_some());
    assert!(s.family_active("family-2").await.unwrap());
}

fn user(username: &str, subject: &str) -> UserRecord {
    UserRecord {
        username: username.into(),
        subject: subject.into(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ${username}"),
        created_at: NOW,
    }
}

pub(crate) async fn users(b: &mut Backend) {
    let s = &b.store;
    let (ada, grace) = (user("ada", "sub-ada"), user("grace", "sub-grace"));
    s.put_user(grace.clone()).await.unwrap();
    s.put_user(ada.clone()).await.unwrap();
    assert_eq!(s.get_user("ada").await.unwrap(), Some(ada.clone()));
    assert_eq!(s.get_user("nobody").await.unwrap(), None);

    assert_eq!(s.put_user(user("ada", "sub-new")).await, Err(StoreError::Conflict("user")));
    assert_eq!(s.put_user(user("ada2", "sub-ada")).await, Err(StoreError::Conflict("user")), "subjects are unique");

    assert!(s.set_password("ada", "$argon2id$new".into()).await.unwrap());
    assert!(!s.set_password("nobody", "$argon2id$new".into()).await.unwrap());
    let ada = UserRecord { password_hash: "$argon2id$new".into(), ..ada };
    assert_eq!(s.get_user("ada").await.unwrap(), Some(ada.clone()));

    assert_eq!(s.list_users().await.unwrap(), vec![ada, grace.clone()], "ordered by username");

    assert!(s.delete_user("ada").await.unwrap());
    assert!(!s.delete_user("ada").await.unwrap());
    assert_eq!(s.list_users().await.unwrap(), vec![grace]);
}

/// Deleting an account removes its consents and revokes its refresh families, and nobody else's.
pub(crate) async fn delete_user_ends_sessions(b: &mut Backend) {
    let s = &b.store;
    s.put_user(user("ada", "user-1")).await.unwrap();
    s.put_user(user("grace", "user-2")).await.unwrap();
    for subject in ["user-1", "user-2"] {
        let consent = ConsentRecord {
            subject: subject.into(),
            client_id: "client-1".into(),
            scope: "mcp".into(),
            granted_at: NOW,
        };
        s.put_consent(consent).await.unwrap();
    }
    s.put_refresh(refresh("rt-1", "family-1", NOW + 600)).await.unwrap();
    let other = portcullis_store::RefreshRecord { subject: "user-2".into(), ..refresh("rt-2", "family-2", NOW + 600) };
    s.put_refresh(other).await.unwrap();

    assert!(s.delete_user("ada").await.unwrap());
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), None);
    assert!(!s.family_active("family-1").await.unwrap());
    assert!(s.get_consent("user-2", "client-1").await.unwrap().is_some());
    assert!(s.family_active("family-2").await.unwrap());
}

pub(crate) async fn consents(b: &mut Backend) {
    let s = &b.store;
    let consent = |subject: &str, client_id: &str, scope: &str, granted_at| ConsentRecord {
        subject: subject.into(),
        client_id: client_id.into(),
        scope: scope.into(),
        granted_at,
    };
    s.put_consent(consent("user-1", "client-1", "mcp:tools", NOW)).await.unwrap();
    s.put_consent(consent("user-2", "client-1", "mcp:tools", NOW)).await.unwrap();
    s.put_consent(consent("user-1", "client-2", "mcp:tools", NOW)).await.unwrap();
    assert_eq!(
        s.get_consent("user-1", "client-1").await.unwrap(),
        Some(consent("user-1", "client-1", "mcp:tools", NOW))
    );
    assert_eq!(s.get_consent("user-3", "client-1").await.unwrap(), None);

    // Consenting again replaces the earlier grant.
    s.put_consent(consent("user-1", "client-1", "mcp:tools mcp:resources", NOW + 60)).await.unwrap();
    assert_eq!(
        s.get_consent("user-1", "client-1").await.unwrap(),
        Some(consent("user-1", "client-1", "mcp:tools mcp:resources", NOW + 60))
    );

    assert_eq!(s.delete_consents_for_client("client-1").await.unwrap(), 2);
    assert_eq!(s.delete_consents_for_client("client-1").await.unwrap(), 0);
    assert_eq!(s.get_consent("user-1", "client-1").await.unwrap(), None);
    assert!(s.get_consent("user-1", "client-2").await.unwrap().is_some());
}
