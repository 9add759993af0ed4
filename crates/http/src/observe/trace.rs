//! Trace context: a client's W3C `traceparent` (or SEP-414's `_meta` one) continued through the gate
//! to the upstream, when traces are exported.
//!
//! Sampling is decided at the head of each request, before any span is made: the client's decision
//! when its `traceparent` is valid, else a draw at `sample_ratio`. The decision is in force (a
//! thread-local, set around each poll of the request's future) wherever the request's work runs, and
//! the trace layer's filter reads it: the spans of a request not sampled are never built, so recording
//! few traces costs little more than recording none.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use super::{Observe, TRACEPARENT};
use crate::rpc;

/// Whether spans are exported (set once at start when `[traces]` is configured); when not, no trace
/// context is read or written.
static TRACES: AtomicBool = AtomicBool::new(false);

/// `sample_ratio` as a threshold on a random `u64`: a new trace is recorded when the draw is below it
/// (`u64::MAX`: every one).
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);

thread_local! {
    /// The sampling decision of the request whose future this thread is polling, if any.
    static SAMPLED: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Turns on trace context handling: a client's `traceparent` decides whether its request is recorded
/// and parents the request's span, new traces are recorded at `sample_ratio`, and the upstream gets a
/// `traceparent` naming the gate's span (or, for a request not recorded, saying so).
pub fn enable_traces(sample_ratio: f64) {
    let threshold = if sample_ratio >= 1.0 {
        u64::MAX
    } else if sample_ratio > 0.0 {
        // Exact to well within a draw's resolution; the cast saturates.
        (sample_ratio * u64::MAX as f64) as u64
    } else {
        0
    };
    THRESHOLD.store(threshold, Ordering::Relaxed);
    TRACES.store(true, Ordering::Relaxed);
}

/// A new trace's sampling decision, at `sample_ratio`.
pub fn draw() -> bool {
    match THRESHOLD.load(Ordering::Relaxed) {
        0 => false,
        u64::MAX => true,
        threshold => rand::random::<u64>() < threshold,
    }
}

/// Whether a span made here belongs to a recorded trace: inside a request, that request's decision;
/// outside any (the gate's own work, such as a key set fetch at start), `None`.
pub fn sampled_here() -> Option<bool> {
    SAMPLED.with(Cell::get)
}

/// The sampling decision for a request with `headers`: the client's when its `traceparent` is valid,
/// else a draw. `None` when traces are off.
pub(crate) fn request_decision(headers: &axum::http::HeaderMap) -> Option<bool> {
    if !TRACES.load(Ordering::Relaxed) {
        return None;
    }
    let client =
        headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse).map(|(_, flags)| flags & 1 == 1);
    Some(client.unwrap_or_else(draw))
}

/// `request` (pinned where it is: a request's future is large, and moving it into a wrapper would copy
/// it) polled with `sampled` as its sampling decision.
pub(crate) struct Decided<'a, F> {
    pub(crate) sampled: bool,
    pub(crate) request: Pin<&'a mut F>,
}

impl<F: Future> Future for Decided<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let sampled = self.sampled;
        decided_for(sampled, || self.request.as_mut().poll(cx))
    }
}

/// Runs `work` (a poll, or the making of a span) with `sampled` as the decision in force, and then the
/// one before again (also when `work` panics).
pub(crate) fn decided_for<R>(sampled: bool, work: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SAMPLED.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SAMPLED.with(|s| s.replace(Some(sampled))));
    work()
}

/// Makes the trace context in `headers` (W3C `traceparent`, `tracestate`) the parent of `span`.
pub(crate) fn adopt_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !TRACES.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// SEP-414: the trace context of a request's `_meta` and its trace id, standing in for a missing or
/// invalid `traceparent` header. Looked for only when traces or the audit log use it.
pub(crate) fn meta_trace(
    observe: &Observe,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Option<(rpc::TraceMeta, String)> {
    if !TRACES.load(std::sync::atomic::Ordering::Relaxed) && observe.audit.is_none() {
        return None;
    }
    if headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(trace_id_of).is_some() {
        return None;
    }
    let meta = rpc::trace_meta(body)?;
    let trace_id = trace_id_of(&meta.traceparent)?;
    Some((meta, trace_id))
}

/// Makes a trace context from a request's `_meta` (SEP-414) the parent of `span`, for requests whose
/// headers carried none.
pub(crate) fn adopt_meta_parent(span: &tracing::Span, meta: &rpc::TraceMeta) {
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [("traceparent", Some(&meta.traceparent)), ("tracestate", meta.tracestate.as_ref())] {
        if let Some(v) = value.and_then(|v| axum::http::HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    adopt_parent(span, &headers);
}

/// Writes the current span's trace context into `headers` (replacing the client's own: the upstream's
/// parent is the gate's span, a child of the client's). When the request is not recorded here, a
/// client's valid `traceparent` (or `_meta` one, `in_body`) goes on as it came; without one, the
/// upstream gets a new trace context that says "not sampled", so that it does not record a trace the
/// gate left out.
pub(crate) fn inject(headers: &mut axum::http::HeaderMap, in_body: bool) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !TRACES.load(Ordering::Relaxed) {
        return;
    }
    let cx = tracing::Span::current().context();
    if cx.span().span_context().is_valid() {
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeadersMut(headers)));
        return;
    }
    let client = headers.get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(parse).is_some();
    if !client && !in_body {
        headers.insert(&TRACEPARENT, unsampled());
    }
}

/// A new `traceparent` flagged not sampled: `00-<random trace id>-<random span id>-00`.
fn unsampled() -> axum::http::HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    // Never all zeros (invalid): the lowest bit is set.
    let (trace, span) = (rand::random::<u128>() | 1, rand::random::<u64>() | 1);
    for (i, byte) in text[3..35].iter_mut().enumerate() {
        *byte = HEX[((trace >> (124 - 4 * i)) & 0xf) as usize];
    }
    for (i, byte) in text[36..52].iter_mut().enumerate() {
        *byte = HEX[((span >> (60 - 4 * i)) & 0xf) as usize];
    }
    axum::http::HeaderValue::from_bytes(&text).unwrap_or_else(|_| axum::http::HeaderValue::from_static("-"))
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut axum::http::HeaderMap);

impl opentelemetry::propagation::Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (axum::http::HeaderName::from_bytes(key.as_bytes()), axum::http::HeaderValue::from_str(&value))
        {
            self.0.insert(name, value);
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), unless it is malformed or all
/// zeros (W3C Trace Context §3.2.2.3).
pub(crate) fn trace_id_of(traceparent: &str) -> Option<String> {
    parse(traceparent).map(|(trace, _)| trace.to_owned())
}

/// Whether a `traceparent` says its trace is sampled (`false` when it is not valid).
pub(crate) fn sampled_flag(traceparent: &str) -> bool {
    parse(traceparent).is_some_and(|(_, flags)| flags & 1 == 1)
}

/// A valid `traceparent`'s trace id and flags.
fn parse(traceparent: &str) -> Option<(&str, u8)> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0')
        && (version != "00" || parts.next().is_none());
    valid.then(|| (trace, u8::from_str_radix(flags, 16).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_trace_ids() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(ok).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert_eq!(trace_id_of(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(trace_id_of("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn the_sampled_flag_is_the_lowest_bit_of_a_valid_traceparent() {
        let with = |flags: &str| format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        assert!(sampled_flag(&with("01")));
        assert!(sampled_flag(&with("03")));
        assert!(!sampled_flag(&with("00")));
        assert!(!sampled_flag(&with("02")));
        assert!(!sampled_flag("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "invalid: no decision");
    }

    #[tokio::test]
    async fn a_request_decision_holds_for_its_whole_future_and_nowhere_else() {
        assert_eq!(sampled_here(), None);
        let request = async {
            tokio::task::yield_now().await;
            (sampled_here(), decided_for(false, sampled_here), sampled_here())
        };
        tokio::pin!(request);
        let other = tokio::spawn(async { sampled_here() });
        assert_eq!(Decided { sampled: true, request }.await, (Some(true), Some(false), Some(true)));
        assert_eq!(sampled_here(), None);
        assert_eq!(other.await.unwrap(), None, "another task saw the decision");
    }

    #[test]
    fn an_unsampled_trace_context_is_valid_and_says_so() {
        let a = unsampled();
        let text = a.to_str().unwrap();
        assert_eq!(text.len(), 55);
        assert!(trace_id_of(text).is_some(), "{text}");
        assert!(!sampled_flag(text), "{text}");
        assert_ne!(unsampled(), a, "two alike");
    }
}
