//! An HTTPS server on loopback, for what portcullis fetches over TLS only (client ID metadata
//! documents). Its certificate is issued by the test CA in `crates/test-support/keys`; a portcullis
//! process trusts it through `SSL_CERT_FILE`. Each path answers a fixed response, and requests are
//! counted per path.

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

impl TlsServer {
    pub async fn start() -> TlsServer {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(keys_dir().join("tls-localhost.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(keys_dir().join("tls-localhost.key")).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
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

/// Reads one request head and writes the canned answer (404 for unknown paths), then closes.
async fn serve_one(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    routes: &Mutex<Routes>,
) -> Option<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
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
