//! `gwbench load`: its flags (what to send, how fast, how long, outputs).

use super::parse_duration;
use clap::{Args, ValueEnum};

pub(super) const LOAD_EXAMPLES: &str = "\
Examples:
  gwbench load http://127.0.0.1:8081/api/users/42 --rps 5000 --duration 10s
  gwbench load 'http://127.0.0.1:8081/api/users/{rand:1-1000}' --rps 20000 -c 64
  gwbench load http://127.0.0.1:8081/api/users/1 --rps max -c 16        # closed loop, as wrk
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.UserService/GetUser --data '{\"id\": 42}'
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.UserService/GetUser --data '{\"id\": {rand:1-1000}}'
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.InventoryService/WatchStock --data '{\"product_id\": 7, \"updates\": 20}'
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.InventoryService/SyncStock --data '{\"product_id\": 7, \"delta\": 1}' --stream-messages 5 --stream-interval 10ms
  gwbench load ws://127.0.0.1:8081/ws/echo --rps 2000 -c 4 --data '{\"id\": {seq}}'   # messages, per-message latency
  gwbench load ws://127.0.0.1:8081/ws/inventory/sync --rps 1000 --data '{\"productId\": \"7\", \"delta\": 1}'
  gwbench load URL --rps 2000 --json --hgrm out.hgrm --hlog out.hlog --slo 'p99<20ms,errors<0.1%'
  gwbench load https://127.0.0.1:8443/api/users/42 --cacert ca.pem   # ALPN picks h2 or HTTP/1.1
  gwbench load URL --stages 10s:1000,20s:5000,10s:0     # ramp up, ramp on, ramp down
  gwbench load URL --step 1000:1000:5s:5000 -d 30s     # +1000 req/s every 5 s up to 5000
  gwbench load URL --burst 200/1s -d 10s               # 200 requests at once, every second
  gwbench load URL --rps 8000 --segment 0/4 --start-at 2026-12-02T10:00:00Z --json > seg0.json

Open loop: request i is due at start + i/rate. Latency is measured from that intended time
(\"corrected\", as wrk2 does), so a stalled server is charged for the requests it held up; the
time from the actual send (\"service\") and the generator's lag are reported beside it.
Every scheduled request ends as ok, an HTTP/gRPC error, a transport error, a timeout, or
not sent; the counts always add up to the scheduled total.

Path placeholders: {seq} (1, 2, 3, ...), {rand:A-B} (uniform integer); the same in --data.
Several URLs (same host:port) are used round-robin.
WebSocket (ws://, wss://): each --data message is a request, sent at its intended time without
waiting for the previous answer (up to 4,096 in flight per connection; one with --rps max); its
latency ends with its answer. Connections open (and are timed) before the clock starts.
gRPC streams: the whole call is the request whose latency is reported; its messages are counted
and timed apart (time to the first answer, and per answer message). Exit codes: 0 ok, 1 an --slo objective was missed,
2 bad input or unreachable target.";

/// Which rate flag shapes arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Arrival {
    /// Evenly spaced, start + i/rate.
    Constant,
    /// Poisson process with the given mean rate.
    Poisson,
}

/// `gwbench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Target URL(s), http:// or https://; for gRPC the server's base URL.
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Offered rate in requests per second, or `max` for closed loop.
    #[arg(
        long,
        default_value = "1000",
        value_name = "N|max",
        conflicts_with = "ramp"
    )]
    pub rps: String,
    /// Arrival process for --rps N.
    #[arg(long, value_enum, default_value_t = Arrival::Constant)]
    pub arrival: Arrival,
    /// Linear ramp FROM:TO:OVER (e.g. 1000:10000:5s), then hold TO until --duration ends.
    #[arg(long, value_name = "FROM:TO:OVER")]
    pub ramp: Option<String>,
    /// Rate stages [START,]LEN:RATE,... (e.g. 30s:1000,2m:5000,30s:0): from START (default 0)
    /// a linear ramp to each RATE over its LEN, as k6's ramping-arrival-rate; --duration
    /// defaults to their total (longer holds the last RATE).
    #[arg(long, value_name = "STAGES", conflicts_with_all = ["rps", "ramp", "step", "burst", "arrival"])]
    pub stages: Option<String>,
    /// Step load START:STEP:EVERY:MAX (e.g. 1000:500:10s:5000): START req/s, STEP more every
    /// EVERY up to MAX, then MAX until --duration ends (ghz's step load).
    #[arg(long, value_name = "START:STEP:EVERY:MAX", conflicts_with_all = ["rps", "ramp", "burst", "arrival"])]
    pub step: Option<String>,
    /// Bursts N/PERIOD (e.g. 200/1s): N requests due at once at the start of every PERIOD.
    #[arg(long, value_name = "N/PERIOD", conflicts_with_all = ["rps", "ramp", "arrival"])]
    pub burst: Option<String>,
    /// TCP connections.
    #[arg(short = 'c', long, default_value_t = 32, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub connections: u32,
    /// For h2c and gRPC: at most this many requests in flight (streams over all connections).
    #[arg(long, default_value_t = 1024, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Generator threads, each with its share of the connections.
    #[arg(short = 't', long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Length of the measured phase [default: 10s; with --stages, their total].
    #[arg(short = 'd', long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<std::time::Duration>,
    /// Send this many requests instead of running for --duration.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Warm-up at the same rate before measuring; its results are discarded.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: std::time::Duration,
    /// Per-request timeout; a request without an answer by then counts as a timeout.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
    /// At most this much busy-waiting (yielding) before each send, for precise pacing: the
    /// pacing timer is armed early by how late it has been waking (learnt as it runs, tens of
    /// µs on a VM) and the rest is spun. 0 always sleeps (cheapest, sends later).
    #[arg(long, default_value = "20us", value_name = "DURATION", value_parser = parse_duration)]
    pub spin: std::time::Duration,
    /// Time each answer by when the generator read it. By default, on HTTP/1.1 over plain TCP,
    /// an answer ends when its last bytes reached the socket (Linux's SO_TIMESTAMPING receive
    /// stamps), so the generator's own late wake-up is not counted; the gap is reported as
    /// receive lag.
    #[arg(long)]
    pub no_kernel_timestamps: bool,
    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    pub method: String,
    /// Extra header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Request body from a file.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<std::path::PathBuf>,
    /// Use HTTP/2 (h2c by prior knowledge; over https://, h2 by ALPN) instead of HTTP/1.1.
    /// Without it an https:// target gets what its ALPN picks of h2 and http/1.1.
    #[arg(long)]
    pub http2: bool,
    /// https://: accept any server certificate (testing only).
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// https://: trust the CA certificates in FILE (PEM) instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,
    /// https://: present this client certificate (PEM; with --key), for mTLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Call this gRPC method (package.Service/Method) instead of sending HTTP requests: unary,
    /// server-streaming, client-streaming or bidi. -H headers go as gRPC metadata.
    #[arg(long, value_name = "METHOD")]
    pub grpc: Option<String>,
    /// The gRPC request message as proto3 JSON (default {}), or a ws:// target's message text.
    /// {seq} (the call's or message's number) and {rand:A-B} in it are filled in per call or
    /// message; other braces are JSON. Over WebSocket, an answer is matched to its message by
    /// the number after the text that precedes {seq} (else answers are taken in order).
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// Client-streaming and bidi calls: messages the client sends per call (each --data).
    #[arg(long, default_value_t = 10, value_name = "N", requires = "grpc", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub stream_messages: u32,
    /// Client-streaming and bidi calls: time between two of a call's messages (0: all at once).
    #[arg(long, default_value = "0s", value_name = "DURATION", requires = "grpc", value_parser = parse_duration)]
    pub stream_interval: std::time::Duration,
    /// gRPC deadline per call: sent as grpc-timeout, and a call not done by then ends
    /// DEADLINE_EXCEEDED (as a gRPC client's own deadline would), not as a timeout.
    #[arg(long, value_name = "DURATION", requires = "grpc", value_parser = parse_duration)]
    pub deadline: Option<std::time::Duration>,
    /// Descriptor set (FileDescriptorSet) describing --grpc's service; default: gwbench's own.
    #[arg(long, value_name = "FILE", requires = "grpc")]
    pub descriptor_set: Option<std::path::PathBuf>,
    /// A .proto file describing --grpc's service, compiled at start without protoc
    /// (repeatable; instead of --descriptor-set).
    #[arg(
        long = "proto",
        value_name = "FILE",
        requires = "grpc",
        conflicts_with = "descriptor_set"
    )]
    pub protos: Vec<std::path::PathBuf>,
    /// Ask the server for --grpc's service over gRPC server reflection (v1, or v1alpha)
    /// instead of a descriptor file (`gwbench backends` serves it).
    #[arg(long, requires = "grpc", conflicts_with_all = ["descriptor_set", "protos"])]
    pub reflect: bool,
    /// Import path for --proto (repeatable; default: each file's directory).
    #[arg(
        short = 'I',
        long = "proto-path",
        value_name = "DIR",
        requires = "protos"
    )]
    pub proto_paths: Vec<std::path::PathBuf>,
    /// Print the gwbench.load.v1 JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write the corrected-latency percentile distribution (HdrHistogram .hgrm, ms) to FILE;
    /// the service-time one goes beside it as FILE-stem.service.hgrm.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<std::path::PathBuf>,
    /// Write a HdrHistogram interval log (v1.3, 1 s intervals, tags corrected/service) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<std::path::PathBuf>,
    /// Write one CSV row per second to FILE: offered and achieved rate, errors by kind, and
    /// p50/p90/p99/p99.9/max of corrected latency and service time (ms).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<std::path::PathBuf>,
    /// Write one CSV row per measured request to FILE (due, sent and done times, latencies,
    /// outcome). Costs 48 bytes of memory per request until the run ends, when it is written;
    /// at most --csv-raw-limit rows, the rest counted and said.
    #[arg(long, value_name = "FILE")]
    pub csv_raw: Option<std::path::PathBuf>,
    /// Serve the run's counters and latency histograms on http://ADDR/metrics (Prometheus text
    /// format) while it runs, updated every second; e.g. 127.0.0.1:9464 (port 0: any free
    /// port, printed on stderr). PromQL for each headline figure: README "Live metrics".
    #[arg(long, value_name = "ADDR")]
    pub prometheus_addr: Option<std::net::SocketAddr>,
    /// The most rows --csv-raw keeps (1,000,000 is 48 MB).
    #[arg(long, default_value_t = 1_000_000, value_name = "N", requires = "csv_raw", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub csv_raw_limit: u64,
    /// Objectives that make the exit code 1 when missed, e.g. 'p99<20ms,errors<0.1%'.
    #[arg(long, value_name = "SPEC")]
    pub slo: Option<String>,
    /// No progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Send only this generator's share of the schedule: I/N takes every N-th request from
    /// the I-th (0-based), so N generators given 0/N .. N-1/N with the same flags send together
    /// exactly what one would; `report --merge` adds their --json outputs up.
    #[arg(long, value_name = "I/N", value_parser = parse_segment)]
    pub segment: Option<crate::load::schedule::Segment>,
    /// Seed of the Poisson arrival gaps (needed with --segment, the same on every generator).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Open every connection from this local address (e.g. 127.0.0.2: generators of a local
    /// fleet each take one, so that they do not share one address's ephemeral ports).
    #[arg(long, value_name = "IP")]
    pub local_addr: Option<std::net::IpAddr>,
    /// Start the schedule (warm-up included) at this wall-clock time, RFC 3339
    /// (2026-12-02T10:00:00Z) or milliseconds since the epoch: every generator of a split
    /// schedule starts on the same instant (as far as their clocks agree). Must be ahead.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,
}

pub(super) fn parse_segment(s: &str) -> Result<crate::load::schedule::Segment, String> {
    s.parse().map_err(|e: crate::load::schedule::RateError| e.0)
}

pub(super) fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let ms: u64 = s
            .parse()
            .map_err(|_| format!("{s:?}: too many milliseconds"))?;
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms));
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("{s:?} is not RFC 3339 (2026-12-02T10:00:00Z) nor epoch milliseconds ({e})")
    })
}
