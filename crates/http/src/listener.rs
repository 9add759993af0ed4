//! The listening socket: connections accepted up to a bound, HTTP/1.1 and HTTP/2 served by hyper, a
//! deadline on every request head, and no exchange that silently ends its connection.
//!
//! - **Connection bound.** At most `max_connections` are served at once; beyond that, new connections
//!   wait in the kernel's accept queue, so file descriptors cannot run out.
//! - **Per-address bound.** One source address (an IPv6 /64) holds at most
//!   `max_connections_per_address` of them (the trusted proxies excepted, which carry everyone's): a
//!   connection past it is closed at once, so one address that opens slow connections cannot take every
//!   slot from everyone else.
//! - **Request-head deadline.** A connection that sends nothing, or half a request head, is closed
//!   `client_header_timeout` after it opened or after its previous exchange ended (hyper's HTTP/1 header
//!   read timer, which therefore also bounds idle keep-alive).
//! - **Idle HTTP/2 connections.** An HTTP/2 connection with no exchange in progress for
//!   `client_header_timeout` is sent GOAWAY and closed; one that does not finish closing within that long
//!   again (a client that never answers the closing PING) is dropped. hyper's HTTP/2 server has no idle
//!   timer of its own, so the listener counts each connection's open exchanges (`listener/streams.rs`).
//! - **Body deadline.** A request body must arrive within `client_body_timeout` of the request's start;
//!   past it, reading it fails with [`BodyTimeout`] (408 at the proxy) and the connection is closed.
//! - **Send deadline.** A write to a client that makes no progress for `client_send_timeout` (the client
//!   reads nothing) ends the connection ([`SendTimeout`]); so does an HTTP/2 answer that waits that long
//!   for the client to open its flow-control window.
//! - **Early answers.** When the gate answers before reading the request body (a 401, 403, 404 or
//!   413), hyper would close the keep-alive connection without saying so, and a client that wrote the
//!   headers first and reuses pooled connections then fails its next request ("server disconnected
//!   without sending a response"). So the unread body is drained, within the body-size limit and
//!   [`DRAIN_TIMEOUT`], before the answer goes out; when it cannot be, the answer carries
//!   `Connection: close` (RFC 9112 §9.6), so the client knows not to reuse the connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, Version, header};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};

use crate::Front;

mod send_deadline;
mod streams;

use send_deadline::SendDeadline;
pub use send_deadline::SendTimeout;

/// How an HTTP/2 connection with prior knowledge starts (RFC 9113 §3.4; `PRI` is no HTTP/1 method).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before looking again at a connection whose first bytes are a part of the HTTP/2
/// preface and no more (clients send the preface in one piece: this is rare).
const PEEK_AGAIN: Duration = Duration::from_millis(5);

/// How long an unread request body may take to arrive after an early answer before the connection is
/// given up instead.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The bounds of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub client_header_timeout: Duration,
    /// How long a request body may take to arrive, from the request's start.
    pub client_body_timeout: Duration,
    /// How long a write to a client may make no progress.
    pub client_send_timeout: Duration,
    pub max_connections: usize,
    /// The most of an unread body drained after an early answer (the request body limit).
    pub max_drain_bytes: u64,
}

/// Open connections per source address (an IPv6 /64 counting as one): at most `limit` each, except
/// for the addresses in `exempt` (the trusted proxies). The table holds only addresses with open
/// connections, so it never outgrows the connection bound.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    exempt: Arc<[ipnet::IpNet]>,
    open: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    pub fn new(limit: usize, exempt: &[ipnet::IpNet]) -> Self {
        Self { limit, exempt: exempt.into(), open: Arc::default() }
    }

    /// A slot for one more connection from `ip`, held until dropped; `None` when `ip` is at its limit.
    fn admit(&self, ip: IpAddr) -> Option<AddressSlot> {
        if self.exempt.iter().any(|net| net.contains(&ip)) {
            return Some(AddressSlot { owner: None, ip });
        }
        let ip = portcullis_types::source_block(ip);
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { owner: Some(self.clone()), ip })
    }
}

/// One admitted connection; gives its place back when dropped.
struct AddressSlot {
    owner: Option<PerAddress>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Some(owner) = &self.owner else { return };
        let mut open = owner.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish (the caller
/// bounds how long by dropping the returned future).
pub async fn serve(
    listener: TcpListener,
    app: Front,
    limits: Limits,
    per_address: PerAddress,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut http1 = http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.client_header_timeout);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new());
    let servers = Arc::new(Servers { http1, http2 });
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // `true` once the listener closes; every connection holds a receiver, so the sender sees when the
    // last one has ended.
    let (closing, _) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // A slot first: at the bound, connections stay in the accept queue rather than costing a
        // descriptor here.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(address_slot) = per_address.admit(peer.ip()) else {
            tracing::debug!(%peer, "connection closed: its address holds max_connections_per_address already");
            drop(stream);
            continue;
        };
        // Without TCP_NODELAY, a response written as headers then body waits on Nagle and the client's
        // delayed ACK: ~200 µs per request on loopback, measured.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let connection =
            Connection { app: app.clone(), peer, limits, servers: servers.clone(), closing: closing.subscribe() };
        tokio::spawn(async move {
            connection.serve(stream).await;
            drop(permit);
            drop(address_slot);
        });
    }
    drop(listener);
    closing.send_replace(true);
    closing.closed().await;
    Ok(())
}

/// hyper's servers for the two protocols, set up once.
struct Servers {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

/// One accepted connection and what serving it needs.
struct Connection {
    app: Front,
    peer: SocketAddr,
    limits: Limits,
    servers: Arc<Servers>,
    closing: watch::Receiver<bool>,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let (peer, limits) = (self.peer, self.limits);
        // The protocol is told from the first bytes, peeked so that hyper reads them itself (handed
        // bytes already read, hyper's HTTP/1 server would double its read buffer, 8 → 16 KiB, for the
        // connection's whole life). hyper's head timer starts only then: a connection that sends
        // nothing, or only a part of the HTTP/2 preface, is bounded here.
        let first_bytes = tokio::time::timeout(limits.client_header_timeout, speaks_http2(&stream));
        let http2 = tokio::select! {
            told = first_bytes => match told {
                Ok(Ok(Some(http2))) => http2,
                _ => {
                    tracing::debug!(%peer, "connection closed or sent no request before the request-head deadline");
                    return;
                }
            },
            // A connection that has sent nothing yet has nothing in progress: it does not hold the
            // listener's shutdown up.
            () = closed(&mut self.closing) => return,
        };
        let ended = if http2 {
            // Boxed: HTTP/2 connections are few, and the task of every connection would otherwise keep
            // room for one.
            Box::pin(self.serve_http2(stream)).await
        } else {
            self.serve_http1(stream).await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    }

    async fn serve_http1(&mut self, stream: TcpStream) -> hyper::Result<()> {
        let (app, peer, limits) = (self.app.clone(), self.peer, self.limits);
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            // Boxed: hyper keeps room for one service future for as long as the connection lives, and
            // this one is large (~7.5 KiB: every step of a request); a connection that carries a stream,
            // or waits idle, then holds a pointer instead of that room.
            Box::pin(async move { Ok::<_, Infallible>(exchange(app, req, peer, limits).await) })
        });
        let io = TokioIo::new(SendDeadline::new(stream, limits.client_send_timeout));
        let conn = self.servers.http1.serve_connection(io, service);
        tokio::pin!(conn);
        tokio::select! {
            ended = conn.as_mut() => ended,
            () = closed(&mut self.closing) => {
                // The exchange in progress, if any, finishes; the connection then closes.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        }
    }

    async fn serve_http2(&mut self, stream: TcpStream) -> hyper::Result<()> {
        let (app, peer, limits) = (self.app.clone(), self.peer, self.limits);
        let activity = Arc::new(streams::Activity::default());
        let counted = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let app = app.clone();
            // Counted from here to the end of the response body (a stream ends when its body is dropped).
            let open = counted.begin();
            Box::pin(async move {
                let resp = exchange(app, req, peer, limits).await;
                Ok::<_, Infallible>(resp.map(|inner| streams::Counted { inner, open }))
            })
        });
        let io = TokioIo::new(SendDeadline::new(stream, limits.client_send_timeout));
        let conn = self.servers.http2.serve_connection(io, service);
        tokio::pin!(conn);
        let idle = tokio::select! {
            ended = conn.as_mut() => return ended,
            () = closed(&mut self.closing) => false,
            () = activity.idle_for(limits.client_header_timeout) => true,
            () = activity.stalled_for(limits.client_send_timeout) => {
                // The client takes nothing of an answer: like a client that reads nothing, it is cut off.
                tracing::debug!(%peer, "HTTP/2 connection closed: an answer found no room to be sent");
                return Ok(());
            }
        };
        // GOAWAY: exchanges in progress finish, no new ones start.
        conn.as_mut().graceful_shutdown();
        if !idle {
            return conn.await;
        }
        tracing::debug!(%peer, "idle HTTP/2 connection closed");
        // hyper ends the connection once the client answers its closing PING; one that does not is
        // dropped.
        tokio::time::timeout(limits.client_header_timeout, conn).await.unwrap_or(Ok(()))
    }
}

/// Completes once the listener closes (or is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Whether a new connection speaks HTTP/2 with prior knowledge (its first bytes are the preface) or
/// HTTP/1 (they are not); `None` when it closed first. Only peeks.
async fn speaks_http2(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // The peeked bytes stay readable, so peeking again at once would spin.
        tokio::time::sleep(PEEK_AGAIN).await;
    }
}

/// One request through the app, with the early-answer rule applied.
async fn exchange(app: Front, req: Request<Incoming>, peer: SocketAddr, limits: Limits) -> Response<Body> {
    let max_drain = limits.max_drain_bytes;
    let http1 = req.version() < Version::HTTP_2;
    // A client waiting for `100 Continue` has not sent the body: there is nothing to drain.
    let expects_continue = req.headers().contains_key(header::EXPECT);
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let (back, mut unread) = oneshot::channel();
    let started = tokio::time::Instant::now();
    let mut req = req.map(|b| {
        Body::new(Tracked {
            inner: Some(b),
            back: Some(back),
            started,
            limit: limits.client_body_timeout,
            deadline: None,
        })
    });
    req.extensions_mut().insert(ConnectInfo(peer));
    let mut resp = app.serve(req).await;
    // A body that missed its deadline was not read to its end: say the connection ends.
    if resp.status() == axum::http::StatusCode::REQUEST_TIMEOUT && http1 {
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Ok(rest) = unread.try_recv() {
        let drainable = !expects_continue && declared.is_none_or(|n| n <= max_drain);
        if !(drainable && drain(rest, max_drain).await) && http1 {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    resp
}

/// Reads and discards what is left of a body: `true` when it ended within `max` bytes and
/// [`DRAIN_TIMEOUT`].
async fn drain(mut body: Incoming, max: u64) -> bool {
    let read = async {
        let mut seen: u64 = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > max {
                    return false;
                }
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIMEOUT, read).await.unwrap_or(false)
}

/// A request body whose end did not arrive within the body deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} ms")]
pub struct BodyTimeout(pub u128);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body that, when dropped before its end, hands the rest back to [`exchange`], and that fails
/// with [`BodyTimeout`] when its end has not arrived by the deadline (a client trickling a body must not
/// hold a connection and a task for ever). The timer is armed only when the body is not already there.
struct Tracked {
    inner: Option<Incoming>,
    back: Option<oneshot::Sender<Incoming>>,
    started: tokio::time::Instant,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let polled = Pin::new(inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) => {
                // Read to its end: nothing to hand back.
                this.back = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.back = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Pending => {
                let (started, limit) = (this.started, this.limit);
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + limit)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.back = None;
                        this.inner = None;
                        Poll::Ready(Some(Err(Box::new(BodyTimeout(limit.as_millis())))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(http_body::Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let (Some(inner), Some(back)) = (self.inner.take(), self.back.take())
            && !http_body::Body::is_end_stream(&inner)
        {
            let _ = back.send(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_holds_one_share_of_connections_whichever_addresses_it_uses() {
        let bound = PerAddress::new(2, &["2001:db8:9::/48".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = bound.admit(ip("2001:db8:1:2::1")).unwrap();
        let _second = bound.admit(ip("2001:db8:1:2::2")).unwrap();
        assert!(bound.admit(ip("2001:db8:1:2:ffff::3")).is_none(), "a third address of the same /64");
        assert!(bound.admit(ip("2001:db8:1:3::1")).is_some(), "the next /64 is another source");
        drop(first);
        assert!(bound.admit(ip("2001:db8:1:2::4")).is_some(), "a closed connection frees its place");
        // A trusted proxy's network is exempt, address by address.
        let proxies: Vec<_> = (1..5).map(|n| bound.admit(ip(&format!("2001:db8:9::{n}"))).unwrap()).collect();
        assert_eq!(proxies.len(), 4);
        // IPv4 addresses are each their own source.
        let _a = bound.admit(ip("192.0.2.1")).unwrap();
        let _b = bound.admit(ip("192.0.2.1")).unwrap();
        assert!(bound.admit(ip("192.0.2.1")).is_none());
        assert!(bound.admit(ip("192.0.2.2")).is_some());
    }
}
