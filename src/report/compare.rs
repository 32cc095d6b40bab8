//! A compare run's summary (what `summary.json` holds) and its renderings: the terminal table
//! (also `summary.md`) and the lines above report.html's charts.

use std::fmt::Write as _;

use serde::Serialize;

use crate::report::html;
use crate::report::json::LoadReport;
use crate::report::text::human_ns;
use crate::stats::Estimate;

// ===== results =====

/// CPU milliseconds per 1,000 requests of each process.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct CpuPer1000 {
    pub(crate) gateway_ms: Option<f64>,
    pub(crate) backends_ms: Option<f64>,
    pub(crate) generator_ms: f64,
}

/// Median and spread of one number across rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Spread {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

/// One side's summary across rounds.
#[derive(Debug, Serialize)]
pub(crate) struct SideSummary {
    /// Median and spread per percentile of the corrected latency, ns.
    pub(crate) corrected_ns: std::collections::BTreeMap<&'static str, Spread>,
    /// Likewise for the service time.
    pub(crate) service_ns: std::collections::BTreeMap<&'static str, Spread>,
    pub(crate) achieved_rps: Spread,
    pub(crate) lag_p99_ns: Spread,
    pub(crate) errors: u64,
    pub(crate) not_sent: u64,
    pub(crate) cpu_ms_per_1000: CpuPer1000,
    pub(crate) rounds: Vec<LoadReport>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ScenarioSummary {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    /// Names of the two sides (e.g. direct / gateway, or bare / middleware).
    pub(crate) labels: [&'static str; 2],
    pub(crate) direct: SideSummary,
    pub(crate) gateway: SideSummary,
    /// Gateway median minus direct median, per percentile, ns.
    pub(crate) overhead_ns:
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, f64>>,
    /// Per latency kind: each side's percentiles over all its rounds, and the overhead, each
    /// with its 95 % interval (bootstrap over 1-second intervals), ns.
    pub(crate) ci_ns: std::collections::BTreeMap<&'static str, KindCi>,
    /// Rounds run, and what ended them: "precision" or "max_rounds" (or "min_rounds" when
    /// --max-rounds is --rounds).
    pub(crate) rounds_run: u32,
    pub(crate) ended_by: &'static str,
    /// The 1-second intervals each figure rests on (a duet: pairs of the same second; rounds:
    /// the side with fewer).
    pub(crate) intervals: usize,
    /// Fewer than `stats::MIN_INTERVALS`: no interval, nothing judged, and `diff` calls no
    /// regression on it.
    pub(crate) too_short: bool,
}

/// The percentiles that get intervals (a maximum is one sample: it has none).
pub(crate) const CI_PCTS: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)];

/// One latency kind's intervals in a scenario.
#[derive(Debug, Serialize)]
pub(crate) struct KindCi {
    pub(crate) direct: std::collections::BTreeMap<&'static str, Estimate>,
    pub(crate) gateway: std::collections::BTreeMap<&'static str, Estimate>,
    pub(crate) overhead: std::collections::BTreeMap<&'static str, Judged>,
}

/// An overhead and whether it can be told apart from noise: its interval lies wholly outside
/// the noise floor's band (-floor, +floor) (without a floor: wholly on one side of zero), and
/// every round on its own shows it beyond the floor on the same side. The second condition
/// keeps one stall in one round (which moves a tail percentile of that side by milliseconds,
/// and the bootstrap with it) from passing for an overhead.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Judged {
    #[serde(flatten)]
    pub(crate) estimate: Estimate,
    pub(crate) distinguishable: bool,
    /// Too few intervals for an interval: the estimate's lo and hi are null.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) too_short: bool,
}

/// The noise floor: what the A/A calibration (one path against itself) measured as overhead.
#[derive(Debug, Serialize)]
pub(crate) struct NoiseFloor {
    /// The path loaded on both sides.
    pub(crate) url: String,
    pub(crate) rounds: u32,
    pub(crate) duration_s: f64,
    /// The 1-second intervals (a duet: pairs) it rests on; below `stats::MIN_INTERVALS` there
    /// is no floor.
    pub(crate) intervals: usize,
    /// The A/A "overhead" per kind and percentile, with its interval, ns.
    pub(crate) aa_ns: std::collections::BTreeMap<
        &'static str,
        std::collections::BTreeMap<&'static str, Estimate>,
    >,
    /// The floor: the larger end (in size) of that interval, ns.
    pub(crate) floor_ns:
        std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, f64>>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu_model: String,
    pub(crate) pinning: Vec<String>,
    /// The child processes (name, pid), for CPU accounting and for checking they are gone.
    pub(crate) processes: Vec<(String, u32)>,
}

#[derive(Debug, Serialize)]
pub(crate) struct CompareSummary {
    pub(crate) schema: &'static str,
    pub(crate) started: String,
    /// "duet" (both sides at once, paired by the second) or "rounds".
    pub(crate) method: &'static str,
    pub(crate) rps: f64,
    /// --rounds and --max-rounds (each scenario says how many it ran).
    pub(crate) rounds: u32,
    pub(crate) max_rounds: u32,
    pub(crate) duration_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) connections: usize,
    pub(crate) generator_threads: usize,
    pub(crate) machine: Machine,
    /// The layout compare chose (None: external targets, nothing spawned or pinned).
    pub(crate) layout: Option<Layout>,
    /// None when --calibration 0s.
    pub(crate) noise_floor: Option<NoiseFloor>,
    pub(crate) scenarios: Vec<ScenarioSummary>,
    /// With --gateway-instances N: what each instance and the balancer did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fleet: Option<FleetShare>,
    /// --tls: the sides through the gateway went over https (HTTP/1.1) to a gateway
    /// terminating TLS.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) gateway_tls: bool,
    /// Ctrl-C stopped the run: the scenarios here are the ones that finished (absent when
    /// false).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) interrupted: bool,
}

// ===== output =====

pub(crate) fn render_table(s: &CompareSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gwbench compare ({}): {} req/s{}, {}..{} rounds x {}s (+{}s warm-up), {} connections, {} generator thread(s); {} cores ({})",
        s.method,
        s.rps,
        if s.method == "duet" {
            format!(" in all, {} a side, both at once", s.rps / 2.0)
        } else {
            String::new()
        },
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
    if s.interrupted {
        let _ = writeln!(
            out,
            "INTERRUPTED (Ctrl-C): below are the scenarios that finished, each of whole rounds"
        );
    }
    noise_line(&mut out, s.noise_floor.as_ref());
    let _ = writeln!(
        out,
        "figures: percentile of all rounds [95 % interval{}]; overhead = gateway - direct; \
         ~0 (<X) = not distinguishable from the noise floor, at most X either way",
        if s.method == "duet" {
            "; overhead: paired by the second"
        } else {
            ""
        }
    );
    for sc in &s.scenarios {
        let _ = writeln!(out, "\n== {}: {}", sc.name, sc.description);
        let side_rps = if s.method == "duet" {
            s.rps / 2.0
        } else {
            s.rps
        };
        let _ = writeln!(out, "{}", answer(sc, side_rps));
        percentile_rows(&mut out, sc);
        side_lines(&mut out, sc);
        generator_warnings(&mut out, sc);
        saturation_warnings(&mut out, sc, s.layout.as_ref(), s.method == "duet");
    }
    build_vs_buy(&mut out, s);
    out
}

/// The REST proxy route through every gateway measured (`compare --gateway`), side by side,
/// when there was more than one.
fn build_vs_buy(out: &mut String, s: &CompareSummary) {
    let peers = |prefix: &str| -> Vec<&ScenarioSummary> {
        s.scenarios
            .iter()
            .filter(|sc| sc.name.starts_with(prefix))
            .collect()
    };
    let rest: Vec<&ScenarioSummary> = s
        .scenarios
        .iter()
        .filter(|sc| sc.name == "rest")
        .chain(peers("rest-"))
        .collect();
    if rest.len() + peers("grpc-").len() < 2 {
        return;
    }
    let _ = writeln!(
        out,
        "\n== build vs buy: the REST proxy route through each gateway (same mocks, load and \
         layout; the gateway's share: {})",
        s.layout.as_ref().map_or_else(
            || "not pinned".to_string(),
            |l| match &l.gateway {
                Some(cpus) => format!("CPU {cpus:?}, one worker per core"),
                None => "not pinned".to_string(),
            }
        )
    );
    side_by_side_rows(out, &rest);
    let grpc = peers("grpc-");
    if !grpc.is_empty() {
        let _ = writeln!(
            out,
            "  gRPC passed through (gRPC in and out; gwbench's grpc scenario transcodes REST instead):"
        );
        side_by_side_rows(out, &grpc);
    }
}

/// The rows of the side-by-side table: per gateway, the p50 and p99 overheads and its CPU.
fn side_by_side_rows(out: &mut String, rows: &[&ScenarioSummary]) {
    let _ = writeln!(
        out,
        "  {:<9} {:<28} {:<28} gateway CPU per request",
        "gateway", "p50 overhead (corrected)", "p99 overhead"
    );
    for sc in rows {
        let name = match sc.name {
            "rest" => "gwbench",
            _ => sc.labels[1],
        };
        let cell = |p: &str| {
            sc.ci_ns
                .get("corrected")
                .and_then(|k| k.overhead.get(p))
                .map_or_else(|| "-".to_string(), judged)
        };
        let cpu = sc
            .gateway
            .cpu_ms_per_1000
            .gateway_ms
            .map_or_else(|| "-".to_string(), |ms| format!("{ms:.1} µs"));
        let _ = writeln!(
            out,
            "  {name:<9} {:<28} {:<28} {cpu}",
            cell("p50"),
            cell("p99")
        );
    }
}

/// The noise floor, or why there is none.
pub(crate) fn noise_line(out: &mut String, floor: Option<&NoiseFloor>) {
    let Some(f) = floor else {
        let _ = writeln!(out, "noise floor: not measured (--calibration 0s)");
        return;
    };
    if f.intervals < crate::stats::MIN_INTERVALS {
        let _ = writeln!(
            out,
            "noise floor: too short to measure ({} one-second intervals, {} needed: a longer \
             --calibration or more --rounds); overheads are judged by their own intervals",
            f.intervals,
            crate::stats::MIN_INTERVALS
        );
        return;
    }
    // Each kind of row (corrected, service) is judged against its own floor: both are shown.
    let per = |kind: &str| -> String {
        let cells: Vec<String> = CI_PCTS
            .iter()
            .filter_map(|(n, _)| {
                Some(format!(
                    "{n} ±{}",
                    human_ns(*f.floor_ns.get(kind)?.get(n)? as u64)
                ))
            })
            .collect();
        cells.join(", ")
    };
    let _ = writeln!(
        out,
        "noise floor (A/A: {} against itself, {} rounds x {}s, {} intervals): corrected {}; \
         service {}",
        f.url,
        f.rounds,
        f.duration_s,
        f.intervals,
        per("corrected"),
        per("service")
    );
}

/// An estimate as `v [lo, hi]` (`v (no interval)` when too short to have one).
pub(crate) fn with_interval(e: &Estimate) -> String {
    if !(e.lo.is_finite() && e.hi.is_finite()) {
        return format!("{} (no interval)", human_ns(e.value.max(0.0) as u64));
    }
    format!(
        "{} [{}, {}]",
        human_ns(e.value.max(0.0) as u64),
        human_ns(e.lo.max(0.0) as u64),
        human_ns(e.hi.max(0.0) as u64)
    )
}

/// A signed number of nanoseconds, `+49µs`.
pub(crate) fn signed_ns(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    format!("{sign}{}", human_ns(v.abs() as u64))
}

/// The scenario's answer in one sentence, before its table: what the second side adds at p50,
/// p90 and p99 of the corrected latency (distinguishable ones with their interval, the others
/// said to be within the noise) and the gateway's CPU per request at the offered rate.
pub(crate) fn answer(sc: &ScenarioSummary, rps: f64) -> String {
    let [base, side] = sc.labels;
    if sc.too_short {
        return format!(
            "answer: too short to judge: {} one-second intervals per side, {} needed for an \
             interval (run longer: -d and --rounds)",
            sc.intervals,
            crate::stats::MIN_INTERVALS
        );
    }
    let mut added = Vec::new();
    let mut within = Vec::new();
    if let Some(ci) = sc.ci_ns.get("corrected") {
        for n in ["p50", "p90", "p99"] {
            let Some(j) = ci.overhead.get(n) else {
                continue;
            };
            let e = &j.estimate;
            match j.distinguishable {
                true => added.push(format!(
                    "{} at {n} [{}, {}]",
                    signed_ns(e.value),
                    signed_ns(e.lo),
                    signed_ns(e.hi)
                )),
                false => within.push(n),
            }
        }
    }
    let mut line = match (added.is_empty(), within.is_empty()) {
        (true, _) => format!(
            "answer: the {side} side adds nothing distinguishable from the noise over the \
             {base} side at {}",
            within.join(", ")
        ),
        (false, true) => format!(
            "answer: the {side} side adds {} over the {base} side",
            added.join(", ")
        ),
        (false, false) => format!(
            "answer: the {side} side adds {} over the {base} side; not distinguishable at {}",
            added.join(", "),
            within.join(", ")
        ),
    };
    if let Some(us) = sc.gateway.cpu_ms_per_1000.gateway_ms {
        // ms per 1,000 requests is µs per request.
        line.push_str(&format!(
            "; {us:.0} µs of gateway CPU per request at {rps} req/s"
        ));
    }
    line
}

/// An overhead: `+49µs [+41µs, +57µs]`, or `~0 (<30µs)` when not distinguishable.
pub(crate) fn judged(j: &Judged) -> String {
    let e = &j.estimate;
    if j.too_short {
        return format!("{} (too short to judge)", signed_ns(e.value));
    }
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
pub(crate) fn percentile_rows(out: &mut String, sc: &ScenarioSummary) {
    let _ = writeln!(
        out,
        "  rounds: {} (ended by {})",
        sc.rounds_run,
        sc.ended_by.replace('_', " ")
    );
    for (kind, ci) in &sc.ci_ns {
        use crate::report::text::{Cell::Left, table_row};
        let [a, b] = sc.labels;
        table_row(
            out,
            kind,
            &[Left("", 6), Left(a, 30), Left(b, 30), Left("overhead", 0)],
        );
        for (n, _) in CI_PCTS {
            let (Some(d), Some(g), Some(o)) =
                (ci.direct.get(n), ci.gateway.get(n), ci.overhead.get(n))
            else {
                continue;
            };
            let (d, g, o) = (with_interval(d), with_interval(g), judged(o));
            table_row(
                out,
                "",
                &[Left(n, 6), Left(&d, 30), Left(&g, 30), Left(&o, 0)],
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
        let (d, g) = (max(&sc.direct), max(&sc.gateway));
        let note = "(one sample: no interval)";
        table_row(
            out,
            "",
            &[Left("max", 6), Left(&d, 30), Left(&g, 30), Left(note, 0)],
        );
    }
}

/// The p99 spread over rounds, achieved rates and errors, and CPU per 1,000 requests.
pub(crate) fn side_lines(out: &mut String, sc: &ScenarioSummary) {
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
pub(crate) fn generator_warnings(out: &mut String, sc: &ScenarioSummary) {
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
pub(crate) fn saturation_warnings(
    out: &mut String,
    sc: &ScenarioSummary,
    layout: Option<&Layout>,
    duet: bool,
) {
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
    let used_by = |sum: &SideSummary| {
        let c = &sum.cpu_ms_per_1000;
        let ms = c.gateway_ms.unwrap_or(0.0) + c.backends_ms.unwrap_or(0.0);
        ms * sum.achieved_rps.median / 1e6
    };
    if duet {
        // Both sides at once: each side's CPU figures are per request of the sides that share
        // the process, so the two sides' shares add up to what the servers used.
        let used = used_by(&sc.direct) + used_by(&sc.gateway);
        if used >= 0.8 * cores {
            let _ = writeln!(
                out,
                "  WARNING: with both sides at once the gateway and the mocks used {used:.2} of the {cores} core(s) \
                 they have: the latencies include queueing near saturation, not only what the path adds. \
                 Lower --rps, or run on more cores."
            );
        }
        return;
    }
    for (label, sum) in [(sc.labels[0], &sc.direct), (sc.labels[1], &sc.gateway)] {
        let used = used_by(sum);
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

/// The service-time overheads' intervals and the floor, as the report draws them.
pub(crate) fn plot_intervals(
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

/// The lines above the report's charts: load, machine, pinning, start.
pub(crate) fn html_context(summary: &CompareSummary) -> Vec<String> {
    vec![
        format!(
            "{} req/s offered{}, {}..{} rounds × {} s (+{} s warm-up before each side's first run), {} connections",
            summary.rps,
            if summary.method == "duet" {
                format!(" in all ({} a side, both sides at once)", summary.rps / 2.0)
            } else {
                String::new()
            },
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

/// Where the generator (this process), the gateway and the backends run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Layout {
    /// What was asked for.
    pub(crate) mode: &'static str,
    /// CPUs of the generator; None leaves it to the scheduler.
    pub(crate) generator: Option<Vec<usize>>,
    /// CPUs of the gateway.
    pub(crate) gateway: Option<Vec<usize>>,
    /// CPUs of the mocks.
    pub(crate) backends: Option<Vec<usize>>,
    /// Runtime threads of the gateway.
    pub(crate) gateway_threads: usize,
    /// Runtime threads of the mocks.
    pub(crate) backends_threads: usize,
}

/// What a fleet did over a whole run: for compare's summary.
#[derive(Debug, serde::Serialize)]
pub(crate) struct FleetShare {
    pub(crate) instances: usize,
    pub(crate) balancer: &'static str,
    /// Always true on one machine: the instances share the gateway's cores.
    pub(crate) simulated: bool,
    /// CPU seconds of each instance since it started.
    pub(crate) instance_cpu_s: Vec<f64>,
    /// Responses each instance sent through the balancer.
    pub(crate) instance_responses: Vec<u64>,
    pub(crate) balancer_cpu_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_noise_line_shows_the_floor_of_each_kind_of_row() {
        let kind = |p50: f64| {
            CI_PCTS
                .iter()
                .map(|(n, _)| (*n, if *n == "p50" { p50 } else { 1_000.0 }))
                .collect()
        };
        let floor = NoiseFloor {
            url: "http://127.0.0.1:1/a".into(),
            rounds: 3,
            duration_s: 4.0,
            intervals: 12,
            aa_ns: Default::default(),
            floor_ns: [("corrected", kind(29_000.0)), ("service", kind(6_000.0))]
                .into_iter()
                .collect(),
        };
        let mut out = String::new();
        noise_line(&mut out, Some(&floor));
        assert!(out.contains("corrected p50 ±29µs"), "{out}");
        assert!(out.contains("service p50 ±6µs"), "{out}");
        // Too few intervals: no floor is claimed.
        let short = NoiseFloor {
            intervals: 3,
            ..floor
        };
        let mut out = String::new();
        noise_line(&mut out, Some(&short));
        assert!(out.contains("too short to measure (3 one-second"), "{out}");
        assert!(!out.contains('±'), "{out}");
    }

    #[test]
    fn a_figure_without_an_interval_is_too_short_to_judge() {
        let e = Estimate {
            value: -8_820_000.0,
            lo: f64::NAN,
            hi: f64::NAN,
        };
        let j = Judged {
            estimate: e,
            distinguishable: false,
            too_short: true,
        };
        assert_eq!(judged(&j), "-8.82ms (too short to judge)");
        assert_eq!(
            with_interval(&Estimate { value: 2e6, ..e }),
            "2.00ms (no interval)"
        );
        let json = serde_json::to_value(j).unwrap();
        assert!(json["lo"].is_null() && json["too_short"] == true, "{json}");
    }
}
