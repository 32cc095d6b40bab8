//! Metrics (the `metrics` facade, rendered in Prometheus text format on the admin port's
//! `GET /metrics`): requests by route, method and status; latency by route; upstream latency;
//! requests in flight; rate-limited requests; breaker state per upstream; cache results.
//! `MetricsLayer` is the outermost layer of every stack; requests refused before routing
//! (404, 405, 413, a bad path) are counted under the route `(none)`. These per-request series
//! are kept in the stack's own [`Tally`] (per worker, summed at scrape); the `/metrics` page is
//! the server's ([`crate::gateway::observe::exporter`]).

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use crate::gateway::observe::tally::{Family, Tally};
use crate::gateway::{GwRequest, GwResponse};

/// Counts one response that never reached a route (in a tally of its own: refusals before
/// routing are not the request path's business).
pub fn record_unrouted(method: &http::Method, status: http::StatusCode) {
    static UNROUTED: LazyLock<(Arc<Tally>, Arc<str>)> =
        LazyLock::new(|| (Tally::new(), Arc::from("(none)")));
    let (tally, route) = &*UNROUTED;
    tally.request(route, method_label(method), status.as_u16());
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

/// Counts and times every request of a stack. A request abandoned before its answer (the
/// client hung up) leaves the in-flight gauge and is counted with status 499, nginx's "client
/// closed request".
#[derive(Debug)]
pub struct Metrics {
    tally: Arc<Tally>,
}

impl Metrics {
    /// A policy counting into a tally of its own (one per stack, so per worker). Installs the
    /// process-wide recorder if it is not yet: the other layers' event counters need it.
    pub fn new() -> Self {
        let _ = crate::gateway::observe::exporter::handle();
        Metrics {
            tally: Tally::new(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
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

    fn on_request(&self, req: &mut GwRequest) -> super::Decision<InFlight> {
        self.tally.in_flight(1);
        super::Decision::Now(Ok(InFlight {
            start: Instant::now(),
            route: req.route.clone(),
            method: method_label(&req.parts.method),
        }))
    }

    fn on_response(&self, f: InFlight, resp: &mut GwResponse) {
        self.tally.in_flight(-1);
        self.tally
            .record(Family::Request, &f.route, f.start.elapsed());
        self.tally
            .request(&f.route, f.method, resp.status().as_u16());
    }

    fn on_drop(&self, f: InFlight) {
        self.tally.in_flight(-1);
        self.tally.request(&f.route, f.method, CLIENT_CLOSED);
    }
}
