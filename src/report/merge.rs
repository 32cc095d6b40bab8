//! Adds up the `gwbench load --json` outputs of generators that shared one schedule (`load
//! --segment I/N`, `report --merge`): outcome counts summed (so `scheduled` is still the sum
//! of the outcomes, across instances), percentiles read off the sum of the instances'
//! histograms (never averaged percentiles). It refuses what would not add up to one run:
//! outputs of different schedules, a segment missing or given twice, files without histograms.

use hdrhistogram::Histogram;

use super::hlog::decode_histogram;
use super::json::{GeneratorCpu, Histograms, Latency, LoadReport, Percentiles, SCHEMA};

/// Merges `reports` (each with the name of the file it came from, for errors).
pub fn merge(reports: &[(String, LoadReport)]) -> Result<LoadReport, String> {
    let Some((first_name, first)) = reports.first() else {
        return Err("nothing to merge".into());
    };
    let mut segments = Vec::new();
    let mut hists = [new_hist(), new_hist(), new_hist()];
    // Receive lag adds up only when every part has it (runs with kernel arrival stamps).
    let mut receive_lag = Some(new_hist());
    for (name, r) in reports {
        if r.schema != SCHEMA {
            return Err(format!(
                "{name}: not a {SCHEMA} object (schema {:?})",
                r.schema
            ));
        }
        if r.schedule_id.is_none() || r.schedule_id != first.schedule_id {
            return Err(format!(
                "{name} and {first_name} are not parts of one schedule (schedule ids {} and {}): \
                 give every generator the same rate, duration, warm-up, seed, --start-at, target \
                 and segment count",
                r.schedule_id.as_deref().unwrap_or("none"),
                first.schedule_id.as_deref().unwrap_or("none")
            ));
        }
        let segment = r.segment.as_deref().unwrap_or("0/1");
        let parsed: crate::load::schedule::Segment = segment
            .parse()
            .map_err(|_| format!("{name}: segment {segment:?} is not I/N"))?;
        segments.push((parsed, name));
        let h = r.histograms.as_ref().ok_or_else(|| {
            format!("{name}: no histograms (written by `gwbench load --json` of an older build?)")
        })?;
        for (into, b64) in hists.iter_mut().zip([&h.corrected, &h.service, &h.lag]) {
            let one = decode_histogram(b64).map_err(|e| format!("{name}: {e}"))?;
            into.add(&one).map_err(|e| format!("{name}: {e:?}"))?;
        }
        receive_lag = add_receive_lag(receive_lag, h, name)?;
    }
    let count = segments[0].0.count;
    if count == 1 {
        return Err(format!(
            "{first_name} ran the whole schedule, not a segment: merge the outputs of `gwbench \
             load --segment I/N` runs"
        ));
    }
    let mut seen = vec![None; count as usize];
    for (seg, name) in &segments {
        if seg.count != count {
            return Err(format!(
                "{name} is a segment of {} generators, not {count}",
                seg.count
            ));
        }
        if let Some(other) = seen[seg.index as usize].replace(*name) {
            return Err(format!("{name} and {other} are both segment {seg}"));
        }
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(i, _)| format!("{i}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "segment(s) {} missing: the merge of part of a schedule would not add up",
            missing.join(", ")
        ));
    }
    let mut merged = combine(first, reports, &hists, count);
    if let Some(h) = receive_lag.filter(|h| !h.is_empty()) {
        merged.latency_ns.receive_lag = Some(Percentiles::of(&h));
        if let Some(out) = merged.histograms.as_mut() {
            out.receive_lag = Some(super::json::encode(&h));
        }
    }
    Ok(merged)
}

/// Adds one part's receive lag to the sum so far; None once a part has none.
fn add_receive_lag(
    sum: Option<Histogram<u64>>,
    part: &Histograms,
    name: &str,
) -> Result<Option<Histogram<u64>>, String> {
    let (Some(mut sum), Some(b64)) = (sum, &part.receive_lag) else {
        return Ok(None);
    };
    let one = decode_histogram(b64).map_err(|e| format!("{name}: {e}"))?;
    sum.add(&one).map_err(|e| format!("{name}: {e:?}"))?;
    Ok(Some(sum))
}

fn new_hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures")
}

fn combine(
    first: &LoadReport,
    reports: &[(String, LoadReport)],
    hists: &[Histogram<u64>; 3],
    count: u32,
) -> LoadReport {
    let mut requests = first.requests.clone();
    let sum = |f: &dyn Fn(&LoadReport) -> f64| reports.iter().map(|(_, r)| f(r)).sum::<f64>();
    for (_, r) in &reports[1..] {
        let q = &r.requests;
        requests.scheduled += q.scheduled;
        requests.ok += q.ok;
        requests.timeouts += q.timeouts;
        requests.not_sent += q.not_sent;
        for (into, from) in [
            (&mut requests.http_errors, &q.http_errors),
            (&mut requests.grpc_errors, &q.grpc_errors),
            (&mut requests.transport_errors, &q.transport_errors),
        ] {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
    }
    let sent = requests.scheduled - requests.not_sent;
    let cpu_s = sum(&|r| r.generator.cpu_s);
    let [corrected, service, lag] = hists;
    LoadReport {
        interrupted: false,
        schema: SCHEMA.to_string(),
        target: first.target.clone(),
        offered_rps: first
            .offered_rps
            .map(|_| sum(&|r| r.offered_rps.unwrap_or(0.0))),
        achieved_rps: sum(&|r| r.achieved_rps),
        duration_s: reports
            .iter()
            .map(|(_, r)| r.duration_s)
            .fold(0.0, f64::max),
        requests,
        latency_ns: Latency {
            corrected: Percentiles::of(corrected),
            service: Percentiles::of(service),
            lag: Percentiles::of(lag),
            // Added by `merge` when every part has it.
            receive_lag: None,
        },
        protocol: first.protocol.clone(),
        rate: first
            .rate
            .rsplit_once(", segment ")
            .map_or(first.rate.as_str(), |(rate, _)| rate)
            .to_string(),
        connections: reports.iter().map(|(_, r)| r.connections).sum(),
        threads: reports.iter().map(|(_, r)| r.threads).sum(),
        generator: GeneratorCpu {
            cpu_s,
            cpu_us_per_request: if sent > 0 {
                cpu_s * 1e6 / sent as f64
            } else {
                0.0
            },
            waited_for_connection: reports
                .iter()
                .map(|(_, r)| r.generator.waited_for_connection)
                .sum(),
            wakeups: reports
                .iter()
                .try_fold(0, |n, (_, r)| Some(n + r.generator.wakeups?)),
        },
        intervals: Vec::new(),
        segment: Some(format!("merged {count}/{count}")),
        schedule_id: first.schedule_id.clone(),
        start_at: first.start_at.clone(),
        histograms: Some(Histograms::encode(corrected, service, lag)),
        tls: None,
        connect: None,
        stream: None,
    }
}
