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
