//! The MCP Streamable HTTP reverse proxy: one request in, one request upstream, the answer streamed
//! back unbuffered. The client's credentials never travel upstream.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use http_body::Frame;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_config::ProxyConfig;
use portcullis_oauth::{VerifiedToken, error_chain};
use portcullis_types::{ErrorCode, Scope, ScopeSet};

use crate::error::ProxyError;
use crate::observe::{self, Decision};
use crate::{AppState, ServerRuntime, rpc};

mod headers;
mod multiplex;
mod pool;
pub(crate) mod session;

pub(crate) use headers::{OriginHeaders, cgi_name};
use headers::{set_forwarding_headers, strip_hop_by_hop, strip_managed};

/// A server's upstream client. HTTP/1.1 over plain TCP or a Unix domain socket (the common case, and the
/// hot path): a [`pool::Pool`] of its own. HTTP/2 (`upstream_http2`), over TCP, a Unix domain socket or
/// TLS: a [`multiplex::Multiplexed`] of its own. HTTP/1.1 over TLS: hyper-util's pooled client, shared.
#[derive(Clone)]
pub(crate) enum UpstreamClient {
    Pooled(pool::Pool),
    Multiplexed(multiplex::Multiplexed),
    Tls(Box<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>),
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Pooled(_) => "UpstreamClient::Pooled",
            Self::Multiplexed(_) => "UpstreamClient::Multiplexed",
            Self::Tls(_) => "UpstreamClient::Tls",
        })
    }
}

impl UpstreamClient {
    async fn request(&self, req: Request<Full<Bytes>>) -> Result<Response<UpstreamBody>, UpstreamError> {
        // The pooled client's future is held inline; the others', several KiB each, are boxed, so that a
        // request's future (copied whole into its box as hyper takes it) does not carry room for them.
        match self {
            Self::Pooled(p) => Ok(p.send(req).await?.map(UpstreamBody::Pooled)),
            Self::Multiplexed(m) => Ok(Box::pin(m.send(req)).await?.map(UpstreamBody::Multiplexed)),
            Self::Tls(c) => Ok(Box::pin(c.request(req)).await?.map(UpstreamBody::Legacy)),
        }
    }
}

/// Why the upstream gave no answer.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error(transparent)]
    Pool(#[from] pool::PoolError),
    #[error(transparent)]
    Legacy(#[from] hyper_util::client::legacy::Error),
}

impl UpstreamError {
    fn is_connect(&self) -> bool {
        match self {
            Self::Pool(e) => e.is_connect(),
            Self::Legacy(e) => e.is_connect(),
        }
    }
}

/// An upstream's response body, from either client.
enum UpstreamBody {
    Pooled(pool::Pooled),
    Multiplexed(multiplex::Streamed),
    Legacy(Incoming),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Pooled(b) => Pin::new(b).poll_frame(cx),
            Self::Multiplexed(b) => Pin::new(b).poll_frame(cx),
            Self::Legacy(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(b) => b.is_end_stream(),
            Self::Multiplexed(b) => b.is_end_stream(),
            Self::Legacy(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Self::Pooled(b) => b.size_hint(),
            Self::Multiplexed(b) => b.size_hint(),
            Self::Legacy(b) => b.size_hint(),
        }
    }
}

/// The upstream clients and their limits.
#[derive(Clone)]
pub struct Proxy {
    /// `https` upstreams over HTTP/1.1, when there are some (loading the trust store costs ~9 MiB of
    /// memory for nothing otherwise).
    tls: Option<Client<HttpsConnector<HttpConnector>, Full<Bytes>>>,
    /// How `https` upstreams over HTTP/2 connect, when there are some.
    tls_http2: Option<HttpsConnector<HttpConnector>>,
    config: ProxyConfig,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Proxy {
    /// What `upstreams` need: hyper's connection-level clients under pools of the gate's own for plain
    /// TCP and Unix sockets (the proxy path is the hot path; a general-purpose client's extra layers
    /// cost measurable time per request), TLS by rustls with the platform's trust store. An `https`
    /// upstream speaks HTTP/1.1 unless it is marked `upstream_http2`: offered HTTP/2 by ALPN, it would
    /// otherwise get hyper-util's single HTTP/2 connection, whose stream limit long-lived SSE streams
    /// fill. No total timeout: streams may rightly last for hours, so connect, header and idle bounds
    /// apply instead. Redirects are not followed: the upstream's answer goes back to the client as it is.
    pub fn new<'a>(
        config: ProxyConfig,
        upstreams: impl IntoIterator<Item = &'a portcullis_config::Upstream>,
    ) -> Result<Self, ProxyError> {
        let (mut http1, mut http2) = (false, false);
        for upstream in upstreams.into_iter().filter(|u| u.socket.is_none() && u.url.scheme() == "https") {
            *(if upstream.http2 { &mut http2 } else { &mut http1 }) = true;
        }
        let tls_http1 = http1.then(|| tls_connector(&config, false)).transpose()?;
        let tls = tls_http1.map(|https| {
            let mut builder = Client::builder(TokioExecutor::new());
            builder.pool_idle_timeout(POOL_IDLE);
            builder.build(https)
        });
        let tls_http2 = http2.then(|| tls_connector(&config, true)).transpose()?;
        Ok(Self { tls, tls_http2, config })
    }

    /// The configured limits.
    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// The client for `upstream`: a pool of its own for plain TCP and Unix sockets (HTTP/1.1 or HTTP/2
    /// with prior knowledge) and for HTTP/2 over TLS; the shared client for HTTP/1.1 over TLS.
    pub(crate) fn client_for(&self, upstream: &portcullis_config::Upstream) -> Result<UpstreamClient, ProxyError> {
        let missing = || ProxyError::Internal(format!("no TLS client was made for {}", upstream.url));
        let timeout = self.config.connect_timeout;
        let address = match &upstream.socket {
            Some(path) => pool::Address::Unix(path.as_path().into()),
            None if upstream.url.scheme() == "http" => pool::Address::Tcp(crate::authority_or_default(&upstream.url)),
            None if upstream.http2 => {
                let connector = self.tls_http2.clone().ok_or_else(missing)?;
                let dial = multiplex::Dial::Tls { connector, uri: request_uri(&upstream.url)? };
                return Ok(UpstreamClient::Multiplexed(multiplex::Multiplexed::new(dial, timeout, POOL_IDLE)));
            }
            None => return self.tls.clone().map(|c| UpstreamClient::Tls(Box::new(c))).ok_or_else(missing),
        };
        if upstream.http2 {
            let dial = multiplex::Dial::Plain(address);
            return Ok(UpstreamClient::Multiplexed(multiplex::Multiplexed::new(dial, timeout, POOL_IDLE)));
        }
        // The `Host` hyper-util's client would send: the URL's authority as written.
        let authority = crate::authority(&upstream.url);
        let host = HeaderValue::from_str(&authority)
            .ok()
            .filter(|_| !authority.is_empty())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        Ok(UpstreamClient::Pooled(pool::Pool::new(address, host, timeout, POOL_IDLE)))
    }
}

/// A TLS connector with the platform's trust store that offers HTTP/2 by ALPN, or HTTP/1.1.
fn tls_connector(config: &ProxyConfig, http2: bool) -> Result<HttpsConnector<HttpConnector>, ProxyError> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()
        .map_err(|e| ProxyError::Internal(format!("loading the platform's TLS trust store: {e}")))?
        .https_only();
    Ok(if http2 { builder.enable_http2().wrap_connector(http) } else { builder.enable_http1().wrap_connector(http) })
}

const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// How long an upstream connection is kept idle for reuse.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// `url` as the URI of a request to it.
pub(crate) fn request_uri(url: &url::Url) -> Result<axum::http::Uri, ProxyError> {
    url.as_str().parse().map_err(|e| ProxyError::Internal(format!("upstream URL {url}: {e}")))
}

/// The configured claim-to-header mappings for a verified token. Claims that are absent, or whose value
/// cannot be a header value, are left out.
fn identity_headers(server: &ServerRuntime, token: &VerifiedToken) -> Vec<(HeaderName, HeaderValue)> {
    server
        .config
        .identity_headers
        .iter()
        .filter_map(|ih| {
            let name = HeaderName::from_bytes(ih.header.as_bytes()).ok()?;
            let value = HeaderValue::from_str(&token.claim_text(&ih.claim)?).ok()?;
            Some((name, value))
        })
        .collect()
}

/// Where requests to `server` carry the user's upstream IdP token (gateway mode with
/// `forward_token_header`): the gateway that keeps it, and the header's name.
fn upstream_token_forwarding<'a>(
    state: &'a AppState,
    server: &ServerRuntime,
) -> Option<(&'a portcullis_authz::gateway::Gateway, &'a str)> {
    if !matches!(server.config.auth, portcullis_config::ServerAuth::Gateway) {
        return None;
    }
    let gateway = &state.gateway.as_ref()?.gateway;
    Some((gateway, gateway.forward_token_header()?))
}

/// The header `name` carrying the user's upstream IdP token (not the client's token, which never goes
/// upstream), from `gateway`.
async fn upstream_token_header(
    gateway: &portcullis_authz::gateway::Gateway,
    name: &str,
    token: &VerifiedToken,
) -> Result<(HeaderName, HeaderValue), crate::AuthError> {
    use portcullis_authz::forward::ForwardError;
    use portcullis_oauth::TokenError;
    let subject = token.subject.as_deref().unwrap_or_default();
    let refused = |e: TokenError| Err(crate::AuthError::Invalid(e));
    let upstream_token = match gateway.upstream_access_token(subject).await {
        Ok(t) => t,
        Err(e @ ForwardError::Ended(_)) => return refused(TokenError::SignInEnded(e.to_string())),
        Err(e @ ForwardError::Unavailable(_)) => return refused(TokenError::Unavailable(e.to_string())),
    };
    let text = if name == "authorization" { format!("Bearer {upstream_token}") } else { upstream_token.to_string() };
    let (Ok(name), Ok(mut value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&text)) else {
        return refused(TokenError::SignInEnded("the IdP's access token cannot be sent in a header".into()));
    };
    value.set_sensitive(true);
    Ok((name, value))
}

/// The gate reads a message as UTF-8 JSON, as it arrived: an upstream told to decode it otherwise (a
/// `charset` such as UTF-7, which the MCP TypeScript SDK's transport honours, or a content coding) could
/// read another message than the one the gate judged. So a message is refused (415) unless its
/// `Content-Type` names no charset or UTF-8, it has one `Content-Type` at most, and no content coding
/// but `identity`.
fn utf8_json_only(headers: &HeaderMap) -> Result<(), ProxyError> {
    let refuse = |why: String| Err(ProxyError::UnsupportedMediaType(why));
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    if let Some(content_type) = types.next() {
        if types.next().is_some() {
            return refuse("more than one Content-Type header".to_owned());
        }
        let Ok(text) = content_type.to_str() else {
            return refuse("a Content-Type that is not visible ASCII".to_owned());
        };
        for parameter in text.split(';').skip(1) {
            let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            if name.trim().eq_ignore_ascii_case("charset") {
                let charset = value.trim().trim_matches('"');
                if !(charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")) {
                    return refuse(format!("MCP messages are UTF-8 JSON; charset {:?} is not served", charset));
                }
            }
        }
    }
    for coding in headers.get_all(header::CONTENT_ENCODING) {
        let text = coding.to_str().unwrap_or("?");
        if let Some(c) = text.split(',').map(str::trim).find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity")) {
            return refuse(format!("MCP messages are sent without a content coding; {c:?} is not served"));
        }
    }
    Ok(())
}

/// Reads the request body up to the configured limit. MCP requests are small JSON-RPC messages; reading
/// them whole lets the gate see the method and tool name before anything is forwarded.
pub(crate) async fn read_body(body: Body, headers: &HeaderMap, limit: u64) -> Result<Bytes, ProxyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge(limit));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ProxyError::BodyTooLarge(limit)),
        Err(e) => match portcullis_oauth::cause::<crate::listener::BodyTimeout>(e.as_ref()) {
            // The listener's body deadline, however deep in the error's sources.
            Some(t) => Err(ProxyError::BodyTimeout(t.0)),
            None => Err(ProxyError::BadRequestBody(e.to_string())),
        },
    }
}

/// Forwards one request whose body has been read. `identity` holds the headers to add (already
/// validated names and values, from the verified token).
pub(crate) async fn forward(
    state: &AppState,
    server: &ServerRuntime,
    parts: Parts,
    body: Bytes,
    identity: Vec<(HeaderName, HeaderValue)>,
    meta_trace: Option<&rpc::TraceMeta>,
) -> Result<Response, ProxyError> {
    let proxy = &state.proxy;
    let uri = match parts.uri.query() {
        None => server.upstream_uri.clone(),
        Some(q) => {
            let mut url = server.config.upstream.url.clone();
            let merged = match url.query() {
                Some(existing) if !existing.is_empty() => {
                    // A parameter the configuration sets (a tenant, say) is not the client's to set again:
                    // servers that take the last value would take the client's.
                    let configured = crate::query_names(existing);
                    if let Some(name) = crate::query_names(q).into_iter().find(|name| configured.contains(name)) {
                        return Err(ProxyError::QueryConflict(name));
                    }
                    format!("{existing}&{q}")
                }
                _ => q.to_owned(),
            };
            url.set_query(Some(&merged));
            request_uri(&url)?
        }
    };

    let origin = state.origin_headers(crate::request_host(&parts));
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    strip_managed(&mut headers, server, &identity);
    // `insert` replaces every inbound value of the name: a client cannot smuggle its own.
    for (name, value) in identity {
        headers.insert(name, value);
    }
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
    set_forwarding_headers(&mut headers, peer, origin);

    // The upstream call's span (traces only), whose context the upstream receives as its parent.
    let make = || tracing::debug_span!("upstream", otel.kind = "client", server = %server.config.path, status = tracing::field::Empty);
    let span = match meta_trace {
        // SEP-414: a trace context in the body decides for the upstream call, as a header would have
        // for the whole request.
        Some(meta) => {
            let span = observe::decided_for(observe::sampled_flag(&meta.traceparent), make);
            observe::adopt_meta_parent(&span, meta);
            span
        }
        None => make(),
    };
    span.in_scope(|| observe::inject(&mut headers, meta_trace.is_some()));
    let mut request = Request::new(Full::new(body));
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;

    // Metrics, when recorded, name the server by its configured path.
    let watch = state.observe.metrics().then_some(&server.metrics);
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + proxy.config.header_timeout;
    // Held until the answer's body ends: a stream counts for as long as it is open.
    let slot = match &server.upstream_slots {
        None => None,
        Some(slots) => match tokio::time::timeout_at(deadline, Arc::clone(slots).acquire_owned()).await {
            Ok(Ok(slot)) => Some(slot),
            _ => {
                watch.inspect(|m| m.upstream_error("busy"));
                let bound = proxy.config.max_upstream_requests.unwrap_or_default();
                return Err(ProxyError::UpstreamBusy(bound, proxy.config.header_timeout.as_millis()));
            }
        },
    };
    let call = tokio::time::timeout_at(deadline, server.client.request(request));
    let upstream = match tracing::Instrument::instrument(call, span.clone()).await {
        Err(_) => {
            watch.inspect(|m| m.upstream_error("timeout"));
            return Err(ProxyError::UpstreamTimeout(proxy.config.header_timeout.as_millis()));
        }
        Ok(Err(e)) => {
            watch.inspect(|m| m.upstream_error(if e.is_connect() { "connect" } else { "reset" }));
            return Err(ProxyError::UpstreamUnavailable(error_chain(&e)));
        }
        Ok(Ok(r)) => r,
    };
    span.record("status", upstream.status().as_u16());
    watch.inspect(|m| m.upstream_answered(started.elapsed()));

    let (upstream, incoming) = upstream.into_parts();
    let status = upstream.status;
    let mut resp_headers = upstream.headers;
    strip_hop_by_hop(&mut resp_headers);
    // No cookie of the client's ever reaches an upstream, so one it sets could only land on the gate's
    // origin, beside the gate's own (the sign-in flow's CSRF cookie among them).
    resp_headers.remove(header::SET_COOKIE);
    let is_sse = resp_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    if is_sse {
        // Fronting proxies (nginx and friends) buffer unless told not to.
        resp_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        resp_headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-cache"));
    }
    let watch = watch.map(|m| Watch { _stream: is_sse.then(|| m.stream_opened()), metrics: Arc::clone(m) });
    let mut response = Response::new(Body::new(IdleBounded::new(incoming, proxy.config.idle_timeout, watch, slot)));
    *response.status_mut() = status;
    *response.headers_mut() = resp_headers;
    Ok(response)
}

/// The upstream's response body, passed through frame by frame, ended with an error when the upstream
/// stays silent longer than `idle` between frames. Size hints pass through, so a `Content-Length`
/// answer keeps its length.
struct IdleBounded {
    inner: UpstreamBody,
    idle: Duration,
    /// Armed the first time the upstream makes us wait: an answer that arrives whole (most JSON
    /// answers) never costs a timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    watch: Option<Watch>,
    /// Its place among `max_upstream_requests`, given back when the body ends or is dropped.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What the metrics follow of a response body: its server, and the open-stream count while it is an SSE
/// stream.
struct Watch {
    metrics: Arc<observe::ServerMetrics>,
    _stream: Option<observe::StreamGauge>,
}

impl IdleBounded {
    fn new(
        inner: UpstreamBody,
        idle: Duration,
        watch: Option<Watch>,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self { inner, idle, timer: None, watch, _slot: slot }
    }

    fn failed(&mut self, kind: &'static str) {
        if let Some(w) = self.watch.take() {
            w.metrics.upstream_error(kind);
        }
    }
}

impl http_body::Body for IdleBounded {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(timer) = this.timer.as_mut() {
                    timer.as_mut().reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %error_chain(&e), "upstream body failed mid-stream");
                this.failed("reset");
                Poll::Ready(Some(Err(std::io::Error::other(e))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                match this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(this.idle))).as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::warn!(
                            idle_ms = this.idle.as_millis() as u64,
                            "upstream stream idle for too long; closing it"
                        );
                        this.failed("idle");
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "upstream idle timeout",
                        ))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The whole proxy step for one server: read the body, classify it, authorize, forward, map failures.
/// The response carries what was decided, for the observing layer.
pub(crate) async fn handle(state: &AppState, server: &ServerRuntime, req: Request<Body>) -> Response {
    let (response, decision) = decide(state, server, req).await;
    decision.attach(&state.observe, response)
}

async fn decide(state: &AppState, server: &ServerRuntime, req: Request<Body>) -> (Response, Decision) {
    use axum::http::Method;
    let refused = |e: ProxyError, id: Option<serde_json::Value>| {
        let decision = Decision::refused(e.reason());
        (e.into_response_for(id), decision)
    };
    // Streamable HTTP has POST (messages), GET (a stream) and DELETE (end a session); anything else is
    // nothing the gate can classify.
    if ![Method::POST, Method::GET, Method::DELETE].contains(req.method()) {
        return refused(ProxyError::MethodNotAllowed(req.method().to_string()), None);
    }
    let (mut parts, body) = req.into_parts();
    let bytes = match read_body(body, &parts.headers, state.proxy.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return refused(e, None),
    };
    // The authentication layer ran before us; without its proof nothing goes upstream.
    let token = parts.extensions.get::<Arc<VerifiedToken>>().cloned();
    if server.verifier.is_some() && token.is_none() {
        return refused(ProxyError::Internal("a protected request arrived without a verified token".to_owned()), None);
    }
    // Fail closed: a POST body the gate cannot classify never reaches the upstream, and the other methods
    // carry none (Streamable HTTP: GET opens a stream, DELETE ends a session).
    let classified = if parts.method == Method::POST {
        if let Err(e) = utf8_json_only(&parts.headers) {
            let (response, decision) = refused(e, None);
            return (response, decision.with(&state.observe, token.as_ref(), None));
        }
        match rpc::classify(&bytes).and_then(|b| rpc::check_headers(&parts.headers, &b).map(|()| b)) {
            Ok(b) => Some(b),
            Err(r) => {
                let (response, decision) = refused(ProxyError::InvalidMessage(r.code, r.message), Some(r.id));
                return (response, decision.with(&state.observe, token.as_ref(), None));
            }
        }
    } else if !bytes.is_empty() {
        let e = ProxyError::BadRequestBody(format!("a {} request to an MCP endpoint carries no body", parts.method));
        let (response, decision) = refused(e, None);
        return (response, decision.with(&state.observe, token.as_ref(), None));
    } else {
        None
    };
    let rpc_id = classified.as_ref().map(rpc::Body::error_id);
    let decision = Decision::allowed().with(&state.observe, token.as_ref(), classified.as_ref());
    let mut identity = Vec::new();
    let challenge = |e: crate::AuthError| {
        let reason = e.reason();
        let response = e.into_response(&crate::auth::challenge_context(state, server, &parts));
        (response, Decision { reason, ..decision.clone() })
    };
    if let Some(token) = &token
        && let Err(e) = crate::auth::authorize(server, token, classified.as_ref())
    {
        return challenge(e);
    }
    if let Err(refusal) = crate::auth::apply_policy(server, token.as_deref(), classified.as_ref()) {
        let (response, decided) = match refusal.answer {
            crate::auth::PolicyAnswer::Scopes(e) => challenge(e),
            crate::auth::PolicyAnswer::Denied(e) => {
                let reason = e.reason();
                (e.into_response_for(rpc_id.clone()), Decision { reason, ..decision.clone() })
            }
        };
        return (response, Decision { rule: Some(refusal.rule), ..decided });
    }
    // An MCP session is its opener's: another caller naming its id is told it does not exist. The
    // upstream is sent its own id.
    let upstream_session = match (&token, parts.headers.get(MCP_SESSION_ID)) {
        (Some(token), Some(sealed)) => match state.sessions.open(&server.config.path, sealed, token) {
            Some(id) => Some(id),
            None => {
                let (response, decision) = refused(ProxyError::SessionNotFound, rpc_id.clone());
                return (response, decision.with(&state.observe, Some(token), None));
            }
        },
        _ => None,
    };
    if let Some(token) = &token {
        identity = identity_headers(server, token);
        // Boxed, and only where a token is forwarded: the look-up may refresh the token at the IdP, and
        // its future is several KiB that every other request's future would otherwise carry.
        if let Some((gateway, name)) = upstream_token_forwarding(state, server) {
            match Box::pin(upstream_token_header(gateway, name, token)).await {
                Ok(header) => identity.push(header),
                Err(e) => return challenge(e),
            }
        }
    }
    // List answers are rewritten to what the caller may use.
    let listing = classified
        .as_ref()
        .and_then(|b| crate::listing::ListFilter::for_body(&server.config.policy, token.as_ref(), b));
    drop(classified);
    if let Some(id) = upstream_session {
        parts.headers.insert(MCP_SESSION_ID, id);
    }
    if listing.is_some() {
        // An answer to be filtered must come as it is: the gate does not undo compression.
        parts.headers.remove(header::ACCEPT_ENCODING);
    }
    if !server.config.policy.is_empty() {
        // A resumed stream replays answers the gate cannot match to their requests, lists among them:
        // with rules, the upstream is not asked to replay (it opens a new stream, as one without an
        // event store does).
        parts.headers.remove(LAST_EVENT_ID);
    }
    let meta_trace = observe::meta_trace(&state.observe, &parts.headers, &bytes);
    let decision = Decision { trace_id: meta_trace.as_ref().map(|(_, id)| id.clone()), ..decision };
    // Where the gate checks tokens, it is the one to say which authorization server to go to.
    let origin = token.is_some().then(|| state.public_origin(crate::request_host(&parts)));
    match forward(state, server, parts, bytes, identity, meta_trace.as_ref().map(|(meta, _)| meta)).await {
        Ok(r) => {
            let mut r = match listing {
                Some(l) => l.apply(r),
                None => r,
            };
            if let Some(token) = &token
                && let Some(id) = r.headers().get(MCP_SESSION_ID)
            {
                match state.sessions.seal(&server.config.path, id, token) {
                    Some(sealed) => r.headers_mut().insert(MCP_SESSION_ID, sealed),
                    None => r.headers_mut().remove(MCP_SESSION_ID),
                };
            }
            if let Some(origin) = origin
                && r.headers().contains_key(header::WWW_AUTHENTICATE)
            {
                own_challenge(&mut r, &crate::well_known::prm_url(origin, &server.config.path), &server.config.scopes);
            }
            (r, decision)
        }
        Err(e) => (e.into_response_for(rpc_id), decision),
    }
}

const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");

/// An upstream that still checks credentials behind the gate answers with its own challenge, which could
/// send clients to another authorization server (`resource_metadata`, `authorization_uri`) with the
/// user's next sign-in. On a protected server the gate's challenge replaces it: a 401 asks the client to
/// get a new token here; a 403 for missing scope names the scopes the upstream asked for (when they are
/// scope tokens at all) with the gate's metadata; any other status loses the header.
fn own_challenge(response: &mut Response, resource_metadata: &str, scopes: &ScopeSet) {
    let theirs: Vec<String> = response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    response.headers_mut().remove(header::WWW_AUTHENTICATE);
    let challenge = match response.status() {
        StatusCode::UNAUTHORIZED => crate::error::bearer_challenge(
            Some(&ErrorCode::InvalidToken),
            Some("the MCP server refused the request; get a new token"),
            resource_metadata,
            scopes,
        ),
        StatusCode::FORBIDDEN if theirs.iter().any(|c| c.contains("insufficient_scope")) => {
            let asked = theirs.iter().find_map(|c| challenge_param(c, "scope")).and_then(|s| scope_list(&s));
            crate::error::bearer_challenge(
                Some(&ErrorCode::InsufficientScope),
                None,
                resource_metadata,
                asked.as_ref().unwrap_or(scopes),
            )
        }
        _ => {
            tracing::info!(status = %response.status(), "the upstream's WWW-Authenticate was not passed on");
            return;
        }
    };
    tracing::info!(status = %response.status(), "the upstream's challenge was replaced with the gate's");
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
}

/// The value of the auth-param `name` in a challenge (quoted or not).
fn challenge_param(challenge: &str, name: &str) -> Option<String> {
    let rest = challenge.split_once(' ').map_or(challenge, |(_, params)| params);
    rest.split(',').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// The scopes of a space-separated list, when every token in it is a scope (RFC 6749 §3.3) and there is
/// one at least.
fn scope_list(s: &str) -> Option<ScopeSet> {
    let mut set = ScopeSet::new();
    for token in s.split(' ').filter(|t| !t.is_empty()) {
        set.insert(Scope::parse(token).ok()?);
    }
    (!set.is_empty()).then_some(set)
}
