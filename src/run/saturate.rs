//! `gwbench saturate`: at what request rate does the gateway become the bottleneck? Steps the
//! offered rate up geometrically until a step is bad, then bisects between the last good and
//! the first bad rate until they are within 5 %. A step is good while the achieved rate is at
//! least 97 % of the offered, errors stay under 1 %, and p99 stays under the SLO (default 10 ×
//! the p99 of the first step). Done for the direct path and through the gateway; the answer is
//! one sentence. When the load generator was the one that could not keep up, it says so: the
//! result is then a lower bound.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use super::compare::{Side, scenarios, template};
use super::peers::Gateway;
use super::stack::Stack;
use crate::cli::SaturateArgs;
use crate::load::schedule::{Limit, Rate};
use crate::load::{LoadConfig, run_load};
use crate::report::text::human_ns;

/// A saturate that cannot run as asked (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct SaturateError(String);

/// One offered rate and what came of it.
#[derive(Debug, Clone, Serialize)]
struct Step {
    offered_rps: f64,
    achieved_rps: f64,
    p50_ns: u64,
    p99_ns: u64,
    error_ratio: f64,
    lag_p99_ns: u64,
    /// Generator CPU as a fraction of one core over the step.
    generator_cpu: f64,
    /// Generator threads of the step.
    generator_threads: usize,
    /// The gateway's CPU per request over the step, µs (a gateway side whose process is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_cpu_us_per_request: Option<f64>,
    good: bool,
    /// Why a step was bad, in words.
    reason: Option<String>,
}

/// The search on one side.
#[derive(Debug, Serialize)]
struct Search {
    side: String,
    steps: Vec<Step>,
    /// Highest good rate found.
    knee_rps: Option<f64>,
    /// Lowest bad rate found.
    first_bad_rps: Option<f64>,
    slo_p99_ns: u64,
    /// The generator, not the target, ran out first: the knee is a lower bound.
    generator_limited: bool,
    /// The gateway's CPU per request at the knee, µs (where the gateway's process is known).
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_cpu_us_at_knee: Option<f64>,
    /// Ctrl-C stopped the search: its steps are the ones that finished (absent when false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    interrupted: bool,
}

#[derive(Debug, Serialize)]
struct SaturateSummary {
    schema: &'static str,
    started: String,
    scenario: String,
    step_duration_s: f64,
    cores: usize,
    pinning: Vec<String>,
    searches: Vec<Search>,
    answer: String,
    /// With `--gateway-instances N`: the fleet's figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    fleet: Option<FleetSummary>,
}

/// A fleet's search (`--gateway-instances`).
#[derive(Debug, Serialize)]
struct FleetSummary {
    instances: usize,
    balancer: &'static str,
    redis_url: String,
    /// Always true on one machine: the instances share the gateway's cores.
    simulated: bool,
    knee_one_rps: Option<f64>,
    knee_fleet_rps: Option<f64>,
    /// knee(N) / (N x knee(1)).
    scaling_efficiency: Option<f64>,
    /// Per instance over the fleet's search: CPU seconds and responses through the balancer.
    instance_cpu_s: Vec<f64>,
    instance_responses: Vec<u64>,
    balancer_cpu_s: f64,
}

fn run_step(
    side: &Side,
    rate: f64,
    args: &SaturateArgs,
    generator_cores: usize,
) -> anyhow::Result<(Step, crate::load::LoadRun)> {
    let threads = args.threads.map_or_else(
        || super::stack::generator_threads(Some(rate), generator_cores),
        usize::from,
    );
    let cfg = LoadConfig {
        template: template(side)?,
        rate: Rate::Constant(rate),
        limit: Limit::Duration(args.step_duration),
        warmup: args.warmup,
        connections: args.connections as usize,
        max_in_flight: 4096,
        threads,
        timeout: Duration::from_secs(2),
        spin: Duration::from_micros(20),
        progress: false,
        split: Default::default(),
        raw_limit: None,
        live: None,
        kernel_timestamps: true,
        start_gate: None,
    };
    let gateway_cpu = || side.pids.gateway.and_then(super::process::tree_cpu_seconds);
    let before = gateway_cpu();
    let run = run_load(&cfg).with_context(|| format!("{} at {rate} req/s", side.label))?;
    let requests = run.outcomes.sent() + run.warmup_requests;
    let gateway_cpu_us = before
        .zip(gateway_cpu())
        .map(|(a, b)| (b - a) * 1e6 / requests.max(1) as f64);
    let o = &run.outcomes;
    let scheduled = o.total().max(1) as f64;
    let errors = (o.failed() - o.not_sent) as f64 / scheduled;
    let cpu = (run.cpu.user_s + run.cpu.system_s) / run.duration.as_secs_f64().max(1e-3);
    let step = Step {
        offered_rps: rate,
        achieved_rps: run.achieved_rps(),
        p50_ns: run.total.corrected.value_at_quantile(0.5),
        p99_ns: run.total.corrected.value_at_quantile(0.99),
        error_ratio: errors,
        lag_p99_ns: run.total.lag.value_at_quantile(0.99),
        generator_cpu: cpu,
        generator_threads: threads,
        gateway_cpu_us_per_request: gateway_cpu_us,
        good: false,
        reason: None,
    };
    Ok((step, run))
}

fn judge(step: &mut Step, slo_p99: u64) {
    let mut why = Vec::new();
    if step.achieved_rps < 0.97 * step.offered_rps {
        why.push(format!(
            "achieved {:.0}/s < 97 % of offered",
            step.achieved_rps
        ));
    }
    if step.error_ratio >= 0.01 {
        why.push(format!("{:.1} % errors", step.error_ratio * 100.0));
    }
    if step.p99_ns > slo_p99 {
        why.push(format!(
            "p99 {} > SLO {}",
            human_ns(step.p99_ns),
            human_ns(slo_p99)
        ));
    }
    step.good = why.is_empty();
    step.reason = (!why.is_empty()).then(|| why.join(", "));
}

/// Whether the generator, rather than the target, ran out on a step: it used (nearly) a whole
/// core per thread. Lag alone does not say so: on HTTP/1.1 a slow target keeps every connection
/// busy, and tickets then wait — that lag is the target's doing.
fn generator_limited(step: &Step) -> bool {
    step.generator_cpu > 0.85 * step.generator_threads.max(1) as f64
}

fn search(
    side: &Side,
    args: &SaturateArgs,
    generator_cores: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Search> {
    let mut steps: Vec<Step> = Vec::new();
    let mut slo = args.slo_p99.map(|d| d.as_nanos() as u64);
    let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
    // One step at `rate`; a bad verdict is confirmed by running the rate once more, so that a
    // single hiccup of the machine (a 50 ms stall in one 3 s window) does not end the search.
    // None: Ctrl-C cut the step short (it is left out).
    let probe =
        |rate: f64, steps: &mut Vec<Step>, slo: &mut Option<u64>| -> anyhow::Result<Option<bool>> {
            for attempt in 0..2 {
                let note = if attempt == 0 { "" } else { " (confirming)" };
                bar.set_message(format!("{}: {rate:.0} req/s{note}", side.label));
                let (mut step, _) = run_step(side, rate, args, generator_cores)?;
                if crate::load::interrupt::interrupted() {
                    return Ok(None);
                }
                let limit = *slo.get_or_insert_with(|| (step.p99_ns * 10).max(1_000_000));
                judge(&mut step, limit);
                let ok = step.good;
                steps.push(step);
                if ok {
                    return Ok(Some(true));
                }
            }
            Ok(Some(false))
        };
    let mut interrupted = false;
    // Geometric steps up to the first bad one (or --max, which is tried itself).
    let mut next = Some(args.start);
    while let Some(rate) = next {
        match probe(rate, &mut steps, &mut slo)? {
            Some(true) => {
                good = Some(rate);
                next = next_rate(rate, args.factor, args.max);
            }
            Some(false) => {
                bad = Some(rate);
                break;
            }
            None => {
                interrupted = true;
                break;
            }
        }
    }
    // Bisect until the bracket is within 5 %.
    if let (Some(mut lo), Some(mut hi), false) = (good, bad, interrupted) {
        while (hi - lo) / lo > 0.05 {
            let mid = (lo + hi) / 2.0;
            match probe(mid, &mut steps, &mut slo)? {
                Some(true) => lo = mid,
                Some(false) => hi = mid,
                None => {
                    interrupted = true;
                    break;
                }
            }
        }
        good = Some(lo);
        bad = Some(hi);
    }
    Ok(Search {
        side: side.label.to_string(),
        generator_limited: steps.iter().filter(|s| !s.good).any(generator_limited),
        gateway_cpu_us_at_knee: cpu_at(&steps, good),
        steps,
        knee_rps: good,
        first_bad_rps: bad,
        slo_p99_ns: slo.unwrap_or(0),
        interrupted,
    })
}

/// The gateway's CPU per request on the step that decided `rate` (the last one at it).
fn cpu_at(steps: &[Step], rate: Option<f64>) -> Option<f64> {
    let rate = rate?;
    let step = steps
        .iter()
        .rev()
        .find(|s| (s.offered_rps - rate).abs() < 1e-6)?;
    step.gateway_cpu_us_per_request
}

/// The geometric step after a good `rate`: `rate × factor`, or `max` itself when that would
/// overshoot it (so --max is always tried), or none once `max` was.
fn next_rate(rate: f64, factor: f64, max: f64) -> Option<f64> {
    (rate < max).then(|| (rate * factor).min(max))
}

/// The p99 measured at `rate`: of the run that decided its verdict (the last one at that rate —
/// a confirmed bad step, or the good retry of a step that was bad once).
fn p99_at(search: &Search, rate: Option<f64>) -> Option<u64> {
    let rate = rate?;
    search
        .steps
        .iter()
        .rev()
        .find(|s| (s.offered_rps - rate).abs() < 1e-6)
        .map(|s| s.p99_ns)
}

fn answer(direct: Option<&Search>, gateway: Option<&Search>) -> String {
    let describe = |s: &Search| match (s.knee_rps, s.first_bad_rps) {
        (Some(k), None) if s.interrupted => {
            format!("at least {k:.0} req/s (interrupted before a bad step)")
        }
        (None, None) if s.interrupted => "unknown (interrupted before a step finished)".into(),
        (Some(k), Some(b)) => {
            let before = p99_at(s, Some(k)).map_or_else(String::new, human_ns);
            let after = p99_at(s, Some(b)).map_or_else(String::new, human_ns);
            format!("{k:.0} req/s; beyond it p99 rises from {before} to {after}")
        }
        (Some(k), None) => format!("more than {k:.0} req/s (no bad step up to --max)"),
        (None, Some(b)) => format!("less than {b:.0} req/s (already the first step was bad)"),
        (None, None) => "unknown".into(),
    };
    let bound = |s: &Search| {
        if s.generator_limited {
            " (a lower bound: the load generator could not keep up)"
        } else {
            ""
        }
    };
    match (direct, gateway) {
        (Some(d), Some(g)) => {
            let share = match (g.knee_rps, d.knee_rps) {
                (Some(gk), Some(dk)) if dk > 0.0 => {
                    format!(", {:.0} % of direct's {dk:.0} req/s", gk / dk * 100.0)
                }
                _ => String::new(),
            };
            format!(
                "The gateway saturates at {}{share}{}; direct saturates at {}{}.",
                describe(g),
                bound(g),
                describe(d),
                bound(d)
            )
        }
        (Some(d), None) => format!("Direct saturates at {}{}.", describe(d), bound(d)),
        (None, Some(g)) => format!("The gateway saturates at {}{}.", describe(g), bound(g)),
        (None, None) => String::new(),
    }
}

/// Runs `gwbench saturate`.
pub(super) fn saturate(args: &SaturateArgs) -> anyhow::Result<()> {
    check_args(args)?;
    crate::load::interrupt::catch_ctrl_c();
    if args.target.starts_with("http://") {
        return saturate_url(args);
    }
    let sides: &[&str] = match args.target.as_str() {
        "both" => &["direct", "gateway"],
        "direct" => &["direct"],
        "gateway" => &["gateway"],
        other => {
            return Err(SaturateError(format!(
                "--target {other:?}: expected gateway, direct, both or an http:// URL"
            ))
            .into());
        }
    };
    scenarios(std::slice::from_ref(&args.scenario), "x", "x", "x")
        .map_err(|e| SaturateError(e.to_string()))?;
    let gateways = gateway_list(args)?;
    let mut stack = Stack::start(args.layout.or_pinned(args.pin))?;
    let (cores, pinning) = (stack.cores, stack.pinning.clone());
    let mut sc = scenarios(
        std::slice::from_ref(&args.scenario),
        &stack.rest.to_string(),
        &stack.grpc.to_string(),
        &stack.gw.to_string(),
    )
    .map_err(|e| SaturateError(e.to_string()))?
    .remove(0);
    if let Some(g) = &stack.gateway {
        sc.gateway.pids.gateway = Some(g.pid());
    }
    let started = SystemTime::now();
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) && !args.quiet {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let (searches, fleet) = search_sides(args, &mut stack, &sc, sides, &gateways, &bar)?;
    bar.finish_and_clear();
    drop(stack);
    let direct = searches.iter().find(|s| s.side == sc.direct.label);
    let gateway = searches.iter().find(|s| s.side == sc.gateway.label);
    let mut answer = answer(direct, gateway);
    if let Some(f) = &fleet {
        answer = fleet_answer(f, &answer, cores);
    }
    // The one-sentence answer is about our gateway: any other one searched is listed after it.
    if gateways != [Gateway::Gwbench] {
        answer.push_str(&side_by_side(direct, &searches, sc.direct.label));
    }

    let title = format!("scenario {} ({})", sc.name, sc.description);
    report(
        args, started, sc.name, &title, searches, answer, cores, pinning, fleet,
    )
}

/// The searches `sides` asks for: direct, and each gateway of `gateways` (ours alone or as a
/// fleet, the others started now in front of the same mocks). Stops after a Ctrl-C.
fn search_sides(
    args: &SaturateArgs,
    stack: &mut Stack,
    sc: &super::compare::Scenario,
    sides: &[&str],
    gateways: &[Gateway],
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Vec<Search>, Option<FleetSummary>)> {
    let mut searches = Vec::new();
    let generator_cores = stack.layout.generator_cores(stack.cores);
    let mut fleet = None;
    for which in sides {
        if *which == "direct" {
            searches.push(search(&sc.direct, args, generator_cores, bar)?);
        }
        for gateway in gateways.iter().filter(|_| *which == "gateway") {
            if crate::load::interrupt::interrupted() {
                break;
            }
            if *gateway == Gateway::Gwbench && args.gateway_instances > 1 {
                let (one, many, summary) = search_fleet(args, stack, sc, generator_cores, bar)?;
                searches.extend([one, many]);
                fleet = Some(summary);
            } else if *gateway == Gateway::Gwbench {
                searches.push(search(&sc.gateway, args, generator_cores, bar)?);
            } else {
                let rest = stack.rest.to_string();
                let peer = stack.start_peer(*gateway)?;
                let (addr, pid) = (peer.addr.to_string(), peer.pid());
                let side = super::compare::peer_rest(*gateway, &rest, &addr, pid).gateway;
                searches.push(search(&side, args, generator_cores, bar)?);
            }
        }
        if crate::load::interrupt::interrupted() {
            break;
        }
    }
    Ok((searches, fleet))
}

/// `--gateway`'s list, checked against the scenario (other gateways serve rest only) and the
/// fleet (ours only).
fn gateway_list(args: &SaturateArgs) -> anyhow::Result<Vec<Gateway>> {
    let gateways = Gateway::parse_list(&args.gateway).map_err(SaturateError)?;
    let peers: Vec<&str> = gateways
        .iter()
        .filter(|g| **g != Gateway::Gwbench)
        .map(|g| g.name())
        .collect();
    if !peers.is_empty() && args.scenario != "rest" {
        return Err(SaturateError(format!(
            "--gateway {}: saturate searches other gateways than gwbench on the rest scenario only; add --scenario rest",
            peers.join(",")
        ))
        .into());
    }
    if !peers.is_empty() && args.gateway_instances > 1 {
        return Err(SaturateError(
            "--gateway-instances puts a fleet of gwbench gateways behind HAProxy; it does not go with other gateways in --gateway".into(),
        )
        .into());
    }
    Ok(gateways)
}

/// Every gateway's knee, side by side (`--gateway` with more than one): the same SLO rule for
/// each, its share of direct's knee, and its CPU per request at the knee.
fn side_by_side(direct: Option<&Search>, searches: &[Search], direct_label: &str) -> String {
    let gateways: Vec<&Search> = searches.iter().filter(|s| s.side != direct_label).collect();
    if gateways.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nEach gateway's knee (the same SLO rule for each):");
    for s in gateways {
        let name = if s.side == "gateway" {
            "gwbench"
        } else {
            s.side.as_str()
        };
        let knee = s
            .knee_rps
            .map_or_else(|| "no knee found".to_string(), |k| format!("{k:.0} req/s"));
        let share = match (s.knee_rps, direct.and_then(|d| d.knee_rps)) {
            (Some(k), Some(d)) if d > 0.0 => format!(" ({:.0} % of direct's)", k / d * 100.0),
            _ => String::new(),
        };
        let cpu = s.gateway_cpu_us_at_knee.map_or_else(String::new, |us| {
            format!(", {us:.1} µs of gateway CPU per request there")
        });
        let bound = if s.generator_limited {
            " (a lower bound: the generator could not keep up)"
        } else {
            ""
        };
        let _ = write!(out, "\n  {name}: {knee}{share}{cpu}{bound}");
    }
    out
}

/// The search's flags make sense together (exit 2 otherwise).
fn check_args(args: &SaturateArgs) -> anyhow::Result<()> {
    let valid =
        args.factor.is_finite() && args.factor > 1.0 && args.start.is_finite() && args.start > 0.0;
    if !valid || args.max < args.start {
        return Err(SaturateError(
            "--factor must be above 1, --start above 0 and --max at least --start".into(),
        )
        .into());
    }
    if args.gateway_instances > 1 && (args.target.starts_with("http://") || args.target == "direct")
    {
        return Err(SaturateError(
            "--gateway-instances searches the gateway side: use --target gateway or both".into(),
        )
        .into());
    }
    Ok(())
}

/// `--gateway-instances N`: the gateway side searched behind HAProxy, with one instance and
/// then with N (sharing limits in one Redis), each instance's CPU and share of the requests.
fn search_fleet(
    args: &SaturateArgs,
    stack: &Stack,
    sc: &super::compare::Scenario,
    generator_cores: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<(Search, Search, FleetSummary)> {
    let n = usize::from(args.gateway_instances);
    let cpus = &stack.layout.gateway;
    let own_redis;
    let redis_url = match &args.redis_url {
        Some(url) => url.clone(),
        None => {
            own_redis = super::fleet::Redis::start(cpus)?;
            own_redis.url.clone()
        }
    };
    let mut results = Vec::new();
    for size in [1, n] {
        let fleet = super::fleet::Fleet::start(
            size,
            cpus,
            stack.layout.gateway_threads,
            stack.rest,
            stack.grpc,
            &redis_url,
        )?;
        let side = scenarios(
            std::slice::from_ref(&sc.name.to_string()),
            &stack.rest.to_string(),
            &stack.grpc.to_string(),
            &fleet.addr.to_string(),
        )
        .map_err(|e| SaturateError(e.to_string()))?
        .remove(0)
        .gateway;
        let before = fleet.cpu();
        let mut found = search(&side, args, generator_cores, bar)?;
        let after = fleet.cpu();
        found.side = format!("{} (fleet of {size} behind HAProxy)", side.label);
        let responses = fleet.responses()?;
        results.push((found, before, after, responses));
    }
    let (many, before, after, responses) = results.pop().context("the fleet's search")?;
    let (one, ..) = results.pop().context("the one-instance search")?;
    let efficiency = match (one.knee_rps, many.knee_rps) {
        (Some(k1), Some(kn)) if k1 > 0.0 => Some(kn / (n as f64 * k1)),
        _ => None,
    };
    let summary = FleetSummary {
        instances: n,
        balancer: "haproxy, balance leastconn",
        redis_url,
        simulated: true,
        knee_one_rps: one.knee_rps,
        knee_fleet_rps: many.knee_rps,
        scaling_efficiency: efficiency,
        instance_cpu_s: after
            .instances
            .iter()
            .zip(&before.instances)
            .map(|(a, b)| a - b)
            .collect(),
        instance_responses: responses,
        balancer_cpu_s: after.balancer - before.balancer,
    };
    Ok((one, many, summary))
}

/// The fleet's lines after the usual answer.
fn fleet_answer(f: &FleetSummary, answer: &str, cores: usize) -> String {
    let knee =
        |k: Option<f64>| k.map_or_else(|| "no knee".to_string(), |k| format!("{k:.0} req/s"));
    let total: u64 = f.instance_responses.iter().sum::<u64>().max(1);
    let cpu_total: f64 = f.instance_cpu_s.iter().sum::<f64>() + f.balancer_cpu_s;
    let answer = if answer.is_empty() {
        String::new()
    } else {
        format!("{answer}\n")
    };
    let mut out = format!(
        "{answer}Fleet of {} gateways behind HAProxy (least connections), limits shared in {} — \
         a simulation on this {cores}-core machine: every instance and the balancer share the \
         gateway's cores. Knee: 1 instance {}, {} instances {}; scaling efficiency \
         knee(N) / (N x knee(1)) = {}.",
        f.instances,
        f.redis_url,
        knee(f.knee_one_rps),
        f.instances,
        knee(f.knee_fleet_rps),
        f.scaling_efficiency
            .map_or_else(|| "unknown".to_string(), |e| format!("{e:.2}")),
    );
    for (i, (cpu, n)) in f
        .instance_cpu_s
        .iter()
        .zip(&f.instance_responses)
        .enumerate()
    {
        out.push_str(&format!(
            "\n  instance {i}: {cpu:.2} s CPU ({:.0} % of the fleet's), {:.1} % of the requests",
            cpu / cpu_total.max(1e-9) * 100.0,
            *n as f64 / total as f64 * 100.0
        ));
    }
    out.push_str(&format!(
        "\n  balancer (haproxy): {:.2} s CPU ({:.0} % of the fleet's)",
        f.balancer_cpu_s,
        f.balancer_cpu_s / cpu_total.max(1e-9) * 100.0
    ));
    out
}

/// `--target URL`: search one HTTP target of the user's (nothing is spawned).
fn saturate_url(args: &SaturateArgs) -> anyhow::Result<()> {
    let side = Side::http("target", args.target.clone(), false);
    template(&side)?; // a bad URL fails before any load
    let started = SystemTime::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let found = search(&side, args, cores, &indicatif::ProgressBar::hidden())?;
    let bound = if found.generator_limited {
        " (a lower bound: the load generator could not keep up)"
    } else {
        ""
    };
    let answer = match (found.knee_rps, found.first_bad_rps) {
        (Some(k), Some(b)) => format!(
            "{} saturates at {k:.0} req/s; beyond it p99 rises from {} to {}{bound}.",
            args.target,
            p99_at(&found, Some(k)).map_or_else(String::new, human_ns),
            p99_at(&found, Some(b)).map_or_else(String::new, human_ns),
        ),
        (Some(k), None) => format!(
            "{} takes more than {k:.0} req/s (no bad step up to --max).",
            args.target
        ),
        (None, _) => format!(
            "{} is already saturated at the first step ({} req/s).",
            args.target, args.start
        ),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report(
        args,
        started,
        "url",
        &args.target,
        vec![found],
        answer,
        cores,
        vec!["not pinned".into()],
        None,
    )
}

/// Prints the step tables and the answer; writes summary.json and summary.md.
#[allow(clippy::too_many_arguments)]
fn report(
    args: &SaturateArgs,
    started: SystemTime,
    scenario: &str,
    title: &str,
    searches: Vec<Search>,
    answer: String,
    cores: usize,
    pinning: Vec<String>,
    fleet: Option<FleetSummary>,
) -> anyhow::Result<()> {
    let interrupted = crate::load::interrupt::interrupted();
    let mut out = String::new();
    if interrupted {
        let _ = writeln!(
            out,
            "INTERRUPTED (Ctrl-C): below are the steps that finished; a knee not bracketed \
             within 5 % is not found yet"
        );
    }
    out.push_str(&step_tables(args, title, &searches));
    let _ = writeln!(out, "\n{answer}");
    super::print_out(&out)?;
    let summary = SaturateSummary {
        schema: "gwbench.saturate.v1",
        started: humantime::format_rfc3339_seconds(started).to_string(),
        scenario: scenario.to_string(),
        step_duration_s: args.step_duration.as_secs_f64(),
        cores,
        pinning,
        searches,
        answer,
        fleet,
    };
    let dir = write_files(args.out.as_deref(), started, &summary, &out)?;
    if interrupted {
        super::print_out(&format!(
            "report (partial: interrupted): {}\n",
            dir.display()
        ))?;
        return Err(super::Interrupted(String::new()).into());
    }
    super::print_out(&format!("report: {}\n", dir.display()))?;
    Ok(())
}

/// The terminal report: one table of steps per side.
fn step_tables(args: &SaturateArgs, title: &str, searches: &[Search]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gwbench saturate: {title}, steps of {}s",
        args.step_duration.as_secs_f64()
    );
    for s in searches {
        let _ = writeln!(out, "\n== {} (SLO p99 {})", s.side, human_ns(s.slo_p99_ns));
        let _ = writeln!(
            out,
            "  {:>10} {:>10} {:>9} {:>9} {:>7} {:>9} {:>6}  verdict",
            "offered", "achieved", "p50", "p99", "errors", "lag p99", "gen CPU"
        );
        for st in &s.steps {
            let _ = writeln!(
                out,
                "  {:>10.0} {:>10.0} {:>9} {:>9} {:>6.2}% {:>9} {:>5.0}%  {}",
                st.offered_rps,
                st.achieved_rps,
                human_ns(st.p50_ns),
                human_ns(st.p99_ns),
                st.error_ratio * 100.0,
                human_ns(st.lag_p99_ns),
                st.generator_cpu * 100.0,
                st.reason
                    .as_deref()
                    .map_or("good".to_string(), |r| format!("bad: {r}"))
            );
        }
    }
    out
}

/// `summary.json`, `summary.md` and `report.html` in `--out` or `reports/<time>-saturate`.
fn write_files(
    out_dir: Option<&std::path::Path>,
    started: SystemTime,
    summary: &SaturateSummary,
    text: &str,
) -> anyhow::Result<PathBuf> {
    let dir = super::report_dir(out_dir, started, "saturate")?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(summary)?,
    )?;
    std::fs::write(
        dir.join("summary.md"),
        format!("# gwbench saturate\n\n```\n{text}```\n"),
    )?;
    let plots: Vec<crate::report::html::SaturationPlot<'_>> = summary
        .searches
        .iter()
        .map(|s| crate::report::html::SaturationPlot {
            label: &s.side,
            steps: s
                .steps
                .iter()
                .map(|st| (st.offered_rps, st.achieved_rps, st.p99_ns as f64))
                .collect(),
            knee: s.knee_rps,
        })
        .collect();
    let page =
        crate::report::html::render_saturation("gwbench saturate", &summary.answer, text, &plots);
    std::fs::write(dir.join("report.html"), page)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_steps_end_at_max_itself_when_the_next_would_overshoot_it() {
        let steps = |start: f64, factor: f64, max: f64| {
            std::iter::successors(Some(start), |r| next_rate(*r, factor, max)).collect::<Vec<_>>()
        };
        assert_eq!(steps(100.0, 4.0, 1000.0), [100.0, 400.0, 1000.0]);
        assert_eq!(steps(100.0, 2.0, 400.0), [100.0, 200.0, 400.0]);
        assert_eq!(steps(500.0, 2.0, 500.0), [500.0]);
    }

    use super::*;

    fn step(offered: f64, achieved: f64, p99_ms: u64) -> Step {
        Step {
            offered_rps: offered,
            achieved_rps: achieved,
            p50_ns: 0,
            p99_ns: p99_ms * 1_000_000,
            error_ratio: 0.0,
            lag_p99_ns: 0,
            generator_cpu: 0.1,
            generator_threads: 1,
            gateway_cpu_us_per_request: None,
            good: false,
            reason: None,
        }
    }

    #[test]
    fn each_gateways_knee_is_given_beside_direct_with_its_cpu() {
        let mk = |side: &str, knee: Option<f64>, cpu: Option<f64>| Search {
            side: side.into(),
            steps: Vec::new(),
            knee_rps: knee,
            first_bad_rps: None,
            slo_p99_ns: 10_000_000,
            generator_limited: false,
            gateway_cpu_us_at_knee: cpu,
            interrupted: false,
        };
        let searches = [
            mk("direct", Some(20_000.0), None),
            mk("gateway", Some(10_000.0), Some(41.5)),
            mk("nginx", Some(15_000.0), Some(22.25)),
            mk("caddy", None, None),
        ];
        let text = side_by_side(Some(&searches[0]), &searches, "direct");
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "  gwbench: 10000 req/s (50 % of direct's), 41.5 µs of gateway CPU per request there",
                "  nginx: 15000 req/s (75 % of direct's), 22.2 µs of gateway CPU per request there",
                "  caddy: no knee found",
            ],
            "{text}"
        );
    }

    #[test]
    fn a_step_is_generator_limited_when_its_threads_used_their_cores() {
        let mut s = step(1000.0, 1000.0, 1);
        s.generator_cpu = 0.9;
        assert!(generator_limited(&s), "one thread at 90 % of a core");
        s.generator_threads = 2;
        assert!(!generator_limited(&s), "two threads at 45 % each");
    }

    #[test]
    fn steps_are_judged_by_rate_errors_and_slo() {
        let mut s = step(1000.0, 995.0, 1);
        judge(&mut s, 10_000_000);
        assert!(s.good);
        let mut s = step(1000.0, 900.0, 1);
        judge(&mut s, 10_000_000);
        assert!(!s.good && s.reason.unwrap().contains("97 %"));
        let mut s = step(1000.0, 1000.0, 50);
        judge(&mut s, 10_000_000);
        assert!(!s.good && s.reason.unwrap().contains("SLO"));
    }

    #[test]
    fn the_answer_is_one_sentence_with_the_ratio() {
        let mk = |side: &str, knee: f64, bad: f64| Search {
            side: side.into(),
            steps: vec![step(knee, knee, 1), step(bad, bad * 0.5, 40)],
            knee_rps: Some(knee),
            first_bad_rps: Some(bad),
            slo_p99_ns: 10_000_000,
            generator_limited: false,
            gateway_cpu_us_at_knee: None,
            interrupted: false,
        };
        let a = answer(
            Some(&mk("direct", 20_000.0, 21_000.0)),
            Some(&mk("gateway", 10_000.0, 10_400.0)),
        );
        assert!(a.starts_with("The gateway saturates at 10000 req/s; beyond it p99 rises from 1.00ms to 40.00ms, 50 % of direct's 20000 req/s"), "{a}");
    }
}
