//! Gateway configuration: TOML (serde) with an embedded default that matches the mock backends'
//! default ports, checked once into typed values before any port is bound. Errors name the file,
//! the key and what was expected.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The embedded default: every annotated RPC transcoded to the gRPC mock, `/rest/*` proxied to
/// the REST mock, listeners on the default ports.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A configuration that cannot be used.
#[derive(Debug, Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    /// The file (or "embedded default config").
    pub source_name: String,
    /// What is wrong, naming the key.
    pub message: String,
}

/// A duration written as text ("500ms").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextDuration(pub Duration);

impl<'de> Deserialize<'de> for TextDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(TextDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); use e.g. 500ms or 5s"
                ))
            })
    }
}

impl Serialize for TextDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// `[listen]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// REST/JSON listener.
    pub http: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// TLS on the REST/JSON listener (`[listen.tls]`); none: cleartext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenTls>,
    /// Which server reads cleartext HTTP/1.1 (`http1 = "lean"`, the default, or `"hyper"`).
    #[serde(default)]
    pub http1: Http1Server,
}

/// `[listen] http1`: the server of cleartext HTTP/1.1 requests. h2c, TLS and upgrades are
/// hyper's either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Http1Server {
    /// The lean path (`net/lean.rs`): heads parsed in place, one write per answer; what it
    /// does not serve (upgrades, h2c, `Expect`, chunked bodies) goes to hyper.
    #[default]
    Lean,
    /// hyper for every request (the path before issue #30, kept to compare and to fall back).
    Hyper,
}

/// `[listen.tls]`: the listener terminates TLS (ALPN h2 and http/1.1).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// The certificate chain, PEM.
    pub cert: std::path::PathBuf,
    /// Its private key, PEM.
    pub key: std::path::PathBuf,
    /// Require client certificates signed by this CA (PEM): mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<std::path::PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Graceful-shutdown bound.
    pub drain_timeout: TextDuration,
    /// How long a request's head may take to arrive.
    #[serde(default = "header_read_timeout")]
    pub header_read_timeout: TextDuration,
    /// How long a client connection may idle between requests.
    #[serde(default = "idle_timeout")]
    pub idle_timeout: TextDuration,
    /// Client connections at once (0: derived from the descriptor limit).
    #[serde(default)]
    pub max_connections: usize,
}

fn header_read_timeout() -> TextDuration {
    TextDuration(crate::net::HEADER_READ_TIMEOUT)
}

fn idle_timeout() -> TextDuration {
    TextDuration(crate::net::IDLE_TIMEOUT)
}

impl Limits {
    /// What the gateway's listeners allow their clients.
    pub fn serve_limits(&self) -> crate::net::ServeLimits {
        crate::net::ServeLimits {
            drain: self.drain_timeout.0,
            header_read_timeout: self.header_read_timeout.0,
            idle_timeout: self.idle_timeout.0,
            max_connections: match self.max_connections {
                0 => crate::net::default_max_connections(),
                n => n,
            },
        }
    }
}

/// The JSON shape of a transcoded route's errors (`[transcode] error_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorFormat {
    /// `{"error": {"code": "NOT_FOUND", "message", "http_status", "details"?}}`, the shape of
    /// every other error the gateway answers.
    #[default]
    Gwbench,
    /// google.rpc.Status as JSON, as grpc-gateway and Envoy's transcoder answer:
    /// `{"code": 5, "message", "details": [...]}`.
    Google,
}

/// How a server-streaming RPC's messages are written (`[transcode] stream_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamFormat {
    /// Newline-delimited JSON, each message as `{"result": <message>}` and an error as
    /// `{"error": ...}` (grpc-gateway's), `application/x-ndjson`.
    #[default]
    Ndjson,
    /// One JSON array of the messages (Envoy's transcoder's); an error mid-stream becomes its
    /// last element, `{"error": ...}`.
    Array,
}

/// `[transcode]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Transcode {
    /// Upstream serving the annotated RPCs.
    pub upstream: String,
    /// A FileDescriptorSet file; None = the embedded one.
    #[serde(default)]
    pub descriptor_set: Option<std::path::PathBuf>,
    /// `.proto` files compiled at start instead (no protoc needed).
    #[serde(default)]
    pub protos: Vec<std::path::PathBuf>,
    /// Where `protos` import from (default: each file's directory); `google/api` and the
    /// well-known types are bundled.
    #[serde(default)]
    pub proto_paths: Vec<std::path::PathBuf>,
    /// Ask the upstream's first endpoint for its descriptors at start (gRPC server
    /// reflection, v1 or v1alpha) instead of a file.
    #[serde(default)]
    pub reflect: bool,
    /// How long that may take.
    #[serde(default = "reflect_timeout")]
    pub reflect_timeout: TextDuration,
    /// Per-request deadline.
    pub timeout: TextDuration,
    /// JSON keys as proto field names instead of json names.
    #[serde(default)]
    pub proto_field_names: bool,
    /// Emit fields holding default values.
    #[serde(default)]
    pub emit_defaults: bool,
    /// Unknown JSON fields and query parameters are an error.
    #[serde(default = "yes")]
    pub reject_unknown_fields: bool,
    /// The JSON shape of a transcoded route's errors.
    #[serde(default)]
    pub error_format: ErrorFormat,
    /// How server-streaming RPCs' messages are written.
    #[serde(default)]
    pub stream_format: StreamFormat,
    /// Request headers forwarded as gRPC metadata under their own name (an allow-list; the
    /// client's `Grpc-Metadata-<name>` headers are always forwarded as `<name>`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// An annotated rule the gateway cannot serve stops the start (default: it is skipped with
    /// a warning and listed under `skipped` in /routes).
    #[serde(default)]
    pub strict: bool,
    /// Where the annotated routes are mounted, each with its own middleware.
    #[serde(default = "default_mounts")]
    pub mounts: Vec<Mount>,
}

fn reflect_timeout() -> TextDuration {
    TextDuration(std::time::Duration::from_secs(5))
}

fn default_mounts() -> Vec<Mount> {
    vec![Mount::default()]
}

/// `[[transcode.mounts]]`: the annotated routes under a path prefix, with a middleware policy.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Prepended to every annotated path ("" = the paths as annotated).
    pub prefix: String,
    /// Put the upstream's circuit breaker in front of these routes.
    #[serde(default)]
    pub breaker: bool,
    /// Apply `[rate_limit]` to these routes.
    #[serde(default)]
    pub rate_limit: bool,
    /// Require a JWT (`[auth]`) on these routes.
    #[serde(default)]
    pub auth: bool,
    /// Cache GET responses (`[cache]`) on these routes.
    #[serde(default)]
    pub cache: bool,
    /// Only these RPCs (full names, e.g. `gwbench.v1.UserService.GetUser`); default: every
    /// annotated RPC. With it, middleware is configured route by route.
    #[serde(default)]
    pub rpcs: Option<Vec<String>>,
    /// This mount's own rate (requests per `[rate_limit].per`), instead of `[rate_limit].rate`.
    #[serde(default)]
    pub rate: Option<NonZeroU32>,
    /// This mount's own burst, instead of `[rate_limit].burst`.
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
}

/// `[cache]`: the response cache of mounts with `cache = true`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// How long an entry is served.
    pub ttl: TextDuration,
    /// Most entries kept.
    pub max_entries: u64,
    /// Share entries between callers (otherwise the key includes the JWT subject or API key).
    #[serde(default)]
    pub public: bool,
    /// Header carrying the API key (for the identity part of the key).
    pub api_key_header: String,
}

impl Default for CacheConfig {
    /// The embedded default config's `[cache]`: the defaults are written once, there.
    fn default() -> Self {
        embedded().cache.clone()
    }
}

/// `[[auth.keys]]`: one verification key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthKey {
    /// Key id tokens name in their header (`kid`); optional.
    #[serde(default)]
    pub kid: Option<String>,
    /// Algorithms this key accepts (one family: HS*, RS* or ES*).
    pub algorithms: Vec<String>,
    /// Shared secret, for HS*.
    #[serde(default)]
    pub secret: Option<String>,
    /// PEM public key, for RS* / ES*.
    #[serde(default)]
    pub public_key_file: Option<std::path::PathBuf>,
}

/// `[auth]`: JWT verification.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Required `iss`.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: TextDuration,
    /// A scope (in `scope`, `scp` or `roles`) every token must have; 403 otherwise.
    #[serde(default)]
    pub required_scope: Option<String>,
    /// Path prefixes that skip authentication.
    #[serde(default)]
    pub public_paths: Vec<String>,
    /// Claims forwarded upstream: claim name → header / metadata name.
    #[serde(default)]
    pub forward_claims: std::collections::BTreeMap<String, String>,
    /// A JWKS file with more keys (selected by `kid`).
    #[serde(default)]
    pub jwks_file: Option<std::path::PathBuf>,
    /// Verification keys.
    #[serde(default)]
    pub keys: Vec<AuthKey>,
}

/// The embedded default config, parsed once. It sets every section, so parsing it never asks
/// for a section's `Default` (which is read from here).
fn embedded() -> &'static GatewayConfig {
    static CONFIG: std::sync::OnceLock<GatewayConfig> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        GatewayConfig::parse(DEFAULT_CONFIG, "embedded default config")
            .expect("the embedded default config is valid")
    })
}

/// The HS256 secret of the embedded default config's first key (`kid = "dev"`): for trying the
/// gateway on loopback only.
pub fn dev_secret() -> &'static str {
    embedded().auth.keys[0]
        .secret
        .as_deref()
        .expect("the embedded default config's first key is an HS256 secret")
}

impl Default for AuthConfig {
    /// The embedded default config's `[auth]`: the defaults are written once, there.
    fn default() -> Self {
        embedded().auth.clone()
    }
}

/// What a rate limit counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitKey {
    /// The API key header (the client address when absent).
    #[default]
    ApiKey,
    /// The JWT subject (the client address when unauthenticated).
    Sub,
    /// The client address.
    Ip,
}

/// `[rate_limit]`: per-key GCRA limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per key per `per` (0 is refused when the file is read).
    pub rate: NonZeroU32,
    /// The period `rate` is counted over.
    #[serde(default = "one_second")]
    pub per: TextDuration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
    /// What a limit counts against.
    #[serde(default)]
    pub key: RateLimitKey,
    /// Header carrying the API key.
    pub api_key_header: String,
    /// Use the first X-Forwarded-For address as the client address (only behind a trusted proxy).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// How often idle keys are forgotten.
    pub prune_every: TextDuration,
    /// Keys held per allowance: past it, idle keys are pruned (at most once a second) and a new
    /// key that still finds the store full shares one overflow allowance.
    #[serde(default = "max_keys")]
    pub max_keys: usize,
    /// Different allowances for particular keys.
    #[serde(default)]
    pub overrides: Vec<RateLimitOverride>,
    /// Where allowances live.
    #[serde(default)]
    pub store: RateLimitStore,
    /// The shared store, with `store = "redis"`.
    #[serde(default)]
    pub redis: RedisConfig,
}

/// `[rate_limit] store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitStore {
    /// In this process (each instance has its own allowance).
    #[default]
    Local,
    /// In Redis, shared by every instance pointed at it (one GCRA decision per request, one
    /// atomic script).
    Redis,
}

/// What a decision does when Redis is slow or down (`[rate_limit.redis] on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// This instance decides alone, at the limits divided by `instances`.
    #[default]
    Local,
    /// Let the request through.
    Allow,
    /// Refuse it (429, as a spent allowance).
    Deny,
}

/// `[rate_limit.redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    #[serde(default = "redis_url")]
    pub url: String,
    /// How long one decision may take.
    #[serde(default = "redis_timeout")]
    pub timeout: TextDuration,
    /// Prepended to every key.
    #[serde(default = "redis_prefix")]
    pub prefix: String,
    /// When Redis does not answer in time.
    #[serde(default)]
    pub on_error: OnStoreError,
    /// Gateway instances sharing the limits (the `local` fallback divides by it).
    #[serde(default = "one_instance")]
    pub instances: NonZeroU32,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: redis_url(),
            timeout: redis_timeout(),
            prefix: redis_prefix(),
            on_error: OnStoreError::default(),
            instances: one_instance(),
        }
    }
}

fn redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}

fn redis_timeout() -> TextDuration {
    TextDuration(Duration::from_millis(5))
}

fn redis_prefix() -> String {
    "gwbench:rl:".into()
}

fn one_instance() -> NonZeroU32 {
    NonZeroU32::MIN
}

/// `[[rate_limit.overrides]]`: one key's own allowance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    /// The key as the limiter sees it: `key:<api key>`, `sub:<JWT subject>` or `ip:<address>`.
    pub key: String,
    /// Requests per `per`.
    pub rate: NonZeroU32,
    /// The period `rate` is counted over.
    #[serde(default = "one_second")]
    pub per: TextDuration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

fn max_keys() -> usize {
    100_000
}

fn one_second() -> TextDuration {
    TextDuration(Duration::from_secs(1))
}

impl Default for RateLimitConfig {
    /// The embedded default config's `[rate_limit]`: the defaults are written once, there.
    fn default() -> Self {
        embedded().rate_limit.clone()
    }
}

/// `[breaker]`: circuit-breaker settings, one breaker per upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this fraction of the window's requests failed…
    pub failure_ratio: f64,
    /// …over this rolling window…
    pub window: TextDuration,
    /// …with at least this many requests in it.
    pub min_requests: u32,
    /// How long it stays open before probing.
    pub cooldown: TextDuration,
    /// Cap of the cooldown, which doubles each time a probe fails.
    pub max_cooldown: TextDuration,
    /// Probes allowed at once while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    /// The embedded default config's `[breaker]`: the defaults are written once, there.
    fn default() -> Self {
        embedded().breaker.clone()
    }
}

fn yes() -> bool {
    true
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// gRPC over h2c.
    Grpc,
    /// HTTP/1.1.
    Http,
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The less busy of two random endpoints.
    LeastRequest,
}

/// `[[upstreams]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Name routes refer to.
    pub name: String,
    /// gRPC or HTTP.
    pub protocol: UpstreamProtocol,
    /// host:port of each instance.
    pub endpoints: Vec<String>,
    /// Balancing policy.
    #[serde(default)]
    pub lb: LbPolicy,
    /// TCP connect timeout (the TLS handshake has as long again).
    pub connect_timeout: TextDuration,
    /// TLS (and mTLS) to the endpoints; none: cleartext (h2c for gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// `[upstreams.tls]`: how the gateway talks TLS to an upstream's endpoints.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Trust these CA certificates (PEM) instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for endpoints that require mTLS, with `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
    /// The name checked and sent (SNI); default: each endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Accept any certificate (testing only).
    #[serde(default)]
    pub insecure: bool,
}

/// `[[proxy]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRoute {
    /// Path prefix, starting and ending with '/'.
    pub prefix: String,
    /// An upstream with protocol "http".
    pub upstream: String,
    /// Removed from the start of the path before forwarding ("" keeps it).
    #[serde(default)]
    pub strip_prefix: String,
    /// Per-request deadline.
    pub timeout: TextDuration,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listeners.
    pub listen: Listen,
    /// Limits.
    pub limits: Limits,
    /// Transcoded routes.
    pub transcode: Transcode,
    /// Upstreams.
    pub upstreams: Vec<Upstream>,
    /// Proxy routes.
    #[serde(default)]
    pub proxy: Vec<ProxyRoute>,
    /// Circuit breakers.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Rate limits.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// JWT authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Response cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Fan-out aggregations.
    #[serde(default)]
    pub aggregations: Vec<AggregationConfig>,
    /// The access log.
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// Spans over OTLP.
    #[serde(default)]
    pub tracing: TracingConfig,
    /// WebSocket limits.
    #[serde(default)]
    pub websocket: WebSocketConfig,
}

/// `[websocket]`: the limits of proxied and translated WebSocket connections.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Largest message, all fragments together.
    pub max_message_bytes: usize,
    /// Largest frame.
    pub max_frame_bytes: usize,
    /// Most fragments in one message.
    pub max_fragments: u32,
    /// No frame either way for this long: closed.
    pub idle_timeout: TextDuration,
    /// A peer that does not take its bytes for this long: closed.
    pub send_timeout: TextDuration,
    /// Open connections per worker.
    pub max_connections: usize,
}

impl Default for WebSocketConfig {
    /// The embedded default config's `[websocket]`.
    fn default() -> Self {
        embedded().websocket.clone()
    }
}

impl WebSocketConfig {
    /// The limits every WebSocket connection of the gateway is held to.
    pub fn limits(&self) -> crate::ws::Limits {
        crate::ws::Limits {
            max_message: self.max_message_bytes,
            max_frame: self.max_frame_bytes,
            max_fragments: self.max_fragments,
            idle_timeout: self.idle_timeout.0,
            send_timeout: self.send_timeout.0,
            ..crate::ws::Limits::default()
        }
    }
}

/// `[tracing]`: spans per request and per upstream call, exported over OTLP/gRPC.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC endpoint; empty: no spans.
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// The share of new traces sampled (0 to 1).
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    /// The embedded default config's `[tracing]`.
    fn default() -> Self {
        embedded().tracing.clone()
    }
}

/// `[access_log]`: one JSON line per request, off the request path.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// Write it.
    pub enabled: bool,
    /// `-` for stderr, else a file (appended to).
    pub path: String,
    /// Lines waiting to be written, at most; past it lines are dropped and counted.
    pub queue: usize,
}

impl Default for AccessLogConfig {
    /// The embedded default config's `[access_log]`.
    fn default() -> Self {
        embedded().access_log.clone()
    }
}

/// `[[aggregations]]`: one GET path answered by several RPCs of the transcode upstream.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// Name, for messages.
    pub name: String,
    /// The GET path it answers.
    pub path: String,
    /// One deadline for the whole.
    pub timeout: TextDuration,
    /// The calls.
    pub parts: Vec<AggregationPart>,
}

/// `[[aggregations.parts]]`: one call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationPart {
    /// Key of its result in the document.
    pub name: String,
    /// `package.Service/Method`.
    pub rpc: String,
    /// The request as JSON, with `{query.NAME}`, `{PART.path}` and `{item.path}` placeholders.
    #[serde(default)]
    pub request: serde_json::Map<String, serde_json::Value>,
    /// A part whose result this one needs (runs after it).
    #[serde(default)]
    pub depends_on: Option<String>,
    /// With depends_on: call once per item of this array in the dependency's result.
    #[serde(default)]
    pub for_each: Option<String>,
    /// Without it the whole answer fails (502, or 504 on its deadline).
    #[serde(default)]
    pub required: bool,
    /// A shorter deadline for this part.
    #[serde(default)]
    pub timeout: Option<TextDuration>,
}

mod validate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_parses_and_matches_the_mock_ports() {
        let cfg = GatewayConfig::default_config();
        assert_eq!(cfg.listen.http.port(), 8080);
        assert_eq!(cfg.listen.admin.port(), 9901);
        assert_eq!(cfg.upstream("grpc").unwrap().endpoints, ["127.0.0.1:50051"]);
        assert_eq!(cfg.upstream("rest").unwrap().endpoints, ["127.0.0.1:8081"]);
        assert_eq!(cfg.proxy[0].strip_prefix, "/rest");
        // What it prints parses back to the same thing.
        let again = GatewayConfig::parse(&cfg.to_toml(), "printed").unwrap();
        assert_eq!(again.to_toml(), cfg.to_toml());
    }

    #[test]
    fn errors_name_the_key() {
        let base = DEFAULT_CONFIG;
        for (from, to, needle) in [
            (
                "lb = \"round_robin\"             # or",
                "lb = \"random\" # or",
                "random",
            ),
            (
                "timeout = \"5s\"                 # per-request",
                "timeout = \"5x\" # ",
                "5x",
            ),
            (
                "upstream = \"grpc\"              # the",
                "upstream = \"nope\" # ",
                "transcode.upstream: no upstream named \"nope\"",
            ),
            (
                "endpoints = [\"127.0.0.1:8081\"]",
                "endpoints = [\"localhost\"]",
                "upstreams[1].endpoints[0] (rest)",
            ),
            (
                "endpoints = [\"127.0.0.1:8081\"]",
                "endpoints = []",
                "needs at least one",
            ),
            (
                "endpoints = [\"127.0.0.1:8081\"]",
                "endpoints = [\"http://127.0.0.1:8081\"]",
                "upstreams[1].endpoints[0] (rest): \"http://127.0.0.1:8081\" is not host:port",
            ),
            (
                "endpoints = [\"127.0.0.1:8081\"]",
                "endpoints = [\"127.0.0.1:8081/api\"]",
                "is not host:port",
            ),
            (
                "timeout = \"5s\"                 # per-request",
                "timeout = \"0s\" # ",
                "transcode.timeout: must be above 0",
            ),
            (
                "connect_timeout = \"1s\"\n\n[[upstreams]]",
                "connect_timeout = \"0s\"\n\n[[upstreams]]",
                "upstreams[0].connect_timeout: must be above 0",
            ),
            (
                "prefix = \"/rest/\"",
                "prefix = \"rest\"",
                "proxy[0].prefix",
            ),
            (
                "upstream = \"rest\"",
                "upstream = \"grpc\"",
                "expected Http",
            ),
            (
                "max_body_bytes = 1048576",
                "max_body_byte = 1",
                "max_body_byte",
            ),
        ] {
            assert!(base.contains(from), "{from}");
            let err = GatewayConfig::parse(&base.replacen(from, to, 1), "test.toml")
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("test.toml: "), "{err}");
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
