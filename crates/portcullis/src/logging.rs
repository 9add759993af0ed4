//! Structured logs (text for people, JSON for collectors; `RUST_LOG` overrides the configured level) and,
//! when `[traces]` is configured, OpenTelemetry spans exported over OTLP/HTTP.

use std::cell::Cell;

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use portcullis_config::{LogConfig, LogFormat, TracesConfig};
use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::filter::{DynFilterFn, LevelFilter};
use tracing_subscriber::layer::Context as Cx;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The spans of these crates become OpenTelemetry spans: the request (`info`) and its children
/// (`debug`: authentication, introspection, key set fetches, the upstream call), whatever the log level,
/// in the traces that are sampled. Without `[traces]`, or in a request not sampled, the children are not
/// even built.
const TRACED: [&str; 5] = ["portcullis", "portcullis_http", "portcullis_oauth", "portcullis_authz", "portcullis_store"];

fn traced(meta: &Metadata<'_>) -> bool {
    LevelFilter::DEBUG >= *meta.level() && TRACED.iter().any(|name| meta.target().starts_with(name))
}

/// Whether the trace exporter records `meta` here: inside a request, as its sampling decision (made at
/// its head) says; outside one (the gate's own work: key set fetches, store probes), a span inside a
/// recorded span (`in_recorded`) is recorded, and any other starts a trace of its own if `new_trace`
/// (a draw at `sample_ratio`) says so; an event is recorded inside a recorded span.
fn recorded(meta: &Metadata<'_>, in_recorded: impl FnOnce() -> bool, new_trace: impl FnOnce() -> bool) -> bool {
    if !traced(meta) {
        return false;
    }
    match portcullis_http::observe::sampled_here() {
        Some(sampled) => sampled,
        None if meta.is_span() => in_recorded() || new_trace(),
        None => in_recorded(),
    }
}

thread_local! {
    /// The draw `OnlyWanted` made for the span being decided, which the trace filter, asked right after
    /// it, uses instead of a draw of its own: one span, one draw.
    static DRAWN: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Installs the log (and trace) subscriber. Returns the tracer provider, to be shut down (flushing what
/// is queued) when the process stops.
pub(crate) fn init(log: &LogConfig, traces: Option<&TracesConfig>) -> anyhow::Result<Option<SdkTracerProvider>> {
    let log_filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colour only for a person at a terminal; a pipe or a file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let provider = traces.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        let sampled = DynFilterFn::new(|meta, cx| {
            let drawn = || DRAWN.take().unwrap_or_else(portcullis_http::observe::draw);
            recorded(meta, || cx.lookup_current().is_some(), drawn)
        })
        .with_callsite_filter(|meta| if traced(meta) { Interest::sometimes() } else { Interest::never() })
        .with_max_level_hint(LevelFilter::DEBUG);
        // No source locations, thread names or busy/idle timing on each span: they cost on every request
        // and say nothing an operator reads.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("portcullis"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(sampled)
    });
    let wanted = otel.as_ref().map(|_| OnlyWanted { logs: log_filter() });
    // A second init (tests calling in-process) is harmless, so its error is ignored.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(log_filter())).with(otel).with(wanted).try_init();
    if let Some(traces) = traces {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        portcullis_http::observe::enable_traces(traces.sample_ratio);
    }
    Ok(provider)
}

/// Turns off, for every layer, the spans and events that neither the log nor the trace exporter
/// records. Outermost, beside per-layer filters: tracing-subscriber builds a span whose callsite some
/// per-layer filter wants only at some moments (the trace filter's: in sampled requests) even when, this
/// time, no filter wants it (its registry counts a span unwanted only once 64 filters say so); in a
/// request that is not sampled, that was every child span, built and dropped for nothing. Here the
/// log filter (a second copy, given the same span lifecycle) and the trace decision are asked once.
struct OnlyWanted {
    logs: EnvFilter,
}

impl<S> Layer<S> for OnlyWanted
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let logs = Layer::<S>::register_callsite(&self.logs, meta);
        if traced(meta) && !logs.is_always() { Interest::sometimes() } else { logs }
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: Cx<'_, S>) -> bool {
        let mut drawn = None;
        let new_trace = || *drawn.insert(portcullis_http::observe::draw());
        let wanted =
            recorded(meta, || cx.lookup_current().is_some(), new_trace) || Layer::<S>::enabled(&self.logs, meta, cx);
        // Only when the layers below are asked next (a span not wanted stops here).
        DRAWN.set(if wanted { drawn } else { None });
        wanted
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&self.logs).map(|logs| logs.max(LevelFilter::DEBUG))
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, cx: Cx<'_, S>) {
        self.logs.on_new_span(attrs, id, cx);
    }

    fn on_record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>, cx: Cx<'_, S>) {
        self.logs.on_record(id, values, cx);
    }

    fn on_enter(&self, id: &tracing::span::Id, cx: Cx<'_, S>) {
        self.logs.on_enter(id, cx);
    }

    fn on_exit(&self, id: &tracing::span::Id, cx: Cx<'_, S>) {
        self.logs.on_exit(id, cx);
    }

    fn on_close(&self, id: tracing::span::Id, cx: Cx<'_, S>) {
        self.logs.on_close(id, cx);
    }
}

/// Batches spans on the runtime and posts them to the collector. Which traces are recorded is decided
/// before their spans are built (a trace a client started keeps its sampling decision, new ones are
/// drawn at `sample_ratio`, see `portcullis_http::observe`): every span that reaches the SDK is sampled,
/// unless its parent is a remote context that says otherwise.
fn tracer_provider(traces: &TracesConfig) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces.otlp_endpoint.as_str())
        .build()
        .context("the OTLP exporter")?;
    let batch = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(traces.service_name.clone()).build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_resource(resource)
        .build())
}
