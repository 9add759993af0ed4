//! The listener under slow and impatient clients, over raw TCP: answers given before the body was read
//! keep the connection usable, request heads have a deadline, and the connection bound holds.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use serde_json::json;

use crate::support::{Events, Gate, KeyIdp, STEP, Sample, call, mcp_post};

async fn start(proxy: &str) -> (KeyIdp, Sample, Gate) {
    let idp = KeyIdp::start().await;
    let sample = Sample::start().await;
    let extra = format!("[proxy]\n{proxy}");
    let gate = Gate::start(&crate::verify::config(&sample, &idp.issuer, &extra)).await;
    (idp, sample, gate)
}

fn addr(gate: &Gate) -> String {
    gate.base.trim_start_matches("http://").to_owned()
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: status and head.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, String)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .expect("a content-length");
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end + length);
    Ok((status, head))
}

/// A POST whose body arrives 50 ms after its headers, refused (401) before the body is read, then a
/// second request on the same connection.
async fn refused_then_reused(addr: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    let (status, _) = read_response(&mut s, &mut buf).await?;
    assert_eq!(status, 401);
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    Ok(read_response(&mut s, &mut buf).await?.0)
}

#[tokio::test]
async fn an_early_answer_leaves_the_connection_usable() {
    let (_idp, _sample, gate) = start("").await;
    let addr = addr(&gate);
    // 300 pairs: ten connections at a time, thirty rounds.
    let mut failures = Vec::new();
    for _ in 0..30 {
        let rounds: Vec<_> = (0..10)
            .map(|_| {
                tokio::spawn({
                    let addr = addr.clone();
                    async move { tokio::time::timeout(STEP, refused_then_reused(&addr)).await }
                })
            })
            .collect();
        for r in rounds {
            match r.await.unwrap() {
                Ok(Ok(200)) => {}
                other => failures.push(format!("{other:?}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 300 second requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
}

#[tokio::test]
async fn a_body_too_large_to_drain_ends_the_connection_openly() {
    let (_idp, _sample, gate) = start("max_body_bytes = 1000").await;
    let addr = addr(&gate);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 5000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (status, head) = tokio::time::timeout(STEP, read_response(&mut s, &mut buf)).await.unwrap().unwrap();
    assert_eq!(status, 401);
    assert!(head.contains("connection: close"), "{head}");
}

/// `true` when the server closed the connection (EOF or reset) within `within`, `false` when it is still
/// open then.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 before the close is fine; keep reading to the close.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn request_heads_have_a_deadline() {
    let (_idp, _sample, gate) = start("client_header_timeout_ms = 1000").await;
    let addr = addr(&gate);
    let mut silent = Vec::new();
    let mut half = Vec::new();
    for i in 0..20 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // Half an HTTP/1.1 head, or a part of the HTTP/2 preface (which alone does not tell the protocol).
        let part = if i % 2 == 0 {
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ")
        } else {
            "PRI * HT".to_owned()
        };
        s.write_all(part.as_bytes()).await.unwrap();
        half.push(s);
    }
    // Others keep being served meanwhile.
    let r = crate::support::client().get(gate.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for s in silent.iter_mut().chain(half.iter_mut()) {
        assert!(closed_within(s, Duration::from_secs(5)).await, "a connection outlived the request-head deadline");
    }
}

#[tokio::test]
async fn connections_beyond_the_bound_wait_for_a_free_slot() {
    let (_idp, _sample, gate) = start("client_header_timeout_ms = 1500\nmax_connections = 3").await;
    let addr = addr(&gate);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Give the listener a moment to take the three slots.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let early = tokio::time::timeout(Duration::from_millis(400), read_response(&mut fourth, &mut buf)).await;
    assert!(early.is_err(), "a fourth connection was served while three held every slot");
    // The idle three reach their deadline; the fourth is then served.
    let (status, _) = tokio::time::timeout(STEP, read_response(&mut fourth, &mut buf)).await.unwrap().unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_trickled_body_meets_its_deadline() {
    let (idp, sample, gate) = start("client_body_timeout_ms = 1000").await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let addr = addr(&gate);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"jsonrpc\":"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let before = sample.stats().await["received"].as_u64().unwrap();
    let mut buf = Vec::new();
    let (status, head) = tokio::time::timeout(STEP, read_response(&mut s, &mut buf)).await.unwrap().unwrap();
    assert_eq!(status, 408, "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    assert_eq!(sample.stats().await["received"].as_u64().unwrap(), before, "nothing went upstream");
}

/// A connection from `source` (a loopback address) to `addr`.
async fn connect_from(source: &str, addr: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// `GET /healthz` on `stream`: the status.
async fn healthz(stream: &mut TcpStream, addr: &str) -> u16 {
    try_healthz(stream, addr).await.expect("no answer to GET /healthz")
}

/// `GET /healthz` on `stream`: the status, or `None` when the connection was closed instead.
async fn try_healthz(stream: &mut TcpStream, addr: &str) -> Option<u16> {
    stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, read_response(stream, &mut buf)).await.ok()?.ok().map(|(status, _)| status)
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let (_idp, _sample, gate) = start("client_header_timeout_ms = 10000\nmax_connections_per_address = 3").await;
    let addr = addr(&gate);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.1", &addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = connect_from("127.0.0.1", &addr).await;
    assert!(closed_within(&mut fourth, Duration::from_secs(2)).await, "a fourth connection from one address was kept");
    // Another address is served meanwhile.
    let mut other = connect_from("127.0.0.2", &addr).await;
    assert_eq!(healthz(&mut other, &addr).await, 200);
    // A connection given back makes room again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.1", &addr).await;
    assert_eq!(healthz(&mut again, &addr).await, 200);
}

#[tokio::test]
async fn trusted_proxies_are_not_bound_per_address() {
    let (_idp, _sample, gate) = start("max_connections_per_address = 1\ntrusted_proxies = [\"127.0.0.1\"]").await;
    let addr = addr(&gate);
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(connect_from("127.0.0.1", &addr).await);
    }
    for s in &mut streams {
        assert_eq!(healthz(s, &addr).await, 200, "a trusted proxy's connection was refused");
    }
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_served_beside_http1() {
    let (_idp, _sample, gate) = start("").await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2.get(format!("{}/healthz", gate.base)).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    // A verify-mode refusal over HTTP/2 carries its challenge like one over HTTP/1.1.
    let resp = h2.post(format!("{}/mcp", gate.base)).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let resp = h1.get(format!("{}/healthz", gate.base)).send().await.unwrap();
    assert_eq!((resp.version(), resp.status().as_u16()), (reqwest::Version::HTTP_11, 200));
}

#[tokio::test]
async fn a_request_head_whose_first_bytes_arrive_alone_is_served() {
    // "P" could begin the HTTP/2 preface ("PRI "), "PO" could not: both are HTTP/1.1 requests once the
    // rest arrives, whichever way the listener tells the protocols apart.
    let (_idp, _sample, gate) = start("").await;
    let addr = addr(&gate);
    for first in ["P", "PO", "G"] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let request = if first.starts_with('P') {
            format!("POST /healthz HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n")
        } else {
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")
        };
        s.write_all(first.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&request.as_bytes()[first.len()..]).await.unwrap();
        let mut buf = Vec::new();
        let (status, _) = tokio::time::timeout(STEP, read_response(&mut s, &mut buf)).await.unwrap().unwrap();
        // /healthz answers GET; a POST to it is refused by the router, but answered.
        let want = if first.starts_with('P') { 405 } else { 200 };
        assert_eq!(status, want, "first bytes {first:?}");
    }
}

/// A raw HTTP/2 client connection that only reads: the types of the frames the server sent.
struct H2Peer {
    stream: TcpStream,
    unread: Vec<u8>,
    frames: Vec<u8>,
}

impl H2Peer {
    /// Reads frames until the server closes the connection (`true`) or `within` passes (`false`).
    async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while self.unread.len() >= 9 {
                let b = &self.unread;
                let len = usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]);
                if b.len() < 9 + len {
                    break;
                }
                self.frames.push(b[3]);
                self.unread.drain(..9 + len);
            }
            let mut chunk = [0u8; 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(n)) => self.unread.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

#[tokio::test]
async fn an_idle_http2_connection_is_told_to_go_away_and_closed() {
    const SETTINGS: u8 = 0x4;
    const GOAWAY: u8 = 0x7;
    let (_idp, _sample, gate) = start("client_header_timeout_ms = 1000").await;
    let addr = addr(&gate);
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        // The preface and an empty SETTINGS frame: a complete HTTP/2 start, then nothing. The client
        // never answers the server's PING either, so the close cannot wait on it.
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
        idle.push(H2Peer { stream, unread: Vec::new(), frames: Vec::new() });
    }
    // Not before the bound…
    tokio::time::sleep(Duration::from_millis(400)).await;
    for peer in &mut idle {
        assert!(!peer.closed_within(Duration::from_millis(50)).await, "closed before the idle bound");
    }
    // …but soon after it, with a GOAWAY first.
    for peer in &mut idle {
        assert!(peer.closed_within(Duration::from_secs(5)).await, "an idle HTTP/2 connection stayed open");
        assert!(peer.frames.contains(&SETTINGS), "{:?}", peer.frames);
        assert!(peer.frames.contains(&GOAWAY), "no GOAWAY before the close: {:?}", peer.frames);
    }
    // The listener serves on.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    assert_eq!(h2.get(format!("{}/healthz", gate.base)).send().await.unwrap().status(), 200);
}

/// `GET /healthz` on a new connection from `source`: the status, or `None` when the connection was
/// closed instead.
async fn healthz_from(source: &str, addr: &str) -> Option<u16> {
    try_healthz(&mut connect_from(source, addr).await, addr).await
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_but_a_quiet_stream_is_not() {
    const TEXT_LEN: usize = 1_500_000;
    const ANSWERS: u64 = 5;
    let (idp, sample, gate) = start("client_send_timeout_ms = 1000\nmax_connections_per_address = 1").await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let addr = addr(&gate);
    // From 127.0.0.2, a stream whose upstream waits: it writes nothing meanwhile.
    let quiet_client =
        reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
    let body = call(1, "progress", json!({"steps": 2, "interval_ms": 0, "gate": "quiet"}));
    let r = mcp_post(&quiet_client, &gate.url("/mcp"), body).bearer_auth(&token).send().await.unwrap();
    let mut quiet = Events::new(r);
    quiet.next().await.expect("first event");

    // From 127.0.0.1, a client with a small receive buffer asks for five 1.5 MB answers at once
    // (pipelined; more than the socket buffers between hold) and reads none of them.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let (mut stalled, mut requests) = socket.connect(addr.parse().unwrap()).await.unwrap().into_split();
    let mut pipelined = String::new();
    for id in 0..ANSWERS {
        let body = call(id, "echo", json!({"text": "a".repeat(TEXT_LEN)}));
        pipelined += &format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
    // Sent aside: the gate stops reading requests once it cannot write answers.
    tokio::spawn(async move {
        let _ = requests.write_all(pipelined.as_bytes()).await;
        requests
    });
    // It holds its address's one connection (a second is closed at once) until the gate, its writes
    // stuck for a second, gives up on it.
    tokio::time::timeout(STEP, async {
        while healthz_from("127.0.0.1", &addr).await != Some(200) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("a client that reads nothing kept its connection");
    // Cut off, not finished: what it can still read ends short of the answer.
    let mut received = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(STEP, stalled.read(&mut chunk)).await.expect("no end to the cut-off connection") {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(received < TEXT_LEN * ANSWERS as usize, "every answer arrived ({received} bytes)");

    // The quiet stream, older than the send deadline, runs to its end.
    sample.release("quiet").await;
    let mut last = None;
    while let Some((_, e)) = quiet.next().await {
        last = Some(e);
    }
    assert_eq!(last.unwrap()["result"]["content"][0]["text"], "completed 2 steps");
}

#[tokio::test]
async fn an_http2_answer_the_client_gives_no_window_for_is_cut_off() {
    const TEXT_LEN: usize = 1_000_000;
    let (idp, _sample, gate) = start("client_send_timeout_ms = 1000").await;
    let token = idp.token(&gate.url("/mcp"), "mcp:tools");
    let body = call(1, "echo", json!({"text": "a".repeat(TEXT_LEN)}));
    // A client that takes what it is sent gets a large answer whole.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = mcp_post(&h2, &gate.url("/mcp"), body.clone()).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["result"]["content"][0]["text"].as_str().map(str::len), Some(TEXT_LEN));

    // One that opens no window for its streams: the answer's head arrives, its body cannot.
    let tcp = TcpStream::connect(addr(&gate)).await.unwrap();
    let (client, connection) =
        h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(gate.url("/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(body.into(), true).unwrap();
    let response = tokio::time::timeout(STEP, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::timeout(STEP, connection)
        .await
        .expect("a client that opened no window kept its connection")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn a_connection_that_sent_nothing_does_not_hold_shutdown_up() {
    let (_idp, _sample, mut gate) = start("shutdown_grace_ms = 10000").await;
    let mut silent = TcpStream::connect(addr(&gate)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    gate.terminate();
    let status = tokio::time::timeout(STEP, gate.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    // Nothing was in progress: no waiting out the grace (10 s) or the head deadline (20 s).
    assert!(stopping.elapsed() < Duration::from_secs(5), "shutdown took {:?}", stopping.elapsed());
    assert!(closed_within(&mut silent, Duration::from_secs(1)).await);
}
