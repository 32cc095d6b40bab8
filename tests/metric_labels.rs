//! The gateway's metric series stay bounded whatever clients send, and event counters exist
//! from the start. Alone in its test binary: the Prometheus recorder is process-wide.

use std::convert::Infallible;

use bytes::Bytes;
use gwbench::gateway::config::GatewayConfig;
use gwbench::gateway::observe::exporter;
use gwbench::gateway::{Gateway, GwRequest, RouteService};
use http_body_util::{Empty, Full};

fn series(page: &str, metric: &str) -> usize {
    page.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .count()
}

#[tokio::test]
async fn client_chosen_methods_make_no_new_series_and_event_counters_start_at_zero() {
    let answering: RouteService =
        tower::util::BoxCloneSyncService::new(tower::service_fn(|_req: GwRequest| async {
            Ok::<_, Infallible>(http::Response::new(http_body_util::Either::Left(
                Full::new(Bytes::new()),
            )))
        }));
    let gw = Gateway::with_upstream(&GatewayConfig::default_config(), answering).unwrap();
    let page = exporter::render();
    for zero in [
        "gwbench_rate_limited_total 0",
        "gwbench_cache_total{result=\"HIT\"} 0",
        "gwbench_cache_total{result=\"MISS\"} 0",
    ] {
        assert!(page.lines().any(|l| l == zero), "{zero} missing:\n{page}");
    }
    // 300 requests, each with its own method token, to a proxy route (any method) and to no
    // route at all.
    for i in 0..300 {
        for path in ["/rest/api/users/1", "/no/such/route"] {
            let req = http::Request::builder()
                .method(format!("X{i}").as_str())
                .uri(path)
                .header("host", "gw.test")
                .body(Empty::<Bytes>::new())
                .unwrap();
            gw.handle(req).await;
        }
    }
    let page = exporter::render();
    let n = series(&page, "gwbench_requests_total");
    assert!(n <= 4, "{n} series of gwbench_requests_total:\n{page}");
    assert!(page.contains("method=\"other\""), "{page}");
}
