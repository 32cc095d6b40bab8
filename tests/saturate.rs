//! `gwbench saturate --target URL` against a server with a hard capacity: one request at a time,
//! each holding it for ~1 ms (tokio's timer rounds up to whole milliseconds), so ~500-1000 req/s.
//! The knee must lie in that band, with room for a slow machine below it.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::cargo::cargo_bin;

#[test]
fn the_knee_of_a_capacity_limited_server_is_found() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let one_at_a_time = Arc::new(tokio::sync::Semaphore::new(1));
        gwbench::net::serve_http(
            listener,
            move |_req| {
                let gate = one_at_a_time.clone();
                async move {
                    let _permit = gate.acquire().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    gwbench::net::json(http::StatusCode::OK, "{}")
                }
            },
            shutdown.clone(),
            gwbench::net::ServeLimits {
                drain: Duration::from_secs(1),
                ..Default::default()
            },
        );
        addr
    });
    let out_dir = gwbench::process::TempDir::new("saturate").unwrap();
    let out = Command::new(cargo_bin("gwbench"))
        .args([
            "saturate",
            "--target",
            &format!("http://{addr}/x"),
            "--start",
            "100",
            "--factor",
            "2",
            "--max",
            "6400",
        ])
        .args([
            "--step-duration",
            "1s",
            "--warmup",
            "200ms",
            "-c",
            "16",
            "--quiet",
            "--out",
        ])
        .arg(&out_dir)
        .output()
        .unwrap();
    shutdown.cancel();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    let search = &summary["searches"][0];
    let knee = search["knee_rps"].as_f64().unwrap_or(0.0);
    let bad = search["first_bad_rps"].as_f64().unwrap_or(f64::MAX);
    assert!(
        (150.0..=1100.0).contains(&knee),
        "knee {knee} req/s outside the expected band\n{stdout}"
    );
    assert!(
        bad / knee <= 1.06,
        "bisection stops within 5 %: {knee}..{bad}"
    );
    assert!(stdout.contains("saturates at"), "{stdout}");
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "achieved-by-offered and p99-by-offered charts"
    );
    assert!(html.contains("saturates at") && !html.contains("<script"));
}

/// `saturate --gateway-instances 2`: two real gateways behind a real HAProxy, sharing limits in
/// a real redis-server (both from Debian; `.ci/run` installs them). The search runs with one
/// instance and then two, and the report has each instance's CPU and share of the requests,
/// the balancer's CPU and the scaling efficiency. Without haproxy or redis-server the test says
/// so and passes, unless GWBENCH_REQUIRE_FLEET=1 (CI).
#[test]
fn a_gateway_fleet_behind_haproxy_is_searched_and_reported() {
    for program in ["haproxy", "redis-server"] {
        if common::require_tool(&[program], "GWBENCH_REQUIRE_FLEET", program).is_none() {
            return;
        }
    }
    let out = gwbench::process::TempDir::new("fleet-test").unwrap();
    let run = Command::new(cargo_bin("gwbench"))
        .args([
            "saturate",
            "--target",
            "gateway",
            "--scenario",
            "rest",
            "--gateway-instances",
            "2",
            "--start",
            "100",
            "--max",
            "200",
            "--step-duration",
            "500ms",
            "--warmup",
            "100ms",
            "--slo-p99",
            "10s",
            "-q",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = common::succeeded(&run);
    assert!(stdout.contains("a simulation on this"), "{stdout}");
    let summary = common::summary_in(&out);
    let fleet = &summary["fleet"];
    assert_eq!(fleet["instances"], 2, "{summary}");
    let responses: Vec<u64> = fleet["instance_responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // Every step's requests went through HAProxy to the two instances (64 connections,
    // least connections: both are used).
    assert_eq!(responses.len(), 2);
    assert!(responses.iter().all(|&n| n > 0), "{responses:?}");
    assert!(fleet["balancer_cpu_s"].as_f64().unwrap() > 0.0, "{fleet}");
    assert!(fleet["scaling_efficiency"].as_f64().is_some(), "{fleet}");
    assert_eq!(summary["searches"].as_array().unwrap().len(), 2);
}

/// Ctrl-C during `saturate`, once a step has finished: the search stops, the steps that
/// finished are printed and saved, marked interrupted, and the exit code is 130.
#[test]
fn ctrl_c_during_saturate_keeps_the_finished_steps_and_exits_130() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = served.clone();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        gwbench::net::serve_http(
            listener,
            move |_req| {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { gwbench::net::json(http::StatusCode::OK, "{}") }
            },
            shutdown.clone(),
            gwbench::net::ServeLimits::default(),
        );
        addr
    });
    let out_dir = gwbench::process::TempDir::new("saturate-int").unwrap();
    let child = Command::new(cargo_bin("gwbench"))
        .args(["saturate", "--target", &format!("http://{addr}/x")])
        .args(["--start", "100", "--factor", "2", "--max", "6400"])
        .args([
            "--step-duration",
            "1s",
            "--warmup",
            "0s",
            "--quiet",
            "--out",
        ])
        .arg(&out_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = common::Guard(child);
    // The first step (100 req/s for 1 s) has finished once more than 150 were served.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while served.load(std::sync::atomic::Ordering::Relaxed) < 150 {
        assert!(std::time::Instant::now() < deadline, "no step finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "saturate did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut guard.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("INTERRUPTED (Ctrl-C)"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("summary.json")).unwrap()).unwrap();
    let search = &summary["searches"][0];
    assert_eq!(search["interrupted"], true, "{search}");
    assert!(!search["steps"].as_array().unwrap().is_empty(), "{search}");
    shutdown.cancel();
}

/// `saturate --gateway gwbench,nginx`: each gateway searched with the same rule, its CPU per
/// request at its knee, and the knees side by side in the answer. (Against --max, both take
/// the rates offered: the knee is the highest rate tried, and the search stays short.)
#[test]
fn each_gateways_knee_is_searched_with_its_cpu() {
    if common::require_tool(&["nginx"], "GWBENCH_REQUIRE_NGINX", "nginx").is_none() {
        return;
    }
    let (stdout, out) = short_search("saturate-peers", "gateway", "gwbench,nginx", "200", "400");
    let summary = common::summary_in(&out);
    let searches = summary["searches"].as_array().unwrap();
    let sides: Vec<&str> = searches
        .iter()
        .map(|s| s["side"].as_str().unwrap())
        .collect();
    assert_eq!(sides, ["gateway", "nginx"], "{summary}");
    for s in searches {
        assert_eq!(s["knee_rps"], 400.0, "{s}");
        let cpu = s["gateway_cpu_us_at_knee"].as_f64();
        assert!(
            cpu.is_some_and(|us| us > 0.0),
            "{}: no CPU at the knee",
            s["side"]
        );
    }
    assert!(stdout.contains("gwbench: 400 req/s"), "{stdout}");
    assert!(stdout.contains("nginx: 400 req/s"), "{stdout}");
    // Another gateway alone: its knee is in the answer too (not only direct's).
    let (stdout, _out) = short_search("saturate-nginx", "both", "nginx", "200", "200");
    assert!(stdout.contains("\n  nginx: 200 req/s"), "{stdout}");
    // Other gateways serve the rest scenario only.
    let refused = Command::new(cargo_bin("gwbench"))
        .args(["saturate", "--gateway", "nginx", "--scenario", "grpc"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("add --scenario rest"));
}

/// A short `saturate --scenario rest --target TARGET --gateway LIST` from `start` to `max`
/// req/s (1 s steps, an SLO no step misses): its stdout, and the report's directory.
fn short_search(
    tag: &str,
    target: &str,
    gateways: &str,
    start: &str,
    max: &str,
) -> (String, gwbench::process::TempDir) {
    let out = gwbench::process::TempDir::new(tag).unwrap();
    let run = Command::new(cargo_bin("gwbench"))
        .args(["saturate", "--target", target, "--scenario", "rest"])
        .args(["--gateway", gateways, "--start", start, "--max", max])
        .args([
            "--step-duration",
            "1s",
            "--warmup",
            "100ms",
            "--slo-p99",
            "10s",
        ])
        .args(["-q", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    (common::succeeded(&run), out)
}
