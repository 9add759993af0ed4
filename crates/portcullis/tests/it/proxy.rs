//! The transparent Streamable HTTP proxy, through a real portcullis process, against the sample upstream.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Events, Gate, STEP, Sample, call, client, mcp_post, stream_client, text_of};
use crate::tls::{TlsUpstream, ca_file};

pub(crate) fn unauthenticated(upstream: &str, extra: &str) -> String {
    format!(
        r#"
public_url = "{{public_url}}"
listen = "{{listen}}"
{extra}
[dangerous]
allow_unauthenticated = true
[[server]]
path = "/mcp"
upstream = "{upstream}"
"#
    )
}

async fn setup(extra: &str) -> (Sample, Gate) {
    let sample = Sample::start().await;
    let gate = Gate::start(&unauthenticated(&sample.mcp(), extra)).await;
    (sample, gate)
}

#[tokio::test]
async fn json_response_passes_through() {
    let (_sample, gate) = setup("").await;
    let r = mcp_post(&client(), &gate.url("/mcp"), call(1, "echo", json!({"text": "hello"}))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.headers().get("www-authenticate").is_none());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], 1);
    assert_eq!(text_of(&body), "hello");
}

#[tokio::test]
async fn sse_events_arrive_before_the_upstream_finishes() {
    let (sample, gate) = setup("").await;
    let body = call(2, "progress", json!({"steps": 3, "interval_ms": 0, "gate": "sse-order"}));
    let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["x-accel-buffering"], "no");
    let mut events = Events::new(r);
    // The upstream holds the stream open after its first event until released. Seeing that event
    // now proves the proxy forwards it without waiting for the rest.
    let (id, first) = events.next().await.expect("first event");
    assert_eq!(id.as_deref(), Some("1"));
    assert_eq!(first["method"], "notifications/progress");
    assert_eq!(sample.stats().await["completed"], 0, "upstream must still be mid-stream");
    sample.release("sse-order").await;
    let mut last = None;
    while let Some((_, e)) = events.next().await {
        last = Some(e);
    }
    let last = last.expect("final result");
    assert_eq!(last["id"], 2);
    assert_eq!(text_of(&last), "completed 3 steps");
}

#[tokio::test]
async fn get_stream_resumes_after_last_event_id() {
    let (_sample, gate) = setup("").await;
    let r = stream_client()
        .get(gate.url("/mcp"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "41")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut events = Events::new(r);
    let (id, e) = events.next().await.unwrap();
    assert_eq!(id.as_deref(), Some("42"));
    assert_eq!(e["params"]["data"], "tick 42");
}

#[tokio::test]
async fn sessions_notifications_and_delete() {
    let (_sample, gate) = setup("").await;
    let c = client();
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "it", "version": "1"}}});
    let r = mcp_post(&c, &gate.url("/mcp"), init.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();

    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let r = mcp_post(&c, &gate.url("/mcp"), note).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.bytes().await.unwrap().is_empty());

    // Session and 2026-07-28 routing headers reach the upstream; credentials and spoofed forwarding
    // headers do not.
    let r = mcp_post(&c, &gate.url("/mcp"), call(3, "whoami", json!({})))
        .header("mcp-session-id", &session)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .header("authorization", "Bearer secret-token-value")
        .header("cookie", "session=secret-cookie")
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = serde_json::from_str(text_of(&r.json().await.unwrap())).unwrap();
    assert_eq!(seen["mcp-session-id"], session.as_str());
    assert_eq!(seen["mcp-protocol-version"], "2025-11-25");
    assert_eq!(seen["mcp-method"], "tools/call");
    assert_eq!(seen["mcp-name"], "whoami");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], gate.base.trim_start_matches("http://"));
    for absent in ["authorization", "cookie", "x-hop"] {
        assert!(seen.get(absent).is_none(), "{absent} must not reach the upstream: {seen}");
    }

    let r = c.delete(gate.url("/mcp")).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(r.status(), 204);
    // The upstream's own statuses pass through unchanged.
    let r = c.delete(gate.url("/mcp")).header("mcp-session-id", &session).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = mcp_post(&c, &gate.url("/mcp"), call(4, "echo", json!({"text": "x"})))
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn upstream_down_is_502_with_a_json_rpc_error() {
    let port = crate::support::closed_port();
    let gate = Gate::start(&unauthenticated(&format!("http://127.0.0.1:{port}/mcp"), "")).await;
    let r = mcp_post(&client(), &gate.url("/mcp"), call(17, "echo", json!({"text": "x"}))).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], 17);
    assert_eq!(body["error"]["code"], -32000);
    assert!(!body.to_string().contains(&port.to_string()), "upstream address must not leak: {body}");
    // Not JSON-RPC: a plain JSON error.
    let r = client().get(gate.url("/mcp")).header("accept", "text/event-stream").send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
}

#[tokio::test]
async fn an_upstream_on_a_unix_socket_is_served_json_and_sse() {
    let dir = crate::support::TempDir::new();
    let (_sample, upstream) = Sample::start_unix(&dir).await;
    let gate = Gate::start(&unauthenticated(&upstream, "")).await;
    let r =
        mcp_post(&client(), &gate.url("/mcp"), call(1, "echo", json!({"text": "over a socket"}))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(text_of(&body), "over a socket");
    // Requests reuse the socket's pooled connections and streams pass through unbuffered.
    for id in 2..6 {
        let r = mcp_post(&client(), &gate.url("/mcp"), call(id, "echo", json!({"text": id}))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let body = call(9, "progress", json!({"steps": 2, "interval_ms": 0}));
    let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = Events::new(r);
    let (_, first) = events.next().await.expect("first event");
    assert_eq!(first["method"], "notifications/progress");
    // The Host is a local server's: `whoami` reports the headers the upstream received.
    let r = mcp_post(&client(), &gate.url("/mcp"), call(10, "whoami", json!({}))).send().await.unwrap();
    let body: Value = r.json().await.unwrap();
    let seen: Value = serde_json::from_str(text_of(&body)).unwrap();
    assert_eq!(seen["host"], "localhost", "{seen}");
}

#[tokio::test]
async fn an_upstream_speaking_http2_from_the_first_byte() {
    let sample = Sample::start().await;
    let dir = crate::support::TempDir::new();
    let (_on_socket, socket_upstream) = Sample::start_unix(&dir).await;
    for upstream in [sample.mcp(), socket_upstream] {
        let config = unauthenticated(&upstream, "").replace(
            &format!("upstream = \"{upstream}\""),
            &format!("upstream = \"{upstream}\"\nupstream_http2 = true"),
        );
        let gate = Gate::start(&config).await;
        // Several calls at once share the HTTP/2 connection; each gets its own answer.
        let calls = (1..=8).map(|id| {
            let url = gate.url("/mcp");
            async move {
                let r =
                    mcp_post(&client(), &url, call(id, "echo", json!({"text": id.to_string()}))).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = r.json().await.unwrap();
                assert_eq!((body["id"].clone(), text_of(&body).to_owned()), (json!(id), id.to_string()));
            }
        });
        futures_util::future::join_all(calls).await;
        let body = call(9, "progress", json!({"steps": 2, "interval_ms": 0}));
        let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let mut events = Events::new(r);
        let mut last = None;
        while let Some((_, e)) = events.next().await {
            last = Some(e);
        }
        assert_eq!(text_of(&last.expect("final result")), "completed 2 steps");
    }
    // What goes on the wire: the HTTP/2 connection preface from the first byte, no HTTP/1.1 upgrade.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}/mcp", listener.local_addr().unwrap());
    let config = unauthenticated(&upstream, "[proxy]\nheader_timeout_ms = 1000")
        .replace("upstream = ", "upstream_http2 = true\nupstream = ");
    let gate = Gate::start(&config).await;
    let sent = mcp_post(&client(), &gate.url("/mcp"), call(11, "echo", json!({"text": "x"}))).send();
    let read = async {
        use tokio::io::AsyncReadExt;
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut preface = [0u8; 24];
        conn.read_exact(&mut preface).await.unwrap();
        preface
    };
    let (_, preface) = tokio::join!(sent, tokio::time::timeout(STEP, read));
    assert_eq!(&preface.expect("the gate connects"), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
}

#[tokio::test]
async fn an_https_upstream_speaks_http1_unless_marked_http2_and_full_connections_get_company() {
    // One stream per HTTP/2 connection: each stream held open needs a connection of its own.
    let upstream = TlsUpstream::start(1).await;
    for (marked, protocol) in [("", "http/1.1"), ("upstream_http2 = true\n", "h2")] {
        let config = unauthenticated(&upstream.url, "[proxy]\nheader_timeout_ms = 3000")
            .replace("upstream = ", &format!("{marked}upstream = "));
        let gate = Gate::start_with_env(&config, &[("SSL_CERT_FILE", &ca_file())]).await;
        let before = upstream.protocols().len();
        // Three SSE streams at once, none of which ends while the others start.
        let opened =
            (1..=3).map(|id| mcp_post(&stream_client(), &gate.url("/mcp"), call(id, "echo", json!({}))).send());
        let mut streams = Vec::new();
        for r in futures_util::future::join_all(opened).await {
            let r = r.unwrap();
            assert_eq!(
                (r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()),
                (200, "text/event-stream")
            );
            let mut events = Events::new(r);
            let (_, first) = events.next().await.expect("the upstream's event");
            assert_eq!(first["result"], json!({}));
            streams.push(events);
        }
        assert_eq!(upstream.protocols()[before..], [protocol; 3], "one connection per stream, in {protocol}");
    }
}

#[tokio::test]
async fn an_https_upstream_marked_http2_that_does_not_speak_it_is_named_in_the_log() {
    // One refuses the handshake for want of a common protocol; one ignores the offer.
    for (offered, named) in
        [(&[&b"http/1.1"[..]][..], "TLS offering HTTP/2 only"), (&[][..], "did not agree to HTTP/2")]
    {
        let upstream = TlsUpstream::offering(offered, 1).await;
        let config = unauthenticated(&upstream.url, "").replace("upstream = ", "upstream_http2 = true\nupstream = ");
        let (gate, mut log) = Gate::start_logging(&config, &[("SSL_CERT_FILE", &ca_file())]).await;
        let r = mcp_post(&client(), &gate.url("/mcp"), call(1, "echo", json!({}))).send().await.unwrap();
        assert_eq!(r.status(), 502);
        let line = log.find("upstream failure").await.expect("the failure is logged");
        assert!(line.contains(named), "{line}");
    }
}

#[tokio::test]
async fn a_rule_without_targets_governs_a_body_of_answers_too() {
    let sample = Sample::start().await;
    let rule = "[[server.policy]]\nname = \"closed\"\ndeny_if = 'true'";
    let gate = Gate::start(&format!("{}{rule}\n", unauthenticated(&sample.mcp(), ""))).await;
    let answer = json!({"jsonrpc": "2.0", "id": "s-1", "result": {}}).to_string();
    let r = mcp_post(&client(), &gate.url("/mcp"), answer).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn completing_a_prompts_argument_is_governed_as_the_prompt() {
    let sample = Sample::start().await;
    let rule = "[[server.policy]]\nname = \"no-admin-prompts\"\nprompts = [\"admin_*\"]\ndeny_if = 'true'";
    let gate = Gate::start(&format!("{}{rule}\n", unauthenticated(&sample.mcp(), ""))).await;
    let complete = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "completion/complete",
               "params": {"ref": {"type": "ref/prompt", "name": name}, "argument": {"name": "customer", "value": ""}}})
        .to_string()
    };
    let r = mcp_post(&client(), &gate.url("/mcp"), complete("admin_report")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = mcp_post(&client(), &gate.url("/mcp"), complete("weekly")).send().await.unwrap();
    assert_ne!(r.status(), 403, "another prompt's completion goes upstream");
}

#[tokio::test]
async fn a_missing_upstream_socket_is_502_without_its_path() {
    let dir = crate::support::TempDir::new();
    let socket = dir.path.join("nobody.sock");
    let gate = Gate::start(&unauthenticated(&format!("unix:{}:/mcp", socket.display()), "")).await;
    let r = mcp_post(&client(), &gate.url("/mcp"), call(3, "echo", json!({"text": "x"}))).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], 3);
    assert_eq!(body["error"]["code"], -32000);
    assert!(!body.to_string().contains("nobody.sock"), "the socket path must not leak: {body}");
}

#[tokio::test]
async fn a_silent_stream_is_ended_after_the_idle_timeout_and_a_talking_one_is_not() {
    use futures_util::StreamExt;
    let (sample, gate) = setup("[proxy]\nidle_timeout_ms = 400").await;
    // Events every 150 ms for 900 ms: the bound is on silence, not on the stream's length.
    let body = call(4, "progress", json!({"steps": 6, "interval_ms": 150}));
    let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
    let mut events = Events::new(r);
    let mut last = None;
    while let Some((_, e)) = events.next().await {
        last = Some(e);
    }
    assert_eq!(text_of(&last.expect("final result")), "completed 6 steps");

    // Silent after its first event: cut 400 ms later, as a broken stream rather than a finished one.
    let body = call(5, "progress", json!({"steps": 2, "interval_ms": 0, "gate": "idle"}));
    let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
    let mut stream = r.bytes_stream();
    let first = stream.next().await.expect("a first chunk").unwrap();
    let silent_since = std::time::Instant::now();
    assert!(String::from_utf8_lossy(&first).contains("notifications/progress"), "{first:?}");
    let broken = tokio::time::timeout(STEP, async {
        loop {
            match stream.next().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    })
    .await
    .expect("the silent stream ends");
    assert!(broken, "a stream cut for silence must not look complete");
    assert!(silent_since.elapsed() >= Duration::from_millis(350), "cut after {:?}", silent_since.elapsed());
    sample.release("idle").await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let (sample, gate) = setup("[proxy]\nheader_timeout_ms = 300").await;
    let r = mcp_post(&client(), &gate.url("/mcp"), call(5, "sleep", json!({"ms": 10_000}))).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], 5);
    assert_eq!(body["error"]["code"], -32001);
    // Giving up on the upstream cancels its request.
    wait_for(|| async { sample.stats().await["cancelled"] == 1 }).await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (sample, gate) = setup("[proxy]\nmax_body_bytes = 1024").await;
    let big = call(6, "echo", json!({"text": "x".repeat(2000)}));
    let r = mcp_post(&client(), &gate.url("/mcp"), big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    // Without Content-Length (chunked) the limit still holds.
    let chunks = futures_util::stream::iter(
        big.into_bytes().chunks(100).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let r = client()
        .post(gate.url("/mcp"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(sample.stats().await["completed"], 0, "nothing reached the upstream");
    let r = mcp_post(&client(), &gate.url("/mcp"), call(7, "echo", json!({"text": "small"}))).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn unknown_path_is_404() {
    let (_sample, gate) = setup("").await;
    for path in ["/mcp/extra", "/other"] {
        let r = client().post(gate.url(path)).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The root is the landing page: GET only.
    assert_eq!(client().post(gate.url("/")).body("{}").send().await.unwrap().status(), 405);
    assert_eq!(client().get(gate.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(client().get(gate.url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn origin_validation_and_cors() {
    let (_sample, gate) = setup("[origins]\nallowed = [\"https://app.example.com\"]").await;
    let c = client();
    let body = call(8, "echo", json!({"text": "o"}));
    let r =
        mcp_post(&c, &gate.url("/mcp"), body.clone()).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r =
        mcp_post(&c, &gate.url("/mcp"), body.clone()).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_owned();
    assert!(exposed.contains("mcp-session-id") && exposed.contains("www-authenticate"), "{exposed}");
    // Our own public origin is always allowed.
    let r = mcp_post(&c, &gate.url("/mcp"), body).header("origin", gate.base.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .request(reqwest::Method::OPTIONS, gate.url("/mcp"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, mcp-session-id, mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers()["access-control-allow-origin"], "https://app.example.com");
    let allowed = r.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    for h in ["authorization", "mcp-session-id", "mcp-protocol-version"] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    let r = c
        .request(reqwest::Method::OPTIONS, gate.url("/mcp"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let (sample, gate) = setup("").await;
    // A request still waiting for response headers.
    let pending = mcp_post(&stream_client(), &gate.url("/mcp"), call(9, "sleep", json!({"ms": 60_000}))).send();
    assert!(tokio::time::timeout(Duration::from_millis(500), pending).await.is_err());
    wait_for(|| async { sample.stats().await["cancelled"] == 1 }).await;

    // A stream the client stops reading and drops.
    let body = call(10, "progress", json!({"steps": 5, "gate": "disconnect"}));
    let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
    let mut events = Events::new(r);
    events.next().await.unwrap();
    assert_eq!(sample.stats().await["open_streams"], 1);
    drop(events);
    wait_for(|| async { sample.stats().await["open_streams"] == 0 }).await;
    assert_eq!(sample.stats().await["cancelled"], 2);
}

/// A two-step `progress` stream through `gate` that its upstream holds at `hold` after the first event
/// (until `Sample::release`), that first event read; with the HTTP version it was answered in.
async fn held_stream(client: &reqwest::Client, gate: &Gate, id: u64, hold: &str) -> (Events, reqwest::Version) {
    let body = call(id, "progress", json!({"steps": 2, "interval_ms": 0, "gate": hold}));
    let r = mcp_post(client, &gate.url("/mcp"), body).send().await.unwrap();
    let version = r.version();
    let mut events = Events::new(r);
    events.next().await.expect("first event");
    (events, version)
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let (sample, gate) = setup("[proxy]\nshutdown_grace_ms = 10000").await;
    let (events, _) = held_stream(&stream_client(), &gate, 11, "shutdown").await;
    terminate_during(gate, &sample, events, "shutdown").await;
}

#[tokio::test]
async fn an_http2_stream_outlives_the_idle_bound_of_its_connection() {
    // The idle bound of an HTTP/2 connection counts only the time with no exchange in progress: a
    // stream open for several bounds keeps its connection, and the calls after it are served.
    let (sample, gate) = setup("[proxy]\nclient_header_timeout_ms = 500").await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().connect_timeout(STEP).build().unwrap();
    let (mut events, version) = held_stream(&h2, &gate, 12, "h2-idle").await;
    assert_eq!(version, reqwest::Version::HTTP_2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sample.release("h2-idle").await;
    let mut last = None;
    while let Some((_, e)) = events.next().await {
        last = Some(e);
    }
    assert_eq!(text_of(&last.expect("the stream ran to its end")), "completed 2 steps");
    let r = mcp_post(&h2, &gate.url("/mcp"), call(13, "echo", json!({"text": "after"}))).send().await.unwrap();
    assert_eq!(text_of(&r.json::<Value>().await.unwrap()), "after");
}

#[tokio::test]
async fn requests_beyond_the_upstream_bound_wait_for_a_free_place_or_get_503() {
    let metrics = crate::support::closed_port();
    let extra = format!(
        "[proxy]\nmax_upstream_requests = 1\nheader_timeout_ms = 1000\n[metrics]\nlisten = \"127.0.0.1:{metrics}\""
    );
    let (sample, gate) = setup(&extra).await;
    // One stream holds the one place for as long as it is open.
    let (mut events, _) = held_stream(&stream_client(), &gate, 20, "bound").await;
    let received = sample.stats().await["received"].clone();

    // Meanwhile another request waits for the header timeout, then is refused without reaching the
    // upstream.
    let r = mcp_post(&client(), &gate.url("/mcp"), call(21, "echo", json!({"text": "x"}))).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let refused: Value = r.json().await.unwrap();
    assert_eq!((refused["id"].clone(), refused["error"]["code"].clone()), (json!(21), json!(-32000)), "{refused}");
    assert_eq!(sample.stats().await["received"], received, "the refused request reached the upstream");
    let page = client().get(format!("http://127.0.0.1:{metrics}/metrics")).send().await.unwrap().text().await.unwrap();
    let busy = page.lines().find(|l| l.starts_with("portcullis_upstream_errors_total{") && l.contains("kind=\"busy\""));
    assert_eq!(busy.and_then(|l| l.rsplit(' ').next()), Some("1"), "{page}");

    // A request that finds the place taken gets it as soon as the stream ends.
    let waiting = mcp_post(&client(), &gate.url("/mcp"), call(22, "echo", json!({"text": "waited"}))).send();
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sample.release("bound").await;
        while events.next().await.is_some() {}
    };
    let (r, ()) = tokio::join!(waiting, release);
    let answer: Value = r.unwrap().json().await.unwrap();
    assert_eq!(text_of(&answer), "waited");
}

/// Sends SIGTERM while `events` is open, its upstream holding the stream at `gate_name` (a two-step
/// `progress`): new connections are refused once the listener closes, the stream in flight still runs
/// to its end, and the process exits cleanly.
async fn terminate_during(mut gate: Gate, sample: &Sample, mut events: Events, gate_name: &str) {
    gate.terminate();
    wait_for(|| async { client().get(gate.url("/healthz")).send().await.is_err() }).await;
    sample.release(gate_name).await;
    let mut last = None;
    while let Some((_, e)) = events.next().await {
        last = Some(e);
    }
    assert_eq!(text_of(&last.unwrap()), "completed 2 steps");
    let status = tokio::time::timeout(STEP, gate.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn one_worker_serves_streams_and_calls_together_and_shuts_down_gracefully() {
    // `workers = 1`: one worker thread serves every connection.
    let (sample, gate) = setup("[proxy]\nworkers = 1\nshutdown_grace_ms = 10000").await;
    let body = call(1, "progress", json!({"steps": 2, "interval_ms": 0, "gate": "one-worker"}));
    let r = mcp_post(&stream_client(), &gate.url("/mcp"), body).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = Events::new(r);
    events.next().await.expect("first event");
    // While that stream waits on its upstream, calls on other connections are answered.
    let calls = (2..=9).map(|id| {
        let url = gate.url("/mcp");
        async move {
            let r = mcp_post(&client(), &url, call(id, "echo", json!({"text": id.to_string()}))).send().await.unwrap();
            let body: Value = r.json().await.unwrap();
            assert_eq!((body["id"].clone(), text_of(&body).to_owned()), (json!(id), id.to_string()));
        }
    });
    tokio::time::timeout(STEP, futures_util::future::join_all(calls)).await.expect("calls answered");
    terminate_during(gate, &sample, events, "one-worker").await;
}

/// Polls `cond` until it holds, for at most [`STEP`].
async fn wait_for<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(STEP, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not reached in time");
}
