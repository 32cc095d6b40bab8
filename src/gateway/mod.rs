//! The gateway: REST/JSON in → route → middleware → gRPC transcoding, aggregation or REST proxy.
//! [`Gateway::handle`] is the whole request path, generic over the request body so tests and
//! benchmarks drive it without a socket; [`server`] puts it on a port.
//!
//! One request, top to bottom, one file per step:
//! 1. [`intake`]: request id, path check, route match ([`router`]), deadline, body limit;
//! 2. [`stack`]: the mount's middleware in request order ([`middleware`]: metrics, auth, rate
//!    limit, cache, breaker);
//! 3. [`dispatch`]: the upstream call — [`transcode`] over the gRPC client ([`grpc`]), an
//!    [`aggregate`] fan-out, or the proxy ([`forward`] rewrites, [`h1`] client) — through the
//!    pools of [`upstream`];
//! 4. errors become JSON responses in one place ([`status`]).
//!
//! Shared vocabulary is in [`types`]; configuration → parts in [`assemble`].

pub mod assemble;
pub mod config;
pub mod middleware;
pub mod observe;
pub mod path;
pub mod serve;
pub mod status;
pub mod transcode;
pub mod types;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};

use config::GatewayConfig;
use path::router::{RouteMatch, Router, Target};
use status::GwError;

#[cfg(test)]
pub(crate) use types::test_request;
pub use types::{
    ClientDeadline, GatewayError, GwBody, GwRequest, GwResponse, REQUEST_ID, REQUEST_TIMEOUT,
    RouteService,
};

/// The built gateway: routes, one middleware stack per mount, upstream pools and options.
/// Cheap to share behind an `Arc`.
pub struct Gateway {
    router: Router,
    stacks: Vec<RouteService>,
    rate_limit_stores: Vec<Arc<dyn middleware::KeyStore>>,
    transcode_upstream: usize,
    transcode_timeout: Duration,
    max_body: usize,
    observer: observe::observer::Observer,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("router", &self.router)
            .field("stacks", &self.stacks.len())
            .finish()
    }
}

/// The transcode upstream's descriptors, asked over gRPC server reflection (its first endpoint).
async fn reflected(cfg: &GatewayConfig) -> Result<prost_reflect::DescriptorPool, GatewayError> {
    let upstream = cfg
        .upstreams
        .iter()
        .find(|u| u.name == cfg.transcode.upstream)
        .ok_or_else(|| {
            GatewayError(format!(
                "transcode.upstream {:?} is not an upstream",
                cfg.transcode.upstream
            ))
        })?;
    let addr = upstream
        .endpoints
        .first()
        .ok_or_else(|| GatewayError(format!("upstream {} has no endpoint", upstream.name)))?;
    crate::reflect::fetch(addr, cfg.transcode.reflect_timeout.0)
        .await
        .map_err(|e| GatewayError(format!("transcode.reflect: {e}")))
}

impl Gateway {
    /// Builds routes (from the descriptor set's annotations and the proxy routes) and upstream
    /// pools. Must run inside a tokio runtime; opens no connection yet.
    pub fn new(cfg: &GatewayConfig) -> Result<Gateway, GatewayError> {
        Gateway::build(cfg, None)
    }

    /// As [`Gateway::new`], but with `[transcode] reflect` first asks the transcode upstream
    /// (its first endpoint) for its descriptors over gRPC server reflection, within
    /// `reflect_timeout`.
    pub async fn connect(cfg: &GatewayConfig) -> Result<Gateway, GatewayError> {
        Gateway::worker(cfg, &Gateway::common(cfg).await?)
    }

    /// The state a gateway's workers share (descriptors, limits, breakers, caches), asking the
    /// upstream for descriptors first with `[transcode] reflect`.
    pub async fn common(cfg: &GatewayConfig) -> Result<assemble::Common, GatewayError> {
        Gateway::common_after(cfg, None).await
    }

    /// As [`Gateway::common`], after `before` (the configuration and gateway serving until
    /// now, on a reload): what did not change and must stay one (the access log's writer, the
    /// tracer's exporter) is kept.
    pub(crate) async fn common_after(
        cfg: &GatewayConfig,
        before: Option<(&GatewayConfig, &Gateway)>,
    ) -> Result<assemble::Common, GatewayError> {
        let reflected = match cfg.transcode.reflect {
            true => Some(reflected(cfg).await?),
            false => None,
        };
        let before = before.map(|(cfg, gw)| (cfg, &gw.observer));
        assemble::Common::new(cfg, reflected, before)
    }

    /// One worker's gateway over `common`: its own routes and upstream pools, the shared
    /// middleware state.
    pub fn worker(cfg: &GatewayConfig, common: &assemble::Common) -> Result<Gateway, GatewayError> {
        let mut gw = Gateway::from_parts(cfg, assemble::assemble(cfg, None, common)?)?;
        gw.observer = common.observer();
        Ok(gw)
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
        let common = assemble::Common::new(cfg, None, None)?;
        let mut gw = Gateway::from_parts(cfg, assemble::assemble(cfg, inner, &common)?)?;
        gw.observer = common.observer();
        Ok(gw)
    }

    fn from_parts(cfg: &GatewayConfig, parts: assemble::Parts) -> Result<Gateway, GatewayError> {
        Ok(Gateway {
            router: parts.router,
            stacks: parts.stacks,
            rate_limit_stores: parts.rate_limit_stores,
            transcode_upstream: parts.transcode_upstream,
            transcode_timeout: parts.transcode_timeout,
            max_body: cfg.limits.max_body_bytes,
            observer: Default::default(),
        })
    }

    /// Every rate-limit key store (the server prunes them periodically).
    pub fn rate_limit_stores(&self) -> &[Arc<dyn middleware::KeyStore>] {
        &self.rate_limit_stores
    }

    /// Writes out what the access log and the tracer hold (at the gateway's stop, so that the
    /// process does not end before them).
    pub fn flush(&self) {
        self.observer.flush();
    }

    /// The route table.
    pub fn routes(&self) -> &[path::router::RouteInfo] {
        self.router.routes()
    }

    /// Annotated rules skipped because the gateway cannot serve them.
    pub fn skipped_rules(&self) -> &[path::router::Skipped] {
        self.router.skipped()
    }

    /// The OpenAPI 3.1 document of the transcoded routes (`gateway --openapi`), for the
    /// configuration `cfg` this gateway was built from.
    pub fn openapi(&self, cfg: &GatewayConfig) -> serde_json::Value {
        path::openapi::document(&self.router.transcoded(), cfg)
    }

    /// Answers one request: intake, the mount's stack, the response. Errors become JSON
    /// responses here, in one place; the observer (access log, tracing) sees the request
    /// arrive and writes once when its answer is ready.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<GwBody>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.handle_from(req, None).await
    }

    /// As [`Gateway::handle`], for a request from `peer` (None: the request's
    /// [`PeerAddr`](crate::net::PeerAddr) extension says, if any). The lean server passes the
    /// peer here rather than in the extensions, which cost three allocations a request.
    pub async fn handle_from<B>(
        &self,
        req: Request<B>,
        peer: Option<std::net::SocketAddr>,
    ) -> Response<GwBody>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = path::intake::request_id(req.headers());
        let method = req.method().clone();
        let mut observed = self.observer.begin(req.headers(), &method);
        let mut resp = match self.intake(req, &request_id, peer).await {
            Ok((mount, mut request)) => {
                if let Some(o) = &mut observed {
                    o.routed(&mut request);
                }
                let stack = self.stacks[mount].clone();
                let result = tower::ServiceExt::oneshot(stack, request).await;
                result.unwrap_or_else(|never| match never {})
            }
            Err(e) => {
                middleware::metrics::record_unrouted(&method, e.status);
                e.into_response()
            }
        };
        if let Some(o) = observed {
            o.finish(&request_id, &method, &resp);
        }
        resp.headers_mut().insert(REQUEST_ID, request_id);
        resp
    }

    /// Path check → route → deadline → body: the routed request and the stack that serves it.
    async fn intake<B>(
        &self,
        req: Request<B>,
        request_id: &HeaderValue,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(usize, GwRequest), GwError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        path::intake::check_host(req.version(), req.headers())?;
        let path = req.uri().path();
        path::intake::check_path(path)?;
        // A WebSocket is routed as the GET it is over HTTP/1.1, whatever the HTTP version.
        let connect = crate::ws::is_extended_connect(req.method(), req.extensions());
        let upgrade = connect || crate::ws::is_upgrade(req.headers());
        let method = if connect {
            &http::Method::GET
        } else {
            req.method()
        };
        let RouteMatch {
            target,
            stack,
            route,
            params,
        } = self
            .router
            .at_request(method, path, upgrade)
            .map_err(|e| path::intake::unrouted(method, path, e))?;
        let (target, route) = (target.clone(), route.clone());
        let (route_timeout, upstream) = match &target {
            Target::Transcode(_) => (self.transcode_timeout, self.transcode_upstream),
            Target::Proxy(p) => (p.timeout, p.upstream),
            Target::Aggregate(a) => (a.timeout(), self.transcode_upstream),
        };
        let deadline = path::intake::deadline(req.headers(), route_timeout);
        let (parts, body) = req.into_parts();
        let peer = peer.or_else(|| parts.extensions.get::<crate::net::PeerAddr>().map(|p| p.0));
        // The body must arrive within the request's deadline too: a body sent a byte at a
        // time would otherwise hold the request (and its connection) for good. A body already
        // known to be over (a GET's, or one whose length was 0) cannot stall: no timer for it.
        // An extended CONNECT's body is the WebSocket itself: never read here.
        let body = if connect {
            Bytes::new()
        } else {
            let ended = body.is_end_stream();
            let read = path::intake::read_body(&parts.headers, body, self.max_body);
            match ended {
                true => read.await?,
                false => tokio::time::timeout(deadline, read)
                    .await
                    .map_err(|_| path::intake::body_too_slow(deadline))??,
            }
        };
        let request = GwRequest {
            parts,
            body,
            params,
            target,
            route,
            upstream,
            request_id: request_id.clone(),
            deadline,
            client_deadline: deadline < route_timeout,
            peer,
        };
        Ok((stack, request))
    }
}
