//! The process-wide Prometheus recorder behind the `metrics` facade, and the admin port's
//! `GET /metrics` page. Events (breaker state, rate-limit refusals, cache results, store errors,
//! access-log drops) are recorded into it; the per-request series are the workers' tallies
//! ([`super::tally`]), added to the page when it is rendered.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::tally::BUCKETS;

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
            metrics::counter!("gwbench_rate_limit_store_errors_total").increment(0);
            metrics::counter!("gwbench_access_log_dropped_total").increment(0);
            metrics::gauge!("gwbench_ws_connections").set(0.0);
            for direction in ["to_upstream", "to_client"] {
                metrics::counter!("gwbench_ws_messages_total", "direction" => direction)
                    .increment(0);
                metrics::counter!("gwbench_ws_bytes_total", "direction" => direction).increment(0);
            }
            for reason in ["too_big", "policy", "protocol", "slow_reader", "idle"] {
                metrics::counter!("gwbench_ws_violations_total", "reason" => reason).increment(0);
            }
            for result in ["HIT", "MISS", "BYPASS"] {
                metrics::counter!("gwbench_cache_total", "result" => result).increment(0);
            }
            Some(handle)
        })
        .as_ref()
}

/// The `/metrics` page: the recorder's series, then the per-request ones summed over the
/// workers' tallies ([`super::tally`]).
pub fn render() -> String {
    let mut page = match handle() {
        Some(h) => h.render(),
        None => "# no recorder: another one is installed in this process\n".into(),
    };
    if !page.is_empty() && !page.ends_with('\n') {
        page.push('\n');
    }
    super::tally::render(&mut page);
    page
}
