//! compare's statistics: each round's result, the summary across rounds, the bootstrap
//! intervals over 1-second intervals, the A/A noise floor and the judgement of an overhead
//! against it.

use hdrhistogram::Histogram;

use super::Measured;
use crate::cli::{CompareArgs, Method};
use crate::load::LoadRun;
use crate::report::compare::{
    CI_PCTS, CpuPer1000, Judged, KindCi, NoiseFloor, ScenarioSummary, SideSummary, Spread,
};
use crate::report::json::{LoadReport, Percentiles};
use crate::stats::{Bootstrap, Estimate, MIN_INTERVALS, Sampled};

#[derive(Debug)]
pub(crate) struct RoundResult {
    pub(crate) run: LoadRun,
    pub(crate) report: LoadReport,
    pub(crate) cpu: CpuPer1000,
    /// The run's 1-second intervals (corrected, service), for the confidence intervals.
    pub(crate) corrected: Vec<Sampled>,
    pub(crate) service: Vec<Sampled>,
    /// Which second of the run each of those intervals is (a duet pairs the sides' by it).
    pub(crate) seconds: Vec<u64>,
}

impl RoundResult {
    pub(crate) fn of(run: LoadRun, cpu: CpuPer1000) -> RoundResult {
        let report = LoadReport::from_run(&run);
        let (corrected, service, seconds) = sampled(&run);
        RoundResult {
            run,
            report,
            cpu,
            corrected,
            service,
            seconds,
        }
    }
}

/// A run's intervals as the bootstrap reads them: (corrected, service) per non-empty interval,
/// and which second of the run each is.
fn sampled(run: &LoadRun) -> (Vec<Sampled>, Vec<Sampled>, Vec<u64>) {
    let mut de = hdrhistogram::serialization::Deserializer::new();
    let mut decode = |bytes: &[u8]| -> Option<Sampled> {
        let h: Histogram<u64> = de.deserialize(&mut &bytes[..]).ok()?;
        (!h.is_empty()).then(|| Sampled::from_histogram(&h))
    };
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    for i in &run.intervals {
        if let (Some(c), Some(s)) = (decode(&i.corrected_v2), decode(&i.service_v2)) {
            out.0.push(c);
            out.1.push(s);
            out.2.push(i.start.as_millis().div_ceil(1000) as u64);
        }
    }
    out
}

pub(crate) fn spread(values: &[f64]) -> Spread {
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
pub(crate) type Pick = fn(&Percentiles) -> u64;

pub(crate) const PCTS: [(&str, Pick); 5] = [
    ("p50", |p| p.p50),
    ("p90", |p| p.p90),
    ("p99", |p| p.p99),
    ("p999", |p| p.p999),
    ("max", |p| p.max),
];

pub(crate) fn summarize(rounds: &[RoundResult]) -> SideSummary {
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

/// An overhead judged against the floor; one without an interval (too short) is not judged.
pub(crate) fn judge(estimate: Estimate, floor: Option<f64>, per_round: &[f64]) -> Judged {
    let f = floor.unwrap_or(0.0);
    let outside = estimate.lo > f || estimate.hi < -f;
    let every_round = !per_round.is_empty()
        && (per_round.iter().all(|x| *x > f) || per_round.iter().all(|x| *x < -f));
    let too_short = !(estimate.lo.is_finite() && estimate.hi.is_finite());
    Judged {
        estimate,
        distinguishable: outside && every_round && !too_short,
        too_short,
    }
}

/// Each round's overhead at percentile `name` of latency `kind` (gateway minus direct, rounds
/// paired in order).
pub(crate) fn per_round(d: &[RoundResult], g: &[RoundResult], kind: &str, name: &str) -> Vec<f64> {
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

/// Both kinds' samples of the two sides' rounds, as the method pairs them: a duet keeps the
/// seconds both sides have, in the same order on each (round by round); rounds keep every
/// interval of each side.
pub(crate) fn samples(
    method: Method,
    a: &[RoundResult],
    b: &[RoundResult],
) -> [(&'static str, Vec<Sampled>, Vec<Sampled>); 2] {
    type Of = fn(&RoundResult) -> &Vec<Sampled>;
    let kinds: [(&'static str, Of); 2] =
        [("corrected", |r| &r.corrected), ("service", |r| &r.service)];
    kinds.map(|(kind, of)| {
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        if method == Method::Rounds {
            sa.extend(a.iter().flat_map(|r| of(r).iter().cloned()));
            sb.extend(b.iter().flat_map(|r| of(r).iter().cloned()));
        }
        for (ra, rb) in a.iter().zip(b).filter(|_| method == Method::Duet) {
            for (i, sec) in ra.seconds.iter().enumerate() {
                if let Some(j) = rb.seconds.iter().position(|s| s == sec) {
                    sa.push(of(ra)[i].clone());
                    sb.push(of(rb)[j].clone());
                }
            }
        }
        (kind, sa, sb)
    })
}

/// The difference of `b` over `a` at quantile `q` as the method estimates it (a duet's pairs
/// resampled together, rounds' sides independently); None when either side has fewer than
/// [`MIN_INTERVALS`] intervals (too short to judge) or none.
fn difference(method: Method, a: &[Sampled], b: &[Sampled], q: f64) -> Option<Estimate> {
    let boot = Bootstrap::default();
    match method {
        _ if a.len().min(b.len()) < MIN_INTERVALS => None,
        Method::Duet => boot.paired_difference(a, b, q),
        Method::Rounds => boot.difference(a, b, q),
    }
}

/// The point estimate of `b` over `a` at `q` without an interval, for figures too short to
/// judge: lo and hi are NaN (null in summary.json).
fn unjudged(a: &[Sampled], b: &[Sampled], q: f64) -> Option<Estimate> {
    let ones = |s: &[Sampled]| vec![1; s.len()];
    let value = crate::stats::quantile(b, &ones(b), q)? as f64
        - crate::stats::quantile(a, &ones(a), q)? as f64;
    Some(Estimate {
        value,
        lo: f64::NAN,
        hi: f64::NAN,
    })
}

/// The overhead of `b` over `a` per kind and percentile, with intervals where there are
/// enough intervals (see [`unjudged`] where there are not).
pub(crate) fn overheads(
    method: Method,
    a: &[RoundResult],
    b: &[RoundResult],
) -> std::collections::BTreeMap<&'static str, std::collections::BTreeMap<&'static str, Estimate>> {
    samples(method, a, b)
        .into_iter()
        .map(|(kind, sa, sb)| {
            let per = CI_PCTS
                .iter()
                .filter_map(|(n, q)| {
                    let e = difference(method, &sa, &sb, *q).or_else(|| unjudged(&sa, &sb, *q));
                    Some((*n, e?))
                })
                .collect();
            (kind, per)
        })
        .collect()
}

/// How many intervals each figure of these rounds rests on (the fewer side's, or pairs).
pub(crate) fn intervals_of(method: Method, a: &[RoundResult], b: &[RoundResult]) -> usize {
    let [(_, sa, sb), _] = samples(method, a, b);
    sa.len().min(sb.len())
}

/// The A/A calibration's result. Too few intervals give no floor (an empty `floor_ns`): the
/// overheads are then judged by their own intervals.
pub(crate) fn noise_floor(
    url: &str,
    method: Method,
    args: &CompareArgs,
    a: &[RoundResult],
    b: &[RoundResult],
) -> NoiseFloor {
    let aa = overheads(method, a, b);
    let floor_ns = aa
        .iter()
        .map(|(kind, per)| {
            let f = per
                .iter()
                .filter(|(_, e)| e.lo.is_finite() && e.hi.is_finite())
                .map(|(n, e)| (*n, e.lo.abs().max(e.hi.abs())))
                .collect();
            (*kind, f)
        })
        .collect();
    NoiseFloor {
        url: url.to_string(),
        rounds: a.len() as u32,
        duration_s: args.calibration.as_secs_f64(),
        intervals: intervals_of(method, a, b),
        aa_ns: aa,
        floor_ns,
    }
}

/// A scenario's intervals, the overheads judged against the noise floor.
pub(crate) fn intervals(
    method: Method,
    d: &[RoundResult],
    g: &[RoundResult],
    floor: Option<&NoiseFloor>,
) -> std::collections::BTreeMap<&'static str, KindCi> {
    let boot = Bootstrap::default();
    let over = overheads(method, d, g);
    samples(method, d, g)
        .into_iter()
        .map(|(kind, sd, sg)| {
            let side = |s: &[Sampled]| {
                CI_PCTS
                    .iter()
                    .filter_map(|(n, q)| {
                        let e = match s.len() >= MIN_INTERVALS {
                            true => boot.percentile(s, *q),
                            false => {
                                crate::stats::quantile(s, &vec![1; s.len()], *q).map(|v| Estimate {
                                    value: v as f64,
                                    lo: f64::NAN,
                                    hi: f64::NAN,
                                })
                            }
                        };
                        Some((*n, e?))
                    })
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
pub(crate) fn precise_enough(method: Method, d: &[RoundResult], g: &[RoundResult]) -> bool {
    let [(_, sd, sg), _] = samples(method, d, g);
    difference(method, &sd, &sg, 0.5)
        .is_some_and(|e| half_width(&e) <= (0.1 * e.value.abs()).max(10_000.0))
}

/// The larger distance from the value to an end of its interval.
pub(crate) fn half_width(e: &Estimate) -> f64 {
    (e.value - e.lo).max(e.hi - e.value)
}

pub(crate) fn cpu_model() -> String {
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

/// A scenario's medians and spread per side, the gateway's overhead per percentile, and the
/// intervals.
pub(crate) fn scenario_summary(
    m: &Measured,
    method: Method,
    floor: Option<&NoiseFloor>,
) -> ScenarioSummary {
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
        ci_ns: intervals(method, d, g, floor),
        intervals: intervals_of(method, d, g),
        too_short: intervals_of(method, d, g) < MIN_INTERVALS,
        rounds_run: d.len().min(g.len()) as u32,
        ended_by,
        direct,
        gateway,
        overhead_ns: overhead,
    }
}
