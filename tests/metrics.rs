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

/// Kills the child on drop (the test's gateway, however the test ends).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh `gwbench gateway` process, scraped before any request: every metric family the
/// README documents is there from the start — the breaker state of every upstream (closed),
/// the event counters at 0, and the per-request families' types — so a dashboard or an alert
/// on a healthy gateway sees series, not nothing.
#[test]
fn a_fresh_gateway_exports_every_documented_family_before_any_request() {
    use std::io::{BufRead, Read, Write};
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = dead.local_addr().unwrap().to_string();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gwbench"))
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .args(["--upstream-grpc", &dead, "--upstream-rest", &dead])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let admin = loop {
        let line = lines
            .next()
            .expect("the gateway printed its ready lines")
            .unwrap();
        if let Some(addr) = line.strip_prefix("ready admin ") {
            break addr.to_string();
        }
    };
    let mut conn = std::net::TcpStream::connect(&admin).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    for upstream in ["grpc", "rest"] {
        let name = format!("gwbench_breaker_state{{upstream=\"{upstream}\"}}");
        assert_eq!(sample(&page, &name), Some(0.0), "{name} in:\n{page}");
    }
    for counter in [
        "gwbench_rate_limited_total",
        "gwbench_cache_total{result=\"HIT\"}",
        "gwbench_rate_limit_store_errors_total",
        "gwbench_access_log_dropped_total",
        "gwbench_in_flight",
    ] {
        assert_eq!(sample(&page, counter), Some(0.0), "{counter} in:\n{page}");
    }
    for family in [
        "gwbench_requests_total counter",
        "gwbench_request_duration_seconds histogram",
        "gwbench_upstream_duration_seconds histogram",
    ] {
        assert!(
            page.contains(&format!("# TYPE {family}")),
            "{family} in:\n{page}"
        );
    }
}
