//! Metrics (the `metrics` facade, rendered in Prometheus text format on the admin port's
//! `GET /metrics`): requests by route, method and status; latency by route; upstream latency;
//! requests in flight; rate-limited requests; breaker state per upstream; cache results.
//! `MetricsLayer` is the outermost layer of every stack; requests refused before routing
//! (404, 405, 413, a bad path) are counted under the route `(none)`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tower::{Layer, Service};

use super::{MwFuture, take_ready};
use crate::gateway::{GwRequest, GwResponse};

/// Latency buckets, seconds: 100 µs to 5 s.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide Prometheus recorder, installed on first use. None when another recorder
/// was installed first (then `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(&BUCKETS).ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The `/metrics` page.
pub fn render() -> String {
    match handle() {
        Some(h) => h.render(),
        None => "# no metrics: another recorder is installed in this process\n".into(),
    }
}

/// Counts one response that never reached a route.
pub fn record_unrouted(method: &http::Method, status: http::StatusCode) {
    metrics::counter!("gwbench_requests_total", "route" => "(none)", "method" => method.to_string(), "status" => status.as_str().to_string())
        .increment(1);
}

// ===== MetricsLayer =====

/// Route, method and status of `gwbench_requests_total`.
type RequestKey = (Arc<str>, http::Method, u16);

/// Metric handles already registered, by label values: a request then costs one read-locked
/// hash lookup instead of building label strings and a registry key (three of them).
#[derive(Debug, Default)]
struct Handles {
    in_flight: OnceLock<metrics::Gauge>,
    requests: RwLock<HashMap<RequestKey, metrics::Counter>>,
    latency: RwLock<HashMap<Arc<str>, metrics::Histogram>>,
}

impl Handles {
    fn in_flight(&self) -> &metrics::Gauge {
        self.in_flight
            .get_or_init(|| metrics::gauge!("gwbench_in_flight"))
    }

    fn latency(&self, route: &Arc<str>) -> metrics::Histogram {
        if let Some(h) = read(&self.latency).get(route) {
            return h.clone();
        }
        let h =
            metrics::histogram!("gwbench_request_duration_seconds", "route" => route.to_string());
        write(&self.latency).insert(route.clone(), h.clone());
        h
    }

    fn requests(&self, route: &Arc<str>, method: &http::Method, status: u16) -> metrics::Counter {
        let key = (route.clone(), method.clone(), status);
        if let Some(c) = read(&self.requests).get(&key) {
            return c.clone();
        }
        let c = metrics::counter!("gwbench_requests_total", "route" => route.to_string(),
            "method" => method.to_string(), "status" => status.to_string());
        write(&self.requests).insert(key, c.clone());
        c
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Counts and times every request of a stack.
#[derive(Debug, Clone, Default)]
pub struct MetricsLayer {
    handles: Arc<Handles>,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        // Make sure the recorder exists before the first request records into it.
        let _ = handle();
        MetricsService {
            inner,
            handles: self.handles.clone(),
        }
    }
}

/// The service of [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    handles: Arc<Handles>,
}

impl<S> Service<GwRequest> for MetricsService<S>
where
    S: Service<GwRequest, Response = GwResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = GwResponse;
    type Error = std::convert::Infallible;
    type Future = MwFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GwRequest) -> Self::Future {
        let mut inner = take_ready(&mut self.inner);
        let route = req.route.clone();
        let method = req.parts.method.clone();
        let handles = self.handles.clone();
        Box::pin(async move {
            let start = Instant::now();
            let in_flight = handles.in_flight();
            in_flight.increment(1.0);
            let resp = inner.call(req).await?;
            in_flight.decrement(1.0);
            handles
                .latency(&route)
                .record(start.elapsed().as_secs_f64());
            handles
                .requests(&route, &method, resp.status().as_u16())
                .increment(1);
            Ok(resp)
        })
    }
}
