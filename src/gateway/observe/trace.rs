//! W3C trace context and OpenTelemetry spans. A client's `traceparent`/`tracestate` always
//! travel on (the proxy forwards headers; transcoded calls send them as gRPC metadata). With
//! `[tracing] otlp_endpoint` set, the gateway starts a server span per request (the client's
//! span its parent, when it sent one) and a client span per upstream call, whose context it
//! sends upstream in place of the client's, and exports them over OTLP/gRPC in batches from the
//! SDK's own thread. With it empty there is no tracer: a request pays one `Option` check.
//!
//! What a client can put into a span is bounded, so that a collector that is slow or down
//! cannot let clients grow the gateway's memory: a `tracestate` over [`MAX_TRACESTATE`] bytes is
//! dropped (the W3C limit a vendor must carry is 512 characters), a method outside the
//! standard set is `_OTHER` (OpenTelemetry's convention), and at most [`MAX_QUEUED_SPANS`]
//! spans wait for the exporter — past it a span is dropped and counted
//! (`gwbench_trace_spans_dropped_total`). Every other attribute comes from the configuration
//! (route templates, upstream names), so the queue's bytes are bounded with its spans.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};

use crate::gateway::GatewayError;
use crate::gateway::config::TracingConfig;

/// The W3C trace-context headers, forwarded as they came when the gateway makes no span.
pub(crate) const TRACE_HEADERS: [HeaderName; 2] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The longest `tracestate` a span keeps; a longer one is dropped.
pub(crate) const MAX_TRACESTATE: usize = 512;

/// The most spans waiting for the exporter (the OpenTelemetry SDK's default queue).
pub(crate) const MAX_QUEUED_SPANS: usize = 2_048;

/// How long a replaced or stopped tracer may take to send what it holds.
const SHUTDOWN_WITHIN: Duration = Duration::from_secs(1);

/// A method as a span names it: the standard ones as they are, any other `_OTHER`.
fn method_name(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}

/// The batch processor behind a count of the spans it holds: past [`MAX_QUEUED_SPANS`], a
/// span is dropped here and counted (the SDK's own queue, of the same size, never fills).
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= MAX_QUEUED_SPANS {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("gwbench_trace_spans_dropped_total").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter, giving back [`Bounded`]'s count as batches leave the queue.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        self.inner.export(batch)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The gateway's tracer, when `[tracing] otlp_endpoint` is set.
pub(crate) struct Tracing {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        // Sends what is queued, bounded by the exporter's timeout, on a thread of its own: the
        // last reference may go with a worker's last request after a reload, and a collector
        // that is down must not stall that worker for the timeout.
        let provider = self.provider.clone();
        let _ = std::thread::Builder::new()
            .name("gwbench-otlp-shutdown".into())
            .spawn(move || {
                let _ = provider.shutdown_with_timeout(SHUTDOWN_WITHIN);
            });
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self.0.get(key)?;
        if key == "tracestate" && value.len() > MAX_TRACESTATE {
            metrics::counter!("gwbench_trace_tracestate_dropped_total").increment(1);
            return None;
        }
        value.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

impl Tracing {
    /// The tracer `cfg` asks for, or None when `otlp_endpoint` is empty. Must run inside the
    /// tokio runtime that lives as long as the gateway (the OTLP channel is driven there).
    pub(crate) fn open(cfg: &TracingConfig) -> Result<Option<Arc<Tracing>>, GatewayError> {
        if cfg.otlp_endpoint.is_empty() {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.otlp_endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| GatewayError(format!("tracing.otlp_endpoint: {e}")))?;
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Counted {
            inner: exporter,
            queued: queued.clone(),
        };
        let batches = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_millis(500))
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .build(),
            )
            .build();
        let batches = Bounded {
            inner: batches,
            queued,
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batches)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("gwbench-gateway");
        Ok(Some(Arc::new(Tracing {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })))
    }

    /// Sends the spans queued so far (bounded by the exporter's timeout): at the gateway's
    /// stop, before the process ends.
    pub(crate) fn flush(&self) {
        let _ = self.provider.force_flush();
    }

    /// A server span for a request, child of the client's context in `headers` if any.
    pub(crate) fn request(&self, headers: &HeaderMap, method: &str) -> Context {
        let parent = self.propagator.extract(&Headers(headers));
        let method = method_name(method);
        let span = self
            .tracer
            .span_builder(method)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method)])
            .start_with_context(&self.tracer, &parent);
        parent.with_span(span)
    }

    /// A client span for the upstream call, child of `request`; its context replaces the
    /// trace headers in `headers` (what goes upstream).
    pub(crate) fn upstream(
        &self,
        request: &Context,
        upstream: &str,
        headers: &mut HeaderMap,
    ) -> Context {
        let span = self
            .tracer
            .span_builder(format!("upstream {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("gwbench.upstream", upstream.to_string())])
            .start_with_context(&self.tracer, request);
        let cx = request.with_span(span);
        for name in &TRACE_HEADERS {
            headers.remove(name);
        }
        self.propagator
            .inject_context(&cx, &mut HeadersMut(headers));
        cx
    }
}

/// Names the request's span after its route and ends it with the status.
pub(crate) fn end_request(cx: &Context, method: &str, route: Option<&str>, status: u16) {
    if let Some(route) = route {
        let span = cx.span();
        span.update_name(format!("{} {route}", method_name(method)));
        span.set_attribute(KeyValue::new("http.route", route.to_string()));
    }
    end_upstream(cx, status);
}

/// Ends a span (an upstream call's, or through [`end_request`] a request's) with the status
/// the gateway answers; a 5xx marks it an error.
pub(crate) fn end_upstream(cx: &Context, status: u16) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
    span.end();
}
