//! `gwbench gateway`: its flags.

use clap::{Args, ValueEnum};

pub(super) const GATEWAY_EXAMPLES: &str = "\
Examples:
  gwbench backends &                    # mocks on :8081 (REST) and :50051 (gRPC)
  gwbench gateway                       # :8080, admin :9901, the embedded default config
  curl localhost:8080/api/users/42      # REST -> gRPC GetUser, transcoded
  curl localhost:8080/rest/api/users/42 # REST -> REST, proxied (prefix /rest stripped)
  curl localhost:9901/routes            # what is routed where
  gwbench gateway --print-default-config > gw.toml; gwbench gateway --config gw.toml
  gwbench gateway --upstream-grpc 10.0.0.5:50051 --upstream-grpc 10.0.0.6:50051
  gwbench gateway --proto api.proto -I protos --openapi openapi.json   # document, then exit

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
    /// Write an OpenAPI 3.1 document of the transcoded routes to FILE (`-`: stdout) and exit
    /// without listening: every operation the rules bind, with its path and query parameters,
    /// request body and responses in the proto3 JSON mapping, the error shape, the JWT scheme
    /// on mounts with auth, and the protos' comments. Same inputs as serving (--config,
    /// --proto, --descriptor-set, --reflect).
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub openapi: Option<std::path::PathBuf>,
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
    /// Which server reads cleartext HTTP/1.1 (overrides listen.http1): lean = heads parsed in
    /// place and answers written in one write, handing hyper what it does not serve
    /// (upgrades, h2c, `Expect`, chunked bodies) — the default; hyper = hyper for every
    /// request. TLS and h2c are hyper's either way.
    #[arg(long, value_enum, value_name = "SERVER")]
    pub http1: Option<Http1Choice>,
}

/// `--http1`: the server of cleartext HTTP/1.1 requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Http1Choice {
    /// The lean path, hyper for what it leaves.
    Lean,
    /// hyper for every request.
    Hyper,
}

/// How a server (the gateway, the mocks) spreads requests over its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServingModel {
    /// One current-thread runtime per worker thread, each with its own listener.
    PerCore,
    /// One multi-threaded, work-stealing runtime.
    WorkStealing,
}
