//! The cost of policy rules (`cargo bench -p portcullis-http --bench policy`): one request's decision
//! under ten rules, and a `tools/list` answer of 500 tools filtered for one caller (parsed, judged and
//! written again). Prints the median and the 90th percentile of many timed batches.
//!
//! Targets (docs/performance.md): a decision ≤ 5 µs; 500 tools filtered in well under a millisecond.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_config::{Config, MapEnv, ServerAuth};
use portcullis_http::listing::ListFilter;
use portcullis_oauth::{JwksCache, KeySet, VerifiedToken, Verifier, VerifierConfig};
use portcullis_policy::Action;
use portcullis_test_support::{TestKey, jwks, mint};
use portcullis_types::ManualClock;
use serde_json::{Value, json};

const NOW: u64 = 1_800_000_000;

/// The server, with the ten rules the throughput benchmark uses too.
fn config() -> String {
    format!(
        r#"
public_url = "https://mcp.example.com"
[[server]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
{}
[server.verify]
issuer = "https://idp.example.com/"
"#,
        include_str!("../../../bench/policy-rules.toml")
    )
}

fn setup() -> (portcullis_config::ServerConfig, Arc<VerifiedToken>) {
    let config = Config::from_toml(&config(), &MapEnv::default()).expect("config");
    let server = config.servers[0].clone();
    let ServerAuth::Verify(v) = &server.auth else { panic!("verify mode") };
    let clock = Arc::new(ManualClock::at(NOW));
    let (set, _) = KeySet::parse(jwks(&[TestKey::Es256]).to_string().as_bytes()).expect("keys");
    let verifier =
        Verifier::new(VerifierConfig::for_server(&server, v), JwksCache::fixed(set, clock.clone()), clock, None);
    let token = mint(
        TestKey::Es256,
        &json!({"iss": "https://idp.example.com/", "sub": "alice", "aud": "https://mcp.example.com/mcp",
            "exp": NOW + 600, "iat": NOW, "scope": "mcp:tools", "client_id": "app", "email": "alice@example.com",
            "groups": ["finance", "staff"], "roles": ["employee"], "department": "finance"}),
    );
    let verified = futures_util::FutureExt::now_or_never(verifier.verify(&token)).expect("fixed keys").expect("valid");
    (server, verified)
}

/// Median and 90th percentile of `batches` timings of `per_batch` calls of `f`, per call.
fn measure(name: &str, batches: usize, per_batch: u32, mut f: impl FnMut()) {
    for _ in 0..per_batch {
        f();
    }
    let mut times: Vec<Duration> = (0..batches)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            started.elapsed() / per_batch
        })
        .collect();
    times.sort();
    println!("{name:<58} median {:>10.2?}   p90 {:>10.2?}", times[batches / 2], times[batches * 9 / 10]);
}

fn main() {
    let (server, token) = setup();
    let policy = &server.policy;
    let caller = || portcullis_policy::Caller {
        subject: token.subject.as_deref(),
        client_id: token.client_id.as_ref().map(|c| c.as_str()),
        scopes: &token.scopes,
        claims: &token.claims,
        machine: token.machine,
    };
    let call = Action::of("tools/call", Some("payments_send"));
    let cache = portcullis_policy::CallerCache::default();
    measure("tools/call payments_send, five rules govern it: a later request", 101, 2_000, || {
        black_box(policy.evaluate_cached(caller(), &cache).decide(black_box(&call)));
    });
    measure("the same, the token's first request (its variables built)", 101, 2_000, || {
        black_box(policy.evaluate(caller()).decide(black_box(&call)));
    });
    let other = Action::of("tools/call", Some("echo"));
    measure("tools/call echo, four rules govern it: a later request", 101, 2_000, || {
        black_box(policy.evaluate_cached(caller(), &cache).decide(black_box(&other)));
    });

    let tools: Vec<Value> = (0..500)
        .map(|i| {
            let name = match i % 5 {
                0 => format!("payments_{i}"),
                1 => format!("get_{i}"),
                2 => format!("delete_{i}"),
                3 => format!("admin_{i}"),
                _ => format!("tool_{i}"),
            };
            json!({"name": name, "description": "A tool of the benchmark's list, described in a sentence.",
                "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}})
        })
        .collect();
    let answer = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}})).expect("json");
    let request = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let body = portcullis_http::rpc::classify(request).expect("a list request");
    let filter = ListFilter::for_body(policy, Some(&token), &body).expect("rules apply");
    let filtered: Value = serde_json::from_slice(&filter.rewrite_json(&answer).expect("filtered")).expect("json");
    let kept = filtered["result"]["tools"].as_array().map_or(0, Vec::len);
    measure("the same answer only parsed and written again", 51, 20, || {
        let v: Value = serde_json::from_slice(black_box(&answer)).expect("json");
        black_box(serde_json::to_vec(&v).expect("json"));
    });
    measure(&format!("tools/list of 500 tools filtered ({kept} kept, {} KiB)", answer.len() / 1024), 51, 20, || {
        black_box(filter.rewrite_json(black_box(&answer)));
    });
}
