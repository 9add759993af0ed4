//! HTTP/2 connections to one upstream, as many as its streams in progress need. A request goes on the
//! oldest open connection with a stream to spare under the limit the upstream announced
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`), and on a new connection when every one is full; the limit is read
//! as the connection runs, so a later `SETTINGS` frame that lowers it counts from then on.
//!
//! hyper-util's pooled client keeps a single HTTP/2 connection per upstream and queues the requests
//! beyond its limit until a stream ends. Behind a gate, where MCP's SSE streams stay open for hours,
//! such a request would wait for as long, and time out. One connection still carries everything that
//! fits on it, as RFC 9113 §9.1 asks of clients; a second opens only when the first is full.
//!
//! A new connection carries one stream until the upstream's first `SETTINGS` frame says how many it
//! allows (an upstream that says nothing gets one per connection). The requests that wait for it to
//! open wait for that frame too, for about two round trips (twice the time the connection took to
//! open), before they open connections of their own. A stream the upstream refuses (`REFUSED_STREAM`,
//! which RFC 9113 §8.7 says was not processed) caps its connection at the streams it carried then, and
//! its request is sent again on a connection with room.
//!
//! A stream counts from its request until its response body ends or is dropped. A connection the
//! upstream closed takes no new stream, nor does one a request failed on; one that carries no stream
//! for longer than the idle bound is closed.

use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, Response, Uri};
use http_body::Frame;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::oneshot;

use super::pool::{self, Address, Connected, Connecting, PoolError};

/// Where new connections go.
#[derive(Clone)]
pub(crate) enum Dial {
    /// Plain TCP or a Unix domain socket, HTTP/2 from the first byte (prior knowledge).
    Plain(Address),
    /// TLS to `uri`'s authority, HTTP/2 by ALPN.
    Tls { connector: HttpsConnector<HttpConnector>, uri: Uri },
}

impl Dial {
    fn name(&self) -> String {
        match self {
            Self::Plain(address) => address.name(),
            Self::Tls { uri, .. } => uri.authority().map_or_else(String::new, ToString::to_string),
        }
    }
}

/// The connections to one upstream.
#[derive(Clone)]
pub(crate) struct Multiplexed {
    shared: Arc<Shared>,
}

struct Shared {
    dial: Dial,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// The connections that take new streams, oldest first.
    connections: Mutex<Vec<Arc<Connection>>>,
    /// Held while a connection opens: the requests that found every connection full wait for it
    /// instead of each opening one of their own.
    opening: tokio::sync::Mutex<()>,
}

struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// Streams in progress.
    streams: AtomicUsize,
    /// The most streams the upstream allows at once, as last announced.
    limit: Arc<AtomicUsize>,
    /// The most it took before refusing one (`usize::MAX` until it refuses).
    refused_beyond: AtomicUsize,
    opened: Instant,
    /// When its last stream ended, in milliseconds since it opened.
    idle_since: AtomicU64,
}

impl Connection {
    fn has_room(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed).min(self.refused_beyond.load(Ordering::Relaxed));
        self.streams.load(Ordering::Acquire) < limit
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.streams.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
        Some(self.opened.elapsed().saturating_sub(since))
    }
}

/// A stream in progress on a connection: its place there, given back when dropped.
struct Stream(Arc<Connection>);

impl Drop for Stream {
    fn drop(&mut self) {
        let connection = &self.0;
        let now = u64::try_from(connection.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        // The time first, so that a sweep that sees no stream sees when the last one ended.
        connection.idle_since.store(now, Ordering::Relaxed);
        connection.streams.fetch_sub(1, Ordering::Release);
    }
}

impl Multiplexed {
    /// Connections made by `dial`. Within a runtime, a task closes the idle ones past `idle_timeout`
    /// until the pool is dropped.
    pub(crate) fn new(dial: Dial, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let shared = Shared {
            dial,
            connect_timeout,
            idle_timeout,
            connections: Mutex::new(Vec::new()),
            opening: tokio::sync::Mutex::new(()),
        };
        let shared = Arc::new(shared);
        pool::sweep_every(&shared, idle_timeout / 2, Shared::close_stale);
        Self { shared }
    }

    /// Sends `req` (its URI absolute: its scheme and authority become the request's) on a stream of an
    /// open connection, or of a new one; the answer's body holds the stream until it ends.
    pub(crate) async fn send(&self, mut req: Request<Full<Bytes>>) -> Result<Response<Streamed>, PoolError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (stream, opened) = match self.shared.take() {
                Some(stream) => (stream, false),
                None => self.open().await?,
            };
            let copy = (attempt < MAX_ATTEMPTS).then(|| copy_of(&req));
            let mut sender = stream.0.sender.clone();
            let mut e = match sender.try_send_request(req).await {
                Ok(response) => return Ok(response.map(|body| Streamed { body, stream: Some(stream) })),
                Err(e) => e,
            };
            let message = e.take_message();
            let error = e.into_error();
            let connection = &stream.0;
            req = match (message, copy) {
                // Not sent: a connection that closed as it was taken. Again, on another.
                (Some(again), _) if !opened => {
                    self.shared.retire(connection);
                    again
                }
                (_, Some(again)) if refused(&error) => {
                    let carried = connection.streams.load(Ordering::Acquire).saturating_sub(1).max(1);
                    connection.refused_beyond.fetch_min(carried, Ordering::Relaxed);
                    again
                }
                _ => {
                    self.shared.retire(connection);
                    return Err(PoolError::Http(error));
                }
            };
        }
    }

    /// A stream on a connection that another request opened meanwhile, else on a new connection.
    async fn open(&self) -> Result<(Stream, bool), PoolError> {
        let shared = &self.shared;
        let _opening = shared.opening.lock().await;
        if let Some(stream) = shared.take() {
            return Ok((stream, false));
        }
        let started = Instant::now();
        let (connection, announced) =
            pool::within(shared.connect_timeout, || shared.dial.name(), shared.connect()).await?;
        let connection = Arc::new(connection);
        shared.connections.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&connection));
        // The upstream's SETTINGS come one round trip after its end of the handshake.
        let settings = (started.elapsed() * 2 + Duration::from_millis(50)).min(shared.connect_timeout);
        let _ = tokio::time::timeout(settings, announced).await;
        Ok((Stream(connection), true))
    }
}

impl Shared {
    /// A stream on the oldest connection with room for one; connections the upstream closed are let go.
    fn take(&self) -> Option<Stream> {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        connections.retain(|c| !c.sender.is_closed());
        let connection = connections.iter().find(|c| c.has_room())?;
        connection.streams.fetch_add(1, Ordering::AcqRel);
        Some(Stream(Arc::clone(connection)))
    }

    /// Takes no more streams on `connection`; those in progress go on.
    fn retire(&self, connection: &Arc<Connection>) {
        self.connections.lock().unwrap_or_else(PoisonError::into_inner).retain(|c| !Arc::ptr_eq(c, connection));
    }

    /// Lets go of the connections the upstream closed and of those idle past the bound; a connection
    /// closes once no stream holds it either.
    fn close_stale(&self) {
        let idle_timeout = self.idle_timeout;
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|c| !c.sender.is_closed() && c.idle_for().is_none_or(|idle| idle <= idle_timeout));
    }

    /// Opens a connection and starts HTTP/2 on it, with one stream taken for the request that opens it;
    /// and what tells when the upstream has announced a stream limit other than one.
    async fn connect(&self) -> Result<(Connection, oneshot::Receiver<()>), Connecting> {
        let io: Box<dyn Io> = match &self.dial {
            Dial::Plain(address) => match address.connect().await.map_err(Connecting::Io)? {
                Connected::Tcp(stream) => Box::new(TokioIo::new(stream)),
                Connected::Unix(stream) => Box::new(TokioIo::new(stream)),
            },
            Dial::Tls { connector, uri } => {
                // An upstream that does not speak HTTP/2 refuses the handshake (RFC 7301 §3.2) or
                // ignores the offer; either way the operator is told what was asked of it.
                let tls = tower::ServiceExt::oneshot(connector.clone(), uri.clone()).await.map_err(|e| {
                    Connecting::Io(std::io::Error::other(format!("TLS offering HTTP/2 only (upstream_http2): {e}")))
                })?;
                if !tls.connected().is_negotiated_h2() {
                    let ignored = "the upstream did not agree to HTTP/2 by ALPN (upstream_http2)";
                    return Err(Connecting::Io(std::io::Error::new(std::io::ErrorKind::Unsupported, ignored)));
                }
                Box::new(tls)
            }
        };
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new()).initial_max_send_streams(1);
        let (sender, connection) = builder.handshake(io).await.map_err(Connecting::Http)?;
        let limit = Arc::new(AtomicUsize::new(1));
        let kept = Arc::clone(&limit);
        let (announce, announced) = oneshot::channel();
        let mut announce = Some(announce);
        // The connection's task, which also keeps the limit as the upstream last announced it.
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            let ended = std::future::poll_fn(|cx| {
                let polled = connection.as_mut().poll(cx);
                let now = connection.current_max_send_streams();
                kept.store(now, Ordering::Relaxed);
                if now != 1 {
                    announce.take().map(|a| a.send(()));
                }
                polled
            })
            .await;
            if let Err(e) = ended {
                tracing::debug!(error = %e, "an upstream HTTP/2 connection ended with an error");
            }
        });
        let connection = Connection {
            sender,
            streams: AtomicUsize::new(1),
            limit,
            refused_beyond: AtomicUsize::new(usize::MAX),
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
        };
        Ok((connection, announced))
    }
}

/// Sends at most: the first try and those after a refusal or a connection closing as it was taken.
const MAX_ATTEMPTS: usize = 4;

/// Whether the upstream refused the stream before doing anything with it.
fn refused(error: &hyper::Error) -> bool {
    portcullis_oauth::cause::<h2::Error>(error).is_some_and(|h2| h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// `req` again, for a second try (its extensions are not copied: the proxy sets none).
fn copy_of(req: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// What a connection runs over: TCP, a Unix domain socket or TLS.
trait Io: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static {}

impl<T: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static> Io for T {}

/// A response body from the pool: its stream counts until the body ends or is dropped.
pub(crate) struct Streamed {
    body: Incoming,
    stream: Option<Stream>,
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.stream = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::sync::{Notify, mpsc};

    /// An HTTP/2 upstream that allows `max_streams` streams per connection and counts the connections
    /// it accepts. Each answer's head goes at once and its body (`{}`) when the test lets it go (or drops
    /// its sender), through the channel returned. Given `goaway`, each connection is shut down
    /// gracefully (GOAWAY, then closed once its streams end) when told.
    async fn upstream(
        max_streams: u32,
        goaway: Option<Arc<Notify>>,
    ) -> (String, Arc<AtomicUsize>, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (held_tx, held) = mpsc::unbounded_channel();
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let held_tx = held_tx.clone();
                let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                    let (release, held) = oneshot::channel();
                    let _ = held_tx.send(release);
                    async move { Ok::<_, Infallible>(Response::new(Held(Some(held)))) }
                });
                let mut server = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                server.max_concurrent_streams(max_streams);
                let goaway = goaway.clone();
                tokio::spawn(async move {
                    let mut served = pin!(server.serve_connection(TokioIo::new(conn), service));
                    if let Some(goaway) = goaway {
                        tokio::select! {
                            _ = served.as_mut() => return,
                            () = goaway.notified() => served.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = served.await;
                });
            }
        });
        (authority, accepted, held)
    }

    /// A body that sends `{}` once let go.
    struct Held(Option<oneshot::Receiver<()>>);

    impl http_body::Body for Held {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let Some(release) = self.0.as_mut() else { return Poll::Ready(None) };
            match Pin::new(release).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => {
                    self.0 = None;
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{}")))))
                }
            }
        }
    }

    fn pool(authority: &str, idle: Duration) -> Multiplexed {
        Multiplexed::new(Dial::Plain(Address::Tcp(authority.to_owned())), STEP, idle)
    }

    fn post(authority: &str) -> Request<Full<Bytes>> {
        Request::post(format!("http://{authority}/mcp")).body(Full::new(Bytes::from_static(b"{}"))).unwrap()
    }

    async fn read_to_end(response: Response<Streamed>) {
        let body = tokio::time::timeout(STEP, http_body_util::BodyExt::collect(response.into_body())).await;
        assert_eq!(&body.expect("the body ends").unwrap().to_bytes()[..], b"{}");
    }

    fn open_connections(pool: &Multiplexed) -> usize {
        pool.shared.connections.lock().unwrap().len()
    }

    #[tokio::test]
    async fn streams_beyond_the_upstreams_limit_go_on_another_connection() {
        let (authority, accepted, mut held) = upstream(2, None).await;
        let pool = pool(&authority, POOL);
        // Five answers whose bodies stay open, as SSE streams do: three connections of two streams.
        let sent = (0..5).map(|_| pool.send(post(&authority)));
        let answers = tokio::time::timeout(STEP, futures_util::future::join_all(sent)).await;
        let answers: Vec<_> = answers.expect("every head arrives").into_iter().map(Result::unwrap).collect();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(open_connections(&pool), 3);
        // Once bodies end, their streams are free again: two more requests need no new connection.
        for answer in answers {
            held.recv().await.unwrap().send(()).unwrap();
            read_to_end(answer).await;
        }
        for _ in 0..2 {
            let answer = pool.send(post(&authority)).await.unwrap();
            held.recv().await.unwrap().send(()).unwrap();
            read_to_end(answer).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "the freed streams were used");
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_frees_its_stream() {
        let (authority, accepted, _held) = upstream(1, None).await;
        let pool = pool(&authority, POOL);
        for _ in 0..3 {
            // The head only: the client went away.
            drop(pool.send(post(&authority)).await.unwrap());
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one stream at a time, on one connection");
    }

    #[tokio::test]
    async fn a_connection_without_streams_is_closed_once_idle_too_long() {
        let (authority, _, mut held) = upstream(100, None).await;
        let pool = pool(&authority, Duration::from_millis(200));
        let answer = pool.send(post(&authority)).await.unwrap();
        held.recv().await.unwrap().send(()).unwrap();
        read_to_end(answer).await;
        assert_eq!(open_connections(&pool), 1, "kept once its stream ended");
        let closed = async {
            while open_connections(&pool) > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(STEP, closed).await.expect("let go past the idle bound");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_shuts_down_takes_no_new_stream() {
        let goaway = Arc::new(Notify::new());
        let (authority, accepted, mut held) = upstream(100, Some(Arc::clone(&goaway))).await;
        let pool = pool(&authority, POOL);
        let first = pool.send(post(&authority)).await.unwrap();
        let release = held.recv().await.unwrap();
        goaway.notify_one();
        // The stream in progress when the upstream said GOAWAY still ends normally.
        release.send(()).unwrap();
        read_to_end(first).await;
        let second = pool.send(post(&authority)).await.unwrap();
        held.recv().await.unwrap().send(()).unwrap();
        read_to_end(second).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the next request went on a new connection");
    }

    #[tokio::test]
    async fn a_refused_stream_is_sent_again() {
        // An upstream that refuses the first stream it is sent and answers the others.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            while let Some(Ok((_, mut respond))) = conn.accept().await {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    continue;
                }
                let mut body = respond.send_response(Response::new(()), false).unwrap();
                body.send_data(Bytes::from_static(b"{}"), true).unwrap();
            }
        });
        let pool = pool(&authority, POOL);
        read_to_end(pool.send(post(&authority)).await.expect("answered on the second try")).await;
        assert_eq!(seen.load(Ordering::SeqCst), 2);
    }

    const POOL: Duration = Duration::from_secs(90);
    const STEP: Duration = Duration::from_secs(5);
}
