//! Metrics (the `metrics` facade, rendered in Prometheus text format on the admin port's
//! `GET /metrics`): requests by route, method and status; latency by route; upstream latency;
//! requests in flight; rate-limited requests; breaker state per upstream; cache results.
//! `MetricsLayer` is the outermost layer of every stack; requests refused before routing
//! (404, 405, 413, a bad path) are counted under the route `(none)`. The recorder and the
//! `/metrics` page are the server's ([`crate::gateway::exporter`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use crate::gateway::exporter;
use crate::gateway::{GwRequest, GwResponse};

/// Counts one response that never reached a route.
pub fn record_unrouted(method: &http::Method, status: http::StatusCode) {
    metrics::counter!("gwbench_requests_total", "route" => "(none)", "method" => method_label(method), "status" => status.as_str().to_string())
        .increment(1);
}

/// The `method` label: one of the methods RFC 9110 defines (and PATCH), else `other`. A label
/// taken from the client as it came would let any client create series without bound.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

// ===== MetricsLayer =====

/// Route, method and status of `gwbench_requests_total`.
type RequestKey = (Arc<str>, &'static str, u16);

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

    fn requests(&self, route: &Arc<str>, method: &'static str, status: u16) -> metrics::Counter {
        let key = (route.clone(), method, status);
        if let Some(c) = read(&self.requests).get(&key) {
            return c.clone();
        }
        let c = metrics::counter!("gwbench_requests_total", "route" => route.to_string(),
            "method" => method, "status" => status.to_string());
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

/// Counts and times every request of a stack. A request abandoned before its answer (the
/// client hung up) leaves the in-flight gauge and is counted with status 499, nginx's "client
/// closed request".
#[derive(Debug, Default)]
pub struct Metrics {
    handles: Handles,
}

impl Metrics {
    /// A policy recording into the process-wide recorder (installed here if it is not yet).
    pub fn new() -> Self {
        let _ = exporter::handle();
        Metrics::default()
    }
}

/// The metrics middleware: [`Metrics`] run by the policy service.
pub type MetricsLayer = super::PolicyLayer<Metrics>;

/// Status counted for a request whose client left before the answer.
pub const CLIENT_CLOSED: u16 = 499;

/// What a passed request is counted under, and when it started.
#[derive(Debug)]
pub struct InFlight {
    start: Instant,
    route: Arc<str>,
    method: &'static str,
}

impl super::Policy for Metrics {
    type State = InFlight;

    fn on_request(&self, req: &mut GwRequest) -> Result<InFlight, Box<GwResponse>> {
        self.handles.in_flight().increment(1.0);
        Ok(InFlight {
            start: Instant::now(),
            route: req.route.clone(),
            method: method_label(&req.parts.method),
        })
    }

    fn on_response(&self, f: InFlight, resp: &mut GwResponse) {
        self.handles.in_flight().decrement(1.0);
        self.handles
            .latency(&f.route)
            .record(f.start.elapsed().as_secs_f64());
        self.handles
            .requests(&f.route, f.method, resp.status().as_u16())
            .increment(1);
    }

    fn on_drop(&self, f: InFlight) {
        self.handles.in_flight().decrement(1.0);
        self.handles
            .requests(&f.route, f.method, CLIENT_CLOSED)
            .increment(1);
    }
}
