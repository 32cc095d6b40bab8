//! Tracing's bounds against a collector that never answers. Alone in its test binary: it reads
//! process-wide counters from the Prometheus recorder and sends 5,000 requests, which would move
//! the gauges another test reads (tests/metrics.rs failed in CI that way: in flight 8, not 7).

use std::convert::Infallible;

use bytes::Bytes;
use gwbench::gateway::config::GatewayConfig;
use gwbench::gateway::observe::exporter;
use gwbench::gateway::{Gateway, GwRequest, RouteService};
use http_body_util::{Empty, Full};

/// The value of the sample `name` (exact label set, as rendered) on the `/metrics` page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Tracing against a collector at its worst (it accepts connections and never answers), with
/// clients sending an 8 KB `tracestate` each: the gateway keeps no client's tracestate over 512
/// bytes (dropped and counted) and holds at most 2,048 spans for the exporter — the rest are
/// dropped and counted — instead of every span with its tracestate (735 MB for 30,000).
#[tokio::test]
async fn a_silent_collector_and_huge_tracestates_cannot_grow_the_span_queue() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = GatewayConfig::default_config();
    cfg.tracing.otlp_endpoint = format!("http://{}", silent.local_addr().unwrap());
    let ok: RouteService =
        tower::util::BoxCloneSyncService::new(tower::service_fn(|_req: GwRequest| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Either::Left(
                Full::new(Bytes::new()),
            )))
        }));
    let gw = Gateway::with_upstream(&cfg, ok).unwrap();
    // 32 list members of 250 characters: a valid tracestate of 8 KB.
    let state: Vec<String> = (0..32)
        .map(|k| format!("v{k}={}", "x".repeat(250)))
        .collect();
    let state = state.join(",");
    let n = 5_000;
    for _ in 0..n {
        let req = http::Request::get("/api/users/1")
            .header("host", "gw")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("tracestate", state.as_str())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = gw.handle(req).await;
        let status = resp.status();
        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
        let body = body.map(|b| b.to_bytes()).unwrap_or_default();
        assert_eq!(status, http::StatusCode::OK, "{body:?}");
    }
    let page = exporter::render();
    let dropped_states = sample(&page, "gwbench_trace_tracestate_dropped_total");
    assert_eq!(dropped_states, Some(n as f64), "{page}");
    // A span a request (the stub upstream makes none): at most 2,048 wait, and one batch
    // (512) may be out with the exporter; the rest were dropped.
    let dropped_spans = sample(&page, "gwbench_trace_spans_dropped_total").unwrap_or(0.0);
    assert!(
        dropped_spans >= (n - 2_048 - 512) as f64,
        "{dropped_spans} spans dropped of {n}"
    );
    drop(silent);
}
