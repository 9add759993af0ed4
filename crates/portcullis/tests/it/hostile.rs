//! What an attacker sends, through a real portcullis process: bodies the gate cannot classify, batches
//! that hide a tool, `Mcp-Method` / `Mcp-Name` headers that disagree with the body, and spoofed
//! forwarding and identity headers. Every refusal happens before the upstream sees anything.

use serde_json::{Value, json};

use crate::support::{Gate, KeyIdp, Sample, call, client, mcp_post, text_of};

async fn start() -> (KeyIdp, Sample, Gate) {
    let idp = KeyIdp::start().await;
    let sample = Sample::start().await;
    // Tables after `[server.verify]` still belong to the `[[server]]`.
    let extra = "[server.tool_scopes]\n\"admin_*\" = [\"mcp:admin\"]\n[server.identity_headers]\nx-user-sub = \"sub\"";
    let gate = Gate::start(&crate::verify::config(&sample, &idp.issuer, extra)).await;
    (idp, sample, gate)
}

async fn received(sample: &Sample) -> u64 {
    sample.stats().await["received"].as_u64().unwrap()
}

async fn post(gate: &Gate, token: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = client()
        .post(gate.url("/mcp"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_batch_cannot_hide_a_tool_from_its_scope_rule() {
    let (idp, sample, gate) = start().await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "admin_delete", "arguments": {}}},
    ]);
    let before = received(&sample).await;
    let (status, body) = post(&gate, &token, batch.to_string(), &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "insufficient_scope");
    assert_eq!(received(&sample).await, before, "the upstream saw the batch");
    // A batch of allowed calls passes, element by element.
    let fine = json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]);
    let (status, _) = post(&gate, &token, fine.to_string(), &[]).await;
    assert_ne!(status, 403);
    assert_eq!(received(&sample).await, before + 1);
}

#[tokio::test]
async fn bodies_the_gate_cannot_parse_never_reach_the_upstream() {
    let (idp, sample, gate) = start().await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let admin = |args: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"admin_delete","arguments":{args}}}}}"#
        )
    };
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(admin("{}").as_bytes());
    let utf16: Vec<u8> = admin("{}").encode_utf16().flat_map(u16::to_le_bytes).collect();
    let cases: Vec<(&str, Vec<u8>, i64)> = vec![
        ("a UTF-8 byte order mark", bom, -32700),
        ("UTF-16", utf16, -32700),
        ("NaN in the arguments", admin(r#"{"n":NaN}"#).into_bytes(), -32700),
        (
            "two method members",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"admin_delete"}}"#
                .to_vec(),
            -32600,
        ),
        (
            "two names",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"admin_delete"}}"#
                .to_vec(),
            -32602,
        ),
        (
            "positional params",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["admin_delete"]}"#.to_vec(),
            -32600,
        ),
        (
            "invalid UTF-8 in the arguments",
            admin(r#"{"x":"@"}"#).bytes().map(|b| if b == b'@' { 0xFF } else { b }).collect(),
            -32700,
        ),
        ("a lone surrogate in the arguments", admin(r#"{"x":"\ud800"}"#).into_bytes(), -32700),
        (
            "a second name in another case (Go's encoding/json runs the last)",
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","Name":"admin_delete"}}"#
                .to_vec(),
            -32600,
        ),
        (
            "an id in another case (a request to Go, a notification to the gate)",
            br#"{"jsonrpc":"2.0","ID":1,"method":"tools/call","params":{"name":"admin_delete"}}"#.to_vec(),
            -32600,
        ),
        ("not JSON at all", b"tools/call admin_delete".to_vec(), -32700),
        ("an empty body", Vec::new(), -32700),
    ];
    let before = received(&sample).await;
    for (what, body, code) in cases {
        let (status, answer) = post(&gate, &token, body, &[]).await;
        assert_eq!(status, 400, "{what}: {answer}");
        assert_eq!(answer["jsonrpc"], "2.0", "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
    }
    assert_eq!(received(&sample).await, before, "the upstream saw a body the gate could not classify");
    // Nested 200 deep, the call is still read for what it is: the scope rule applies.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let (status, answer) = post(&gate, &token, admin(&deep), &[]).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(received(&sample).await, before);
}

#[tokio::test]
async fn a_body_the_upstream_could_decode_otherwise_never_reaches_it() {
    let (idp, sample, gate) = start().await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    // In UTF-7, the string's text is `","name":"admin_delete`: an upstream that decodes the charset it
    // is told (the MCP TypeScript SDK's transport does) would read a second `name` and run admin_delete.
    let smuggled = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{},"x":"+ACIALAAiAG4AYQBtAGUAIgA6ACIAYQBkAG0AaQBuAF8AZABlAGwAZQB0AGU-"}}"#;
    let send = |body: String, headers: &[(&'static str, &'static str)]| {
        let mut req = client()
            .post(gate.url("/mcp"))
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let before = received(&sample).await;
    for (what, headers) in [
        ("a UTF-7 charset", &[("content-type", "application/json; charset=utf-7")][..]),
        ("a quoted UTF-16 charset", &[("content-type", "application/json; Charset=\"UTF-16\"")][..]),
        (
            "two Content-Type headers",
            &[("content-type", "application/json"), ("content-type", "application/json; charset=utf-7")][..],
        ),
        ("a content coding", &[("content-type", "application/json"), ("content-encoding", "br")][..]),
    ] {
        let (status, answer) = send(smuggled.to_owned(), headers).await;
        assert_eq!(status, 415, "{what}: {answer}");
        assert_eq!(answer["error"], "invalid_request", "{what}: {answer}");
    }
    assert_eq!(received(&sample).await, before, "the upstream saw a body it could read otherwise");
    // UTF-8, named or not, and the identity coding pass.
    let echo = call(1, "echo", json!({"text": "utf-8"})).to_string();
    for headers in [
        &[("content-type", "application/json")][..],
        &[("content-type", "application/json; charset=UTF-8")][..],
        &[("content-type", "application/json;charset=\"utf-8\""), ("content-encoding", "identity")][..],
    ] {
        let (status, answer) = send(echo.clone(), headers).await;
        assert_eq!(status, 200, "{headers:?}: {answer}");
    }
    assert_eq!(received(&sample).await, before + 3);
}

#[tokio::test]
async fn an_mcp_session_is_used_only_by_whoever_opened_it() {
    let (idp, sample, gate) = start().await;
    let (alice, mallory) = (
        idp.token_for("alice", &gate.url("/mcp"), "mcp:tools"),
        idp.token_for("mallory", &gate.url("/mcp"), "mcp:tools"),
    );
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = mcp_post(&client(), &gate.url("/mcp"), initialize.to_string()).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let echo = |token: &str| {
        mcp_post(&client(), &gate.url("/mcp"), call(2, "echo", json!({"text": "s"})))
            .bearer_auth(token)
            .header("mcp-session-id", &session)
    };
    assert_eq!(echo(&alice).send().await.unwrap().status(), 200);
    // Someone else who learnt the id, with a good token of their own: no such session, whatever the
    // method; the upstream is not asked.
    let before = received(&sample).await;
    let r = echo(&mallory).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["message"], "no such MCP session");
    for request in
        [client().get(gate.url("/mcp")).header("accept", "text/event-stream"), client().delete(gate.url("/mcp"))]
    {
        let r = request.bearer_auth(&mallory).header("mcp-session-id", &session).send().await.unwrap();
        assert_eq!(r.status(), 404);
    }
    assert_eq!(received(&sample).await, before);
    assert_eq!(echo(&alice).send().await.unwrap().status(), 200, "still the opener's");

    // The client's id is the upstream's with the gate's tag; the upstream is sent its own.
    let (upstream_id, tag) = session.rsplit_once('.').unwrap();
    assert_eq!(tag.len(), 22, "{session}");
    let r = mcp_post(&client(), &gate.url("/mcp"), call(3, "whoami", json!({})))
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    let seen: Value = serde_json::from_str(text_of(&r.json().await.unwrap())).unwrap();
    assert_eq!(seen["mcp-session-id"], upstream_id);
    // The upstream's own id, or another tag, is no session here.
    let before = received(&sample).await;
    let forged = format!("{upstream_id}.{}", "A".repeat(22));
    for id in [upstream_id, forged.as_str()] {
        let r = mcp_post(&client(), &gate.url("/mcp"), call(4, "echo", json!({"text": "s"})))
            .bearer_auth(&alice)
            .header("mcp-session-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{id}");
    }
    assert_eq!(received(&sample).await, before);
}

/// Replicas sharing the operator key, and a gate restarted with it, agree who opened a session; a gate
/// with a key of its own finds no such session.
#[tokio::test]
async fn a_session_is_its_openers_on_every_replica_sharing_the_operator_key() {
    let idp = KeyIdp::start().await;
    let sample = Sample::start().await;
    let config = crate::verify::config(&sample, &idp.issuer, "");
    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    let a = Gate::start_with_env(&config, &[("PORTCULLIS_OPERATOR_KEY", KEY)]).await;
    let b = Gate::start_with_env(&config, &[("PORTCULLIS_OPERATOR_KEY", KEY)]).await;
    let own = Gate::start(&config).await;
    let token = |gate: &Gate| idp.token_for("alice", &gate.url("/mcp"), "mcp:tools");
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = mcp_post(&client(), &a.url("/mcp"), initialize.to_string()).bearer_auth(token(&a)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let echo = |gate: &Gate| {
        mcp_post(&client(), &gate.url("/mcp"), call(2, "echo", json!({"text": "s"})))
            .bearer_auth(token(gate))
            .header("mcp-session-id", &session)
    };
    assert_eq!(echo(&a).send().await.unwrap().status(), 200);
    assert_eq!(echo(&b).send().await.unwrap().status(), 200, "another replica, or the same one restarted");
    assert_eq!(echo(&own).send().await.unwrap().status(), 404, "a gate with a key of its own");
}

#[tokio::test]
async fn mcp_method_and_name_headers_must_agree_with_the_body() {
    let (idp, sample, gate) = start().await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let echo = call(5, "echo", json!({"text": "hi"}));
    let before = received(&sample).await;
    for headers in [
        vec![("mcp-method", "tools/list")],
        vec![("mcp-method", "tools/call"), ("mcp-name", "admin_delete")],
        vec![("mcp-name", "=?base64?YWRtaW5fZGVsZXRl?=")],
    ] {
        let (status, answer) = post(&gate, &token, echo.clone(), &headers).await;
        assert_eq!(status, 400, "{headers:?}: {answer}");
        assert_eq!(answer["error"]["code"], -32020, "{headers:?}: {answer}");
        assert_eq!(answer["id"], 5);
    }
    assert_eq!(received(&sample).await, before);
    // Headers naming an allowed tool do not authorize a body that calls another one.
    let admin = call(6, "admin_delete", json!({}));
    let (status, _) = post(&gate, &token, admin, &[("mcp-method", "tools/call"), ("mcp-name", "echo")]).await;
    assert_eq!(status, 400);
    // Agreeing headers (plain and base64 sentinel) pass.
    for name in ["echo", "=?base64?ZWNobw==?="] {
        let (status, answer) =
            post(&gate, &token, echo.clone(), &[("mcp-method", "tools/call"), ("mcp-name", name)]).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["result"]["content"][0]["text"], "hi");
    }
}

#[tokio::test]
async fn spoofed_forwarding_and_identity_headers_never_reach_the_upstream() {
    let (idp, _sample, gate) = start().await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let r = mcp_post(&client(), &gate.url("/mcp"), call(1, "whoami", json!({})))
        .bearer_auth(&token)
        .header("x_user_sub", "admin")
        .header("X_User_Sub", "admin")
        .header("X_Forwarded_For", "10.9.9.9")
        .header("x-forwarded-for", "10.9.9.9")
        .header("X-Real-IP", "10.9.9.9")
        .header("Forwarded", "for=10.9.9.9;proto=https")
        .header("x_forwarded_host", "evil.example")
        .header("True-Client-IP", "10.9.9.9")
        .header("CF-Connecting-IP", "10.9.9.9")
        .header("X-HTTP-Method-Override", "DELETE")
        .header("X-Original-URL", "/evil.example/admin")
        // Checked against the body only as `Mcp-Method` and `Mcp-Name`; other spellings do not pass.
        .header("mcp_method", "tools/list")
        .header("Mcp_Name", "admin_delete")
        .header("Last_Event_ID", "ev-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let seen: Value = serde_json::from_str(body["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let seen = seen.as_object().unwrap();
    for (name, value) in seen {
        let v = value.as_str().unwrap_or_default();
        assert!(
            !v.contains("10.9.9.9") && !v.contains("evil.example") && v != "admin",
            "{name}: {v} reached the upstream"
        );
        assert!(!name.contains('_'), "{name} reached the upstream");
    }
    for name in ["true-client-ip", "cf-connecting-ip", "x-http-method-override", "x-original-url"] {
        assert!(!seen.contains_key(name), "{name} reached the upstream");
    }
    assert_eq!(seen["x-user-sub"], "user-1");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", gate.base.trim_start_matches("http://"))
    );
}

#[tokio::test]
async fn oauth_parameters_may_not_repeat() {
    use crate::gateway::{pkce, sign_in, token};
    let (_sample, gate) = crate::gateway::start().await;
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:40001/cb";
    let signed = sign_in(&gate, "configured", redirect, &challenge, "mcp:tools").await;
    let basic = Some(("configured", "a+b %c:d"));
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", "bogus"),
        ("code", signed.code.as_str()),
        ("redirect_uri", redirect),
        ("code_verifier", verifier.as_str()),
    ];
    let (status, body, _) = token(&gate, basic, &form).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("\"code\""), "{body}");
    let mut several = form.clone();
    several.remove(1);
    several.push(("resource", "http://a.example/mcp"));
    several.push(("resource", "http://b.example/mcp"));
    let (status, body, _) = token(&gate, basic, &several).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");

    // RFC 6749 §5.2: a JSON body is an invalid request, answered in JSON.
    let r = client()
        .post(gate.url("/token"))
        .json(&json!({"grant_type": "authorization_code", "code": signed.code}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // Nothing was spent by the refusals: the code still works, once.
    form.remove(1);
    let (status, body, _) = token(&gate, basic, &form).await;
    assert_eq!(status, 200, "{body}");

    // A registration naming a member twice is ambiguous metadata (RFC 7591 §3.2.2).
    let r = client()
        .post(gate.url("/register"))
        .header("content-type", "application/json")
        .body(r#"{"redirect_uris":["http://127.0.0.1/cb"],"redirect_uris":["https://evil.example/cb"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client_metadata");
    assert!(body["error_description"].as_str().unwrap().contains("redirect_uris"), "{body}");

    // The authorization request too (RFC 6749 §3.1).
    let r = crate::gateway::no_redirects()
        .get(gate.url("/authorize"))
        .query(&[("response_type", "code"), ("client_id", "configured"), ("client_id", "other")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("appears more than once"));
}

/// One sign-in attempt in a fresh flow: the login page's error, or `None` when it went on (to consent or
/// back to the client).
async fn sign_in_attempt(gate: &Gate, username: &str, password: &str) -> Option<String> {
    use crate::gateway::{authorize_page, pkce, post_step};
    let (_, challenge) = pkce();
    let params = [
        ("client_id", "configured"),
        ("redirect_uri", "http://127.0.0.1/cb"),
        ("code_challenge", challenge.as_str()),
        ("scope", "mcp:tools"),
    ];
    let (cookie, page) = authorize_page(gate, &params).await;
    let r = post_step(gate, &cookie, &page, "login", &[("username", username), ("password", password)]).await;
    let page = r.text().await.unwrap();
    if page.contains("Allow access?") || page.is_empty() {
        return None;
    }
    let start = page.find("class=\"error\"").map(|i| i + page[i..].find('>').unwrap() + 1)?;
    Some(page[start..start + page[start..].find('<').unwrap()].trim().to_owned())
}

#[tokio::test]
async fn sign_ins_are_throttled_per_account_and_address_across_flows_and_restarts() {
    let (_sample, gate) = crate::gateway::start().await;
    let password = crate::gateway::PASSWORD;
    for _ in 0..5 {
        let error = sign_in_attempt(&gate, "alice", "wrong password").await.unwrap();
        assert!(error.contains("Wrong username or password"), "{error}");
    }
    // A fresh flow, the right password: still refused, and told when to try again.
    let throttled = sign_in_attempt(&gate, "alice", password).await.expect("throttled");
    assert!(throttled.starts_with("Too many failed sign-ins. Try again in "), "{throttled}");
    // An account that does not exist is answered in the same words.
    let words = |e: &str| e.trim_end_matches(|c: char| !c.is_alphabetic()).replace(char::is_numeric, "");
    for _ in 0..5 {
        sign_in_attempt(&gate, "nobody-here", "wrong password").await.unwrap();
    }
    assert_eq!(words(&sign_in_attempt(&gate, "nobody-here", "x").await.unwrap()), words(&throttled));
    // The counts are in the store: a restart keeps them.
    let port: u16 = gate.base.rsplit(':').next().unwrap().parse().unwrap();
    let dir = gate.kill().await;
    let gate = Gate::start_at(&dir.path.join("portcullis.toml"), port, dir, &[]).await;
    assert_eq!(words(&sign_in_attempt(&gate, "alice", password).await.unwrap()), words(&throttled));
    // Twenty failures from one address, across accounts, throttle the address.
    for i in 0..10 {
        let error = sign_in_attempt(&gate, &format!("user-{i}"), "wrong password").await.unwrap();
        assert!(error.starts_with("Wrong username or password"), "{error}");
    }
    assert!(sign_in_attempt(&gate, "carol", "x").await.unwrap().starts_with("Too many failed sign-ins"));
}

#[tokio::test]
async fn methods_streamable_http_does_not_use_are_refused() {
    let (idp, sample, gate) = start().await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let before = received(&sample).await;
    for method in ["PUT", "PATCH", "TRACE", "PROPFIND"] {
        let r = client()
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), gate.url("/mcp"))
            .bearer_auth(&token)
            .body(call(1, "admin_delete", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method}");
        assert_eq!(r.headers()["allow"], "GET, POST, DELETE");
    }
    // A GET carries no body.
    let r = client().get(gate.url("/mcp")).bearer_auth(&token).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(received(&sample).await, before);
}
