//! The command line (clap derive): one struct per subcommand, with help text and examples.
//! Nothing below this module imports clap; `run` turns these into typed configs.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::behavior::{self, Behavior, Latency, Stall};
use crate::backend::{BackendsConfig, DEFAULT_ADMIN_PORT, DEFAULT_GRPC_PORT, DEFAULT_REST_PORT};

const EXAMPLES: &str = "\
Examples:
  gwbench backends                      # mock REST :8081, gRPC :50051, admin :8082
  gwbench backends --latency exp:2ms    # every mock answers after ~2 ms on average
  curl localhost:8081/api/users/42      # a user, as proto3 JSON

Every listener defaults to 127.0.0.1; a port of 0 means \"pick a free one\".
Set RUST_LOG (e.g. RUST_LOG=debug) for more logs on stderr.";

const BACKENDS_EXAMPLES: &str = "\
Examples:
  gwbench backends
  gwbench backends --instances 2 --latency lognormal:1ms,0.5 --error-rate 0.01
  gwbench backends --rest-port 0 --grpc-port 0 --admin-port 0   # free ports, see the ready lines

When every listener is up, one line per listener is printed on stdout:
  ready rest 127.0.0.1:8081
  ready grpc 127.0.0.1:50051
  ready admin 127.0.0.1:8082

Change behaviour at run time through the admin endpoint (JSON; only named fields change;
changes need Content-Type: application/json and are refused from another Origin):
  curl -X POST localhost:8082/admin/behavior --json '{\"latency\": \"fixed:5ms\"}'
  curl -X POST localhost:8082/admin/behavior/orders --json '{\"error_rate\": 1.0}'
  curl localhost:8082/admin/behavior
  curl -X DELETE localhost:8082/admin/behavior

Services: users, orders, products, inventory (REST paths /api/users/{id}, /api/users,
/api/orders/{id}, /api/orders?user_id=N, /api/products/{id}, /api/products/search?q=kettle,
/api/inventory/{product_id}; gRPC gwbench.v1.UserService etc. and grpc.health.v1).
Ids 1..=1000000 exist; others answer NOT_FOUND / 404. Orders have ids ord-<user>-<1..20>.";

/// gwbench: measure what an API gateway costs.
///
/// Mock backends (REST and gRPC), a gateway (REST proxy, REST→gRPC transcoding, aggregation,
/// JWT auth, rate limits, breakers, caching), an open-loop load generator, and `compare` /
/// `saturate` / `report`, which measure the latency and CPU the gateway adds.
#[derive(Debug, Parser)]
#[command(
    name = "gwbench",
    version = env!("GWBENCH_VERSION"),
    propagate_version = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the mock REST (hyper) and gRPC (tonic) backends with controllable latency and faults.
    #[command(after_help = BACKENDS_EXAMPLES)]
    Backends(BackendsArgs),
    /// Offer load to any HTTP or gRPC target at a constant (open-loop) or maximal rate and report
    /// coordinated-omission-corrected latency.
    #[command(after_help = LOAD_EXAMPLES)]
    Load(Box<LoadArgs>),
    /// Run the API gateway: REST/JSON routes transcoded to gRPC from the protos'
    /// google.api.http annotations, and reverse-proxy routes to HTTP upstreams.
    #[command(after_help = GATEWAY_EXAMPLES)]
    Gateway(GatewayArgs),
    /// The main job: how much latency and CPU does the gateway add? Starts the mocks and the
    /// gateway on loopback and offers the same load directly and through the gateway.
    #[command(after_help = COMPARE_EXAMPLES)]
    Compare(CompareArgs),
    /// Mint a JWT the gateway accepts (for the default config's dev key, or a config's first
    /// shared-secret key, or a private key file).
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenArgs),
    /// At what request rate does the gateway become the bottleneck? Steps the offered rate up,
    /// then bisects to the knee, for the direct path and through the gateway.
    #[command(after_help = SATURATE_EXAMPLES)]
    Saturate(SaturateArgs),
    /// Re-render a compare run's report.html from its files, or merge interval logs from several
    /// load-generator machines into one percentile table.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Did my change make it slower? Compares two runs (compare's summary.json, or load.json)
    /// per scenario and percentile, with the runs' confidence intervals; exits 1 when a
    /// regression beyond the threshold is distinguishable from the noise.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout, or write one per subcommand into a directory.
    #[command(after_help = MAN_EXAMPLES)]
    Man(ManArgs),
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  gwbench completions bash > ~/.local/share/bash-completion/completions/gwbench
  gwbench completions zsh > ~/.zfunc/_gwbench          # with fpath+=~/.zfunc in .zshrc
  gwbench completions fish > ~/.config/fish/completions/gwbench.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  gwbench man | man -l -                    # read it now
  gwbench man --out /usr/local/share/man/man1   # gwbench.1 and gwbench-<command>.1";

/// `gwbench completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `gwbench man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write gwbench.1 and one page per subcommand (gwbench-load.1, …) into DIR instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// Every `--help` example text, for the test that runs them.
pub const ALL_EXAMPLES: &[&str] = &[
    EXAMPLES,
    BACKENDS_EXAMPLES,
    LOAD_EXAMPLES,
    GATEWAY_EXAMPLES,
    COMPARE_EXAMPLES,
    TOKEN_EXAMPLES,
    SATURATE_EXAMPLES,
    REPORT_EXAMPLES,
    DIFF_EXAMPLES,
    COMPLETIONS_EXAMPLES,
    MAN_EXAMPLES,
];

const DIFF_EXAMPLES: &str = "\
Examples:
  gwbench diff reports/base reports/new                # compare run directories
  gwbench diff base/summary.json new/summary.json --max-regression 5%
  gwbench diff a/load.json b/load.json --max-regression 10% --max-regression p99=20%
  gwbench diff reports/base reports/new --html diff.html   # both runs' curves on one chart

A row regresses when the new value is worse by more than its threshold AND the two runs'
95 % intervals (compare v2; v1: the rounds' ranges) do not overlap. Load runs carry one value
each: a change beyond the threshold counts, marked as untested. Exit codes: 0 no regression,
1 regression, 2 bad input.";

/// `gwbench diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The base run: a directory with summary.json (or load.json), or the file.
    #[arg(value_name = "BASE")]
    pub base: std::path::PathBuf,
    /// The new run, likewise.
    #[arg(value_name = "NEW")]
    pub new: std::path::PathBuf,
    /// Allowed worsening: `10%` for every percentile, or `p99=5%` for one (repeatable;
    /// default 10%).
    #[arg(long, value_name = "LIMIT")]
    pub max_regression: Vec<String>,
    /// Also write a page with both runs' latency-by-percentile curves on one chart per
    /// scenario (from the runs' .hlog files, or a load output's histograms) and the diff.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

const REPORT_EXAMPLES: &str = "\
Examples:
  gwbench report reports/20261128T061500Z-compare            # rewrite its report.html
  gwbench report --merge a.hlog b.hlog c.hlog                # one table from three machines
  gwbench report --merge a.hlog b.hlog --hgrm merged.hgrm    # and the merged distribution
  gwbench report --merge seg0.json seg1.json seg2.json seg3.json   # load --segment I/4 outputs

Merging adds the histograms; percentiles are never averaged. Load outputs merge only when they
are every segment of one schedule (the same schedule id), so that the counts add up.";

/// `gwbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A `gwbench compare` run directory (with summary.json, summary.md and the .hlog files).
    #[arg(value_name = "DIR", required_unless_present = "merge")]
    pub dir: Option<std::path::PathBuf>,
    /// Interval logs to merge instead (gwbench load --hlog, or any HdrHistogram interval log),
    /// or the --json outputs of `gwbench load --segment I/N` runs (every segment once): one
    /// result whose counts and histograms are the sums of theirs.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "dir")]
    pub merge: Vec<std::path::PathBuf>,
    /// With --merge: also write the merged distribution (.hgrm, ms) to FILE.
    #[arg(long, value_name = "FILE", requires = "merge")]
    pub hgrm: Option<std::path::PathBuf>,
    /// With --merge of load outputs: print the merged gwbench.load.v1 JSON instead of the
    /// summary.
    #[arg(long, requires = "merge")]
    pub json: bool,
}

const SATURATE_EXAMPLES: &str = "\
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
    /// Directory for the reports (default: reports/<UTC time>-saturate).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// No progress display.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

const TOKEN_EXAMPLES: &str = "\
Examples:
  curl -H \"Authorization: Bearer $(gwbench token --sub alice)\" localhost:8080/secure/api/users/42
  gwbench token --sub bob --ttl 10m --scope 'read write'
  gwbench token --sub carol --alg RS256 --key-file private.pem --kid k1";

/// `gwbench token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long, default_value = "alice")]
    pub sub: String,
    /// Lifetime.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
    /// Space-separated scopes (`scope`).
    #[arg(long)]
    pub scope: Option<String>,
    /// Gateway config whose [auth] issuer, audience and first HS key to use (default: embedded).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Sign with this algorithm and private key instead (RS256, ES256, …).
    #[arg(long, requires = "key_file")]
    pub alg: Option<String>,
    /// PEM private key for --alg.
    #[arg(long, value_name = "FILE", requires = "alg")]
    pub key_file: Option<std::path::PathBuf>,
    /// Key id for the header (default: the config key's kid).
    #[arg(long)]
    pub kid: Option<String>,
}

const COMPARE_EXAMPLES: &str = "\
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
The default scenarios are rest, grpc and full.
Direct and gateway runs alternate in rounds so that drift hits both. First an A/A calibration
runs the direct path against itself: what it finds is this machine's noise floor right now.
Every percentile and overhead (gateway - direct) comes with a 95 % confidence interval
(bootstrap over 1-second intervals); an overhead whose interval reaches into the noise floor
is printed as ~0 (not distinguishable from noise). Also CPU per 1,000 requests of each
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

/// `gwbench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Offered rate, requests per second, the same on both sides.
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
    /// it (then overheads are judged by their intervals alone).
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = parse_duration)]
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
    /// No progress bar.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

const GATEWAY_EXAMPLES: &str = "\
Examples:
  gwbench backends &                    # mocks on :8081 (REST) and :50051 (gRPC)
  gwbench gateway                       # :8080, admin :9901, the embedded default config
  curl localhost:8080/api/users/42      # REST -> gRPC GetUser, transcoded
  curl localhost:8080/rest/api/users/42 # REST -> REST, proxied (prefix /rest stripped)
  curl localhost:9901/routes            # what is routed where
  gwbench gateway --print-default-config > gw.toml; gwbench gateway --config gw.toml
  gwbench gateway --upstream-grpc 10.0.0.5:50051 --upstream-grpc 10.0.0.6:50051

Every RPC with a google.api.http annotation in the descriptor set (the embedded one,
--descriptor-set FILE: a FileDescriptorSet with imports, --proto FILE compiled at start, or
--reflect: asked from the gRPC upstream over server reflection) becomes a route; a
server-streaming RPC answers newline-delimited JSON as its messages arrive. SIGHUP (or POST
/reload on the admin port) re-reads the configuration and swaps it in without a restart; a bad
one is refused and the old one kept. gRPC errors map to
HTTP statuses as grpc-gateway does; errors are JSON: {\"error\": {\"code\", \"message\",
\"http_status\"}}. Prints `ready http ADDR` and `ready admin ADDR` when listening; on SIGTERM
or Ctrl-C stops accepting and lets requests in flight finish (limits.drain_timeout).";

/// `gwbench gateway`.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Configuration file (TOML); default: the embedded configuration.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Print the embedded default configuration and exit.
    #[arg(long)]
    pub print_default_config: bool,
    /// Build the routes from the configuration and descriptors, print them (and each rule that
    /// would be skipped, with the reason), and exit without listening: exit 0 when every
    /// annotated rule is served, 1 when some would be skipped, 2 when the gateway cannot start.
    #[arg(long)]
    pub check: bool,
    /// Listen address for REST/JSON (overrides listen.http; port 0 = any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Listen address for the admin endpoint (overrides listen.admin; loopback by default, as it
    /// shows routes and metrics).
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<std::net::SocketAddr>,
    /// Terminate TLS on the REST/JSON listener with this certificate chain (PEM; with
    /// --tls-key; overrides [listen.tls]). ALPN offers h2 and http/1.1.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Endpoint of the gRPC upstream of transcoded routes (repeatable; replaces the configured ones).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream_grpc: Vec<String>,
    /// Endpoint of the HTTP upstream of proxy routes (repeatable; replaces the configured ones).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream_rest: Vec<String>,
    /// FileDescriptorSet whose annotated RPCs become routes (overrides transcode.descriptor_set).
    #[arg(long, value_name = "FILE")]
    pub descriptor_set: Option<std::path::PathBuf>,
    /// A .proto file whose annotated RPCs become routes, compiled at start without protoc
    /// (repeatable; sets transcode.protos; instead of --descriptor-set).
    #[arg(long = "proto", value_name = "FILE", conflicts_with = "descriptor_set")]
    pub protos: Vec<std::path::PathBuf>,
    /// Import path for --proto (repeatable; default: each file's directory). google/api and
    /// protobuf's well-known types are bundled.
    #[arg(
        short = 'I',
        long = "proto-path",
        value_name = "DIR",
        requires = "protos"
    )]
    pub proto_paths: Vec<std::path::PathBuf>,
    /// Ask the gRPC upstream for its services over gRPC server reflection at start (v1, or
    /// v1alpha) and route what it annotates: no descriptor file needed (sets transcode.reflect;
    /// `gwbench backends` serves reflection).
    #[arg(long, conflicts_with_all = ["descriptor_set", "protos"])]
    pub reflect: bool,
    /// Refuse to start when an annotated rule cannot be served (sets transcode.strict); by
    /// default such a rule is skipped with a warning naming the RPC and the reason, and listed
    /// under "skipped" in the admin endpoint's /routes.
    #[arg(long)]
    pub strict: bool,
    /// Write one JSON line per request to FILE, or to stderr with `-` (sets [access_log];
    /// off the request path: lines that find its queue full are dropped and counted).
    #[arg(long, value_name = "FILE|-")]
    pub access_log: Option<String>,
    /// Worker threads (default: one per core this process may run on).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Serving model: per-core = one thread per worker, each with its own listener
    /// (SO_REUSEPORT), runtime and upstream connections, limits and caches shared;
    /// work-stealing = one multi-threaded tokio runtime whose threads share every task.
    #[arg(long, value_enum, default_value_t = ServingModel::PerCore)]
    pub runtime: ServingModel,
}

/// How a server (the gateway, the mocks) spreads requests over its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServingModel {
    /// One current-thread runtime per worker thread, each with its own listener.
    PerCore,
    /// One multi-threaded, work-stealing runtime.
    WorkStealing,
}

const LOAD_EXAMPLES: &str = "\
Examples:
  gwbench load http://127.0.0.1:8081/api/users/42 --rps 5000 --duration 10s
  gwbench load 'http://127.0.0.1:8081/api/users/{rand:1-1000}' --rps 20000 -c 64
  gwbench load http://127.0.0.1:8081/api/users/1 --rps max -c 16        # closed loop, as wrk
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.UserService/GetUser --data '{\"id\": 42}'
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.UserService/GetUser --data '{\"id\": {rand:1-1000}}'
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.InventoryService/WatchStock --data '{\"product_id\": 7, \"updates\": 20}'
  gwbench load http://127.0.0.1:50051 --grpc gwbench.v1.InventoryService/SyncStock --data '{\"product_id\": 7, \"delta\": 1}' --stream-messages 5 --stream-interval 10ms
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
    /// The gRPC request message as proto3 JSON. {seq} (the call's number) and {rand:A-B} in it
    /// are filled in per call (then each call encodes its own message); other braces are JSON.
    #[arg(long, default_value = "{}", value_name = "JSON", requires = "grpc")]
    pub data: String,
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

fn parse_segment(s: &str) -> Result<crate::load::schedule::Segment, String> {
    s.parse().map_err(|e: crate::load::schedule::RateError| e.0)
}

fn parse_start_at(s: &str) -> Result<std::time::SystemTime, String> {
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

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 500ms, 10s, 1m"))
}

/// Which mocks `gwbench backends` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Serve {
    /// REST and gRPC.
    Both,
    /// Only the REST mock.
    Rest,
    /// Only the gRPC mock.
    Grpc,
}

/// `gwbench backends`.
#[derive(Debug, Args)]
pub struct BackendsArgs {
    /// Address every listener binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub host: IpAddr,
    /// Port of REST instance 0; instance i listens on PORT + i (0 = free ports).
    #[arg(long, default_value_t = DEFAULT_REST_PORT, value_name = "PORT")]
    pub rest_port: u16,
    /// Port of gRPC instance 0; instance i listens on PORT + i (0 = free ports).
    #[arg(long, default_value_t = DEFAULT_GRPC_PORT, value_name = "PORT")]
    pub grpc_port: u16,
    /// Port of the admin endpoint shared by all mocks (0 = a free port). It listens on the
    /// mocks' host, loopback by default: it changes their behaviour, so keep it off networks.
    #[arg(long, default_value_t = DEFAULT_ADMIN_PORT, value_name = "PORT")]
    pub admin_port: u16,
    /// Instances of each mock (for load-balancing tests).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub instances: u16,
    /// Which mocks to start.
    #[arg(long, value_enum, default_value_t = Serve::Both)]
    pub serve: Serve,
    /// Added latency: none | fixed:5ms | uniform:1ms..10ms | exp:2ms (mean) | lognormal:5ms,0.5
    /// (median, sigma). Applied with a 1 ms timer resolution.
    #[arg(long, default_value = "none", value_name = "SPEC", value_parser = parse_latency)]
    pub latency: Latency,
    /// Fraction of requests (0..=1) answered with gRPC UNAVAILABLE / HTTP 503.
    #[arg(long, default_value = "0", value_name = "RATE", value_parser = parse_error_rate)]
    pub error_rate: f64,
    /// Periodic stalls LENGTH/PERIOD, e.g. 200ms/5s: every 5 s, hold all requests for 200 ms.
    #[arg(long, value_name = "SPEC", value_parser = parse_stall)]
    pub stall: Option<Stall>,
    /// Serving threads (default: one per core this process may run on).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Serving model: per-core = one current-thread runtime per thread, each with its own
    /// listeners (SO_REUSEPORT) serving the same mocks; work-stealing = one multi-threaded
    /// tokio runtime whose threads share every task.
    #[arg(long, value_enum, default_value_t = ServingModel::PerCore)]
    pub runtime: ServingModel,
}

fn parse_latency(s: &str) -> Result<Latency, String> {
    s.parse()
        .map_err(|e: behavior::BehaviorError| e.to_string())
}

fn parse_error_rate(s: &str) -> Result<f64, String> {
    behavior::parse_error_rate(s).map_err(|e| e.to_string())
}

fn parse_stall(s: &str) -> Result<Stall, String> {
    s.parse()
        .map_err(|e: behavior::BehaviorError| e.to_string())
}

impl BackendsArgs {
    /// The typed configuration these flags describe.
    pub fn to_config(&self) -> BackendsConfig {
        BackendsConfig {
            host: self.host,
            rest_port: self.rest_port,
            grpc_port: self.grpc_port,
            admin_port: self.admin_port,
            instances: self.instances as usize,
            rest: self.serve != Serve::Grpc,
            grpc: self.serve != Serve::Rest,
            behavior: Behavior {
                latency: self.latency,
                error_rate: self.error_rate,
                stall: self.stall,
            },
            workers: match self.runtime {
                ServingModel::PerCore => self.threads.map_or_else(
                    || std::thread::available_parallelism().map_or(1, usize::from),
                    usize::from,
                ),
                ServingModel::WorkStealing => 1,
            },
        }
    }
}

/// Renders a clap usage error as one line (`invalid value 'x' for '--latency <SPEC>': ...`)
/// followed by where to get help, instead of clap's multi-line block.
pub fn one_line_error(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    // The first paragraph, on one line (clap lists missing arguments on the lines after a ':').
    let first: Vec<&str> = rendered
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let text = first.join(" ");
    let text = text.trim_start_matches("error: ");
    let text = if text.is_empty() {
        "invalid command line"
    } else {
        text
    };
    format!("{text} (see gwbench --help)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_latency_is_a_one_line_error_naming_the_value() {
        let err =
            Cli::try_parse_from(["gwbench", "backends", "--latency", "fixed:10x"]).unwrap_err();
        let line = one_line_error(&err);
        assert!(line.contains("10x") && line.contains("--latency"), "{line}");
        assert!(!line.contains('\n'));
    }
}
