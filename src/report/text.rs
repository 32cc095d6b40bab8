//! The one-screen terminal summary of a load run.

use std::fmt::Write;

use super::json::{LoadReport, Percentiles, TlsHandshakes};

/// Lag p99 above which the summary warns that the generator could not keep up.
pub const LAG_WARN_NS: u64 = 1_000_000;

/// Formats nanoseconds for a person: µs below 1 ms, ms below 10 s, else s.
pub fn human_ns(ns: u64) -> String {
    match ns {
        n if n < 1_000_000 => format!("{:.0}µs", n as f64 / 1e3),
        n if n < 10_000_000_000 => format!("{:.2}ms", n as f64 / 1e6),
        n => format!("{:.1}s", n as f64 / 1e9),
    }
}

/// One cell of a percentile table: text padded to a width, on the left or the right.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    /// Left-aligned in `width` columns.
    Left(&'a str, usize),
    /// Right-aligned in `width` columns.
    Right(&'a str, usize),
}

/// One row of a percentile table, as load and compare print them: two spaces, the row's label
/// in 10 columns, then each cell after a space.
pub fn table_row(out: &mut String, label: &str, cells: &[Cell<'_>]) {
    let _ = write!(out, "  {label:<10}");
    for cell in cells {
        let _ = match *cell {
            Cell::Left(s, w) => write!(out, " {s:<w$}"),
            Cell::Right(s, w) => write!(out, " {s:>w$}"),
        };
    }
    out.push('\n');
}

fn row(out: &mut String, name: &str, p: &Percentiles) {
    let cells = [p.p50, p.p90, p.p99, p.p999, p.p9999, p.max].map(human_ns);
    let cells: Vec<Cell<'_>> = cells.iter().map(|c| Cell::Right(c, 9)).collect();
    table_row(out, name, &cells);
}

/// Whether the generator fell behind enough to make the figures untrustworthy.
pub fn generator_fell_behind(r: &LoadReport) -> bool {
    r.offered_rps.is_some() && (r.latency_ns.lag.p99 > LAG_WARN_NS || r.requests.not_sent > 0)
}

/// Renders the summary.
pub fn render(r: &LoadReport) -> String {
    let mut out = String::new();
    if r.interrupted {
        let _ = writeln!(
            out,
            "INTERRUPTED (Ctrl-C) after {:.1}s: the figures below are of what ran",
            r.duration_s
        );
    }
    let _ = writeln!(
        out,
        "target     {} ({}, {} connections, {} thread(s))",
        r.target, r.protocol, r.connections, r.threads
    );
    let offered = r
        .offered_rps
        .map_or_else(|| "max (closed loop)".to_string(), |o| format!("{o:.1}/s"));
    let _ = writeln!(
        out,
        "rate       offered {offered} [{}], achieved {:.1}/s over {:.1}s",
        r.rate, r.achieved_rps, r.duration_s
    );
    if let Some(segment) = &r.segment {
        let _ = writeln!(
            out,
            "segment    {segment} of schedule {}{}",
            r.schedule_id.as_deref().unwrap_or("?"),
            r.start_at
                .as_deref()
                .map_or(String::new(), |t| format!(", started at {t}"))
        );
    }
    tls_and_stream_lines(&mut out, r);
    requests_line(&mut out, r);
    let _ = writeln!(
        out,
        "latency          p50       p90       p99     p99.9    p99.99       max"
    );
    row(&mut out, "corrected", &r.latency_ns.corrected);
    row(&mut out, "service", &r.latency_ns.service);
    let lag = &r.latency_ns.lag;
    let _ = writeln!(
        out,
        "lag        p50 {}, p99 {}, max {} (send time behind schedule)",
        human_ns(lag.p50),
        human_ns(lag.p99),
        human_ns(lag.max)
    );
    receive_line(&mut out, r);
    let _ = write!(
        out,
        "generator  {:.2} s CPU, {:.1} µs per request",
        r.generator.cpu_s, r.generator.cpu_us_per_request
    );
    let sent = r.requests.scheduled.saturating_sub(r.requests.not_sent);
    if let (Some(w), true) = (r.generator.wakeups, sent > 0) {
        let _ = write!(out, ", {:.1} wake-ups per request", w as f64 / sent as f64);
    }
    let _ = writeln!(out);
    intervals(&mut out, r);
    if generator_fell_behind(r) {
        let _ = writeln!(
            out,
            "WARNING: requests went out late (lag p99 {}, {} not sent, {} waited for a busy connection): the \
             latency figures include that delay. {}",
            human_ns(lag.p99),
            r.requests.not_sent,
            r.generator.waited_for_connection,
            lateness_advice(r)
        );
    }
    out
}

/// The TLS handshakes' line and a streaming call's lines, when the run had them.
fn tls_and_stream_lines(out: &mut String, r: &LoadReport) {
    let timed = |out: &mut String, label: &str, t: &TlsHandshakes, noun: &str, note: &str| {
        let (p50, p99, max) = (t.duration_ns.p50, t.duration_ns.p99, t.duration_ns.max);
        let (p50, p99, max) = (human_ns(p50), human_ns(p99), human_ns(max));
        let n = t.handshakes;
        let _ = writeln!(
            out,
            "{label:<10} {n} {noun}, p50 {p50}, p99 {p99}, max {max} ({note})"
        );
    };
    if let Some(t) = &r.tls {
        timed(
            out,
            "tls",
            t,
            "handshake(s)",
            "apart from the latencies below",
        );
    }
    if let Some(t) = &r.connect {
        let note = "connect and upgrade, opened before the clock";
        timed(out, "connect", t, "WebSocket connection(s)", note);
    }
    if let Some(st) = &r.stream {
        let per_call = |n: u64| n as f64 / st.calls.max(1) as f64;
        let _ = writeln!(
            out,
            "stream     {}: {} calls, {} messages sent ({:.1} per call), {} received ({:.1} per call)",
            st.kind,
            st.calls,
            st.messages_sent,
            per_call(st.messages_sent),
            st.messages_received,
            per_call(st.messages_received)
        );
        let _ = writeln!(
            out,
            "           first message p50 {}, p99 {}; per message p50 {}, p99 {}, max {}",
            human_ns(st.first_message_ns.p50),
            human_ns(st.first_message_ns.p99),
            human_ns(st.message_ns.p50),
            human_ns(st.message_ns.p99),
            human_ns(st.message_ns.max)
        );
    }
}

/// Requests scheduled and what became of them.
fn requests_line(out: &mut String, r: &LoadReport) {
    let q = &r.requests;
    let mut errors = Vec::new();
    for (k, v) in &q.http_errors {
        errors.push(format!("{v} HTTP {k}"));
    }
    for (k, v) in &q.grpc_errors {
        errors.push(format!("{v} gRPC {k}"));
    }
    for (k, v) in &q.transport_errors {
        errors.push(format!("{v} {k}"));
    }
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!(", {}", errors.join(", "))
    };
    let _ = writeln!(
        out,
        "requests   {} scheduled: {} ok{errors}, {} timeouts, {} not sent",
        q.scheduled, q.ok, q.timeouts, q.not_sent
    );
}

/// The per-second series, when the offered rate changes over the run (stages, steps, a ramp,
/// bursts less often than every second): offered beside achieved.
fn intervals(out: &mut String, r: &LoadReport) {
    let offered: Vec<f64> = r.intervals.iter().filter_map(|i| i.offered_rps).collect();
    let (lo, hi) = offered
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), o| (lo.min(*o), hi.max(*o)));
    if offered.len() < 2 || hi - lo <= 0.01 * hi {
        return;
    }
    let _ = writeln!(
        out,
        "per second      t   offered  achieved    errors       p50       p99"
    );
    // Intervals after the phase are its drain (answers to the last sends): not part of the shape.
    for i in r.intervals.iter().filter(|i| i.start_s < r.duration_s) {
        let _ = writeln!(
            out,
            "           {:>5.0}s {:>8.0}/s {:>8.0}/s {:>9} {:>9} {:>9}",
            i.start_s,
            i.offered_rps.unwrap_or(0.0),
            i.achieved_rps,
            i.errors,
            human_ns(i.corrected_p50),
            human_ns(i.corrected_p99)
        );
    }
}

/// What to do about late sends: more connections when they waited for busy connections (the
/// target's latency times the rate outgrew them), else a quieter core for the generator.
pub fn lateness_advice(r: &LoadReport) -> &'static str {
    let sent = r
        .requests
        .scheduled
        .saturating_sub(r.requests.not_sent)
        .max(1);
    let unanswered = r.requests.timeouts + r.requests.transport_errors.values().sum::<u64>();
    if unanswered * 2 >= sent {
        "Most requests timed out or failed: the server did not answer (its connections or \
         handshakes held the sends back), which is not the generator's doing; check the target."
    } else if r.generator.waited_for_connection * 100 >= sent {
        "Many waited for a connection: the target's latency times the rate needs more \
         connections than it had; raise --connections (-c)."
    } else {
        "They did not wait for connections: the generator's own thread was late (a busy or \
         noisy core); give it a core of its own (compare: --layout auto), stop what else runs, \
         or lower --rps."
    }
}

/// How answers were timed: by the kernel's receive stamps (and how late they were read), or at
/// the read.
fn receive_line(out: &mut String, r: &LoadReport) {
    match &r.latency_ns.receive_lag {
        Some(l) => {
            let _ = writeln!(
                out,
                "receive    p50 {}, p99 {}, max {} (read behind the kernel's arrival stamp; not in the latencies)",
                human_ns(l.p50),
                human_ns(l.p99),
                human_ns(l.max)
            );
        }
        None if r.protocol == "HTTP/1.1" && r.requests.ok > 0 => {
            out.push_str("receive    answers timed at their read (no kernel receive timestamps)\n");
        }
        None => {}
    }
}
