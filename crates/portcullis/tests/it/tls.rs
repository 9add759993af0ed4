//! HTTPS servers on loopback: one for what portcullis fetches over TLS only (client ID metadata
//! documents), where each path answers a fixed response and requests are counted per path; and an MCP
//! upstream that holds its answers open, as SSE streams, over HTTP/2 or HTTP/1.1 as ALPN decides. Their
//! certificate is issued by the test CA in `crates/test-support/keys`; a portcullis process trusts it
//! through `SSL_CERT_FILE`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// One fixed response.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Canned {
    /// 200 with a JSON body and the given `Cache-Control` (none when empty).
    pub fn json(body: &serde_json::Value, cache_control: &str) -> Self {
        let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        if !cache_control.is_empty() {
            headers.push(("cache-control".to_owned(), cache_control.to_owned()));
        }
        Self { status: 200, headers, body: body.to_string().into_bytes() }
    }
}

#[derive(Default)]
struct Routes {
    canned: HashMap<String, Canned>,
    hits: HashMap<String, u32>,
}

pub struct TlsServer {
    /// `https://127.0.0.1:PORT`
    pub base: String,
    routes: Arc<Mutex<Routes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-support/keys")
}

/// The PEM file of the CA that issued the server's certificate: the `SSL_CERT_FILE` for portcullis.
pub fn ca_file() -> String {
    keys_dir().join("tls-ca.pem").display().to_string()
}

/// The server's TLS set-up, offering `alpn` (in order of preference).
fn server_config(alpn: &[&[u8]]) -> ServerConfig {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(keys_dir().join("tls-localhost.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(keys_dir().join("tls-localhost.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

impl TlsServer {
    pub async fn start() -> TlsServer {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&[])));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let routes = Arc::new(Mutex::new(Routes::default()));
        let shared = routes.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, routes) = (acceptor.clone(), shared.clone());
                tokio::spawn(async move {
                    let work = async {
                        let tls = acceptor.accept(tcp).await.ok()?;
                        serve_one(tls, &routes).await
                    };
                    let _ = tokio::time::timeout(crate::support::STEP, work).await;
                });
            }
        });
        TlsServer { base, routes, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn set(&self, path: &str, canned: Canned) {
        self.routes.lock().unwrap().canned.insert(path.to_owned(), canned);
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> u32 {
        self.routes.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }
}

type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Reads one HTTP/1.1 request head (its body, if any, is left unread).
async fn read_head(tls: &mut Tls) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(head)
}

/// Reads one request head and writes the canned answer (404 for unknown paths), then closes.
async fn serve_one(mut tls: Tls, routes: &Mutex<Routes>) -> Option<()> {
    let head = read_head(&mut tls).await?;
    let line = String::from_utf8_lossy(&head).lines().next()?.to_owned();
    let path = line.split(' ').nth(1)?.to_owned();
    let canned = {
        let mut r = routes.lock().unwrap();
        *r.hits.entry(path.clone()).or_default() += 1;
        r.canned.get(&path).cloned()
    };
    let canned = canned.unwrap_or(Canned { status: 404, headers: Vec::new(), body: b"not found".to_vec() });
    let mut out =
        format!("HTTP/1.1 {} X\r\ncontent-length: {}\r\nconnection: close\r\n", canned.status, canned.body.len());
    for (k, v) in &canned.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    tls.write_all(out.as_bytes()).await.ok()?;
    tls.write_all(&canned.body).await.ok()?;
    tls.shutdown().await.ok()
}

/// An MCP upstream over HTTPS that offers HTTP/2 and HTTP/1.1 by ALPN (or what it is told) and records which each connection
/// speaks (HTTP/1.1 also where the client offered no ALPN protocol). Over HTTP/2 it allows `max_streams` streams per connection. Every request is answered
/// with an SSE stream of one event (an empty JSON-RPC result) that stays open until the server is
/// dropped.
pub struct TlsUpstream {
    /// `https://127.0.0.1:PORT/mcp`
    pub url: String,
    protocols: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const EVENT: &[u8] = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";

impl TlsUpstream {
    pub async fn start(max_streams: u32) -> TlsUpstream {
        Self::offering(&[b"h2", b"http/1.1"], max_streams).await
    }

    /// One that offers only `alpn` (in order of preference).
    pub async fn offering(alpn: &[&[u8]], max_streams: u32) -> TlsUpstream {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(alpn)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}/mcp", listener.local_addr().unwrap().port());
        let protocols = Arc::new(Mutex::new(Vec::new()));
        let seen = protocols.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let http2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    seen.lock().unwrap().push(if http2 { "h2" } else { "http/1.1" }.to_owned());
                    if http2 { hold_http2(tls, max_streams).await } else { hold_http1(tls).await }
                });
            }
        });
        TlsUpstream { url, protocols, task }
    }

    /// The protocol of each connection accepted so far: `h2` or `http/1.1`.
    pub fn protocols(&self) -> Vec<String> {
        self.protocols.lock().unwrap().clone()
    }
}

async fn hold_http2(tls: Tls, max_streams: u32) {
    let Ok(mut conn) = h2::server::Builder::new().max_concurrent_streams(max_streams).handshake(tls).await else {
        return;
    };
    let mut held = Vec::new();
    while let Some(Ok((_, mut respond))) = conn.accept().await {
        let head = http::Response::builder().header("content-type", "text/event-stream").body(()).unwrap();
        let Ok(mut stream) = respond.send_response(head, false) else { return };
        if stream.send_data(bytes::Bytes::from_static(EVENT), false).is_ok() {
            held.push(stream);
        }
    }
}

async fn hold_http1(mut tls: Tls) {
    if read_head(&mut tls).await.is_none() {
        return;
    }
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n", EVENT.len(), String::from_utf8_lossy(EVENT));
    if tls.write_all(head).await.is_ok() && tls.write_all(chunk.as_bytes()).await.is_ok() {
        std::future::pending::<()>().await;
    }
}
