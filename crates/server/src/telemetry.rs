//! What the process tells of itself besides its answers: JSON log lines, and with
//! `telemetry.otlp_endpoint` its spans, exported over OTLP/HTTP as `service.name =
//! "stitcher"`. A request's span continues the trace of a client's W3C `traceparent`, calls
//! to the upstream carry `traceparent` on, and every log line under a request names its
//! `trace_id`.

use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::TelemetrySettings;

/// How often spans are sent: soon enough for a person watching a trace, in batches.
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// The process's telemetry; [`Telemetry::shutdown`] sends what spans are left.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Logs at `level` (unless `RUST_LOG` says otherwise) to standard output, or to standard
    /// error when `to_stderr`; and spans to `settings.otlp_endpoint`, if set.
    pub fn init(settings: &TelemetrySettings, level: &str, to_stderr: bool) -> anyhow::Result<Telemetry> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
        let logs = tracing_subscriber::fmt::layer().json();
        // RUST_LOG says which lines are logged; it does not thin out the spans exported.
        let logs = if to_stderr { logs.with_writer(std::io::stderr).boxed() } else { logs.boxed() };
        let logs = logs.with_filter(filter);
        let provider = match settings.otlp_endpoint.as_deref().map(str::trim).filter(|e| !e.is_empty()) {
            Some(endpoint) => Some(provider(endpoint)?),
            None => None,
        };
        let spans = provider.as_ref().map(|p| {
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("stitcher"))
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
        });
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_subscriber::registry().with(logs).with(spans).try_init()?;
        Ok(Telemetry { provider })
    }

    /// Sends the spans not yet sent, and stops.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("stitcher: the last spans could not be sent: {e}");
        }
    }
}

/// A tracer provider exporting to `endpoint` (OTLP/HTTP, JSON), in batches.
fn provider(endpoint: &str) -> anyhow::Result<SdkTracerProvider> {
    let base = endpoint.trim_end_matches('/');
    let url = if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") };
    let parsed = url::Url::parse(&url).ok().filter(|u| matches!(u.scheme(), "http" | "https"));
    anyhow::ensure!(
        parsed.is_some(),
        "telemetry.otlp_endpoint {endpoint:?} is not an http:// or https:// URL (an OTLP/HTTP collector, e.g. http://127.0.0.1:4318)"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url)
        .build()
        .map_err(|e| anyhow::anyhow!("telemetry.otlp_endpoint {endpoint:?}: {e}"))?;
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build())
        .build();
    let resource = opentelemetry_sdk::Resource::builder().with_service_name("stitcher").build();
    Ok(SdkTracerProvider::builder().with_span_processor(batches).with_resource(resource).build())
}

/// Makes `span` continue the trace a request's `traceparent` names (if any), and records
/// the trace's ID on it, so every log line under it says which trace it belongs to.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderReader(headers)));
    if parent.span().span_context().is_valid() {
        // Without traces exported the span is none of OpenTelemetry's, and has no parent to take.
        let _ = span.set_parent(parent);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// A request's headers, as the propagator reads them.
struct HeaderReader<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
