//! Structured logs (text for people, JSON for collectors; `RUST_LOG` overrides the configured level) and,
//! when `[traces]` is configured, OpenTelemetry spans exported over OTLP/HTTP.

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use portcullis_config::{LogConfig, LogFormat, TracesConfig};
use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::filter::{DynFilterFn, LevelFilter};
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

/// Installs the log (and trace) subscriber. Returns the tracer provider, to be shut down (flushing what
/// is queued) when the process stops.
pub(crate) fn init(log: &LogConfig, traces: Option<&TracesConfig>) -> anyhow::Result<Option<SdkTracerProvider>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    // Colour only for a person at a terminal; a pipe or a file gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match log.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).boxed(),
    };
    let provider = traces.map(tracer_provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        // Inside a request, its sampling decision (made at its head) says whether its spans are built;
        // outside one, a span starts a trace of its own, sampled at `sample_ratio`, unless it is inside
        // one. Events are recorded only inside a recorded span.
        let sampled = DynFilterFn::new(|meta, cx| {
            if !traced(meta) {
                return false;
            }
            if meta.is_span() {
                portcullis_http::observe::sampled_here()
                    .unwrap_or_else(|| cx.lookup_current().is_some() || portcullis_http::observe::draw())
            } else {
                cx.lookup_current().is_some()
            }
        })
        .with_callsite_filter(|meta| if traced(meta) { Interest::sometimes() } else { Interest::never() });
        // No source locations, thread names or busy/idle timing on each span: they cost on every request
        // and say nothing an operator reads.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("portcullis"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(sampled)
    });
    // A second init (tests calling in-process) is harmless, so its error is ignored.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
        portcullis_http::observe::enable_traces(traces.map_or(1.0, |t| t.sample_ratio));
    }
    Ok(provider)
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
