//! `gwbench compare`: starts the mocks and the gateway as child processes, offers the same
//! constant load directly and through the gateway in alternating rounds, and reports the latency
//! and CPU the gateway adds per scenario (terminal table, `summary.json`, `summary.md`, and per
//! scenario and side a `.hgrm` and a `.hlog`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use hdrhistogram::Histogram;
use thiserror::Error;

use super::peers::Gateway;
use super::stack::{Layout, Stack, generator_threads};
use crate::cli::{CompareArgs, Method};
use crate::load::recorder::IntervalRecord;
use crate::load::schedule::{Limit, Rate};
use crate::load::{LoadConfig, LoadRun, run_load};
use crate::report::{hgrm, hlog, html};

mod scenario;
mod stats;

use crate::report::compare::{
    CompareSummary, CpuPer1000, Machine, NoiseFloor, html_context, plot_intervals, render_table,
};
pub(super) use scenario::{Pids, Scenario, Side, over_tls, peer_rest, scenarios, template};
use stats::{RoundResult, cpu_model, noise_floor, precise_enough, scenario_summary};

/// A compare that cannot run as asked (exit code 2).
#[derive(Debug, Error)]
#[error("{0}")]
pub(super) struct CompareError(String);

// ===== the run =====

/// Runs `gwbench compare`; prints the table and the report directory.
pub(super) fn compare(args: &CompareArgs) -> anyhow::Result<()> {
    let rate = offered_rate(&args.rps)?;
    let names = scenario_names(&args.scenarios)?;
    let (stack, list) = targets(args, &names)?;
    let machine = machine(stack.as_ref());
    let plan = Plan::new(args, rate.clone(), stack.as_ref());
    let started = SystemTime::now();
    let (floor, results, failure) = calibrate_and_measure(&plan, &list);
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
        method: match args.method {
            Method::Duet => "duet",
            Method::Rounds => "rounds",
        },
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
            .map(|m| scenario_summary(m, args.method, floor.as_ref()))
            .collect(),
        noise_floor: floor,
        fleet,
        gateway_tls: args.tls,
        interrupted: crate::load::interrupt::interrupted(),
    };
    let table = table_of(&summary);
    super::print_out(&table)?;
    if results.is_empty() {
        return Err(failure.unwrap_or_else(|| anyhow::anyhow!("nothing was measured")));
    }
    let dir = write_reports(args.out.as_deref(), started, &summary, &table, &results)?;
    match failure {
        None => super::print_out(&format!("report: {}\n", dir.display())),
        Some(e) => {
            let why = match summary.interrupted {
                true => "interrupted: the scenarios that finished",
                false => "the run failed",
            };
            super::print_out(&format!("report (partial: {why}): {}\n", dir.display()))?;
            Err(e)
        }
    }
}

/// The terminal table, with the fleet's lines and the TLS note when they apply.
fn table_of(summary: &CompareSummary) -> String {
    let mut table = render_table(summary);
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
    table
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
    method: Method,
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
            method: args.method,
        }
    }
}

/// The A/A calibration, then every scenario, under one progress bar; Ctrl-C or a failure
/// ends them early with what finished and the reason.
fn calibrate_and_measure(
    plan: &Plan<'_>,
    list: &[Scenario],
) -> (Option<NoiseFloor>, Vec<Measured>, Option<anyhow::Error>) {
    let args = plan.args;
    let calibration_runs = if args.calibration.is_zero() {
        0
    } else {
        2 * u64::from(args.rounds)
    };
    let total_runs = calibration_runs + list.len() as u64 * u64::from(plan.min_rounds) * 2;
    let bar = progress_bar(total_runs, args.quiet);
    crate::load::interrupt::catch_ctrl_c();
    let (floor, mut failure) = match calibrate(plan, list, &bar) {
        _ if crate::load::interrupt::interrupted() => {
            let during = " (during the noise-floor calibration: nothing measured yet)";
            (None, Some(super::Interrupted(during.into()).into()))
        }
        Ok(floor) => (floor, None),
        Err(e) => (None, Some(e)),
    };
    let results = if failure.is_none() {
        let (results, f) = measure(plan, list, &bar);
        failure = f;
        results
    } else {
        Vec::new()
    };
    bar.finish_and_clear();
    (floor, results, failure)
}

/// The A/A calibration: the first scenario's direct path against itself, `--rounds` rounds of
/// `--calibration` in the run's method. None when it is switched off.
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
        bar.set_message(format!("noise floor (A/A), round {round}/{}", args.rounds));
        let (x, y) = one_round(
            plan,
            (&first.direct, &first.direct),
            round,
            args.calibration,
        )
        .context("the noise-floor calibration (A/A on the direct path)")?;
        a.push(x);
        b.push(y);
        bar.inc(2);
    }
    Ok(Some(noise_floor(
        &first.direct.url,
        plan.method,
        args,
        &a,
        &b,
    )))
}

/// One scenario's rounds: direct, then through the gateway, and what ended them.
type Measured = (Scenario, Vec<RoundResult>, Vec<RoundResult>, &'static str);

/// Every scenario's rounds; past the minimum, rounds are added until the p50 overhead is
/// precise enough. A run that fails stops the measurement; what was measured before it is kept,
/// with the error. Ctrl-C leaves out the round it cut short: only whole rounds count.
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
                if precise_enough(plan.method, &direct, &through) {
                    ended_by = "precision";
                    break;
                }
                bar.inc_length(2);
            }
            bar.set_message(format!("scenario {}, round {round}", sc.name));
            let result = one_round(plan, (&sc.direct, &sc.gateway), round, plan.args.duration)
                .with_context(|| format!("scenario {}, round {round}", sc.name));
            let stop = match result {
                _ if crate::load::interrupt::interrupted() => {
                    let what = format!(" (in scenario {}, round {round})", sc.name);
                    Some(("interrupted", super::Interrupted(what).into()))
                }
                Ok((d, g)) => {
                    direct.push(d);
                    through.push(g);
                    None
                }
                Err(e) => Some(("failure", e)),
            };
            if let Some((why, e)) = stop {
                if !direct.is_empty() {
                    results.push((sc.clone(), direct, through, why));
                }
                return (results, Some(e));
            }
            bar.inc(2);
        }
        if ended_by == "max_rounds" && plan.max_rounds == plan.min_rounds {
            ended_by = "min_rounds";
        } else if ended_by == "max_rounds" && precise_enough(plan.method, &direct, &through) {
            ended_by = "precision";
        }
        results.push((sc.clone(), direct, through, ended_by));
    }
    (results, None)
}

/// One round of the two sides `(a, b)`: at once (duet), or one after the other, which goes
/// first alternating with the round (rounds). Returns (a's result, b's result).
fn one_round(
    plan: &Plan<'_>,
    (a, b): (&Side, &Side),
    round: u32,
    duration: Duration,
) -> anyhow::Result<(RoundResult, RoundResult)> {
    match plan.method {
        Method::Duet => one_duet(plan, (a, b), round, duration),
        Method::Rounds if round % 2 == 1 => {
            let x = one_run(plan, a, round, duration).with_context(|| a.label.to_string())?;
            let y = one_run(plan, b, round, duration).with_context(|| b.label.to_string())?;
            Ok((x, y))
        }
        Method::Rounds => {
            let y = one_run(plan, b, round, duration).with_context(|| b.label.to_string())?;
            let x = one_run(plan, a, round, duration).with_context(|| a.label.to_string())?;
            Ok((x, y))
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

/// What is measured: our own mocks and gateway as children (and their scenarios), the peer
/// gateways `--gateway` names in front of the same mocks, or the user's running gateway and
/// backend (one pair of URLs, nothing spawned).
fn targets(args: &CompareArgs, names: &[String]) -> anyhow::Result<(Option<Stack>, Vec<Scenario>)> {
    let gateways = Gateway::parse_list(&args.gateway).map_err(CompareError)?;
    let peers = gateways.iter().any(|g| *g != Gateway::Gwbench);
    let refuse = |msg: &str| -> anyhow::Result<(Option<Stack>, Vec<Scenario>)> {
        Err(CompareError(msg.to_string()).into())
    };
    let external = args.gateway_url.is_some() || args.direct_url.is_some();
    if args.tls && external {
        return refuse(
            "--tls puts TLS on the gateway compare starts; give https:// URLs to --gateway-url instead",
        );
    }
    if args.gateway_instances > 1 && external {
        return refuse(
            "--gateway-instances starts a fleet of gwbench gateways; it does not go with --gateway-url/--direct-url",
        );
    }
    if peers && (external || args.tls || args.gateway_instances > 1) {
        return refuse(
            "--gateway with other gateways than gwbench starts them in front of our mocks over plain HTTP: it does \
             not go with --gateway-url, --tls or --gateway-instances",
        );
    }
    match (&args.gateway_url, &args.direct_url) {
        (Some(g), Some(d)) => Ok((None, vec![custom(args, g, d)?])),
        (None, None) => {
            let mut stack = Stack::start_fleet(
                args.layout.or_pinned(args.pin),
                usize::from(args.gateway_instances),
                args.redis_url.as_deref(),
                args.tls,
            )?;
            let mut list = Vec::new();
            for gateway in gateways {
                list.extend(gateway_scenarios(&mut stack, gateway, names)?);
            }
            if list.is_empty() {
                return refuse(
                    "none of the gateways named serves any of the scenarios named (other gateways than gwbench serve rest)",
                );
            }
            Ok((Some(stack), list))
        }
        _ => refuse("--gateway-url and --direct-url go together"),
    }
}

/// The one pair of URLs of `--gateway-url` and `--direct-url`, with the processes whose CPU
/// the user named.
fn custom(args: &CompareArgs, gateway: &str, direct: &str) -> anyhow::Result<Scenario> {
    for (flag, pid) in [
        ("--gateway-pid", args.gateway_pid),
        ("--direct-pid", args.direct_pid),
    ] {
        if let Some(pid) = pid
            && super::process::cpu_seconds(pid).is_none()
        {
            return Err(CompareError(format!("{flag} {pid}: no such process")).into());
        }
    }
    let mut direct = Side::http("direct", direct.to_string(), false);
    let mut through = Side::http("gateway", gateway.to_string(), true);
    direct.pids.backends = args.direct_pid;
    through.pids = Pids {
        gateway: args.gateway_pid,
        backends: args.direct_pid,
    };
    Ok(Scenario {
        name: "custom",
        description: match args.gateway_pid {
            Some(_) => {
                "your direct URL vs your gateway URL (nothing spawned; CPU of the processes named)"
            }
            None => {
                "your direct URL vs your gateway URL (nothing spawned; their CPU is not measured: --gateway-pid)"
            }
        },
        direct,
        gateway: through,
    })
}

/// The scenarios of `names` that `gateway` serves in front of the stack's mocks: ours from
/// the stack; another one started now (kept by the stack until the run ends).
fn gateway_scenarios(
    stack: &mut Stack,
    gateway: Gateway,
    names: &[String],
) -> anyhow::Result<Vec<Scenario>> {
    let (rest, grpc, gw) = (stack.rest, stack.grpc, stack.gw);
    if gateway == Gateway::Gwbench {
        let mut list = scenarios(names, &rest.to_string(), &grpc.to_string(), &gw.to_string())?;
        if let Some(dir) = &stack.tls {
            let opts = crate::net::tls::ClientOptions {
                cacert: Some(dir.0.join("ca.pem")),
                ..Default::default()
            };
            over_tls(&mut list, &gw.to_string(), &opts);
        }
        return Ok(list);
    }
    if !names.iter().any(|n| gateway.serves(n)) {
        return Ok(Vec::new());
    }
    let peer = stack.start_peer(gateway)?;
    let (addr, grpc_addr, pid) = (
        peer.addr.to_string(),
        peer.grpc_addr.to_string(),
        peer.pid(),
    );
    Ok(names
        .iter()
        .filter_map(|n| match n.as_str() {
            "rest" => Some(peer_rest(gateway, &rest.to_string(), &addr, pid)),
            "grpc" => Some(scenario::peer_grpc(
                gateway,
                &grpc.to_string(),
                &grpc_addr,
                pid,
            )),
            _ => None,
        })
        .collect())
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

/// What one run of `side` is offered.
fn load_config(
    plan: &Plan<'_>,
    side: &Side,
    round: u32,
    duration: Duration,
) -> anyhow::Result<LoadConfig> {
    let args = plan.args;
    Ok(LoadConfig {
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
        kernel_timestamps: true,
        start_gate: None,
    })
}

/// The CPU seconds so far of the gateway and the backends: the processes `pids` names (with
/// their children), else the stack's own, where there are any.
fn children_cpu(stack: Option<&Stack>, pids: Pids) -> (Option<f64>, Option<f64>) {
    use super::process::tree_cpu_seconds;
    (
        match pids.gateway {
            Some(pid) => tree_cpu_seconds(pid),
            None => stack.and_then(Stack::gateway_cpu),
        },
        match pids.backends {
            Some(pid) => tree_cpu_seconds(pid),
            None => stack.and_then(|s| s.backends.cpu_seconds()),
        },
    )
}

/// CPU ms per 1,000 requests: the seconds between two readings over `requests`.
fn per1000(before: Option<f64>, after: Option<f64>, requests: u64) -> Option<f64> {
    let thousands = requests.max(1) as f64 / 1000.0;
    before.zip(after).map(|(a, b)| (b - a) * 1000.0 / thousands)
}

/// Requests a run made, warm-up included (the children's counters span both).
fn all_requests(run: &LoadRun) -> u64 {
    run.outcomes.sent() + run.warmup_requests
}

/// The generator's CPU per 1,000 of `sent` requests.
fn generator_ms(cpu: crate::load::CpuTime, sent: u64) -> f64 {
    (cpu.user_s + cpu.system_s) * 1000.0 / (sent.max(1) as f64 / 1000.0)
}

/// One load run of `duration` against `side`, with the CPU each process spent per 1,000
/// requests.
fn one_run(
    plan: &Plan<'_>,
    side: &Side,
    round: u32,
    duration: Duration,
) -> anyhow::Result<RoundResult> {
    let cfg = load_config(plan, side, round, duration)?;
    let (gw0, be0) = children_cpu(plan.stack, side.pids);
    let run = run_load(&cfg)?;
    let (gw1, be1) = children_cpu(plan.stack, side.pids);
    let n = all_requests(&run);
    let cpu = CpuPer1000 {
        gateway_ms: side.through_gateway.then(|| per1000(gw0, gw1, n)).flatten(),
        backends_ms: per1000(be0, be1, n),
        generator_ms: generator_ms(run.cpu, run.outcomes.sent()),
    };
    Ok(RoundResult::of(run, cpu))
}

/// A duet: `a` and `b` loaded at the same time, each at the offered rate on its own
/// connections and generator threads, as the two interleaved halves of one schedule at twice
/// the rate (so that their requests go out half a period apart), both started at the same
/// instant so that their 1-second intervals cover the same seconds. Which side leads the
/// period alternates with the round. The mocks' CPU is shared by both sides' requests; the
/// generator's (one process) likewise.
fn one_duet(
    plan: &Plan<'_>,
    (a, b): (&Side, &Side),
    round: u32,
    duration: Duration,
) -> anyhow::Result<(RoundResult, RoundResult)> {
    use crate::load::schedule::{Segment, Split};
    let rate = plan.rate.offered().unwrap_or(0.0);
    // Both start at one instant, taken when both have opened their connections.
    let gate = crate::load::StartGate::new(2);
    let lead = u32::from(round.is_multiple_of(2));
    let config = |side: &Side, index: u32| -> anyhow::Result<LoadConfig> {
        let mut c = load_config(plan, side, round, duration)?;
        // --rps is what the servers are offered in all: each side's segment is half of it.
        c.rate = Rate::Constant(rate);
        c.split = Split {
            segment: Segment { index, count: 2 },
            seed: None,
            start_at: None,
        };
        c.start_gate = Some(gate.clone());
        Ok(c)
    };
    let (ca, cb) = (config(a, lead)?, config(b, 1 - lead)?);
    let pids = a.pids.or(b.pids);
    let (gw0, be0) = children_cpu(plan.stack, pids);
    let (ra, rb) = std::thread::scope(|s| {
        let other = s.spawn(|| run_load(&cb));
        let ra = run_load(&ca);
        let rb = other.join().unwrap_or_else(|_| {
            Err(crate::load::LoadError::Failed(
                "the duet's second generator stopped unexpectedly".into(),
            ))
        });
        (ra, rb)
    });
    let (ra, rb) = (ra.with_context(|| a.label)?, rb.with_context(|| b.label)?);
    let (gw1, be1) = children_cpu(plan.stack, pids);
    let both = all_requests(&ra) + all_requests(&rb);
    // The gateway's CPU is for the requests of every side that went through it (both, in the
    // middleware scenario: then one figure for the two routes together).
    let via_gateway: u64 = [(a, &ra), (b, &rb)]
        .iter()
        .filter(|(side, _)| side.through_gateway)
        .map(|(_, run)| all_requests(run))
        .sum();
    // Each run read the whole process's CPU over (nearly) the same window: their mean is the
    // generator's, for both sides' requests.
    let cpu_s = (ra.cpu.user_s + ra.cpu.system_s + rb.cpu.user_s + rb.cpu.system_s) / 2.0;
    let sent = ra.outcomes.sent() + rb.outcomes.sent();
    let cpu_of = |side: &Side| CpuPer1000 {
        gateway_ms: side
            .through_gateway
            .then(|| per1000(gw0, gw1, via_gateway))
            .flatten(),
        backends_ms: per1000(be0, be1, both),
        generator_ms: generator_ms(
            crate::load::CpuTime {
                user_s: cpu_s,
                system_s: 0.0,
            },
            sent,
        ),
    };
    let (cpu_a, cpu_b) = (cpu_of(a), cpu_of(b));
    Ok((RoundResult::of(ra, cpu_a), RoundResult::of(rb, cpu_b)))
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
            gateway_cpu_us: sum.gateway.cpu_ms_per_1000.gateway_ms,
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
        .map(|i| (i.start.as_secs_f64(), i.corrected.p99 as f64))
        .collect();
    Ok(SideFiles {
        corrected,
        p99_over_time,
    })
}
