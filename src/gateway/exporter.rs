//! The process-wide Prometheus recorder behind the `metrics` facade, and the admin port's
//! `GET /metrics` page. The middleware, the upstream pools and the breakers record into it; the
//! server renders it (and drains its histograms every second).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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
            // Counters of events that may not have happened yet are there from the start, at
            // 0, as Prometheus practice expects (a rate over a missing series is no rate).
            metrics::counter!("gwbench_rate_limited_total").increment(0);
            for result in ["HIT", "MISS", "BYPASS"] {
                metrics::counter!("gwbench_cache_total", "result" => result).increment(0);
            }
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
