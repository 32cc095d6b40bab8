//! `gwbench compare`: starts the mocks and the gateway as child processes, offers the same
//! constant load directly and through the gateway in alternating rounds, and reports the latency
//! and CPU the gateway adds per scenario (terminal table, `summary.json`, `summary.md`, and per
//! scenario and side a `.hgrm` and a `.hlog`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;
use thiserror::Error;

use super::stack::Stack;
use crate::cli::CompareArgs;
use crate::load::recorder::IntervalRecord;
use crate::load::schedule::{Limit, Rate};
use crate::load::target::{Protocol, RequestTemplate};
use crate::load::{LoadConfig, LoadRun, grpc, run_load};
use crate::report::json::{LoadReport, Percentiles};
use crate::report::text::human_ns;
use crate::report::{hgrm, hlog, html};

/// A compare that cannot run as asked (exit code 2).
#[derive(Debug, Error)]
#[error("{0}")]
pub(super) struct CompareError(String);

/// One side of a scenario: what to load.
#[derive(Debug, Clone)]
pub(super) struct Side {
    pub(super) label: &'static str,
    pub(super) protocol: Protocol,
    pub(super) url: String,
    pub(super) grpc_method: Option<(&'static str, &'static str)>,
    /// Whether the requests pass through the gateway (its CPU is then counted).
    pub(super) through_gateway: bool,
    /// Extra request headers (a bearer token).
    pub(super) headers: Vec<(String, String)>,
    /// When set: these URLs all go out for each request, in parallel, timed as one.
    pub(super) all_of: Vec<String>,
}

impl Side {
    pub(super) fn http(label: &'static str, url: String, through_gateway: bool) -> Side {
        Side {
            label,
            protocol: Protocol::Http1,
            url,
            grpc_method: None,
            through_gateway,
            headers: Vec::new(),
            all_of: Vec::new(),
        }
    }
}

/// A pair of sides.
#[derive(Debug, Clone)]
pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) description: &'static str,
    pub(super) direct: Side,
    pub(super) gateway: Side,
}

const KNOWN: &[&str] = &["rest", "grpc", "full", "dashboard"];

/// A token for the embedded config's dev key, valid for the whole run.
fn dev_token() -> Result<String, CompareError> {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let auth = crate::gateway::config::AuthConfig::default();
    let claims = serde_json::json!({
        "sub": "gwbench-compare", "iss": auth.issuer, "aud": auth.audience, "iat": now,
        "exp": now + 24 * 3600
    });
    crate::gateway::middleware::auth::mint(
        "HS256",
        crate::gateway::config::dev_secret().as_bytes(),
        Some("dev"),
        &claims,
    )
    .map_err(CompareError)
}

pub(super) fn scenarios(
    names: &[String],
    rest: &str,
    grpc: &str,
    gw: &str,
) -> Result<Vec<Scenario>, CompareError> {
    let mut out = Vec::new();
    for name in names {
        out.push(match name.as_str() {
            "rest" => Scenario {
                name: "rest",
                description: "REST mock GET /api/users/{id}: direct vs the gateway's proxy route (pure proxy cost)",
                direct: Side::http("direct", format!("http://{rest}/api/users/{{rand:1-1000}}"), false),
                gateway: Side::http("gateway", format!("http://{gw}/rest/api/users/{{rand:1-1000}}"), true),
            },
            "grpc" => Scenario {
                name: "grpc",
                description: "gRPC GetUser direct vs REST GET /api/users/42 transcoded by the gateway (translation cost)",
                direct: Side {
                    label: "direct",
                    protocol: Protocol::Grpc,
                    url: format!("http://{grpc}"),
                    grpc_method: Some(("gwbench.v1.UserService/GetUser", r#"{"id": 42}"#)),
                    through_gateway: false,
                    headers: Vec::new(),
                    all_of: Vec::new(),
                },
                gateway: Side::http("gateway", format!("http://{gw}/api/users/42"), true),
            },
            "full" => Scenario {
                name: "full",
                description: "REST GET /api/users/42 through the gateway: the bare route (\"direct\" side) vs /secure with \
                              JWT auth + rate limit (not triggering) + breaker (middleware cost)",
                direct: Side::http("bare", format!("http://{gw}/api/users/42"), true),
                gateway: Side {
                    headers: vec![("authorization".into(), format!("Bearer {}", dev_token()?))],
                    ..Side::http("middleware", format!("http://{gw}/secure/api/users/42"), true)
                },
            },
            "dashboard" => Scenario {
                name: "dashboard",
                description: "the four calls a client makes in parallel to the REST mock (user, orders, search, stock) \
                              vs the gateway's /api/dashboard aggregation of the same four over gRPC",
                direct: Side {
                    all_of: vec![
                        format!("http://{rest}/api/users/42"),
                        format!("http://{rest}/api/orders?user_id=42&page_size=5"),
                        format!("http://{rest}/api/products/search?q=kettle&limit=3"),
                        // The first product the search finds for "kettle" (what the gateway's
                        // dependent stock call asks for).
                        format!("http://{rest}/api/inventory/14"),
                    ],
                    ..Side::http("direct", format!("http://{rest}/api/users/42"), false)
                },
                gateway: Side::http("gateway", format!("http://{gw}/api/dashboard?user_id=42"), true),
            },
            other => {
                return Err(CompareError(format!("unknown scenario {other:?}; expected some of {}", KNOWN.join(", "))));
            }
        });
    }
    Ok(out)
}

pub(super) fn template(side: &Side) -> Result<RequestTemplate, crate::load::LoadError> {
    match side.grpc_method {
        Some((method, data)) => {
            let call = grpc::prepare(crate::proto::descriptor_pool(), method, data)?;
            let url = format!("{}{}", side.url, call.path);
            RequestTemplate::new(
                Protocol::Grpc,
                &[url],
                http::Method::POST,
                &side.headers,
                call.body,
            )
        }
        None if !side.all_of.is_empty() => RequestTemplate::new(
            side.protocol,
            &side.all_of,
            http::Method::GET,
            &side.headers,
            Bytes::new(),
        )?
        .with_group(),
        None => {
            let urls = std::slice::from_ref(&side.url);
            RequestTemplate::new(
                side.protocol,
                urls,
                http::Method::GET,
                &side.headers,
                Bytes::new(),
            )
        }
    }
}

// ===== results =====

/// CPU milliseconds per 1,000 requests of each process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct CpuPer1000 {
    gateway_ms: Option<f64>,
    backends_ms: Option<f64>,
    generator_ms: f64,
}

#[derive(Debug)]
struct RoundResult {
    run: LoadRun,
    report: LoadReport,
    cpu: CpuPer1000,
}

/// Median and spread of one number across rounds.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

fn spread(values: &[f64]) -> Spread {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Spread {
        median,
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Reads one percentile off a summary.
type Pick = fn(&Percentiles) -> u64;

const PCTS: [(&str, Pick); 5] = [
    ("p50", |p| p.p50),
    ("p90", |p| p.p90),
    ("p99", |p| p.p99),
    ("p999", |p| p.p999),
    ("max", |p| p.max),
];

/// One side's summary across rounds.
#[derive(Debug, Serialize)]
struct SideSummary {
    /// Median and spread per percentile of the corrected latency, ns.
    corrected_ns: std::collections::BTreeMap<&'static str, Spread>,
    /// Likewise for the service time.
    service_ns: std::collections::BTreeMap<&'static str, Spread>,
    achieved_rps: Spread,
    lag_p99_ns: Spread,
    errors: u64,
    not_sent: u64,
    cpu_ms_per_1000: CpuPer1000,
    rounds: Vec<LoadReport>,
}

fn summarize(rounds: &[RoundResult]) -> SideSummary {
    let pick = |f: &dyn Fn(&LoadReport) -> f64| {
        spread(&rounds.iter().map(|r| f(&r.report)).collect::<Vec<_>>())
    };
    let mut corrected = std::collections::BTreeMap::new();
    let mut service = std::collections::BTreeMap::new();
    for (name, get) in PCTS {
        corrected.insert(name, pick(&|r| get(&r.latency_ns.corrected) as f64));
        service.insert(name, pick(&|r| get(&r.latency_ns.service) as f64));
    }
    let cpu = |f: &dyn Fn(&CpuPer1000) -> f64| {
        spread(&rounds.iter().map(|r| f(&r.cpu)).collect::<Vec<_>>()).median
    };
    SideSummary {
        corrected_ns: corrected,
        service_ns: service,
        achieved_rps: pick(&|r| r.achieved_rps),
        lag_p99_ns: pick(&|r| r.latency_ns.lag.p99 as f64),
        errors: rounds
            .iter()
            .map(|r| r.run.outcomes.failed() - r.run.outcomes.not_sent)
            .sum(),
        not_sent: rounds.iter().map(|r| r.run.outcomes.not_sent).sum(),
        cpu_ms_per_1000: CpuPer1000 {
            gateway_ms: rounds
                .iter()
                .all(|r| r.cpu.gateway_ms.is_some())
                .then(|| cpu(&|c| c.gateway_ms.unwrap_or(f64::NAN))),
            backends_ms: rounds
                .iter()
                .all(|r| r.cpu.backends_ms.is_some())
                .then(|| cpu(&|c| c.backends_ms.unwrap_or(f64::NAN))),
            generator_ms: cpu(&|c| c.generator_ms),
        },
        rounds: rounds.iter().map(|r| r.report.clone()).collect(),
    }
}

#[derive(Debug, Serialize)]
struct ScenarioSummary {
    name: &'static str,
    description: &'static str,
    /// Names of the two sides (e.g. direct / gateway, or bare / middleware).
    labels: [&'static str; 2],
    direct: SideSummary,
    gateway: SideSummary,
    /// Gateway median minus direct median, per percentile, ns.
    overhead_ns:
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, f64>>,
}

#[derive(Debug, Serialize)]
struct Machine {
    cores: usize,
    cpu_model: String,
    pinning: Vec<String>,
    /// The child processes (name, pid), for CPU accounting and for checking they are gone.
    processes: Vec<(String, u32)>,
}

#[derive(Debug, Serialize)]
struct CompareSummary {
    schema: &'static str,
    started: String,
    rps: f64,
    rounds: u32,
    duration_s: f64,
    warmup_s: f64,
    connections: usize,
    machine: Machine,
    scenarios: Vec<ScenarioSummary>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

// ===== the run =====

/// Runs `gwbench compare`; prints the table and the report directory.
pub(super) fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let rate = offered_rate(&args.rps)?;
    let names = scenario_names(&args.scenarios)?;
    let (stack, list) = targets(args, &names)?;
    let machine = machine(stack.as_ref());
    let started = SystemTime::now();
    let total_runs = list.len() as u64 * u64::from(args.rounds) * 2;
    let bar = progress_bar(total_runs, args.quiet);
    let (results, failure) = measure(args, rate, &list, stack.as_ref(), &bar);
    bar.finish_and_clear();
    drop(stack);

    let summary = CompareSummary {
        schema: "gwbench.compare.v1",
        started: humantime::format_rfc3339_seconds(started).to_string(),
        rps: rate.offered().unwrap_or(0.0),
        rounds: args.rounds,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        connections: args.connections as usize,
        machine,
        scenarios: results
            .iter()
            .map(|(sc, d, g)| scenario_summary(sc, d, g))
            .collect(),
    };
    let table = render_table(&summary);
    super::print_out(&table)?;
    if results.is_empty() {
        return Err(failure.unwrap_or_else(|| anyhow::anyhow!("nothing was measured")));
    }
    let dir = write_reports(args.out.as_deref(), started, &summary, &table, &results)?;
    match failure {
        None => super::print_out(&format!("report: {}\n", dir.display())),
        Some(e) => {
            super::print_out(&format!(
                "report (partial: the run failed): {}\n",
                dir.display()
            ))?;
            Err(e)
        }
    }
}

/// `--rps`: a constant or Poisson rate (closed loop has no "same offered load" to compare).
fn offered_rate(rps: &str) -> Result<Rate, CompareError> {
    match Rate::parse_rps(rps).map_err(|e| CompareError(e.0))? {
        Rate::Max => Err(CompareError(
            "--rps max is not comparable; give a rate, e.g. --rps 5000".into(),
        )),
        r => Ok(r),
    }
}

/// `--scenarios`, checked before anything starts.
fn scenario_names(list: &str) -> Result<Vec<String>, CompareError> {
    let names: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    scenarios(&names, "x", "x", "x")?;
    Ok(names)
}

/// What is measured: our own mocks and gateway as children (and their scenarios), or the
/// user's running gateway and backend (one pair of URLs, nothing spawned).
fn targets(args: &CompareArgs, names: &[String]) -> anyhow::Result<(Option<Stack>, Vec<Scenario>)> {
    match (&args.gateway_url, &args.direct_url) {
        (Some(g), Some(d)) => {
            let custom = Scenario {
                name: "custom",
                description: "your direct URL vs your gateway URL (nothing spawned; their CPU is not measured)",
                direct: Side::http("direct", d.clone(), false),
                gateway: Side::http("gateway", g.clone(), false),
            };
            Ok((None, vec![custom]))
        }
        (None, None) => {
            let stack = Stack::start(args.pin)?;
            let (rest, grpc, gw) = (stack.rest, stack.grpc, stack.gw);
            let list = scenarios(names, &rest.to_string(), &grpc.to_string(), &gw.to_string())?;
            Ok((Some(stack), list))
        }
        _ => Err(CompareError("--gateway-url and --direct-url go together".into()).into()),
    }
}

/// The machine and the process layout, for the summary. The core count is the stack's, taken
/// before this process was pinned (after, it would count only the generator's cores).
fn machine(stack: Option<&Stack>) -> Machine {
    let cores = stack.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |s| s.cores,
    );
    Machine {
        cores,
        cpu_model: cpu_model(),
        pinning: stack.map_or_else(
            || vec!["external targets: not pinned".to_string()],
            |s| s.pinning.clone(),
        ),
        processes: stack
            .map(|s| {
                vec![
                    ("backends".to_string(), s.backends.pid()),
                    ("gateway".to_string(), s.gateway.pid()),
                ]
            })
            .unwrap_or_default(),
    }
}

/// Runs done out of `total`, on a terminal only.
fn progress_bar(total: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} runs  {msg}",
    ) {
        b.set_style(style.progress_chars("=> "));
    }
    b
}

/// One scenario's rounds: direct, then through the gateway.
type Measured = (Scenario, Vec<RoundResult>, Vec<RoundResult>);

/// Every scenario's rounds, sides alternating which goes first so that drift hits both. A run
/// that fails stops the measurement; what was measured before it is kept, with the error.
fn measure(
    args: &CompareArgs,
    rate: Rate,
    list: &[Scenario],
    stack: Option<&Stack>,
    bar: &indicatif::ProgressBar,
) -> (Vec<Measured>, Option<anyhow::Error>) {
    let mut results: Vec<Measured> = Vec::new();
    for sc in list {
        let (mut direct, mut through) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            let order = if round % 2 == 1 {
                [&sc.direct, &sc.gateway]
            } else {
                [&sc.gateway, &sc.direct]
            };
            for side in order {
                bar.set_message(format!(
                    "scenario {}, round {round}/{}, {}",
                    sc.name, args.rounds, side.label
                ));
                let result = one_run(args, rate, side, round, stack)
                    .with_context(|| format!("scenario {}, {}", sc.name, side.label));
                match result {
                    Ok(r) if std::ptr::eq(side, &sc.gateway) => through.push(r),
                    Ok(r) => direct.push(r),
                    Err(e) => {
                        if !direct.is_empty() && !through.is_empty() {
                            results.push((sc.clone(), direct, through));
                        }
                        return (results, Some(e));
                    }
                }
                bar.inc(1);
            }
        }
        results.push((sc.clone(), direct, through));
    }
    (results, None)
}

/// One load run against `side`, with the CPU each process spent per 1,000 requests.
fn one_run(
    args: &CompareArgs,
    rate: Rate,
    side: &Side,
    round: u32,
    stack: Option<&Stack>,
) -> anyhow::Result<RoundResult> {
    let cfg = LoadConfig {
        template: template(side)?,
        rate,
        limit: Limit::Duration(args.duration),
        // Warm each side up before its first run; later rounds find it warm.
        warmup: if round == 1 {
            args.warmup
        } else {
            Duration::ZERO
        },
        connections: args.connections as usize,
        max_in_flight: 1024,
        threads: 1,
        timeout: Duration::from_secs(5),
        spin: Duration::from_micros(20),
        progress: false,
    };
    let gateway_cpu = || stack.and_then(|s| s.gateway.cpu_seconds());
    let backends_cpu = || stack.and_then(|s| s.backends.cpu_seconds());
    let (gw0, be0) = (gateway_cpu(), backends_cpu());
    let run = run_load(&cfg)?;
    let (gw1, be1) = (gateway_cpu(), backends_cpu());
    // The children's counters span warm-up and run: divide by the requests of both.
    let requests = (run.outcomes.sent() + run.warmup_requests).max(1) as f64 / 1000.0;
    let per1000 =
        |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (b - a) * 1000.0 / requests);
    let cpu = CpuPer1000 {
        gateway_ms: side.through_gateway.then(|| per1000(gw0, gw1)).flatten(),
        backends_ms: per1000(be0, be1),
        generator_ms: (run.cpu.user_s + run.cpu.system_s) * 1000.0
            / (run.outcomes.sent().max(1) as f64 / 1000.0),
    };
    let report = LoadReport::from_run(&run);
    Ok(RoundResult { run, report, cpu })
}

/// A scenario's medians and spread per side, and the gateway's overhead per percentile.
fn scenario_summary(sc: &Scenario, d: &[RoundResult], g: &[RoundResult]) -> ScenarioSummary {
    let (direct, gateway) = (summarize(d), summarize(g));
    let mut overhead = std::collections::BTreeMap::new();
    for (kind, dd, gg) in [
        ("corrected", &direct.corrected_ns, &gateway.corrected_ns),
        ("service", &direct.service_ns, &gateway.service_ns),
    ] {
        overhead.insert(
            kind,
            PCTS.iter()
                .map(|(n, _)| (*n, gg[n].median - dd[n].median))
                .collect(),
        );
    }
    ScenarioSummary {
        name: sc.name,
        description: sc.description,
        labels: [sc.direct.label, sc.gateway.label],
        direct,
        gateway,
        overhead_ns: overhead,
    }
}

// ===== output =====

fn render_table(s: &CompareSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gwbench compare: {} req/s, {} rounds x {}s (+{}s warm-up), {} connections; {} cores ({}); {}",
        s.rps,
        s.rounds,
        s.duration_s,
        s.warmup_s,
        s.connections,
        s.machine.cores,
        s.machine.cpu_model,
        s.machine.pinning.join(", ")
    );
    for sc in &s.scenarios {
        let _ = writeln!(out, "\n== {}: {}", sc.name, sc.description);
        percentile_rows(&mut out, sc);
        side_lines(&mut out, sc);
        generator_warnings(&mut out, sc);
    }
    out
}

/// Per-percentile medians, direct and gateway, and the overhead, for both latency kinds.
fn percentile_rows(out: &mut String, sc: &ScenarioSummary) {
    let _ = writeln!(
        out,
        "  {:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "(median of rounds)", "p50", "p90", "p99", "p99.9", "max"
    );
    for (kind, d, g) in [
        (
            "corrected",
            &sc.direct.corrected_ns,
            &sc.gateway.corrected_ns,
        ),
        ("service", &sc.direct.service_ns, &sc.gateway.service_ns),
    ] {
        let row = |m: &std::collections::BTreeMap<&'static str, Spread>| -> String {
            PCTS.iter()
                .map(|(n, _)| format!("{:>9}", human_ns(m[n].median as u64)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(out, "  {:<22} {}", format!("{kind} direct"), row(d));
        let _ = writeln!(out, "  {:<22} {}", format!("{kind} gateway"), row(g));
        let over: Vec<String> = PCTS
            .iter()
            .map(|(n, _)| {
                let v = g[n].median - d[n].median;
                let sign = if v < 0.0 { "-" } else { "+" };
                format!("{:>9}", format!("{sign}{}", human_ns(v.abs() as u64)))
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:<22} {}",
            format!("{kind} overhead"),
            over.join(" ")
        );
    }
}

/// The p99 spread over rounds, achieved rates and errors, and CPU per 1,000 requests.
fn side_lines(out: &mut String, sc: &ScenarioSummary) {
    let p99 = |m: &std::collections::BTreeMap<&'static str, Spread>| {
        format!(
            "{}..{}",
            human_ns(m["p99"].min as u64),
            human_ns(m["p99"].max as u64)
        )
    };
    let _ = writeln!(
        out,
        "  spread of p99 over rounds: direct {}, gateway {}",
        p99(&sc.direct.corrected_ns),
        p99(&sc.gateway.corrected_ns)
    );
    let _ = writeln!(
        out,
        "  achieved: direct {:.1}/s, gateway {:.1}/s; errors {} / {}; not sent {} / {}",
        sc.direct.achieved_rps.median,
        sc.gateway.achieved_rps.median,
        sc.direct.errors,
        sc.gateway.errors,
        sc.direct.not_sent,
        sc.gateway.not_sent
    );
    let c = (&sc.direct.cpu_ms_per_1000, &sc.gateway.cpu_ms_per_1000);
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
    let _ = writeln!(
        out,
        "  CPU ms per 1,000 requests (direct side / gateway side): gateway {} / {}, backends {} / {}, \
         generator {:.1} / {:.1}",
        ms(c.0.gateway_ms),
        ms(c.1.gateway_ms),
        ms(c.0.backends_ms),
        ms(c.1.backends_ms),
        c.0.generator_ms,
        c.1.generator_ms
    );
}

/// A warning per side where the generator fell behind: those figures include its delay.
fn generator_warnings(out: &mut String, sc: &ScenarioSummary) {
    for (side, sum) in [("direct", &sc.direct), ("gateway", &sc.gateway)] {
        if sum.lag_p99_ns.max > crate::report::text::LAG_WARN_NS as f64 || sum.not_sent > 0 {
            let _ = writeln!(
                out,
                "  WARNING: the load generator could not keep up on the {side} side (lag p99 up to {}, {} not sent): \
                 these figures include generator delay and are not trustworthy; lower --rps or use --pin.",
                human_ns(sum.lag_p99_ns.max as u64),
                sum.not_sent
            );
        }
    }
}

fn merged(rounds: &[RoundResult], f: fn(&LoadRun) -> &Histogram<u64>) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new(3).expect("3 significant figures");
    for r in rounds {
        let _ = h.add(f(&r.run));
    }
    h
}

fn write_reports(
    out: Option<&Path>,
    started: SystemTime,
    summary: &CompareSummary,
    table: &str,
    results: &[Measured],
) -> anyhow::Result<PathBuf> {
    let dir = super::report_dir(out, started, "compare")?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("cannot write {}", dir.join(name).display()))
    };
    write("summary.json", &serde_json::to_string_pretty(summary)?)?;
    write(
        "summary.md",
        &format!("# gwbench compare\n\n```\n{table}```\n"),
    )?;
    let mut sides = Vec::new();
    for (sc, direct, through) in results {
        // The scenario's time axis starts at its first round, whichever side ran first.
        let start = direct
            .iter()
            .chain(through)
            .map(|r| r.run.start_wall)
            .min()
            .unwrap_or(started);
        let d = write_side(&write, &format!("{}-direct", sc.name), direct, start)?;
        let g = write_side(&write, &format!("{}-gateway", sc.name), through, start)?;
        sides.push((d, g));
    }
    let plots: Vec<html::ScenarioPlot<'_>> = results
        .iter()
        .zip(&summary.scenarios)
        .zip(&sides)
        .map(|(((sc, _, _), sum), (d, g))| html::ScenarioPlot {
            name: sc.name,
            description: sc.description,
            labels: (sc.direct.label, sc.gateway.label),
            hists: (&d.corrected, &g.corrected),
            p99_over_time: (d.p99_over_time.clone(), g.p99_over_time.clone()),
            overhead_ns: (
                sum.overhead_ns["service"]["p50"],
                sum.overhead_ns["service"]["p99"],
            ),
        })
        .collect();
    write(
        "report.html",
        &html::render("gwbench compare", &html_context(summary), table, &plots),
    )?;
    Ok(dir)
}

/// What one side's files hold that the HTML report draws.
struct SideFiles {
    /// The rounds' corrected latencies, merged.
    corrected: Histogram<u64>,
    /// (seconds from the scenario's start, p99 ns) per interval.
    p99_over_time: Vec<(f64, f64)>,
}

/// Writes one side's `.hgrm` (corrected and service) and `.hlog` (every round's intervals,
/// times relative to the scenario's first round) as `{base}.*`.
fn write_side(
    write: &dyn Fn(&str, &str) -> anyhow::Result<()>,
    base: &str,
    rounds: &[RoundResult],
    start: SystemTime,
) -> anyhow::Result<SideFiles> {
    let corrected = merged(rounds, |r| &r.total.corrected);
    write(&format!("{base}.hgrm"), &hgrm::render(&corrected))?;
    write(
        &format!("{base}.service.hgrm"),
        &hgrm::render(&merged(rounds, |r| &r.total.service)),
    )?;
    let intervals: Vec<IntervalRecord> = rounds
        .iter()
        .flat_map(|r| {
            let offset = r.run.start_wall.duration_since(start).unwrap_or_default();
            r.run.intervals.iter().cloned().map(move |mut i| {
                i.start += offset;
                i
            })
        })
        .collect();
    write(&format!("{base}.hlog"), &hlog::render(start, &intervals))?;
    let p99_over_time = intervals
        .iter()
        .map(|i| (i.start.as_secs_f64(), i.corrected[1] as f64))
        .collect();
    Ok(SideFiles {
        corrected,
        p99_over_time,
    })
}

/// The lines above the report's charts: load, machine, pinning, start.
fn html_context(summary: &CompareSummary) -> Vec<String> {
    vec![
        format!(
            "{} req/s offered, {} rounds × {} s (+{} s warm-up before each side's first run), {} connections",
            summary.rps, summary.rounds, summary.duration_s, summary.warmup_s, summary.connections
        ),
        format!(
            "machine: {} cores, {}",
            summary.machine.cores, summary.machine.cpu_model
        ),
        format!("pinning: {}", summary.machine.pinning.join("; ")),
        format!("started {}", summary.started),
    ]
}
