//! The gateway's metrics when clients hang up. Alone in its test binary: the Prometheus recorder
//! is process-wide, so no other test's requests can move the gauges read here.

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Waker};

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

#[tokio::test]
async fn abandoned_requests_leave_the_in_flight_gauge_and_are_counted_as_499() {
    // An upstream that never answers: every request stays in flight until its client leaves.
    let stalled: RouteService =
        tower::util::BoxCloneSyncService::new(tower::service_fn(|_req: GwRequest| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(http::Response::new(http_body_util::Either::Left(
                Full::new(Bytes::new()),
            )))
        }));
    let gw = Gateway::with_upstream(&GatewayConfig::default_config(), stalled).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    const ABANDONED: usize = 7;
    let mut held = Vec::new();
    for _ in 0..ABANDONED {
        let req = http::Request::get("/api/users/42")
            .header("host", "gw.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let mut fut = Box::pin(gw.handle(req));
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "the upstream holds it"
        );
        held.push(fut);
    }
    let page = exporter::render();
    assert_eq!(
        sample(&page, "gwbench_in_flight"),
        Some(ABANDONED as f64),
        "{page}"
    );

    drop(held); // the clients hang up

    let page = exporter::render();
    assert_eq!(sample(&page, "gwbench_in_flight"), Some(0.0), "{page}");
    let abandoned = sample(
        &page,
        "gwbench_requests_total{route=\"/api/users/{id}\",method=\"GET\",status=\"499\"}",
    );
    assert_eq!(abandoned, Some(ABANDONED as f64), "{page}");
}
