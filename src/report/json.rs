//! The `gwbench.load.v1` JSON object (see DESIGN.md "Output contract" and
//! `reports/schema/load.json`): times are integer nanoseconds, and `requests.scheduled` is the
//! sum of every outcome bucket. Keys may be added; these keep their meaning.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::grpc::code_name as grpc_code_name;
use crate::load::LoadRun;
use crate::load::schedule::Rate;
use std::time::Duration;

/// Schema identifier of [`LoadReport`].
pub const SCHEMA: &str = "gwbench.load.v1";

/// Percentiles of one histogram, in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean, rounded.
    pub mean: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value (highest equivalent value of its bucket).
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles off `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles {
                count: 0,
                mean: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                p9999: 0,
                max: 0,
            };
        }
        Percentiles {
            count: h.len(),
            mean: h.mean().round() as u64,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        }
    }
}

/// Outcome counts; `scheduled` equals the sum of all the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Requests {
    /// Requests the schedule called for in the measured phase.
    pub scheduled: u64,
    /// 2xx / gRPC OK.
    pub ok: u64,
    /// No answer within the timeout.
    pub timeouts: u64,
    /// Scheduled but never sent (the generator fell behind or the run ended first).
    pub not_sent: u64,
    /// By HTTP status.
    pub http_errors: BTreeMap<String, u64>,
    /// By gRPC code name.
    pub grpc_errors: BTreeMap<String, u64>,
    /// By kind (connect_refused, connection_reset, …).
    pub transport_errors: BTreeMap<String, u64>,
}

/// The three latency histograms.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// From the intended send time (coordinated omission corrected).
    pub corrected: Percentiles,
    /// From the actual send time.
    pub service: Percentiles,
    /// Actual send time minus intended send time.
    pub lag: Percentiles,
    /// Read time minus the kernel's arrival stamp of each answer's last bytes: the
    /// generator's own delay, kept out of `corrected` and `service` (absent without kernel
    /// receive timestamps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lag: Option<Percentiles>,
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interval {
    /// Start, seconds from the measured phase's start.
    pub start_s: f64,
    /// Length in seconds.
    pub length_s: f64,
    /// Requests that ended in it.
    pub completed: u64,
    /// Of which unsuccessful.
    pub errors: u64,
    /// Corrected latency p50, ns.
    pub corrected_p50: u64,
    /// Corrected latency p99, ns.
    pub corrected_p99: u64,
    /// Corrected latency max, ns.
    pub corrected_max: u64,
    /// Service time p99, ns.
    pub service_p99: u64,
    /// Requests the schedule had due in it, per second (this generator's share; None in closed
    /// loop): the shape of `--stages`, `--step`, `--ramp` or `--burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_rps: Option<f64>,
    /// Requests that ended in it, per second.
    #[serde(default)]
    pub achieved_rps: f64,
}

/// CPU the generator used during the measured phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorCpu {
    /// User + system seconds.
    pub cpu_s: f64,
    /// Microseconds of CPU per request sent.
    pub cpu_us_per_request: f64,
    /// Requests sent late because every connection (or stream) was busy when they were due.
    pub waited_for_connection: u64,
    /// Times the generator's threads slept and were woken during the measured phase: about
    /// one per request when answers are read at the next send's wake-up, two when each answer
    /// wakes the thread on its own. None where the system does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wakeups: Option<u64>,
}

/// The whole report of one load run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The target.
    pub target: String,
    /// Offered mean rate; None for closed loop (`--rps max`).
    pub offered_rps: Option<f64>,
    /// Requests sent per second.
    pub achieved_rps: f64,
    /// Length of the measured phase.
    pub duration_s: f64,
    /// Outcome counts.
    pub requests: Requests,
    /// Latency percentiles, ns.
    pub latency_ns: Latency,
    /// HTTP/1.1, h2c or gRPC.
    pub protocol: String,
    /// The arrival profile, in words.
    pub rate: String,
    /// TCP connections.
    pub connections: usize,
    /// Generator threads.
    pub threads: usize,
    /// Generator CPU.
    pub generator: GeneratorCpu,
    /// Per-second time series (empty in a merged report: the `.hlog` files merge those).
    pub intervals: Vec<Interval>,
    /// This generator's share of a split schedule, `I/N` (`load --segment`); for a merged
    /// report, `merged N/N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Identifier of the whole schedule: `report --merge` merges only outputs that share it.
    #[serde(default)]
    pub schedule_id: Option<String>,
    /// The agreed wall-clock start (RFC 3339), when `--start-at` was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<String>,
    /// The whole run's histograms (`gwbench load --json` writes them), for merging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histograms: Option<Histograms>,
    /// TLS handshakes (an `https://` target), timed apart from the requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsHandshakes>,
    /// WebSocket connections (TCP, TLS, upgrade), opened before the clock and timed apart
    /// from the messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<TlsHandshakes>,
    /// A gRPC streaming call's messages, timed apart from the whole call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamReport>,
    /// Ctrl-C stopped the run early (absent otherwise): the figures are of what ran.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// The messages of a gRPC streaming run (`load --grpc` on a streaming method). The whole call's
/// latency is `latency_ns` as for any request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReport {
    /// server_streaming, client_streaming or bidi_streaming.
    pub kind: String,
    /// Calls sent.
    pub calls: u64,
    /// Request messages sent.
    pub messages_sent: u64,
    /// Answer messages received whole.
    pub messages_received: u64,
    /// Time to the first answer message, from the call's intended send time, ns.
    pub first_message_ns: Percentiles,
    /// Per answer message, from the later of the previous answer and the request message it
    /// answers (bidi; the call's send otherwise) to its last byte, ns.
    pub message_ns: Percentiles,
}

/// The TLS handshakes of a run: connections are opened before the clock starts, so these are
/// not in the request latencies (a connection reopened mid-run is, for the request that waited
/// for it, as with TCP).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsHandshakes {
    /// How many.
    pub handshakes: u64,
    /// Their durations, ns.
    pub duration_ns: Percentiles,
}

/// Whole-run histograms, HdrHistogram V2 + deflate, base64 (as in `.hlog` lines), ns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Histograms {
    /// Corrected latency.
    pub corrected: String,
    /// Service time.
    pub service: String,
    /// Send lag.
    pub lag: String,
    /// Receive lag (when the run had kernel arrival stamps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lag: Option<String>,
}

impl Histograms {
    /// The run's histograms, encoded.
    pub fn of(total: &crate::load::recorder::HistSet) -> Self {
        let mut h = Self::encode(&total.corrected, &total.service, &total.lag);
        h.receive_lag = (!total.receive_lag.is_empty()).then(|| encode(&total.receive_lag));
        h
    }

    /// Corrected, service and lag histograms, encoded.
    pub fn encode(
        corrected: &Histogram<u64>,
        service: &Histogram<u64>,
        lag: &Histogram<u64>,
    ) -> Self {
        Histograms {
            corrected: encode(corrected),
            service: encode(service),
            lag: encode(lag),
            receive_lag: None,
        }
    }
}

/// A histogram, compressed and in base64.
pub(super) fn encode(h: &Histogram<u64>) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crate::load::recorder::compress(h))
}

impl LoadReport {
    /// The report of `run`.
    pub fn from_run(run: &LoadRun) -> Self {
        let o = &run.outcomes;
        let cpu_s = run.cpu.user_s + run.cpu.system_s;
        LoadReport {
            schema: SCHEMA.to_string(),
            target: run.target.clone(),
            // A segment offers its share of the schedule's rate; a shape its mean.
            offered_rps: match &run.rate {
                Rate::Shaped(_) => run
                    .rate
                    .scheduled_in(Duration::ZERO, run.duration)
                    .map(|n| n / run.duration.as_secs_f64().max(1e-9)),
                rate => rate.offered(),
            }
            .map(|r| r / f64::from(run.split.segment.count)),
            achieved_rps: run.achieved_rps(),
            duration_s: run.duration.as_secs_f64(),
            requests: requests(run),
            latency_ns: Latency {
                corrected: Percentiles::of(&run.total.corrected),
                service: Percentiles::of(&run.total.service),
                lag: Percentiles::of(&run.total.lag),
                receive_lag: (!run.total.receive_lag.is_empty())
                    .then(|| Percentiles::of(&run.total.receive_lag)),
            },
            protocol: match run.tls_handshakes {
                None => run.protocol.name().to_string(),
                Some(_) => match run.protocol {
                    crate::load::target::Protocol::Http2 => "h2 (TLS)".to_string(),
                    p => format!("{} (TLS)", p.name()),
                },
            },
            rate: match run.split.segment.count {
                1 => run.rate.to_string(),
                _ => format!("{}, segment {}", run.rate, run.split.segment),
            },
            connections: run.connections,
            threads: run.threads,
            generator: GeneratorCpu {
                cpu_s,
                cpu_us_per_request: if o.sent() > 0 {
                    cpu_s * 1e6 / o.sent() as f64
                } else {
                    0.0
                },
                waited_for_connection: run.waited_for_connection,
                wakeups: run.wakeups,
            },
            intervals: intervals(run),
            segment: (run.split.segment.count > 1).then(|| run.split.segment.to_string()),
            schedule_id: Some(run.schedule_id.clone()),
            start_at: run
                .split
                .start_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            histograms: None,
            tls: run.tls_handshakes.as_ref().map(|h| TlsHandshakes {
                handshakes: h.len(),
                duration_ns: Percentiles::of(h),
            }),
            connect: run.ws_connects.as_ref().map(|h| TlsHandshakes {
                handshakes: h.len(),
                duration_ns: Percentiles::of(h),
            }),
            interrupted: run.interrupted,
            stream: run.stream_kind.map(|kind| {
                let s = &run.total.stream;
                StreamReport {
                    kind: kind.name().to_string(),
                    calls: s.calls,
                    messages_sent: s.messages_sent,
                    messages_received: s.messages_received,
                    first_message_ns: Percentiles::of(&s.first_message),
                    message_ns: Percentiles::of(&s.message),
                }
            }),
        }
    }
}

/// What became of the run's requests.
fn requests(run: &LoadRun) -> Requests {
    let o = &run.outcomes;
    Requests {
        scheduled: run.scheduled(),
        ok: o.ok,
        timeouts: o.timeouts,
        not_sent: o.not_sent,
        http_errors: o.http.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        grpc_errors: o
            .grpc
            .iter()
            .map(|(k, v)| (grpc_code_name(*k).to_string(), *v))
            .collect(),
        transport_errors: o
            .transport
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    }
}

/// The run's 1-second intervals.
fn intervals(run: &LoadRun) -> Vec<Interval> {
    run.intervals
        .iter()
        .map(|i| Interval {
            start_s: i.start.as_secs_f64(),
            length_s: i.length.as_secs_f64(),
            completed: i.outcomes.total(),
            errors: i.outcomes.failed(),
            corrected_p50: i.corrected.p50,
            corrected_p99: i.corrected.p99,
            corrected_max: i.corrected.max,
            service_p99: i.service.p99,
            offered_rps: run.offered_in(i),
            achieved_rps: i.outcomes.total() as f64 / i.length.as_secs_f64(),
        })
        .collect()
}
