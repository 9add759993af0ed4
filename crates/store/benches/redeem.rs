//! Durable code exchanges and refresh rotations on SQLite (`cargo bench -p portcullis-store --bench
//! redeem`): codes stored, then redeemed with a refresh token by 1 and by 16 concurrent callers, then
//! each refresh token rotated, each answer after its commit (`synchronous = FULL`) as in the gateway.
//! Prints operations per second for each concurrency, median of three rounds. With one commit per
//! operation the rate cannot grow with concurrency (SQLite has one writer); with group commit,
//! concurrent operations share commits.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use portcullis_store::{CodeRecord, CodeRedemption, RefreshRecord, Rotation, Store};

const NOW: i64 = 1_800_000_000;
const CODES: usize = 3_000;

fn code(i: usize, round: usize) -> CodeRecord {
    CodeRecord {
        code_hash: format!("code-{round}-{i}"),
        client_id: "client-1".into(),
        subject: "user-1".into(),
        redirect_uri: "http://127.0.0.1:33418/callback".into(),
        resource: "https://mcp.example.com/mcp".into(),
        scope: "mcp:tools".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        nonce: None,
        auth_time: NOW - 30,
        expires_at: NOW + 600,
        family_id: format!("family-{round}-{i}"),
    }
}

fn refresh(code: &CodeRecord) -> RefreshRecord {
    RefreshRecord {
        token_hash: format!("refresh-{}", code.code_hash),
        family_id: String::new(),
        client_id: code.client_id.clone(),
        subject: code.subject.clone(),
        resource: code.resource.clone(),
        scope: code.scope.clone(),
        expires_at: NOW + 86_400,
        created_at: NOW,
        session_ends_at: Some(NOW + 86_400),
    }
}

/// `(exchanges, rotations)` per second for `callers` concurrent callers redeeming `CODES` fresh codes,
/// then rotating the refresh token each exchange stored.
async fn round(store: &Arc<dyn Store>, callers: usize, round: usize) -> (f64, f64) {
    for i in 0..CODES {
        store.put_code(code(i, round)).await.unwrap();
    }
    let exchanges = concurrently(callers, store, move |store, i| async move {
        let issue = |c: &CodeRecord| Some(refresh(c));
        let answer = store.redeem_code_issuing(&format!("code-{round}-{i}"), NOW, &issue).await.unwrap();
        assert!(matches!(answer, CodeRedemption::Redeemed(_)));
    })
    .await;
    let rotations = concurrently(callers, store, move |store, i| async move {
        let old = refresh(&code(i, round));
        let new = RefreshRecord { token_hash: format!("rotated-{}", old.token_hash), ..old.clone() };
        let answer = store.rotate_refresh(&old.token_hash, new, NOW, 0).await.unwrap();
        assert!(matches!(answer, Rotation::Rotated(_)));
    })
    .await;
    (exchanges, rotations)
}

/// Runs `op` for `0..CODES` with `callers` concurrent callers taking the next index; operations per
/// second.
async fn concurrently<F, Fut>(callers: usize, store: &Arc<dyn Store>, op: F) -> f64
where
    F: Fn(Arc<dyn Store>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (store, next, op) = (store.clone(), next.clone(), op.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= CODES {
                        break;
                    }
                    op(store.clone(), i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    CODES as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = std::env::temp_dir().join(format!("portcullis-redeem-bench-{}", std::process::id()));
        let store = portcullis_store::open(&format!("sqlite://{}", dir.join("bench.db").display())).await.unwrap();
        let mut n = 0;
        for callers in [1, 16] {
            let (mut exchanges, mut rotations) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                n += 1;
                let (e, r) = round(&store, callers, n).await;
                exchanges.push(e);
                rotations.push(r);
            }
            exchanges.sort_by(f64::total_cmp);
            rotations.sort_by(f64::total_cmp);
            println!(
                "{callers:>2} concurrent callers: code exchanges {:>6.0}/s, refresh rotations {:>6.0}/s \
                 (medians of 3 rounds of {CODES})",
                exchanges[1], rotations[1]
            );
        }
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
