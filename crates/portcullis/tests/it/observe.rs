//! What an operator watches, after known traffic: the metrics as a real Prometheus server (Debian's
//! `prometheus`) scraped them, and the audit log, one line per request with the right decision.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::{Gate, KeyIdp, STEP, Sample, TempDir, call, client, closed_port, mcp_post};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus server scraping one target every second, its storage in a directory of its own.
struct Prometheus {
    _child: Child,
    base: String,
    _dir: TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        assert!(
            std::path::Path::new(PROMETHEUS).exists(),
            "this test needs a real Prometheus server: apt-get install prometheus (scripts/test installs it when run as root)"
        );
        let dir = TempDir::new();
        let config = dir.path.join("prometheus.yml");
        let scrape = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: portcullis\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(&config, scrape).unwrap();
        let port = closed_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let ready = async {
            loop {
                if client().get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status() == 200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(STEP, ready).await.expect("Prometheus did not become ready");
        Prometheus { _child: child, base, _dir: dir }
    }

    /// The instant vector of `query`: each series' labels and value.
    async fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let r: Value = client()
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", query)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["status"], "success", "{query}: {r}");
        r["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).unwrap();
                (labels, s["value"][1].as_str().unwrap().parse().unwrap())
            })
            .collect()
    }

    /// Waits (scrapes come every second) until `query` has one series with `expected`, and returns
    /// its labels.
    async fn expect(&self, query: &str, expected: f64) -> BTreeMap<String, String> {
        let mut last = Vec::new();
        for _ in 0..100 {
            last = self.query(query).await;
            if let [(labels, value)] = last.as_slice()
                && *value == expected
            {
                return labels.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{query}: expected one series with {expected}, Prometheus has {last:?}");
    }
}

/// `token` with one character of its signature changed.
fn forged(token: &str) -> String {
    let i = token.len() - 2;
    let swap = if &token[i..=i] == "A" { "B" } else { "A" };
    format!("{}{swap}{}", &token[..i], &token[i + 1..])
}

#[tokio::test]
async fn prometheus_scrapes_every_decision_and_the_audit_log_has_one_line_per_request() {
    let idp = KeyIdp::start().await;
    let sample = Sample::start().await;
    let metrics_port = closed_port();
    let config = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[audit]\npath = \"{{dir}}/audit.jsonl\"\n",
        crate::verify::config(&sample, &idp.issuer, "")
    );
    let gate = Gate::start(&config).await;
    let mcp = gate.url("/mcp");
    let token = idp.token(&mcp, "mcp:tools");
    let send = |bearer: Option<String>, body: String| {
        let mut request = mcp_post(&client(), &mcp, body);
        if let Some(b) = bearer {
            request = request.bearer_auth(b);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let echo = || call(1, "echo", json!({"text": "observed"}));

    // Known traffic: 2 allowed calls, 3 forged signatures, 2 without a token, 1 token for another
    // resource, 1 body the gate cannot read.
    for _ in 0..2 {
        assert_eq!(send(Some(token.clone()), echo()).await, 200);
    }
    for _ in 0..3 {
        assert_eq!(send(Some(forged(&token)), echo()).await, 401);
    }
    for _ in 0..2 {
        assert_eq!(send(None, echo()).await, 401);
    }
    assert_eq!(send(Some(idp.token("http://127.0.0.1:1/other", "mcp:tools")), echo()).await, 401);
    assert_eq!(send(Some(token.clone()), "{\"jsonrpc\":\"2.0\",\"id\":".to_owned()).await, 400);

    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics_port}")).await;
    prometheus.expect(r#"portcullis_decisions_total{reason="bad_signature",decision="deny"}"#, 3.0).await;
    prometheus.expect(r#"portcullis_decisions_total{reason="missing_token"}"#, 2.0).await;
    prometheus.expect(r#"portcullis_decisions_total{reason="wrong_audience"}"#, 1.0).await;
    prometheus.expect(r#"portcullis_decisions_total{reason="invalid_message"}"#, 1.0).await;
    let allowed = prometheus.expect(r#"portcullis_decisions_total{decision="allow"}"#, 2.0).await;
    assert_eq!(allowed["server"], "/mcp");
    prometheus.expect(r#"portcullis_requests_total{method="tools/call",status="200"}"#, 2.0).await;
    prometheus.expect(r#"sum(portcullis_requests_total)"#, 9.0).await;
    prometheus.expect(r#"portcullis_upstream_duration_seconds_count{server="/mcp"}"#, 2.0).await;
    prometheus.expect(r#"portcullis_request_duration_seconds_count{server="/mcp"}"#, 9.0).await;
    // The IdP's key set: loaded once at start (the forged tokens name a known key), one key, fresh.
    let jwks = format!("{}/jwks", idp.issuer);
    prometheus.expect(&format!(r#"portcullis_jwks_fetches_total{{jwks_uri="{jwks}",result="success"}}"#), 1.0).await;
    prometheus.expect(&format!(r#"portcullis_jwks_keys{{jwks_uri="{jwks}"}}"#), 1.0).await;
    prometheus.expect("count(time() - portcullis_jwks_last_success_timestamp_seconds < 60)", 1.0).await;
    let build = prometheus.expect("portcullis_build_info", 1.0).await;
    assert_eq!(build["version"], env!("CARGO_PKG_VERSION"));
    // No series carries a subject, a client id or a token.
    for (labels, _) in prometheus.query(r#"{__name__=~"portcullis_.*"}"#).await {
        for value in labels.values() {
            assert!(!["user-1", "client-1"].contains(&value.as_str()) && !value.starts_with("eyJ"), "{labels:?}");
        }
    }

    // The shipped dashboard's queries all run, and those about traffic find it; the alert rules load.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(deploy.join("grafana/portcullis.json")).unwrap()).unwrap();
    // Rates need two scrapes in their window.
    for _ in 0..50 {
        let scrapes = prometheus.query("count_over_time(portcullis_build_info[1m])").await;
        if scrapes.first().is_some_and(|(_, n)| *n >= 3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut answered = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$server", ".*").replace("$__rate_interval", "1m");
            if !prometheus.query(&expr).await.is_empty() {
                answered += 1;
            }
        }
    }
    assert!(answered >= 8, "only {answered} dashboard queries found data");
    let rules = deploy.join("prometheus/alerts.yml");
    let check = Command::new("promtool").arg("check").arg("rules").arg(&rules).output().await.unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    // The audit log: one line per request, in order, with who, what and why.
    let audit = std::fs::read_to_string(gate.dir.path.join("audit.jsonl")).unwrap();
    assert!(!audit.contains(&token[token.len() - 20..]), "no token in the audit log");
    let events: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reasons: Vec<&str> = events.iter().map(|e| e["reason"].as_str().unwrap()).collect();
    assert_eq!(
        reasons,
        [
            "ok",
            "ok",
            "bad_signature",
            "bad_signature",
            "bad_signature",
            "missing_token",
            "missing_token",
            "wrong_audience",
            "invalid_message"
        ]
    );
    let first = &events[0];
    assert_eq!(first["event"], "mcp.request");
    assert_eq!((first["decision"].as_str(), first["status"].as_u64()), (Some("allow"), Some(200)));
    assert_eq!((first["subject"].as_str(), first["client_id"].as_str()), (Some("user-1"), Some("client-1")));
    assert_eq!(first["caller"], "user");
    assert_eq!((first["method"].as_str(), first["name"].as_str()), (Some("tools/call"), Some("echo")));
    assert_eq!(first["server"], "/mcp");
    assert!(first["request_id"].as_str().is_some_and(|id| id.len() == 36), "{first}");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let forged_event = &events[2];
    assert_eq!((forged_event["decision"].as_str(), forged_event["status"].as_u64()), (Some("deny"), Some(401)));
    assert_eq!(forged_event["subject"], Value::Null, "a forged token names nobody");
    let unreadable = &events[8];
    assert_eq!(unreadable["subject"], "user-1", "the token was good; the body was not");
    assert_eq!(unreadable["status"], 400);
}

#[tokio::test]
async fn a_client_trace_id_reaches_the_audit_log_and_batches_name_every_call() {
    let idp = KeyIdp::start().await;
    let sample = Sample::start().await;
    let rule = "[[server.policy]]\nname = \"no-sleep\"\ntools = [\"sleep\"]\ndeny_if = 'true'";
    let config =
        format!("{}\n[audit]\npath = \"{{dir}}/audit.jsonl\"\n", crate::verify::config(&sample, &idp.issuer, rule));
    let gate = Gate::start(&config).await;
    let mcp = gate.url("/mcp");
    let token = idp.token(&mcp, "mcp:tools");
    let r = mcp_post(&client(), &mcp, call(1, "echo", json!({"text": "traced"})))
        .bearer_auth(&token)
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let batch = format!("[{},{}]", call(2, "echo", json!({"text": "a"})), call(3, "whoami", json!({})));
    let r = mcp_post(&client(), &mcp, batch).bearer_auth(&token).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // SEP-414: a trace context in `_meta`, without the header.
    let meta = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "echo",
        "arguments": {"text": "m"}, "_meta": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}});
    let r = mcp_post(&client(), &mcp, meta.to_string()).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A policy refusal names its rule.
    let r = mcp_post(&client(), &mcp, call(5, "sleep", json!({"ms": 1}))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 403);
    // Written by a task of its own: give it a moment.
    let path = gate.dir.path.join("audit.jsonl");
    let mut events = Vec::new();
    for _ in 0..50 {
        events = std::fs::read_to_string(&path).unwrap_or_default().lines().map(String::from).collect();
        if events.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(events.len(), 4, "{events:?}");
    let traced: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(traced["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let batch: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(batch["method"], "batch");
    assert_eq!(batch["trace_id"], Value::Null);
    assert_eq!(
        batch["calls"],
        json!([{"method": "tools/call", "name": "echo"}, {"method": "tools/call", "name": "whoami"}])
    );
    let from_meta: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(from_meta["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(from_meta["rule"], Value::Null);
    let refused: Value = serde_json::from_str(&events[3]).unwrap();
    assert_eq!(
        (&refused["decision"], &refused["reason"], &refused["rule"], &refused["name"], &refused["status"]),
        (&json!("deny"), &json!("policy_denied"), &json!("no-sleep"), &json!("sleep"), &json!(403))
    );
}

/// The value of the series `series` (name and labels, exactly as rendered) on a `/metrics` page.
fn sample_of(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_authorization_server_audits_registrations_sign_ins_consents_and_tokens() {
    use crate::gateway::{PASSWORD, Via, authorize_page, drive, hidden, no_redirects, pkce, token};
    let sample = Sample::start().await;
    let metrics_port = closed_port();
    let port = crate::support::reserve_port();
    let dir = TempDir::new();
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[audit]\npath = \"{{dir}}/audit.jsonl\"\n",
        crate::gateway::config(&sample.mcp())
    );
    let path = crate::support::write_config(&text, port, &dir);
    let config = path.display().to_string();
    crate::support::admin(&["users", "add", "alice", "--config", &config], &format!("{PASSWORD}\n")).await;
    let gate = Gate::start_at(&path, port, dir, &[]).await;

    let registration = json!({"redirect_uris": ["http://127.0.0.1/cb"], "client_name": "Audited App",
        "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"]});
    let reg: Value =
        client().post(gate.url("/register")).json(&registration).send().await.unwrap().json().await.unwrap();
    let client_id = reg["client_id"].as_str().unwrap().to_owned();

    // A wrong password, then the right one and consent.
    let (verifier, challenge) = pkce();
    let params = [
        ("client_id", client_id.as_str()),
        ("redirect_uri", "http://127.0.0.1:40123/cb"),
        ("code_challenge", challenge.as_str()),
        ("state", "s"),
        ("scope", "mcp:tools"),
    ];
    let (cookie, page) = authorize_page(&gate, &params).await;
    let wrong = [
        ("step", "login".to_owned()),
        ("handle", hidden(&page, "handle")),
        ("csrf", hidden(&page, "csrf")),
        ("username", "alice".to_owned()),
        ("password", "not the password".to_owned()),
    ];
    let r = no_redirects().post(gate.url("/authorize")).header("cookie", &cookie).form(&wrong).send().await.unwrap();
    let page = r.text().await.unwrap();
    assert!(page.contains("Wrong username or password"));
    // The password typed into the username box: no account, and the audit log must not show it.
    let in_the_wrong_box = [
        ("step", "login".to_owned()),
        ("handle", hidden(&page, "handle")),
        ("csrf", hidden(&page, "csrf")),
        ("username", PASSWORD.to_owned()),
        ("password", String::new()),
    ];
    let r = no_redirects()
        .post(gate.url("/authorize"))
        .header("cookie", &cookie)
        .form(&in_the_wrong_box)
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Wrong username or password"));
    let code = drive(&gate, &params, Via::Account("alice", PASSWORD)).await.query["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:40123/cb"),
        ("code_verifier", verifier.as_str()),
        ("client_id", client_id.as_str()),
    ];
    let (status, issued, _) = token(&gate, None, &form).await;
    assert_eq!(status, 200, "{issued}");
    let first_refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", &first_refresh), ("client_id", &client_id)];
    let (status, refreshed, _) = token(&gate, None, &refresh).await;
    assert_eq!(status, 200, "{refreshed}");
    // The rotated token again: reuse, the family revoked.
    let (status, reused, _) = token(&gate, None, &refresh).await;
    assert_eq!((status, reused["error"].as_str()), (400, Some("invalid_grant")), "{reused}");

    let audit_path = gate.dir.path.join("audit.jsonl");
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = std::fs::read_to_string(&audit_path).unwrap_or_default().lines().map(String::from).collect();
        if lines.len() >= 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let audit = lines.join("\n");
    for secret in [PASSWORD, "not the password", first_refresh.as_str(), issued["access_token"].as_str().unwrap()] {
        assert!(!audit.contains(secret), "a secret reached the audit log");
    }
    let events: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<(&str, &str)> =
        events.iter().map(|e| (e["event"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    assert_eq!(
        seen,
        [
            ("admin.user_added", "success"),
            ("gateway.client_registered", "success"),
            ("gateway.sign_in", "failure"),
            ("gateway.sign_in", "failure"),
            ("gateway.sign_in", "success"),
            ("gateway.consent", "granted"),
            ("gateway.token_issued", "success"),
            ("gateway.token_issued", "success"),
            ("gateway.refresh_reuse", "family_revoked"),
            ("gateway.token_issued", "invalid_grant"),
        ]
    );
    assert_eq!(events[1]["client_name"], "Audited App");
    assert_eq!((events[2]["username"].as_str(), events[2]["client_id"].as_str()), (Some("alice"), Some(&*client_id)));
    assert_eq!(events[2]["address"], "127.0.0.1");
    assert!(events[3].get("username").is_none(), "no account by that name: {}", events[3]);
    assert_eq!(events[3]["client_id"].as_str(), Some(&*client_id));
    assert_eq!(
        (events[6]["grant_type"].as_str(), events[6]["subject"].as_str()),
        (Some("authorization_code"), Some("local:alice"))
    );
    assert_eq!(events[6]["resource"], gate.url("/mcp"));
    assert_eq!(events[7]["grant_type"], "refresh_token");
    assert_eq!(events[8]["subject"], "local:alice");

    // Administration in a process of its own writes to the same log.
    crate::support::admin(&["keys", "rotate", "--config", &config], "").await;
    let last = std::fs::read_to_string(&audit_path).unwrap().lines().last().map(String::from).unwrap();
    let rotated: Value = serde_json::from_str(&last).unwrap();
    assert_eq!((rotated["event"].as_str(), rotated["alg"].as_str()), (Some("gateway.key_rotated"), Some("ES256")));
    assert!(rotated["kid"].as_str().is_some_and(|k| !k.is_empty()), "{rotated}");

    let page =
        client().get(format!("http://127.0.0.1:{metrics_port}/metrics")).send().await.unwrap().text().await.unwrap();
    for (series, value) in [
        (r#"portcullis_gateway_registrations_total{result="success"}"#, 1.0),
        (r#"portcullis_gateway_sign_ins_total{result="failure"}"#, 2.0),
        (r#"portcullis_gateway_sign_ins_total{result="success"}"#, 1.0),
        (r#"portcullis_gateway_consents_total{result="granted"}"#, 1.0),
        (r#"portcullis_gateway_token_requests_total{grant_type="authorization_code",result="success"}"#, 1.0),
        (r#"portcullis_gateway_token_requests_total{grant_type="refresh_token",result="success"}"#, 1.0),
        (r#"portcullis_gateway_token_requests_total{grant_type="refresh_token",result="invalid_grant"}"#, 1.0),
        ("portcullis_gateway_refresh_reuse_total", 1.0),
        // Every store operation is timed: one code redeemed, two rotations asked for (one refused).
        (r#"portcullis_store_operation_duration_seconds_count{operation="redeem_code_issuing"}"#, 1.0),
        (r#"portcullis_store_operation_duration_seconds_count{operation="rotate_refresh"}"#, 2.0),
    ] {
        assert_eq!(sample_of(&page, series), Some(value), "{series} in\n{page}");
    }
}

/// An OTLP/HTTP trace receiver on loopback, decoding what it gets with the official OTLP protobuf
/// definitions (`opentelemetry-proto`): the spans, each with its resource's `service.name`.
struct Collector {
    url: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>,
}

impl Collector {
    async fn start() -> Collector {
        use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
        use prost::Message;
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: bytes::Bytes| {
                let sink = sink.clone();
                async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            sink.lock().unwrap().extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                        }
                    }
                    let answer = ExportTraceServiceResponse::default().encode_to_vec();
                    ([("content-type", "application/x-protobuf")], answer)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Collector { url, spans }
    }

    /// Waits for the spans of `trace_id` until one is named `name`, and returns them all.
    async fn trace(&self, trace_id: &[u8], until: &str) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
        for _ in 0..100 {
            let spans: Vec<_> =
                self.spans.lock().unwrap().iter().filter(|(_, s)| s.trace_id == trace_id).cloned().collect();
            if spans.iter().any(|(_, s)| s.name == until) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no {until} span of the trace arrived; got {:?}",
            self.spans.lock().unwrap().iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A 16-byte trace id from its hex form.
fn trace_bytes(trace: &str) -> Vec<u8> {
    (0..16).map(|i| u8::from_str_radix(&trace[2 * i..2 * i + 2], 16).unwrap()).collect()
}

/// A verify-mode gate in front of the sample server whose `[traces]` (with `traces`, more settings) go
/// to a loopback receiver, and a token for it.
async fn traced_gate(traces: &str) -> (Collector, Sample, Gate, String) {
    let collector = Collector::start().await;
    let idp = KeyIdp::start().await;
    let sample = Sample::start().await;
    let config = format!(
        "{}\n[traces]\notlp_endpoint = \"{}\"\n{traces}\n",
        crate::verify::config(&sample, &idp.issuer, ""),
        collector.url
    );
    // Batches leave every 200 ms instead of every 5 s (the SDK's standard variable).
    let gate = Gate::start_with_env(&config, &[("OTEL_BSP_SCHEDULE_DELAY", "200")]).await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    (collector, sample, gate, token)
}

#[tokio::test]
async fn a_client_trace_continues_through_the_gate_to_the_upstream() {
    let (collector, _sample, gate, token) = traced_gate("service_name = \"gate-under-test\"").await;
    let (trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let seen = crate::gateway::whoami(&gate, &token, &[("traceparent", &format!("00-{trace}-{client_span}-01"))]).await;

    let trace_id = trace_bytes(trace);
    let spans = collector.trace(&trace_id, "upstream").await;
    let span = |name: &str| {
        spans.iter().find(|(_, s)| s.name == name).unwrap_or_else(|| panic!("no {name} span in {spans:?}")).1.clone()
    };
    let (request, authenticate, upstream) = (span("request"), span("authenticate"), span("upstream"));
    assert!(spans.iter().all(|(service, _)| service.contains("gate-under-test")), "{spans:?}");
    // The gate's request span continues the client's trace; authentication and the upstream call are its
    // children.
    assert_eq!(hex(&request.parent_span_id), client_span);
    assert_eq!(authenticate.parent_span_id, request.span_id);
    assert_eq!(upstream.parent_span_id, request.span_id);
    // The upstream's parent is the gate's upstream span, in the client's trace.
    let forwarded = seen["traceparent"].as_str().unwrap();
    assert_eq!(forwarded, format!("00-{trace}-{}-01", hex(&upstream.span_id)), "{seen:?}");
    // SEP-414: without the header, a trace context in the request's `_meta` parents the upstream call.
    let (trace, meta_span) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let body = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
        "params": {"name": "whoami", "arguments": {}, "_meta": {"traceparent": format!("00-{trace}-{meta_span}-01")}}});
    let r = mcp_post(&client(), &gate.url("/mcp"), body.to_string()).bearer_auth(&token).send().await.unwrap();
    let answer: Value = r.json().await.unwrap();
    let seen: serde_json::Map<String, Value> =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let trace_id = trace_bytes(trace);
    let spans = collector.trace(&trace_id, "upstream").await;
    let upstream = &spans.iter().find(|(_, s)| s.name == "upstream").unwrap().1;
    assert_eq!(hex(&upstream.parent_span_id), meta_span);
    assert_eq!(seen["traceparent"], format!("00-{trace}-{}-01", hex(&upstream.span_id)));

    // The key set fetched at start is traced too, in a trace of its own.
    assert!(
        collector.spans.lock().unwrap().iter().any(|(_, s)| s.name == "jwks.fetch" && s.trace_id != trace_id),
        "no jwks.fetch span"
    );
}

#[tokio::test]
async fn with_no_new_traces_sampled_only_client_sampled_ones_are_recorded_and_the_upstream_is_told() {
    let (collector, _sample, gate, token) = traced_gate("sample_ratio = 0.0").await;

    // No trace context: not recorded, and the upstream is told so in a trace context of its own.
    let seen = crate::gateway::whoami(&gate, &token, &[]).await;
    let untraced = seen["traceparent"].as_str().expect("the upstream got no traceparent").to_owned();
    let parts: Vec<&str> = untraced.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "00"), "{untraced}");
    // A client's trace it does not sample: passed on as it came, not recorded.
    let unsampled = "00-5bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let seen = crate::gateway::whoami(&gate, &token, &[("traceparent", unsampled)]).await;
    assert_eq!(seen["traceparent"], unsampled);
    // A client's trace it samples: recorded whatever the ratio, and continued.
    let (trace, client_span) = ("6bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let seen = crate::gateway::whoami(&gate, &token, &[("traceparent", &format!("00-{trace}-{client_span}-01"))]).await;
    let spans = collector.trace(&trace_bytes(trace), "upstream").await;
    let request = &spans.iter().find(|(_, s)| s.name == "request").expect("no request span").1;
    let upstream = &spans.iter().find(|(_, s)| s.name == "upstream").expect("no upstream span").1;
    assert_eq!(hex(&request.parent_span_id), client_span);
    assert!(spans.iter().any(|(_, s)| s.name == "authenticate" && s.parent_span_id == request.span_id));
    assert_eq!(seen["traceparent"], format!("00-{trace}-{}-01", hex(&upstream.span_id)));

    // Nothing of the other two reached the collector: every span it holds is of the sampled trace.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let traces: std::collections::BTreeSet<String> =
        collector.spans.lock().unwrap().iter().map(|(_, s)| hex(&s.trace_id)).collect();
    assert_eq!(traces.into_iter().collect::<Vec<_>>(), [trace], "traces recorded at ratio 0");
}
