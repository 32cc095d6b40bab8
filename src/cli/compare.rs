//! `gwbench compare` and `gwbench saturate`: the flags of the commands that start a stack and measure it.

use super::parse_duration;
use clap::Args;

pub(super) const SATURATE_EXAMPLES: &str = "\
Examples:
  gwbench saturate                                  # grpc scenario, direct and gateway
  gwbench saturate --target gateway --scenario rest
  gwbench saturate --start 2000 --factor 1.5 --slo-p99 20ms

A step is good while achieved >= 97 % of offered, errors < 1 % and p99 <= the SLO (default: 10 x
the p99 of the first step); a bad step is run once more to confirm it. Rates rise by --factor
until a confirmed bad step, then bisect to within 5 %.
When the load generator lagged or used a whole core on the bad steps, the knee is reported as a
lower bound.";

/// `gwbench saturate`.
#[derive(Debug, Args)]
pub struct SaturateArgs {
    /// Which path to search: gateway, direct, or both.
    #[arg(long, default_value = "both")]
    pub target: String,
    /// Scenario whose paths are searched (rest, grpc, full).
    #[arg(long, default_value = "grpc")]
    pub scenario: String,
    /// First offered rate.
    #[arg(long, default_value_t = 1000.0, value_name = "RPS")]
    pub start: f64,
    /// Multiplier between steps.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Highest rate to try.
    #[arg(long, default_value_t = 200_000.0, value_name = "RPS")]
    pub max: f64,
    /// Length of each step.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse_duration)]
    pub step_duration: std::time::Duration,
    /// Warm-up before each step (discarded).
    #[arg(long, default_value = "500ms", value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: std::time::Duration,
    /// p99 above which a step is bad (default: 10 x the first step's p99).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slo_p99: Option<std::time::Duration>,
    /// Generator connections.
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Generator threads (default: what each step's rate needs, one per 20,000 req/s, at most
    /// the cores the layout gives the generator).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: Option<u16>,
    /// Process layout: auto (default; generator on its own cores where there are 2+),
    /// shared (nothing pinned) or pinned. See `gwbench compare --help`.
    #[arg(long, value_enum, default_value_t = LayoutMode::Auto)]
    pub layout: LayoutMode,
    /// Same as --layout pinned (kept for old scripts).
    #[arg(long, hide = true)]
    pub pin: bool,
    /// Search a fleet of N gateways behind HAProxy (least connections) sharing their rate
    /// limits in Redis, and one instance behind it for the scaling efficiency
    /// knee(N) / (N x knee(1)). Needs haproxy and redis-server (or --redis-url). On one
    /// machine this simulates a fleet: the instances share the gateway's cores.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub gateway_instances: u16,
    /// The Redis the fleet shares its limits in (default: a redis-server started for the run).
    #[arg(long, value_name = "URL", requires = "gateway_instances")]
    pub redis_url: Option<String>,
    /// Gateways whose knee to find, comma-separated: gwbench (ours), nginx, haproxy, caddy,
    /// traefik.
    /// Other gateways than ours are started as `compare --gateway` starts them and searched on
    /// the rest scenario (the only one they serve: give --scenario rest), each with the same SLO
    /// rule; the answer gives each knee and the gateway's CPU per request there.
    #[arg(long, default_value = "gwbench", value_name = "LIST")]
    pub gateway: String,
    /// Directory for the reports (default: reports/<UTC time>-saturate).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// No progress display.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

pub(super) const COMPARE_EXAMPLES: &str = "\
Examples:
  gwbench compare --rps 5000                       # rest, grpc and full, 3-4 rounds x 4 s
  gwbench compare --rps 2000 --scenarios grpc --rounds 5 --layout shared
  gwbench compare --rps 5000 --out /tmp/run1       # reports there instead of reports/<time>-compare

Scenarios (direct vs through the gateway, same offered rate):
  rest   REST mock GET /api/users/{id} vs the gateway's /rest proxy route (proxy cost)
  grpc   gRPC GetUser vs REST GET /api/users/42 transcoded by the gateway (translation cost)
  full   the gateway's bare REST->gRPC route vs /secure with JWT auth, rate limit (not
         triggering) and breaker (middleware cost); compare mints the token itself
  dashboard  four REST calls a client fans out itself vs the gateway's /api/dashboard
         aggregation of the same four over gRPC (not in the default set)
  ws     WebSocket echo of the REST mock vs through the gateway's /rest proxy route, one message
         per request (WebSocket proxy cost; not in the default set)
  ws-grpc  SyncStock over WebSocket: the REST mock's own WebSocket twin vs the gateway translating
         to the gRPC bidi stream (translation cost; not in the default set)
The default scenarios are rest, grpc and full.
Build vs buy: --gateway gwbench,nginx,haproxy,caddy,traefik (any subset) also measures gateways
in front of the same mocks, each on the rest scenario (rest-nginx, ...) and gRPC passed through
over h2c (grpc-nginx, ...): started pinned as ours, one worker per core of the gateway's share,
access log off, keep-alive to the mocks (nginx: upstream keepalive with HTTP/1.1, grpc_pass;
HAProxy: http-reuse always, proto h2; Caddy: GOMAXPROCS, admin and automatic HTTPS off, h2c;
Traefik: GOMAXPROCS, file provider, 256 idle connections per upstream, h2c://; Envoy and Kong
are not started by gwbench: run them yourself and use --gateway-url with --gateway-pid),
their CPU read by PID with their children's; a closing table puts them side by side, and
report.html charts each one's CPU per request. Your own running gateway: --gateway-url URL
--direct-url URL, with --gateway-pid PID (and --direct-pid PID) for its CPU.
--method duet (default) loads direct and gateway at the same time, each side its own
connections and half of --rps, the two schedules interleaved (the sides' requests alternate);
the overhead is bootstrapped over pairs of the same second, so that a stall of the machine hits
both sides and cancels. The mocks serve both sides, so they carry --rps in all, as in one side
of a rounds run; the gateway sees half of it. --method rounds runs one side at a time at --rps,
alternating which goes first, so that drift hits both. First an A/A calibration runs the direct
path against itself (in the same method): what it finds is this machine's noise floor right
now. Every percentile and overhead (gateway - direct) comes with a 95 % confidence interval
(bootstrap over 1-second intervals); an overhead whose interval reaches into the noise floor
is printed as ~0 (not distinguishable from noise), and a figure from fewer than 10 intervals
per side has no interval and is not judged (\"too short to judge\"). Also CPU per 1,000 requests of each
process, and the process layout (--layout). Writes summary.json, summary.md, report.html (charts), and a .hgrm and .hlog per
scenario and side.";

/// How compare and saturate lay their processes out (`--layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LayoutMode {
    /// Pinned wherever the machine has 2 cores or more; shared on 1 core.
    #[default]
    Auto,
    /// Nothing pinned: every process may run on every core (and they compete).
    Shared,
    /// Generator, gateway and backends on separate cores where the machine has them.
    Pinned,
}

impl LayoutMode {
    /// The mode, or pinned when the old `--pin` flag was given.
    pub fn or_pinned(self, pin: bool) -> LayoutMode {
        if pin { LayoutMode::Pinned } else { self }
    }
}

/// How compare offers the two sides (`--method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Method {
    /// Both sides at once, each its own connections and half of --rps, requests
    /// interleaved; each second's difference is one pair (duet benchmarking, Bulej et al.
    /// 2020): a stall hits both sides of a pair and cancels.
    #[default]
    Duet,
    /// One side at a time, alternating in rounds.
    Rounds,
}

/// `gwbench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// duet (default): direct and gateway loaded at the same time, half of --rps each,
    /// compared second by second; rounds: one after the other, alternating. See the notes below.
    #[arg(long, value_enum, default_value_t = Method::Duet)]
    pub method: Method,
    /// Offered rate, requests per second: with --method rounds each side's; with duet the
    /// total, half to each side at the same time (the mocks carry this much either way).
    #[arg(long, default_value = "5000", value_name = "N")]
    pub rps: String,
    /// Scenarios to run, comma-separated.
    #[arg(long, default_value = "rest,grpc,full", value_name = "LIST")]
    pub scenarios: String,
    /// Rounds at least (each runs direct and gateway once, alternating which goes first).
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Rounds at most: after --rounds, rounds are added until the p50 overhead's 95 % interval
    /// is within ±max(10 µs, 10 %) or this many ran (the default keeps a default run near two
    /// minutes); raised to --rounds when lower.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_rounds: u32,
    /// Length of each measured run.
    #[arg(short = 'd', long, default_value = "4s", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Length of each run of the A/A calibration that measures the noise floor (the first
    /// scenario's direct path against itself, --rounds rounds, before the scenarios); 0s skips
    /// it (then overheads are judged by their intervals alone). Below 10 one-second intervals
    /// in all (e.g. 3 rounds of 3s) the floor is too short to measure.
    #[arg(long, default_value = "4s", value_name = "DURATION", value_parser = parse_duration)]
    pub calibration: std::time::Duration,
    /// Warm-up before each side's first run (discarded); later rounds find it warm.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: std::time::Duration,
    /// TCP connections of the load generator (HTTP/1.1: one request at a time each). The
    /// default rides out a server stall of about 25 ms at 5,000 req/s without delaying sends;
    /// at 32, stalls of this VM's order (5-20 ms) left requests waiting for a connection.
    #[arg(short = 'c', long, default_value_t = 128, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Process layout. auto (default): on 2+ cores the generator gets its own cores (on 2:
    /// CPU 1) and the gateway and mocks the rest, one thread per core they have (on 2: CPU 0,
    /// one thread each); shared: nothing pinned; pinned: as auto. Printed and in summary.json.
    #[arg(long, value_enum, default_value_t = LayoutMode::Auto)]
    pub layout: LayoutMode,
    /// Same as --layout pinned (kept for old scripts).
    #[arg(long, hide = true)]
    pub pin: bool,
    /// Put N gateways behind a real HAProxy (least connections) on the gateway side, sharing
    /// their rate limits in Redis; their CPU (and the balancer's) is the gateway's, and the
    /// report says each instance's share. Needs haproxy and redis-server (or --redis-url).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub gateway_instances: u16,
    /// The Redis the fleet shares its limits in (default: a redis-server started for the run).
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// The gateway terminates TLS (a certificate made for the run) and every side that goes
    /// through it is loaded over https (HTTP/1.1): against a run without it, what termination
    /// costs.
    #[arg(long)]
    pub tls: bool,
    /// Directory for the reports (default: reports/<UTC time>-compare).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Compare your own running gateway (full URL of a route) instead of spawning ours; needs
    /// --direct-url. Nothing is spawned and the scenarios are replaced by this one pair.
    #[arg(long, value_name = "URL", requires = "direct_url")]
    pub gateway_url: Option<String>,
    /// The same resource served directly by your backend (full URL); needs --gateway-url.
    #[arg(long, value_name = "URL", requires = "gateway_url")]
    pub direct_url: Option<String>,
    /// With --gateway-url: your gateway's process id; its CPU (and its children's, e.g.
    /// nginx's workers) is measured per request as our own gateway's is.
    #[arg(long, value_name = "PID", requires = "gateway_url")]
    pub gateway_pid: Option<u32>,
    /// With --direct-url: your backend's process id; its CPU (with its children's) is
    /// measured as the backends' on both sides.
    #[arg(long, value_name = "PID", requires = "direct_url")]
    pub direct_pid: Option<u32>,
    /// Gateways to measure side by side on the same mocks, comma-separated, in this order:
    /// gwbench (ours), nginx, haproxy, caddy, traefik. Each other one is started (pinned as
    /// ours, one worker per core of the gateway's share, its config written for the run: see
    /// the notes below), measured with its CPU on the REST proxy route (rest, as
    /// rest-<gateway>) and on gRPC passed through (grpc, as grpc-<gateway>; ours transcodes
    /// there), and stopped. Needs the program installed (nginx, haproxy, caddy: the Debian
    /// package of the same name; traefik: its release binary on PATH, not in Debian).
    #[arg(long, default_value = "gwbench", value_name = "LIST")]
    pub gateway: String,
    /// No progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}
