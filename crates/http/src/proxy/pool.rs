//! HTTP/1.1 connections to one upstream, kept open between requests: hyper's connection-level client
//! and a plain stack of idle connections. The hot path's upstream client for plain `http://` and Unix
//! socket upstreams; HTTP/2 upstreams have [`super::multiplex`], HTTP/1.1 over TLS hyper-util's pooled
//! client.
//!
//! Against that client, a request spends no time on a pool key (hyper-util hashes the scheme and
//! authority byte by byte with SipHash on every checkout and every return) and its future is not moved
//! from layer to layer. A connection goes back on the stack when its response body has been read to the
//! end; one whose body was dropped early (the client went away) is closed, which cancels the upstream's
//! work. A kept connection the upstream closed meanwhile is noticed before use, and a request that
//! found one closed without having been written is sent again on another. Idle connections are closed
//! once past the idle bound (looked for every half bound, and whenever one is taken); at most
//! [`MAX_IDLE`] are kept.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Request, Response, Uri, header};
use http_body::Frame;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

/// Idle connections kept at most per upstream; more are closed when their exchange ends.
pub(crate) const MAX_IDLE: usize = 256;

/// Where the connections go.
#[derive(Debug, Clone)]
pub(crate) enum Address {
    /// `host:port`, resolved at each connect (an upstream's DNS name may move).
    Tcp(String),
    Unix(Arc<std::path::Path>),
}

/// The connections to one upstream.
#[derive(Clone)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    address: Address,
    /// The `Host` of every request: the upstream URL's authority.
    host: HeaderValue,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Why a request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PoolError {
    #[error("connecting to {address}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(String),
    #[error("the upstream connection failed")]
    Http(#[from] hyper::Error),
}

impl PoolError {
    /// No connection could be made (rather than one failing mid-exchange).
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::ConnectTimeout(_))
    }
}

impl Pool {
    /// A pool for `address`, whose requests name `host`. Within a runtime, a task closes the idle
    /// connections past `idle_timeout` until the pool is dropped.
    pub(crate) fn new(address: Address, host: HeaderValue, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let shared = Shared { address, host, connect_timeout, idle_timeout, idle: Mutex::new(Vec::new()) };
        let shared = Arc::new(shared);
        sweep_every(&shared, idle_timeout / 2, Shared::close_stale);
        Self { shared }
    }

    /// Sends `req` (its URI absolute, as the upstream URL; it goes out in origin form with the upstream's
    /// `Host`) on a kept connection, or a new one; the answer's body gives the connection back.
    pub(crate) async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Pooled>, PoolError> {
        let target = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(target);
        req.headers_mut().insert(header::HOST, self.shared.host.clone());
        loop {
            let (mut sender, kept) = match self.checkout().await {
                Some(sender) => (sender, true),
                // Boxed: opening a connection is rare, and its future would otherwise make every
                // request's future (copied whole into its box) larger by as much.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let back = Some((Arc::clone(&self.shared), sender));
                    return Ok(response.map(|body| Pooled { body, back }));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: a kept connection that closed as it was taken. Again, on another.
                    Some(again) if kept => req = again,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
    }

    /// The most recently kept connection that is still open and fresh.
    async fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let idle = self.shared.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if !self.shared.keeps(&idle) {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once, unless the connection is still finishing its previous exchange.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PoolError> {
        let shared = &self.shared;
        let connecting = async {
            match shared.address.connect().await.map_err(Connecting::Io)? {
                Connected::Tcp(stream) => handshake(stream).await,
                Connected::Unix(stream) => handshake(stream).await,
            }
        };
        within(shared.connect_timeout, || shared.address.name(), connecting).await
    }
}

/// What `connecting` gives within `timeout`; its failures name the upstream with `name`.
pub(super) async fn within<T>(
    timeout: Duration,
    name: impl FnOnce() -> String,
    connecting: impl std::future::Future<Output = Result<T, Connecting>>,
) -> Result<T, PoolError> {
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(connected)) => Ok(connected),
        Ok(Err(Connecting::Io(source))) => Err(PoolError::Connect { address: name(), source }),
        Ok(Err(Connecting::Http(e))) => Err(PoolError::Http(e)),
        Err(_) => Err(PoolError::ConnectTimeout(name())),
    }
}

/// A new connection to an [`Address`].
pub(super) enum Connected {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Address {
    /// Opens a connection; a TCP one sends each write at once (without it, a request written as head
    /// then body waits on Nagle and delayed ACKs).
    pub(super) async fn connect(&self) -> std::io::Result<Connected> {
        Ok(match self {
            Self::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
                stream.set_nodelay(true)?;
                Connected::Tcp(stream)
            }
            Self::Unix(path) => Connected::Unix(tokio::net::UnixStream::connect(&**path).await?),
        })
    }

    /// How errors name it.
    pub(super) fn name(&self) -> String {
        match self {
            Self::Tcp(authority) => authority.clone(),
            Self::Unix(_) => "the socket".to_owned(),
        }
    }
}

impl Shared {
    /// Whether a kept connection may be used again: still open, and within the idle bound.
    fn keeps(&self, idle: &Idle) -> bool {
        !idle.sender.is_closed() && idle.since.elapsed() <= self.idle_timeout
    }

    /// Closes the kept connections that are past the idle bound or that the upstream closed.
    fn close_stale(&self) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).retain(|i| self.keeps(i));
    }
}

/// Within a runtime, runs `sweep` on `shared` every `period` (10 ms at the least) until `shared` is
/// dropped: how a pool closes its idle connections when no request comes to do it.
pub(super) fn sweep_every<T: Send + Sync + 'static>(shared: &Arc<T>, period: Duration, sweep: fn(&T)) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    let pool = Arc::downgrade(shared);
    runtime.spawn(async move {
        let mut every = tokio::time::interval(period.max(Duration::from_millis(10)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let Some(shared) = pool.upgrade() else { return };
            sweep(&shared);
        }
    });
}

pub(super) enum Connecting {
    Io(std::io::Error),
    Http(hyper::Error),
}

/// Starts HTTP/1.1 on a new connection, whose task lives as long as the connection.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, Connecting>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await.map_err(Connecting::Http)?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "an upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A response body from the pool: read to its end, it puts its connection back.
pub(crate) struct Pooled {
    body: Incoming,
    back: Option<(Arc<Shared>, SendRequest<Full<Bytes>>)>,
}

impl Pooled {
    fn give_back(&mut self) {
        let Some((shared, sender)) = self.back.take() else { return };
        if sender.is_closed() {
            return;
        }
        let mut idle = shared.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= MAX_IDLE {
            idle.retain(|i| shared.keeps(i));
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: Instant::now() });
        }
    }
}

impl http_body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // A connection that failed mid-body is not reused.
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // Read to its end without the last poll (a known length, all of it read): still reusable.
        if http_body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers every request on a connection with a short JSON body, counts the
    /// connections it accepts and reports the end of each. Given `close`, it closes each connection
    /// itself once told to after its first answer (as an upstream closes an idle kept-alive connection);
    /// otherwise a connection ends when the gate closes it.
    async fn upstream(
        close: Option<Arc<tokio::sync::Notify>>,
    ) -> (String, Arc<AtomicUsize>, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                let close = close.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let mut seen = Vec::new();
                    let mut answered = false;
                    'exchanges: loop {
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                                _ => {
                                    assert!(answered, "closed before a request");
                                    break 'exchanges;
                                }
                            }
                        }
                        seen.clear();
                        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await.unwrap();
                        answered = true;
                        if let Some(close) = &close {
                            close.notified().await;
                            break;
                        }
                    }
                    drop(conn);
                    let _ = closed_tx.send(());
                });
            }
        });
        (authority, accepted, closed)
    }

    async fn exchange(pool: &Pool, authority: &str) {
        let response = pool.send(get(authority)).await.unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{}");
    }

    fn get(authority: &str) -> Request<Full<Bytes>> {
        Request::get(format!("http://{authority}/mcp")).body(Full::new(Bytes::new())).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_kept_after_its_body_ends_and_closed_once_idle_too_long() {
        let (authority, _, mut closed) = upstream(None).await;
        let idle = Duration::from_millis(300);
        let pool = Pool::new(Address::Tcp(authority.clone()), HeaderValue::from_static("up"), idle, idle);
        exchange(&pool, &authority).await;
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 1, "kept once its body was read to the end");
        // Nobody takes it: past the idle bound, the pool closes it by itself.
        tokio::time::timeout(Duration::from_secs(5), closed.recv()).await.expect("closed in time");
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let (authority, _, mut closed) = upstream(None).await;
        let pool = Pool::new(Address::Tcp(authority.clone()), HeaderValue::from_static("up"), POOL, POOL);
        let response = pool.send(get(&authority)).await.unwrap();
        // The head only: the body is dropped unread (the client went away).
        drop(response);
        tokio::time::timeout(Duration::from_secs(5), closed.recv()).await.expect("closed");
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn one_connection_carries_the_requests_one_after_another() {
        let (authority, accepted, _closed) = upstream(None).await;
        let pool = Pool::new(Address::Tcp(authority.clone()), HeaderValue::from_static("up"), POOL, POOL);
        for _ in 0..3 {
            exchange(&pool, &authority).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "each request went on the kept connection");
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_kept_connection_the_upstream_closed_is_not_used_again() {
        let close = Arc::new(tokio::sync::Notify::new());
        let (authority, accepted, mut closed) = upstream(Some(Arc::clone(&close))).await;
        let pool = Pool::new(Address::Tcp(authority.clone()), HeaderValue::from_static("up"), POOL, POOL);
        exchange(&pool, &authority).await;
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 1, "kept after its exchange");
        close.notify_one();
        tokio::time::timeout(Duration::from_secs(5), closed.recv()).await.expect("the upstream closed it");
        // Its end is read without a request: the stale connection goes. A yield lets the runtime poll
        // its I/O driver and the connection's task read the end.
        for _ in 0..10_000 {
            pool.shared.close_stale();
            if pool.shared.idle.lock().unwrap().is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.shared.idle.lock().unwrap().len(), 0, "the closed connection was let go");
        exchange(&pool, &authority).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the next request went on a new connection");
    }

    const POOL: Duration = Duration::from_secs(90);
}
