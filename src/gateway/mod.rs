//! The gateway: REST/JSON in → route → (middleware, next issue) → REST proxy or gRPC
//! transcoding. [`Gateway::handle`] is the whole request path, generic over the request body so
//! tests can drive it without a socket; [`server`] puts it on a port.
//!
//! Request path, in order: request id → path check → route match → body limit → deadline →
//! upstream (transcode | proxy) → response headers.

pub mod aggregate;
pub mod grpc;
pub mod h1;
pub mod middleware;
pub mod router;
pub mod server;
pub mod stack;
pub mod status;
pub mod transcode;
pub mod upstream;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Limited};
use rand::Rng;
use thiserror::Error;
use tonic::Code;

use crate::config::GatewayConfig;
use crate::net::PeerAddr;
use router::{Router, Target};
use status::GwError;
use transcode::JsonOptions;
use upstream::Upstream;

/// Response body: a whole body (JSON, or a proxied answer that arrived with its head), or the
/// rest of a proxied answer streaming from the upstream connection.
pub type GwBody = h1::ProxyBody;

/// Header carrying the request id to upstreams and back to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Header a client may set to shorten the route's deadline (`500ms`, `2s`, or seconds).
pub const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// The gateway could not be built from its configuration.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct GatewayError(pub String);

/// A request after routing, as the middleware stack and the upstream call see it.
#[derive(Debug)]
pub struct GwRequest {
    /// Method, URI, headers, extensions (peer address).
    pub parts: http::request::Parts,
    /// The whole request body (already bounded by the body limit).
    pub body: Bytes,
    /// Values of the route's path variables, in order.
    pub params: Vec<String>,
    /// Where the route leads.
    pub target: Target,
    /// The route's path template (for metrics).
    pub route: std::sync::Arc<str>,
    /// Index of the upstream that serves it.
    pub upstream: usize,
    /// The request id (also sent upstream and back).
    pub request_id: HeaderValue,
    /// Time the upstream call may take.
    pub deadline: Duration,
}

/// A response of the gateway.
pub type GwResponse = Response<GwBody>;

/// A mount's middleware stack around the upstream call. Errors are responses already.
pub type RouteService =
    tower::util::BoxCloneSyncService<GwRequest, GwResponse, std::convert::Infallible>;

/// What the innermost service (the upstream call) needs.
#[derive(Debug)]
pub struct Core {
    upstreams: Vec<Upstream>,
    json: JsonOptions,
}

/// The built gateway: routes, one middleware stack per mount, upstream pools and options.
/// Cheap to share behind an `Arc`.
pub struct Gateway {
    router: Router,
    stacks: Vec<RouteService>,
    rate_limit_stores: Vec<std::sync::Arc<dyn middleware::KeyStore>>,
    transcode_upstream: usize,
    transcode_timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("router", &self.router)
            .field("stacks", &self.stacks.len())
            .finish()
    }
}

impl Gateway {
    /// Builds routes (from the descriptor set's annotations and the proxy routes) and upstream
    /// pools. Must run inside a tokio runtime; opens no connection yet.
    pub fn new(cfg: &GatewayConfig) -> Result<Gateway, GatewayError> {
        Gateway::build(cfg, None)
    }

    /// The same gateway with `upstream` in place of the upstream call (transcode, proxy,
    /// aggregate): an in-process stub, so benchmarks measure the gateway's own cost without a
    /// network or a backend. Everything before it (routing, body, deadline, middleware) is real.
    pub fn with_upstream(
        cfg: &GatewayConfig,
        upstream: RouteService,
    ) -> Result<Gateway, GatewayError> {
        Gateway::build(cfg, Some(upstream))
    }

    fn build(cfg: &GatewayConfig, inner: Option<RouteService>) -> Result<Gateway, GatewayError> {
        let pool = match &cfg.transcode.descriptor_set {
            Some(path) => crate::load::grpc::load_descriptor_set(path)
                .map_err(|e| GatewayError(e.to_string()))?,
            None => crate::proto::descriptor_pool().clone(),
        };
        let upstreams = cfg
            .upstreams
            .iter()
            .map(Upstream::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(GatewayError)?;
        let index_of = |name: &str| upstreams.iter().position(|u| u.name == name);
        let mut router = Router::new();
        let mut paths = HashMap::new();
        // Stack 0 (no middleware) serves proxy routes; mount i is served by stack i + 1.
        for (mount, m) in cfg.transcode.mounts.iter().enumerate() {
            router
                .add_annotated(&pool, &m.prefix, m.rpcs.as_deref(), mount + 1, &mut paths)
                .map_err(GatewayError)?;
        }
        for p in &cfg.proxy {
            let target = router::ProxyTarget {
                prefix: p.prefix.clone(),
                strip: p.strip_prefix.clone(),
                upstream: index_of(&p.upstream)
                    .ok_or_else(|| GatewayError(format!("no upstream {}", p.upstream)))?,
                timeout: p.timeout.0,
            };
            router
                .add_proxy(target, &p.upstream, 0, &mut paths)
                .map_err(GatewayError)?;
        }
        for a in &cfg.aggregations {
            let agg = aggregate::Aggregation::new(a, &pool).map_err(GatewayError)?;
            router
                .add_aggregate(std::sync::Arc::new(agg), 0, &mut paths)
                .map_err(GatewayError)?;
        }
        let t = &cfg.transcode;
        let transcode_upstream = index_of(&t.upstream)
            .ok_or_else(|| GatewayError(format!("no upstream {}", t.upstream)))?;
        let core = std::sync::Arc::new(Core {
            upstreams,
            json: JsonOptions::new(
                t.proto_field_names,
                t.emit_defaults,
                t.reject_unknown_fields,
            ),
        });
        let rl = &cfg.rate_limit;
        let store = middleware::GovernorStore::new(
            std::num::NonZeroU32::new(rl.rate)
                .ok_or_else(|| GatewayError("rate_limit.rate must be above 0".into()))?,
            rl.per.0,
            std::num::NonZeroU32::new(rl.burst)
                .ok_or_else(|| GatewayError("rate_limit.burst must be above 0".into()))?,
        );
        let store: std::sync::Arc<dyn middleware::KeyStore> = std::sync::Arc::new(store);
        let verifier = if t.mounts.iter().any(|m| m.auth) {
            Some(std::sync::Arc::new(
                middleware::Verifier::new(&cfg.auth).map_err(GatewayError)?,
            ))
        } else {
            None
        };
        let stores = std::sync::Arc::new(std::sync::Mutex::new(vec![store.clone()]));
        let shared = stack::Shared {
            stores: stores.clone(),
            verifier,
            cache: std::sync::Arc::new(cfg.cache.clone()),
            rate_limit: (
                store.clone(),
                middleware::ratelimit::overrides(rl),
                std::sync::Arc::new(rl.clone()),
            ),
            breakers: std::sync::Arc::new(
                core.upstreams
                    .iter()
                    .map(|u| {
                        std::sync::Arc::new(middleware::Breaker::new(&u.name, cfg.breaker.clone()))
                    })
                    .collect(),
            ),
        };
        let bare = crate::config::Mount::default();
        let inner = inner.unwrap_or_else(|| stack::upstream(core));
        let stacks = std::iter::once(&bare)
            .chain(&t.mounts)
            .map(|m| stack::build(m, inner.clone(), &shared))
            .collect();
        Ok(Gateway {
            router,
            stacks,
            rate_limit_stores: stores.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            transcode_upstream,
            transcode_timeout: t.timeout.0,
            max_body: cfg.limits.max_body_bytes,
        })
    }

    /// Every rate-limit key store (the server prunes them periodically).
    pub fn rate_limit_stores(&self) -> &[std::sync::Arc<dyn middleware::KeyStore>] {
        &self.rate_limit_stores
    }

    /// The route table.
    pub fn routes(&self) -> &[router::RouteInfo] {
        self.router.routes()
    }

    /// Answers one request. Errors become JSON responses here, in one place.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<GwBody>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .cloned()
            .unwrap_or_else(new_request_id);
        let method = req.method().clone();
        let mut resp = match self.route(req, &request_id).await {
            Ok(resp) => resp,
            Err(e) => {
                middleware::metrics::record_unrouted(&method, e.status);
                e.into_response()
            }
        };
        resp.headers_mut().insert(REQUEST_ID, request_id);
        resp
    }

    async fn route<B>(
        &self,
        req: Request<B>,
        request_id: &HeaderValue,
    ) -> Result<Response<GwBody>, GwError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        check_path(path)?;
        let router::RouteMatch {
            target,
            stack: mount,
            route,
            params,
        } = self.router.at(req.method(), path).map_err(|e| match e {
            router::RouteError::NotFound => GwError::grpc(
                Code::NotFound,
                format!("no route for {} {path}", req.method()),
            ),
            router::RouteError::MethodNotAllowed(allow) => {
                let mut err = GwError::http(
                    StatusCode::METHOD_NOT_ALLOWED,
                    Code::Unimplemented,
                    format!(
                        "{} is not allowed on {path}; allowed: {allow}",
                        req.method()
                    ),
                );
                err.allow = Some(allow);
                err
            }
        })?;
        let (target, route) = (target.clone(), route.clone());
        let (route_timeout, upstream) = match &target {
            Target::Transcode(_) => (self.transcode_timeout, self.transcode_upstream),
            Target::Proxy(p) => (p.timeout, p.upstream),
            Target::Aggregate(a) => (a.timeout(), self.transcode_upstream),
        };
        let deadline =
            client_deadline(req.headers()).map_or(route_timeout, |d| d.min(route_timeout));
        let (parts, body) = req.into_parts();
        let body = self.read_body(&parts.headers, body).await?;
        let request = GwRequest {
            parts,
            body,
            params,
            target,
            route,
            upstream,
            request_id: request_id.clone(),
            deadline,
        };
        let stack = self.stacks[mount].clone();
        Ok(tower::ServiceExt::oneshot(stack, request)
            .await
            .unwrap_or_else(|never| match never {}))
    }

    /// Reads the request body up to the limit; a declared oversize body is refused unread.
    async fn read_body<B>(&self, headers: &HeaderMap, body: B) -> Result<Bytes, GwError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let too_large = || {
            GwError::http(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::ResourceExhausted,
                format!("request body is over the limit of {} bytes", self.max_body),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err(too_large());
        }
        match Limited::new(body, self.max_body).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(GwError::grpc(
                Code::InvalidArgument,
                format!("could not read the request body: {e}"),
            )),
        }
    }
}

impl Core {
    /// The innermost service: transcode to gRPC or proxy, within the request's deadline.
    pub async fn call(&self, req: GwRequest) -> GwResponse {
        let deadline = req.deadline;
        if let Target::Aggregate(a) = &req.target {
            // An aggregation keeps what arrived in time, so it enforces its deadline per part.
            let upstream = &self.upstreams[req.upstream];
            return a
                .run(
                    req.parts.uri.query(),
                    upstream,
                    &req.request_id,
                    deadline,
                    &self.json,
                )
                .await;
        }
        let started = std::time::Instant::now();
        // The proxy forwards the request's headers as they are: it takes them, no copy.
        let mut parts = Some(req.parts);
        let call = async {
            match &req.target {
                Target::Transcode(route) => {
                    let parts = parts.as_ref().expect("taken only by the proxy arm");
                    let msg = route.encode_request(
                        &req.params,
                        parts.uri.query(),
                        &req.body,
                        &self.json,
                    )?;
                    let mut metadata = HeaderMap::new();
                    metadata.insert(REQUEST_ID, req.request_id.clone());
                    // Claims the auth layer verified travel as metadata.
                    if let Some(claims) =
                        parts.extensions.get::<middleware::auth::ForwardedClaims>()
                    {
                        for (name, value) in &claims.0 {
                            metadata.insert(name.clone(), value.clone());
                        }
                    }
                    let reply = self.upstreams[req.upstream]
                        .grpc_unary(&route.grpc_path, msg, &metadata, Some(deadline))
                        .await
                        .map_err(|s| match s.code() {
                            // A server that gives up on the grpc-timeout it was sent may answer
                            // CANCELLED (tonic's does): past the deadline, that is a 504.
                            Code::Cancelled if started.elapsed() >= deadline => {
                                deadline_exceeded(deadline)
                            }
                            code => GwError::grpc(code, s.message().to_string()),
                        })?;
                    let json = route.render_response(&reply, &self.json)?;
                    Ok(crate::net::json(StatusCode::OK, json).map(Either::Left))
                }
                Target::Proxy(p) => {
                    self.proxy(p, parts.take(), req.body.clone(), &req.request_id)
                        .await
                }
                Target::Aggregate(_) => unreachable!("answered above"),
            }
        };
        let result = match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(deadline_exceeded(deadline)),
        };
        self.upstreams[req.upstream]
            .latency
            .record(started.elapsed().as_secs_f64());
        result.unwrap_or_else(GwError::into_response)
    }

    /// The name of upstream `i`.
    pub fn upstream_name(&self, i: usize) -> &str {
        &self.upstreams[i].name
    }

    async fn proxy(
        &self,
        p: &router::ProxyTarget,
        parts: Option<http::request::Parts>,
        body: Bytes,
        request_id: &HeaderValue,
    ) -> Result<Response<GwBody>, GwError> {
        let parts = parts.expect("the request's parts are there for the proxy");
        let pq = upstream_path(&parts.uri, &p.strip)?;
        let host = parts.headers.get(header::HOST).cloned();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        headers.insert(REQUEST_ID, request_id.clone());
        if let Some(PeerAddr(peer)) = parts.extensions.get::<PeerAddr>() {
            let ip = peer.ip().to_string();
            let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) => format!("{prev}, {ip}"),
                None => ip.clone(),
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                headers.insert("x-forwarded-for", v);
            }
            let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or("");
            let for_ = if peer.is_ipv6() {
                format!("\"[{ip}]\"")
            } else {
                ip
            };
            if let Ok(v) = HeaderValue::from_str(&format!("for={for_};proto=http;host=\"{host}\""))
            {
                headers.append(header::FORWARDED, v);
            }
        }
        let upstream = &self.upstreams[p.upstream];
        let mut resp = upstream
            .http_forward(&parts.method, &pq, &headers, body)
            .await
            .map_err(|s| GwError::grpc(s.code(), s.message().to_string()))?;
        strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}

/// The path and query sent upstream: `strip` removed from the front of the path (keeping a
/// leading `/`). Without a prefix to strip, the client's own (already parsed) value is reused.
fn upstream_path(uri: &http::Uri, strip: &str) -> Result<PathAndQuery, GwError> {
    let path = uri.path();
    let rest = path.strip_prefix(strip).unwrap_or(path);
    if rest.len() == path.len()
        && let Some(pq) = uri.path_and_query()
    {
        return Ok(pq.clone());
    }
    let query = uri.query();
    let mut pq = String::with_capacity(rest.len() + 2 + query.map_or(0, str::len));
    if !rest.starts_with('/') {
        pq.push('/');
    }
    pq.push_str(rest);
    if let Some(q) = query {
        pq.push('?');
        pq.push_str(q);
    }
    PathAndQuery::try_from(pq).map_err(|e| GwError::grpc(Code::InvalidArgument, e.to_string()))
}

fn deadline_exceeded(deadline: Duration) -> GwError {
    GwError::grpc(
        Code::DeadlineExceeded,
        format!(
            "the upstream did not answer within {}",
            humantime::format_duration(deadline)
        ),
    )
}

/// A fresh request id: 32 hex digits.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let v: u128 = rand::rng().random();
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex digits are a valid header value")
}

/// Refuses paths that try to climb out of their route (`..`, encoded dots or slashes).
fn check_path(path: &str) -> Result<(), GwError> {
    let lower = path.to_ascii_lowercase();
    let traversal = path.split('/').any(|s| s == ".." || s == ".")
        || lower.contains("%2e%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\');
    if traversal {
        return Err(GwError::grpc(
            Code::InvalidArgument,
            format!("path {path:?} is not allowed (dot segments or encoded separators)"),
        ));
    }
    Ok(())
}

/// The deadline a client asked for: `grpc-timeout` (`100m`, `2S`) or `X-Request-Timeout`
/// (`500ms`, `2s`, or seconds).
fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    let grpc = headers
        .get("grpc-timeout")
        .and_then(|v| parse_grpc_timeout(v.to_str().ok()?));
    let plain = headers.get(&REQUEST_TIMEOUT).and_then(|v| {
        let s = v.to_str().ok()?.trim();
        humantime::parse_duration(s).ok().or_else(|| {
            s.parse::<f64>()
                .ok()
                .filter(|x| *x > 0.0 && x.is_finite())
                .map(Duration::from_secs_f64)
        })
    });
    match (grpc, plain) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a gRPC `grpc-timeout` value: up to 8 digits and a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// A routed request for unit tests of the middleware (a proxy target, no body).
#[cfg(test)]
pub(crate) fn test_request(method: http::Method, uri: &str, headers: &[(&str, &str)]) -> GwRequest {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (parts, _) = b.body(()).expect("a valid test request").into_parts();
    GwRequest {
        parts,
        body: Bytes::new(),
        params: vec![],
        target: Target::Proxy(std::sync::Arc::new(router::ProxyTarget {
            prefix: "/".into(),
            strip: String::new(),
            upstream: 0,
            timeout: Duration::from_secs(1),
        })),
        route: std::sync::Arc::from("/test"),
        upstream: 0,
        request_id: HeaderValue::from_static("r"),
        deadline: Duration::from_secs(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_paths() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("x"), None);
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", HeaderValue::from_static("300m"));
        h.insert(REQUEST_TIMEOUT, HeaderValue::from_static("0.1"));
        assert_eq!(client_deadline(&h), Some(Duration::from_millis(100)));
        for bad in [
            "/rest/../admin",
            "/rest/%2e%2e/x",
            "/a/%2F/b",
            "/a\\b",
            "/./x",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        assert!(check_path("/api/users/42").is_ok());
    }

    #[test]
    fn upstream_paths_lose_the_prefix_and_keep_the_query() {
        let pq = |uri: &str, strip: &str| {
            upstream_path(&uri.parse().unwrap(), strip)
                .unwrap()
                .to_string()
        };
        assert_eq!(pq("/rest/api/users/1?a=b", "/rest"), "/api/users/1?a=b");
        assert_eq!(pq("/rest", "/rest"), "/");
        assert_eq!(pq("/restapi/x", "/rest"), "/api/x");
        assert_eq!(pq("/api/users/1?x=1", ""), "/api/users/1?x=1");
        assert_eq!(pq("/api/users/1", "/other"), "/api/users/1");
        assert!(new_request_id().to_str().unwrap().len() == 32);
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }
}
