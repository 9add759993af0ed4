//! What every request passes first: its request id, its trace span and the log line that ends it, then
//! the dispatch — an MCP server's own path straight to [`crate::serve_mcp`], everything else through the
//! router.
//!
//! MCP messages are what the gate serves all day, so their path skips the router's matching, its
//! extensions and the tower layers' futures: a request without `Origin` that is not a CORS preflight,
//! to a configured server's exact path, is served as the router would serve it, by the same handler.
//! Browser requests (`Origin`, `OPTIONS`) still take the router, where the CORS layer answers them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use http_body::Frame;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{AppState, ServerRuntime};

/// The header that carries a request's id, kept from the client or generated.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The gate's HTTP service: every request, whatever its path.
#[derive(Clone)]
pub struct Front {
    router: Router,
    state: Arc<AppState>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front").finish_non_exhaustive()
    }
}

impl Front {
    pub(crate) fn new(router: Router, state: Arc<AppState>) -> Self {
        Self { router, state }
    }

    /// Answers one request: never fails, every refusal is a response.
    pub async fn serve(&self, mut req: Request) -> Response {
        // With traces, the sampling decision is made first and is in force while the request's span is
        // made and its work runs (`observe::Decided`).
        let decision = crate::observe::request_decision(req.headers());
        let id = request_id(req.headers_mut());
        let span = match decision {
            Some(sampled) => crate::observe::decided_for(sampled, || request_span(&req, &id)),
            None => request_span(&req, &id),
        };
        let started = Instant::now();
        // Pinned where it is: a request's future is large, and each wrapper it moved into would copy it.
        let work = self.dispatch(req);
        tokio::pin!(work);
        let mut response = match (decision, span.is_disabled()) {
            (None, true) => work.await,
            (None, false) => work.instrument(span.clone()).await,
            (Some(sampled), true) => crate::observe::Decided { sampled, request: work }.await,
            (Some(sampled), false) => crate::observe::Decided { sampled, request: work }.instrument(span.clone()).await,
        };
        response.headers_mut().entry(X_REQUEST_ID).or_insert(id);
        if span.is_disabled() {
            return response;
        }
        finished(&span, &response, started.elapsed());
        response.map(|body| Body::new(SpanBody { inner: body, span, started }))
    }

    async fn dispatch(&self, req: Request) -> Response {
        match self.direct(&req) {
            Some(server) => crate::serve_mcp(&self.state, server, req).await,
            None => match self.router.clone().oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
        }
    }

    /// The server whose path `req` names exactly, when the router would send it to that server's handler
    /// with nothing in between: no `Origin` (CORS applies) and not a preflight.
    fn direct(&self, req: &Request) -> Option<&ServerRuntime> {
        if req.method() == Method::OPTIONS || req.headers().contains_key(header::ORIGIN) {
            return None;
        }
        let path = req.uri().path();
        self.state.servers.iter().find(|s| s.config.path == path).map(|s| &**s)
    }
}

impl tower::Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let front = self.clone();
        Box::pin(async move { Ok(front.serve(req).await) })
    }
}

/// The request's id: the client's `x-request-id` when it sent one, else a new UUID, set on the request
/// (so the upstream and the logs see the same id).
fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        return id.clone();
    }
    let mut text = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let id = HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("-"));
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

/// The request's span: the method, path and request id only — headers may carry tokens and never reach
/// logs. A client's trace (W3C `traceparent`) continues here when traces are exported.
fn request_span(req: &Request, id: &HeaderValue) -> tracing::Span {
    let id = id.to_str().unwrap_or("-");
    let span = tracing::info_span!("request", otel.kind = "server", method = %req.method(), path = %req.uri().path(), request_id = %id);
    if crate::observe::sampled_here() == Some(true) {
        crate::observe::adopt_parent(&span, req.headers());
    }
    span
}

/// A duration as the request log shows it.
struct Micros(Duration);

impl std::fmt::Display for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} μs", self.0.as_micros())
    }
}

/// The request's log line, once its answer's head is ready; a 5xx is also a failure, at debug level
/// (the error mapping already logged its cause at the level its blame deserves).
fn finished(span: &tracing::Span, response: &Response, latency: Duration) {
    let status = response.status();
    tracing::info!(parent: span, latency = %Micros(latency), status = status.as_u16(), "finished processing request");
    if status.is_server_error() {
        tracing::debug!(parent: span, classification = %format_args!("Status code: {status}"), latency = %Micros(latency), "response failed");
    }
}

/// A response body polled inside its request's span, whose end (or failure) is logged at debug level.
struct SpanBody {
    inner: Body,
    span: tracing::Span,
    started: Instant,
}

impl http_body::Body for SpanBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                tracing::debug!(stream_duration = %Micros(this.started.elapsed()), "end of stream");
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, latency = %Micros(this.started.elapsed()), "response failed");
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
