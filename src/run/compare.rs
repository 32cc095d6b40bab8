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

use super::stack::{Layout, Stack, generator_threads};
use crate::cli::CompareArgs;
use crate::load::recorder::IntervalRecord;
use crate::load::schedule::{Limit, Rate};
use crate::load::target::{Protocol, RequestTemplate};
use crate::load::{LoadConfig, LoadRun, grpc, run_load};
use crate::report::json::{LoadReport, Percentiles};
use crate::report::text::human_ns;
use crate::report::{hgrm, hlog, html};
use crate::stats::{Bootstrap, Estimate, Sampled};

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
    /// TLS options of an https:// side (`compare --tls`).
    pub(super) tls: Option<crate::net::tls::ClientOptions>,
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
            tls: None,
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
                    tls: None,
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
    let template = plain_template(side)?;
    match &side.tls {
        Some(opts) => template.with_tls(side.protocol, opts),
        None => Ok(template),
    }
}

/// `compare --tls`: every side that goes to the gateway at `gw` goes over https, trusting
/// `opts`' CA.
pub(super) fn over_tls(list: &mut [Scenario], gw: &str, opts: &crate::net::tls::ClientOptions) {
    let plain = format!("http://{gw}");
    for sc in list {
        for side in [&mut sc.direct, &mut sc.gateway] {
            if side.url.starts_with(&plain) {
                side.url = side.url.replacen("http://", "https://", 1);
                side.tls = Some(opts.clone());
            }
        }
    }
}

fn plain_template(side: &Side) -> Result<RequestTemplate, crate::load::LoadError> {
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
    /// The run's 1-second intervals (corrected, service), for the confidence intervals.
    corrected: Vec<Sampled>,
    service: Vec<Sampled>,
}

/// A run's intervals as the bootstrap reads them: (corrected, service) per non-empty interval.
fn sampled(run: &LoadRun) -> (Vec<Sampled>, Vec<Sampled>) {
    let mut de = hdrhistogram::serialization::Deserializer::new();
    let mut decode = |bytes: &[u8]| -> Option<Sampled> {
        let h: Histogram<u64> = de.deserialize(&mut &bytes[..]).ok()?;
        (!h.is_empty()).then(|| Sampled::from_histogram(&h))
    };
    let mut out = (Vec::new(), Vec::new());
    for i in &run.intervals {
        if let (Some(c), Some(s)) = (decode(&i.corrected_v2), decode(&i.service_v2)) {
            out.0.push(c);
            out.1.push(s);
        }
    }
    out
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
    /// Per latency kind: each side's percentiles over all its rounds, and the overhead, each
    /// with its 95 % interval (bootstrap over 1-second intervals), ns.
    ci_ns: std::collections::BTreeMap<&'static str, KindCi>,
    /// Rounds run, and what ended them: "precision" or "max_rounds" (or "min_rounds" when
    /// --max-rounds is --rounds).
    rounds_run: u32,
    ended_by: &'static str,
}

/// The percentiles that get intervals (a maximum is one sample: it has none).
const CI_PCTS: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// One latency kind's intervals in a scenario.
#[derive(Debug, Serialize)]
struct KindCi {
    direct: std::collections::BTreeMap<&'static str, Estimate>,
    gateway: std::collections::BTreeMap<&'static str, Estimate>,
    overhead: std::collections::BTreeMap<&'static str, Judged>,
}

/// An overhead and whether it can be told apart from noise: its interval lies wholly outside
/// the noise floor's band (-floor, +floor) (without a floor: wholly on one side of zero), and
/// every round on its own shows it beyond the floor on the same side. The second condition
/// keeps one stall in one round (which moves a tail percentile of that side by milliseconds,
/// and the bootstrap with it) from passing for an overhead.
#[derive(Debug, Clone, Copy, Serialize)]
struct Judged {
    #[serde(flatten)]
    estimate: Estimate,
    distinguishable: bool,
}

fn judge(estimate: Estimate, floor: Option<f64>, per_round: &[f64]) -> Judged {
    let f = floor.unwrap_or(0.0);
    let outside = estimate.lo > f || estimate.hi < -f;
    let every_round = !per_round.is_empty()
        && (per_round.iter().all(|x| *x > f) || per_round.iter().all(|x| *x < -f));
    Judged {
        estimate,
        distinguishable: outside && every_round,
    }
}

/// Each round's overhead at percentile `name` of latency `kind` (gateway minus direct, rounds
/// paired in order).
fn per_round(d: &[RoundResult], g: &[RoundResult], kind: &str, name: &str) -> Vec<f64> {
    let Some((_, pick)) = PCTS.iter().find(|(n, _)| *n == name) else {
        return Vec::new();
    };
    let of = |r: &RoundResult| {
        let l = &r.report.latency_ns;
        pick(if kind == "corrected" {
            &l.corrected
        } else {
            &l.service
        }) as f64
    };
    d.iter().zip(g).map(|(d, g)| of(g) - of(d)).collect()
}

/// The noise floor: what the A/A calibration (one path against itself) measured as overhead.
#[derive(Debug, Serialize)]
struct NoiseFloor {
    /// The path loaded on both sides.
    url: String,
    rounds: u32,
    duration_s: f64,
    /// The A/A "overhead" per kind and percentile, with its interval, ns.
    aa_ns: std::collections::BTreeMap<
        &'static str,
        std::collections::BTreeMap<&'static str, Estimate>,
    >,
    /// The floor: the larger end (in size) of that interval, ns.
    floor_ns:
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, f64>>,
}

/// Both kinds' samples of one side's rounds.
fn samples(rounds: &[RoundResult]) -> [(&'static str, Vec<Sampled>); 2] {
    let gather = |f: fn(&RoundResult) -> &Vec<Sampled>| -> Vec<Sampled> {
        rounds.iter().flat_map(|r| f(r).iter().cloned()).collect()
    };
    [
        ("corrected", gather(|r| &r.corrected)),
        ("service", gather(|r| &r.service)),
    ]
}

/// The overhead of `b` over `a` per kind and percentile, with intervals.
fn overheads(
    a: &[RoundResult],
    b: &[RoundResult],
) -> std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, Estimate>> {
    let boot = Bootstrap::default();
    samples(a)
        .into_iter()
        .zip(samples(b))
        .map(|((kind, sa), (_, sb))| {
            let per = CI_PCTS
                .iter()
                .filter_map(|(n, q)| Some((*n, boot.difference(&sa, &sb, *q)?)))
                .collect();
            (kind, per)
        })
        .collect()
}

fn noise_floor(url: &str, args: &CompareArgs, a: &[RoundResult], b: &[RoundResult]) -> NoiseFloor {
    let aa = overheads(a, b);
    let floor_ns = aa
        .iter()
        .map(|(kind, per)| {
            let f = per
                .iter()
                .map(|(n, e)| (*n, e.lo.abs().max(e.hi.abs())))
                .collect();
            (*kind, f)
        })
        .collect();
    NoiseFloor {
        url: url.to_string(),
        rounds: a.len() as u32,
        duration_s: args.calibration.as_secs_f64(),
        aa_ns: aa,
        floor_ns,
    }
}

/// A scenario's intervals, the overheads judged against the noise floor.
fn intervals(
    d: &[RoundResult],
    g: &[RoundResult],
    floor: Option<&NoiseFloor>,
) -> std::collections::BTreeMap<&'static str, KindCi> {
    let boot = Bootstrap::default();
    let over = overheads(d, g);
    samples(d)
        .into_iter()
        .zip(samples(g))
        .map(|((kind, sd), (_, sg))| {
            let side = |s: &[Sampled]| {
                CI_PCTS
                    .iter()
                    .filter_map(|(n, q)| Some((*n, boot.percentile(s, *q)?)))
                    .collect()
            };
            let overhead = over[kind]
                .iter()
                .map(|(n, e)| {
                    let f = floor.and_then(|f| f.floor_ns.get(kind)?.get(n).copied());
                    (*n, judge(*e, f, &per_round(d, g, kind, n)))
                })
                .collect();
            let ci = KindCi {
                direct: side(&sd),
                gateway: side(&sg),
                overhead,
            };
            (kind, ci)
        })
        .collect()
}

/// Whether the p50 overhead (corrected) is known well enough to stop adding rounds: its
/// interval within ±max(10 µs, 10 % of the overhead).
fn precise_enough(d: &[RoundResult], g: &[RoundResult]) -> bool {
    let (sd, sg) = (samples(d), samples(g));
    Bootstrap::default()
        .difference(&sd[0].1, &sg[0].1, 0.5)
        .is_some_and(|e| half_width(&e) <= (0.1 * e.value.abs()).max(10_000.0))
}

/// The larger distance from the value to an end of its interval.
fn half_width(e: &Estimate) -> f64 {
    (e.value - e.lo).max(e.hi - e.value)
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
    /// --rounds and --max-rounds (each scenario says how many it ran).
    rounds: u32,
    max_rounds: u32,
    duration_s: f64,
    warmup_s: f64,
    connections: usize,
    generator_threads: usize,
    machine: Machine,
    /// The layout compare chose (None: external targets, nothing spawned or pinned).
    layout: Option<Layout>,
    /// None when --calibration 0s.
    noise_floor: Option<NoiseFloor>,
    scenarios: Vec<ScenarioSummary>,
    /// With --gateway-instances N: what each instance and the balancer did.
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<super::fleet::FleetShare>,
    /// --tls: the sides through the gateway went over https (HTTP/1.1) to a gateway
    /// terminating TLS.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    gateway_tls: bool,
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
    let plan = Plan::new(args, rate.clone(), stack.as_ref());
    let started = SystemTime::now();
    let calibration_runs = if args.calibration.is_zero() {
        0
    } else {
        2 * u64::from(args.rounds)
    };
    let total_runs = calibration_runs + list.len() as u64 * u64::from(plan.min_rounds) * 2;
    let bar = progress_bar(total_runs, args.quiet);
    let (floor, mut failure) = match calibrate(&plan, &list, &bar) {
        Ok(floor) => (floor, None),
        Err(e) => (None, Some(e)),
    };
    let results = if failure.is_none() {
        let (results, f) = measure(&plan, &list, &bar);
        failure = f;
        results
    } else {
        Vec::new()
    };
    bar.finish_and_clear();
    let layout = plan.layout.clone();
    let threads = plan.threads;
    let (min_rounds, max_rounds) = (plan.min_rounds, plan.max_rounds);
    drop(plan);
    let fleet = match stack.as_ref().and_then(|s| s.fleet.as_ref()) {
        Some((f, _)) => Some(super::fleet::FleetShare::of(f)?),
        None => None,
    };
    drop(stack);

    let summary = CompareSummary {
        schema: "gwbench.compare.v2",
        started: humantime::format_rfc3339_seconds(started).to_string(),
        rps: rate.offered().unwrap_or(0.0),
        rounds: min_rounds,
        max_rounds,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        connections: args.connections as usize,
        generator_threads: threads,
        machine,
        layout,
        scenarios: results
            .iter()
            .map(|m| scenario_summary(m, floor.as_ref()))
            .collect(),
        noise_floor: floor,
        fleet,
        gateway_tls: args.tls,
    };
    let mut table = render_table(&summary);
    if let Some(f) = &summary.fleet {
        table.push_str(&f.describe(summary.machine.cores));
    }
    if summary.gateway_tls {
        table.push_str(
            "TLS: every side through the gateway went over https (HTTP/1.1, a certificate made \
             for this run, connections and handshakes opened before the clock): compare with a \
             run without --tls for what termination costs\n",
        );
    }
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

/// What every run of a compare shares.
struct Plan<'a> {
    args: &'a CompareArgs,
    rate: Rate,
    stack: Option<&'a Stack>,
    layout: Option<Layout>,
    /// Generator threads, from the offered rate and the generator's cores.
    threads: usize,
    min_rounds: u32,
    max_rounds: u32,
}

impl<'a> Plan<'a> {
    fn new(args: &'a CompareArgs, rate: Rate, stack: Option<&'a Stack>) -> Plan<'a> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let generator_cores = stack.map_or(cores, |s| s.layout.generator_cores(s.cores));
        Plan {
            args,
            stack,
            layout: stack.map(|s| s.layout.clone()),
            threads: generator_threads(rate.offered(), generator_cores),
            rate,
            min_rounds: args.rounds,
            max_rounds: args.max_rounds.max(args.rounds),
        }
    }
}

/// The A/A calibration: the first scenario's direct path against itself, `--rounds` rounds of
/// `--calibration`, alternating like the scenarios. None when it is switched off.
fn calibrate(
    plan: &Plan<'_>,
    list: &[Scenario],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Option<NoiseFloor>> {
    let args = plan.args;
    let Some(first) = list.first() else {
        return Ok(None);
    };
    if args.calibration.is_zero() {
        return Ok(None);
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for which in [round % 2 == 1, round % 2 == 0] {
            bar.set_message(format!("noise floor (A/A), round {round}/{}", args.rounds));
            let r = one_run(plan, &first.direct, round, args.calibration)
                .context("the noise-floor calibration (A/A on the direct path)")?;
            if which {
                a.push(r)
            } else {
                b.push(r)
            }
            bar.inc(1);
        }
    }
    Ok(Some(noise_floor(&first.direct.url, args, &a, &b)))
}

/// One scenario's rounds: direct, then through the gateway, and what ended them.
type Measured = (Scenario, Vec<RoundResult>, Vec<RoundResult>, &'static str);

/// Every scenario's rounds, sides alternating which goes first so that drift hits both; past
/// the minimum, rounds are added until the p50 overhead is precise enough. A run that fails
/// stops the measurement; what was measured before it is kept, with the error.
fn measure(
    plan: &Plan<'_>,
    list: &[Scenario],
    bar: &indicatif::ProgressBar,
) -> (Vec<Measured>, Option<anyhow::Error>) {
    let mut results: Vec<Measured> = Vec::new();
    for sc in list {
        let (mut direct, mut through) = (Vec::new(), Vec::new());
        let mut ended_by = "max_rounds";
        for round in 1..=plan.max_rounds {
            if round > plan.min_rounds {
                if precise_enough(&direct, &through) {
                    ended_by = "precision";
                    break;
                }
                bar.inc_length(2);
            }
            let order = if round % 2 == 1 {
                [&sc.direct, &sc.gateway]
            } else {
                [&sc.gateway, &sc.direct]
            };
            for side in order {
                bar.set_message(format!(
                    "scenario {}, round {round}, {}",
                    sc.name, side.label
                ));
                let result = one_run(plan, side, round, plan.args.duration)
                    .with_context(|| format!("scenario {}, {}", sc.name, side.label));
                match result {
                    Ok(r) if std::ptr::eq(side, &sc.gateway) => through.push(r),
                    Ok(r) => direct.push(r),
                    Err(e) => {
                        if !direct.is_empty() && !through.is_empty() {
                            results.push((sc.clone(), direct, through, "failure"));
                        }
                        return (results, Some(e));
                    }
                }
                bar.inc(1);
            }
        }
        if ended_by == "max_rounds" && plan.max_rounds == plan.min_rounds {
            ended_by = "min_rounds";
        } else if ended_by == "max_rounds" && precise_enough(&direct, &through) {
            ended_by = "precision";
        }
        results.push((sc.clone(), direct, through, ended_by));
    }
    (results, None)
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
    if args.tls && (args.gateway_url.is_some() || args.direct_url.is_some()) {
        return Err(CompareError(
            "--tls puts TLS on the gateway compare starts; give https:// URLs to --gateway-url \
             instead"
                .into(),
        )
        .into());
    }
    if args.gateway_instances > 1 && (args.gateway_url.is_some() || args.direct_url.is_some()) {
        return Err(CompareError(
            "--gateway-instances starts a fleet of gwbench gateways; it does not go with \
             --gateway-url/--direct-url"
                .into(),
        )
        .into());
    }
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
            let stack = Stack::start_fleet(
                args.layout.or_pinned(args.pin),
                usize::from(args.gateway_instances),
                args.redis_url.as_deref(),
                args.tls,
            )?;
            let (rest, grpc, gw) = (stack.rest, stack.grpc, stack.gw);
            let mut list = scenarios(names, &rest.to_string(), &grpc.to_string(), &gw.to_string())?;
            if let Some(dir) = &stack.tls {
                let opts = crate::net::tls::ClientOptions {
                    cacert: Some(dir.0.join("ca.pem")),
                    ..Default::default()
                };
                over_tls(&mut list, &gw.to_string(), &opts);
            }
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
        processes: stack.map(Stack::processes).unwrap_or_default(),
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

/// One load run of `duration` against `side`, with the CPU each process spent per 1,000
/// requests.
fn one_run(
    plan: &Plan<'_>,
    side: &Side,
    round: u32,
    duration: Duration,
) -> anyhow::Result<RoundResult> {
    let (args, stack) = (plan.args, plan.stack);
    let cfg = LoadConfig {
        template: template(side)?,
        rate: plan.rate.clone(),
        limit: Limit::Duration(duration),
        // Warm each side up before its first run; later rounds find it warm.
        warmup: if round == 1 {
            args.warmup
        } else {
            Duration::ZERO
        },
        connections: args.connections as usize,
        max_in_flight: 1024,
        threads: plan.threads,
        timeout: Duration::from_secs(5),
        spin: Duration::from_micros(20),
        progress: false,
        split: Default::default(),
        raw_limit: None,
        live: None,
    };
    let gateway_cpu = || stack.and_then(Stack::gateway_cpu);
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
    let (corrected, service) = sampled(&run);
    Ok(RoundResult {
        run,
        report,
        cpu,
        corrected,
        service,
    })
}

/// A scenario's medians and spread per side, the gateway's overhead per percentile, and the
/// intervals.
fn scenario_summary(m: &Measured, floor: Option<&NoiseFloor>) -> ScenarioSummary {
    let (sc, d, g, ended_by) = m;
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
        ci_ns: intervals(d, g, floor),
        rounds_run: d.len().min(g.len()) as u32,
        ended_by,
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
        "gwbench compare: {} req/s, {}..{} rounds x {}s (+{}s warm-up), {} connections, {} generator thread(s); {} cores ({})",
        s.rps,
        s.rounds,
        s.max_rounds,
        s.duration_s,
        s.warmup_s,
        s.connections,
        s.generator_threads,
        s.machine.cores,
        s.machine.cpu_model,
    );
    let layout = s.layout.as_ref().map_or("external targets", |l| l.mode);
    let _ = writeln!(out, "layout {layout}: {}", s.machine.pinning.join("; "));
    noise_line(&mut out, s.noise_floor.as_ref());
    let _ = writeln!(
        out,
        "figures: percentile of all rounds [95 % interval]; overhead = gateway - direct; \
         ~0 (<X) = not distinguishable from the noise floor, at most X either way"
    );
    for sc in &s.scenarios {
        let _ = writeln!(out, "\n== {}: {}", sc.name, sc.description);
        percentile_rows(&mut out, sc);
        side_lines(&mut out, sc);
        generator_warnings(&mut out, sc);
        saturation_warnings(&mut out, sc, s.layout.as_ref());
    }
    out
}

/// The noise floor, or why there is none.
fn noise_line(out: &mut String, floor: Option<&NoiseFloor>) {
    let Some(f) = floor else {
        let _ = writeln!(out, "noise floor: not measured (--calibration 0s)");
        return;
    };
    let per: Vec<String> = CI_PCTS
        .iter()
        .filter_map(|(n, _)| {
            Some(format!(
                "{n} ±{}",
                human_ns(*f.floor_ns.get("corrected")?.get(n)? as u64)
            ))
        })
        .collect();
    let _ = writeln!(
        out,
        "noise floor (A/A: {} against itself, {} rounds x {}s): {}",
        f.url,
        f.rounds,
        f.duration_s,
        per.join(", ")
    );
}

/// An estimate as `v [lo, hi]`.
fn with_interval(e: &Estimate) -> String {
    format!(
        "{} [{}, {}]",
        human_ns(e.value.max(0.0) as u64),
        human_ns(e.lo.max(0.0) as u64),
        human_ns(e.hi.max(0.0) as u64)
    )
}

/// A signed number of nanoseconds, `+49µs`.
fn signed_ns(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    format!("{sign}{}", human_ns(v.abs() as u64))
}

/// An overhead: `+49µs [+41µs, +57µs]`, or `~0 (<30µs)` when not distinguishable.
fn judged(j: &Judged) -> String {
    let e = &j.estimate;
    if j.distinguishable {
        format!(
            "{} [{}, {}]",
            signed_ns(e.value),
            signed_ns(e.lo),
            signed_ns(e.hi)
        )
    } else {
        format!("~0 (<{})", human_ns(e.lo.abs().max(e.hi.abs()) as u64))
    }
}

/// Per percentile, each side's value with its interval and the judged overhead, for both
/// latency kinds; the maximum (one sample, no interval) after.
fn percentile_rows(out: &mut String, sc: &ScenarioSummary) {
    let _ = writeln!(
        out,
        "  rounds: {} (ended by {})",
        sc.rounds_run,
        sc.ended_by.replace('_', " ")
    );
    for (kind, ci) in &sc.ci_ns {
        let _ = writeln!(
            out,
            "  {kind:<10} {:<6} {:<30} {:<30} overhead",
            "", sc.labels[0], sc.labels[1]
        );
        for (n, _) in CI_PCTS {
            let (Some(d), Some(g), Some(o)) =
                (ci.direct.get(n), ci.gateway.get(n), ci.overhead.get(n))
            else {
                continue;
            };
            let _ = writeln!(
                out,
                "  {:<10} {n:<6} {:<30} {:<30} {}",
                "",
                with_interval(d),
                with_interval(g),
                judged(o)
            );
        }
        let max = |side: &SideSummary| {
            let m = if *kind == "corrected" {
                &side.corrected_ns
            } else {
                &side.service_ns
            };
            human_ns(m["max"].max.max(0.0) as u64)
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<6} {:<30} {:<30} (one sample: no interval)",
            "",
            "max",
            max(&sc.direct),
            max(&sc.gateway)
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

/// Where the generator fell behind: which side, which rounds, how much, why, and what to do.
fn generator_warnings(out: &mut String, sc: &ScenarioSummary) {
    for (label, sum) in [(sc.labels[0], &sc.direct), (sc.labels[1], &sc.gateway)] {
        let late: Vec<&LoadReport> = sum
            .rounds
            .iter()
            .filter(|r| crate::report::text::generator_fell_behind(r))
            .collect();
        let Some(worst) = late
            .iter()
            .max_by_key(|r| r.generator.waited_for_connection)
        else {
            continue;
        };
        let rounds: Vec<String> = sum
            .rounds
            .iter()
            .enumerate()
            .filter(|(_, r)| crate::report::text::generator_fell_behind(r))
            .map(|(i, r)| {
                format!(
                    "round {} (lag p99 {}, {} waited for a busy connection, {} not sent)",
                    i + 1,
                    human_ns(r.latency_ns.lag.p99),
                    r.generator.waited_for_connection,
                    r.requests.not_sent
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  WARNING: requests went out late on the {label} side in {}: those rounds' corrected \
             latencies include that delay (service times do not). {}",
            rounds.join(", "),
            crate::report::text::lateness_advice(worst)
        );
    }
}

/// Where the gateway and the mocks together kept their cores nearly busy: latencies then
/// include queueing near saturation, which is not what the gateway adds at a moderate load.
fn saturation_warnings(out: &mut String, sc: &ScenarioSummary, layout: Option<&Layout>) {
    let Some(layout) = layout else { return };
    let mut cpus: Vec<usize> = layout
        .gateway
        .iter()
        .chain(&layout.backends)
        .flatten()
        .copied()
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    let cores = if cpus.is_empty() {
        layout.gateway_threads.max(layout.backends_threads)
    } else {
        cpus.len()
    } as f64;
    for (label, sum) in [(sc.labels[0], &sc.direct), (sc.labels[1], &sc.gateway)] {
        let c = &sum.cpu_ms_per_1000;
        let ms = c.gateway_ms.unwrap_or(0.0) + c.backends_ms.unwrap_or(0.0);
        let used = ms * sum.achieved_rps.median / 1e6;
        if used >= 0.8 * cores {
            let _ = writeln!(
                out,
                "  WARNING: on the {label} side the gateway and the mocks used {used:.2} of the {cores} core(s) \
                 they have: its latencies include queueing near saturation, not only what the path adds. \
                 Lower --rps, or run on more cores."
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
    for (sc, direct, through, _) in results {
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
        .map(|(((sc, _, _, _), sum), (d, g))| html::ScenarioPlot {
            name: sc.name,
            description: sc.description,
            labels: (sc.direct.label, sc.gateway.label),
            hists: (&d.corrected, &g.corrected),
            p99_over_time: (d.p99_over_time.clone(), g.p99_over_time.clone()),
            overhead_ns: (
                sum.overhead_ns["service"]["p50"],
                sum.overhead_ns["service"]["p99"],
            ),
            intervals: plot_intervals(sum, summary.noise_floor.as_ref()),
        })
        .collect();
    write(
        "report.html",
        &html::render("gwbench compare", &html_context(summary), table, &plots),
    )?;
    Ok(dir)
}

/// The service-time overheads' intervals and the floor, as the report draws them.
fn plot_intervals(
    sum: &ScenarioSummary,
    floor: Option<&NoiseFloor>,
) -> Option<html::OverheadIntervals> {
    let o = &sum.ci_ns.get("service")?.overhead;
    let at = |p: &str| {
        o.get(p)
            .map(|j| (j.estimate.value, j.estimate.lo, j.estimate.hi))
    };
    let f = |p: &str| {
        floor
            .and_then(|f| f.floor_ns.get("service")?.get(p).copied())
            .unwrap_or(0.0)
    };
    Some(html::OverheadIntervals {
        p50: at("p50")?,
        p99: at("p99")?,
        floor: (f("p50"), f("p99")),
    })
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
        .map(|i| (i.start.as_secs_f64(), i.corrected.p99 as f64))
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
            "{} req/s offered, {}..{} rounds × {} s (+{} s warm-up before each side's first run), {} connections",
            summary.rps,
            summary.rounds,
            summary.max_rounds,
            summary.duration_s,
            summary.warmup_s,
            summary.connections
        ),
        format!(
            "machine: {} cores, {}",
            summary.machine.cores, summary.machine.cpu_model
        ),
        format!(
            "layout {}: {}",
            summary
                .layout
                .as_ref()
                .map_or("external targets", |l| l.mode),
            summary.machine.pinning.join("; ")
        ),
        summary.noise_floor.as_ref().map_or_else(
            || "noise floor: not measured".to_string(),
            |f| {
                let mut line = String::new();
                noise_line(&mut line, Some(f));
                line.trim_end().to_string()
            },
        ),
        format!("started {}", summary.started),
    ]
}
