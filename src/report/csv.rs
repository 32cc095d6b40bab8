//! `load --csv` (one row per second) and `--csv-raw` (one row per measured request), for
//! spreadsheets and notebooks. Latencies in milliseconds (three decimals: microseconds); times
//! in seconds from the measured phase's start.

use std::io::Write;

use crate::load::LoadRun;
use crate::load::recorder::{Outcome, Quantiles, RawRow};

const QUANTILES: [&str; 5] = ["p50", "p90", "p99", "p999", "max"];

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn quantiles(q: &Quantiles) -> [u64; 5] {
    [q.p50, q.p90, q.p99, q.p999, q.max]
}

/// The per-second rows: offered and achieved rate, outcomes by kind, corrected latency and
/// service time percentiles.
pub fn intervals(run: &LoadRun, out: &mut impl Write) -> std::io::Result<()> {
    let mut head = String::from(
        "start_s,length_s,offered_rps,achieved_rps,completed,ok,http_errors,grpc_errors,\
         transport_errors,timeouts",
    );
    for kind in ["corrected", "service"] {
        for q in QUANTILES {
            head.push_str(&format!(",{kind}_{q}_ms"));
        }
    }
    writeln!(out, "{head}")?;
    for i in &run.intervals {
        let o = &i.outcomes;
        let length = i.length.as_secs_f64();
        write!(
            out,
            "{:.3},{:.3},{},{:.1},{},{},{},{},{},{}",
            i.start.as_secs_f64(),
            length,
            run.offered_in(i)
                .map_or(String::new(), |r| format!("{r:.1}")),
            o.total() as f64 / length.max(1e-9),
            o.total(),
            o.ok,
            o.http.values().sum::<u64>(),
            o.grpc.values().sum::<u64>(),
            o.transport.values().sum::<u64>(),
            o.timeouts,
        )?;
        for v in quantiles(&i.corrected)
            .into_iter()
            .chain(quantiles(&i.service))
        {
            write!(out, ",{:.3}", ms(v))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// An outcome as one CSV-safe word: `ok`, `http:503`, `grpc:NOT_FOUND`,
/// `transport:connect_refused`, `timeout`.
fn outcome(o: Outcome) -> String {
    match o {
        Outcome::Ok => "ok".into(),
        Outcome::Http(s) => format!("http:{s}"),
        Outcome::Grpc(c) => format!("grpc:{}", crate::grpc::code_name(c)),
        Outcome::Transport(k) => format!("transport:{k}"),
        Outcome::Timeout => "timeout".into(),
    }
}

/// One row per request, in the order they were due.
pub fn raw(rows: &[RawRow], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "intended_s,sent_s,done_s,corrected_ms,service_ms,lag_ms,outcome"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:.6},{:.6},{:.6},{:.3},{:.3},{:.3},{}",
            r.intended as f64 / 1e9,
            r.sent as f64 / 1e9,
            r.done as f64 / 1e9,
            ms(r.done.saturating_sub(r.intended)),
            ms(r.done.saturating_sub(r.sent)),
            ms(r.sent.saturating_sub(r.intended)),
            outcome(r.outcome)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rows_are_one_line_each_with_their_outcome() {
        let rows = [
            RawRow {
                intended: 1_000_000,
                sent: 1_500_000,
                done: 3_000_000,
                outcome: Outcome::Ok,
            },
            RawRow {
                intended: 2_000_000,
                sent: 2_000_000,
                done: 9_000_000,
                outcome: Outcome::Grpc(5),
            },
        ];
        let mut out = Vec::new();
        raw(&rows, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "0.001000,0.001500,0.003000,2.000,1.500,0.500,ok");
        assert_eq!(
            lines[2],
            "0.002000,0.002000,0.009000,7.000,7.000,0.000,grpc:NOT_FOUND"
        );
    }
}
