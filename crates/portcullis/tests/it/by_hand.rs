//! The proxy against upstreams written by hand for the test, to see what a real server would not show:
//! the head of each request that reaches them, how their connections are kept and replaced, and what
//! becomes of their own challenges.

use std::time::Duration;

use serde_json::{Value, json};

use crate::proxy::unauthenticated;
use crate::support::{Gate, call, client, mcp_post};

/// An upstream by hand that answers every request `{}` (JSON, one request per connection) and hands
/// over the head of each request it got.
async fn head_recording_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (heads, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&seen).to_ascii_lowercase());
                // With a cookie, which the gate does not pass on.
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nset-cookie: __Host-portcullis-csrf=x; Secure; Path=/\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, received)
}

#[tokio::test]
async fn with_rules_no_stream_is_resumed_and_no_list_answer_comes_compressed() {
    let (upstream, mut heads) = head_recording_upstream().await;
    let rule = "[[server.policy]]\nname = \"no-admin\"\ntools = [\"admin_*\"]\ndeny_if = 'true'";
    let ruled = Gate::start(&format!("{}{rule}\n", unauthenticated(&upstream, ""))).await;
    let open = Gate::start(&unauthenticated(&upstream, "")).await;
    let resume = |gate: &Gate| {
        client().get(gate.url("/mcp")).header("accept", "text/event-stream").header("last-event-id", "ev-5")
    };
    // A resumed stream would replay list answers the gate cannot tell from others: not asked for.
    assert_eq!(resume(&ruled).send().await.unwrap().status(), 200);
    assert!(!heads.recv().await.unwrap().contains("last-event-id"));
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
    let r = mcp_post(&client(), &ruled.url("/mcp"), list.clone())
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!heads.recv().await.unwrap().contains("accept-encoding"), "a list answer is asked for uncompressed");
    // Without rules, both go upstream as they came.
    assert_eq!(resume(&open).send().await.unwrap().status(), 200);
    assert!(heads.recv().await.unwrap().contains("last-event-id: ev-5"));
    mcp_post(&client(), &open.url("/mcp"), list).header("accept-encoding", "gzip").send().await.unwrap();
    assert!(heads.recv().await.unwrap().contains("accept-encoding: gzip"));
}

#[tokio::test]
async fn the_client_cannot_set_again_a_query_parameter_of_the_upstream_url() {
    let (upstream, mut heads) = head_recording_upstream().await;
    let gate = Gate::start(&unauthenticated(&format!("{upstream}?tenant=a"), "")).await;
    let post = |query: &str| mcp_post(&client(), &format!("{}{query}", gate.url("/mcp")), call(1, "echo", json!({})));
    // Frameworks that take a parameter's last value would read the client's tenant.
    // `;` separates parameters too for some (Rack 2, older Python).
    for query in ["?tenant=b", "?x=1&tenant=b", "?ten%61nt=b", "?x=1;tenant=b"] {
        let r = post(query).send().await.unwrap();
        assert_eq!(r.status(), 400, "{query}");
    }
    // Others are appended to the configured ones.
    let r = post("?page=2").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none(), "an upstream sets no cookie on the gate's origin");
    let head = heads.recv().await.unwrap();
    assert!(head.starts_with("post /mcp?tenant=a&page=2 http/1.1"), "{head}");
    assert!(heads.try_recv().is_err(), "the refused requests never reached the upstream");
}

/// An HTTP/1.1 upstream by hand: answers `{"jsonrpc":"2.0","id":N,"result":{}}` to each request, closes
/// each connection after `per_connection` answers (as an upstream's keep-alive timeout would, without
/// saying so), and counts the connections it accepted.
async fn counting_upstream(per_connection: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                for _ in 0..per_connection {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    conn.read_exact(&mut body).await.unwrap();
                    let id = serde_json::from_slice::<Value>(&body).unwrap()["id"].clone();
                    let answer = json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        answer.len()
                    );
                    conn.get_mut().write_all(format!("{head}{answer}").as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, accepted)
}

#[tokio::test]
async fn upstream_connections_are_kept_and_one_the_upstream_closed_is_replaced() {
    let (upstream, accepted) = counting_upstream(2).await;
    let gate = Gate::start(&unauthenticated(&upstream, "")).await;
    for id in 1..=5 {
        let r = mcp_post(&client(), &gate.url("/mcp"), call(id, "echo", json!({"text": "x"}))).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {id}");
        assert_eq!(r.json::<Value>().await.unwrap()["id"], id);
        if id % 2 == 0 {
            // The upstream has just closed the connection after its second answer; give the gate the
            // moment it takes to see the end of the connection (otherwise the next request may race it).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Two answers per connection, each connection used for both: three connections for five requests.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// An upstream by hand that checks credentials itself: a `tools/call` of `who` is answered 401 with a
/// challenge naming another authorization server, of `write` 403 for scope `files:write`, of anything
/// else 200 with a `Basic` challenge beside the answer.
async fn challenging_upstream() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let body_at = loop {
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match conn.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                };
                let head = String::from_utf8_lossy(&seen[..body_at]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while seen.len() < body_at + length {
                    match conn.read(&mut buf).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let body = String::from_utf8_lossy(&seen[body_at..]).into_owned();
                let (status, challenge) = if body.contains("\"who\"") {
                    (
                        "401 Unauthorized",
                        r#"Bearer resource_metadata="https://evil.example/.well-known/oauth-protected-resource""#,
                    )
                } else if body.contains("\"write\"") {
                    (
                        "403 Forbidden",
                        r#"Bearer error="insufficient_scope", scope="files:write", resource_metadata="https://evil.example/prm""#,
                    )
                } else {
                    ("200 OK", r#"Basic realm="upstream""#)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nwww-authenticate: {challenge}\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn an_upstreams_own_challenge_never_sends_clients_to_another_authorization_server() {
    let idp = crate::support::KeyIdp::start().await;
    let upstream = challenging_upstream().await;
    let config = format!(
        "public_url = \"{{public_url}}\"\nlisten = \"{{listen}}\"\n[[server]]\npath = \"/mcp\"\nupstream = \"{upstream}\"\nscopes = [\"mcp:tools\"]\n[server.verify]\nissuer = \"{}\"\n[[server]]\npath = \"/open\"\nupstream = \"{upstream}\"\n[dangerous]\nallow_unauthenticated = true\n",
        idp.issuer
    );
    let gate = Gate::start(&config).await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let ask = |path: &str, tool: &str| {
        mcp_post(&client(), &gate.url(path), call(1, tool, json!({}))).bearer_auth(&token).send()
    };
    let prm = format!("resource_metadata=\"{}\"", gate.url("/.well-known/oauth-protected-resource/mcp"));
    let r = ask("/mcp", "who").await.unwrap();
    assert_eq!(r.status(), 401);
    let challenges: Vec<_> =
        r.headers().get_all("www-authenticate").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    assert_eq!(challenges.len(), 1, "{challenges:?}");
    assert!(challenges[0].starts_with("Bearer error=\"invalid_token\""), "{challenges:?}");
    assert!(challenges[0].contains(&prm) && !challenges[0].contains("evil.example"), "{challenges:?}");
    let r = ask("/mcp", "write").await.unwrap();
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer error=\"insufficient_scope\""), "{challenge}");
    assert!(challenge.contains(&prm) && challenge.contains("scope=\"files:write\""), "{challenge}");
    assert!(!challenge.contains("evil.example"), "{challenge}");
    let r = ask("/mcp", "echo").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("www-authenticate").is_none(), "a challenge beside a 200 is dropped");
    // A server without authentication at the gate is the upstream's to protect: its challenge passes.
    let r = mcp_post(&client(), &gate.url("/open"), call(1, "who", json!({}))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("evil.example"));
}
