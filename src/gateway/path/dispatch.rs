//! The innermost service: a routed request goes to its target (transcode to gRPC, fan out an
//! aggregation, or proxy over HTTP/1.1) within its deadline, and the answer comes back as a
//! response (errors included).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::Either;
use tonic::Code;

use super::router::{ProxyTarget, Target};
use crate::gateway::middleware::auth::ForwardedClaims;
use crate::gateway::observe::observer::Observed;
use crate::gateway::status::GwError;
use crate::gateway::transcode::metadata::{metadata_from_client, metadata_to_client};
use crate::gateway::transcode::method::{JsonOptions, MethodRoute};
use crate::gateway::types::{ClientDeadline, GwRequest, GwResponse, REQUEST_ID, RouteService};
use crate::gateway::upstream::forward;
use crate::gateway::upstream::pool::Upstream;
use crate::net::PeerAddr;

/// A google.api.HttpBody answer: its bytes, with its content type (or none given).
fn http_body_response((data, content_type): (bytes::Bytes, Option<String>)) -> GwResponse {
    let mut resp = http::Response::new(Either::Left(http_body_util::Full::new(data)));
    if let Some(v) = content_type.and_then(|ct| http::HeaderValue::from_str(&ct).ok()) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// What the upstream call needs: the upstream pools and the JSON options.
#[derive(Debug)]
pub(crate) struct Core {
    upstreams: Vec<Upstream>,
    json: JsonOptions,
    /// Request headers sent as gRPC metadata of the same name (`[transcode] forward_headers`).
    forward: Vec<http::HeaderName>,
    /// Spans per upstream call (`[tracing]`).
    tracing: Option<Arc<crate::gateway::observe::trace::Tracing>>,
    /// Whether requests carry an observed context to fill in (access log or tracing on): off,
    /// no request pays the extension lookup.
    observing: bool,
    /// WebSocket limits and this worker's open connections.
    ws: super::upgrade::Gate,
}

impl Core {
    /// The upstream call over `upstreams` (by index, as routes name them).
    pub(crate) fn new(upstreams: Vec<Upstream>, json: JsonOptions) -> Self {
        Core {
            upstreams,
            json,
            forward: Vec::new(),
            tracing: None,
            observing: false,
            ws: Default::default(),
        }
    }

    /// With these WebSocket limits and connection slots.
    pub(crate) fn websocket(mut self, gate: super::upgrade::Gate) -> Self {
        self.ws = gate;
        self
    }

    /// With the upstream and its latency written into each request's observed context.
    pub(crate) fn observing(mut self, on: bool) -> Self {
        self.observing = on;
        self
    }

    /// With a span per upstream call.
    pub(crate) fn tracing(
        mut self,
        tracing: Option<Arc<crate::gateway::observe::trace::Tracing>>,
    ) -> Self {
        self.tracing = tracing;
        self
    }

    /// With `headers` forwarded as gRPC metadata on transcoded calls.
    pub(crate) fn forwarding(mut self, headers: Vec<http::HeaderName>) -> Self {
        self.forward = headers;
        self
    }

    /// Calls the request's target within its deadline; errors become responses.
    pub(crate) async fn call(&self, mut req: GwRequest) -> GwResponse {
        let upstream = &self.upstreams[req.upstream];
        let observed = match self.observing {
            true => req.parts.extensions.get::<Observed>().cloned(),
            false => None,
        };
        // With tracing on, the upstream call's span; its context goes upstream.
        let span = match (&self.tracing, observed.as_ref().and_then(Observed::span)) {
            (Some(t), Some(cx)) => Some(t.upstream(cx, &upstream.name, &mut req.parts.headers)),
            _ => None,
        };
        let resp = self.call_upstream(req, observed).await;
        if let Some(cx) = span {
            crate::gateway::observe::trace::end_upstream(&cx, resp.status().as_u16());
        }
        resp
    }

    async fn call_upstream(&self, req: GwRequest, note: Option<Observed>) -> GwResponse {
        let upstream = &self.upstreams[req.upstream];
        let deadline = req.deadline;
        let started = Instant::now();
        if let Target::Aggregate(a) = &req.target {
            // An aggregation keeps what arrived in time, so it enforces its deadline per part.
            let query = req.parts.uri.query();
            // Boxed, as the streaming branch below: the unary calls' future stays their size.
            let resp =
                Box::pin(a.run(query, upstream, &req.request_id, deadline, &self.json)).await;
            if let Some(note) = note {
                note.upstream(&upstream.name, started.elapsed());
            }
            return resp;
        }
        let client_deadline = req.client_deadline;
        // A transcoded route's errors take the configured shape (grpc-gateway's, if asked).
        let format = match req.target {
            Target::Transcode(_) => self.json.errors,
            _ => crate::gateway::config::ErrorFormat::Gwbench,
        };
        let parts = &req.parts;
        let upgrade = crate::ws::wants_websocket(&parts.method, &parts.headers, &parts.extensions);
        let call = async {
            match req.target.clone() {
                Target::Proxy(p) if upgrade => {
                    let upstream = &self.upstreams[p.upstream];
                    super::upgrade::proxy(&self.ws, upstream, &p.strip, req).await
                }
                Target::Transcode(route)
                    if upgrade && (route.takes_stream() || route.streams()) =>
                {
                    self.transcode_ws(route, req, started).await
                }
                Target::Transcode(route) if route.takes_stream() => {
                    Err(stream_needs_websocket(&route))
                }
                Target::Transcode(route) => self.transcode(route, &req, started).await,
                Target::Proxy(p) => self.proxy(&p, req).await,
                Target::Aggregate(_) => unreachable!("answered above"),
            }
        };
        let result = match tokio::time::timeout(deadline, call).await {
            Ok(result) => result,
            Err(_) => Err(deadline_exceeded(deadline)),
        };
        let took = started.elapsed();
        upstream.latency.record(took);
        if let Some(note) = note {
            note.upstream(&upstream.name, took);
        }
        result.unwrap_or_else(|e| {
            let timed_out = e.status == StatusCode::GATEWAY_TIMEOUT;
            let mut resp = e.into_response_as(format);
            if timed_out && client_deadline {
                resp.extensions_mut().insert(ClientDeadline);
            }
            resp
        })
    }

    /// JSON, path and query → one gRPC call → JSON (one message, or a stream of them).
    async fn transcode(
        &self,
        route: Arc<MethodRoute>,
        req: &GwRequest,
        started: Instant,
    ) -> Result<GwResponse, GwError> {
        let parts = &req.parts;
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let msg = route.encode_request_with(
            &req.params,
            parts.uri.query(),
            &req.body,
            content_type,
            &self.json,
        )?;
        let metadata = self.metadata(req);
        let fail = call_error(route.clone(), started, req.deadline);
        let upstream = &self.upstreams[req.upstream];
        if route.streams() {
            let messages = Box::pin(upstream.grpc_server_stream(
                &route.grpc_path,
                msg,
                &metadata,
                Some(req.deadline),
            ))
            .await
            .map_err(&fail)?;
            let deadline = tokio::time::Instant::from_std(started) + req.deadline;
            return Box::pin(crate::gateway::transcode::stream::respond(
                route,
                messages,
                &self.json,
                deadline,
                Box::new(fail),
            ))
            .await;
        }
        let reply = upstream
            .grpc_unary(&route.grpc_path, msg, &metadata, Some(req.deadline))
            .await
            .map_err(fail)?;
        let mut resp = if route.answers_http_body() {
            http_body_response(route.render_http_body(&reply.message)?)
        } else {
            let json = route.render_response(&reply.message, &self.json)?;
            crate::net::json(StatusCode::OK, json).map(Either::Left)
        };
        metadata_to_client(&reply.metadata, resp.headers_mut());
        Ok(resp)
    }

    /// The gRPC metadata of a transcoded call: the client's `Grpc-Metadata-<name>` headers,
    /// the forwarded headers and trace context, then what the gateway sets (request id, the
    /// client's address, the verified claims), so that a client cannot forge those.
    fn metadata(&self, req: &GwRequest) -> http::HeaderMap {
        // The client's `Grpc-Metadata-<name>` headers travel as `<name>`; the request id and
        // the verified claims are set after them, so a client cannot forge those.
        let mut metadata = metadata_from_client(&req.parts.headers);
        // W3C trace context travels on (the gateway's own span's, when it traces).
        for name in self
            .forward
            .iter()
            .chain(&crate::gateway::observe::trace::TRACE_HEADERS)
        {
            for v in req.parts.headers.get_all(name) {
                metadata.append(name.clone(), v.clone());
            }
        }
        metadata.insert(REQUEST_ID, req.request_id.clone());
        // The client's address, as grpc-gateway sends it.
        if let Some(peer) = &req.peer
            && let Some(v) = forward::forwarded_for(&req.parts.headers, peer)
        {
            metadata.insert(forward::X_FORWARDED_FOR, v);
        }
        // Claims the auth layer verified travel as metadata.
        if let Some(claims) = req.parts.extensions.get::<ForwardedClaims>() {
            for (name, value) in &claims.0 {
                metadata.insert(name.clone(), value.clone());
            }
        }
        metadata
    }

    /// A streaming RPC's rule over WebSocket (see `transcode::ws`): the call opens before
    /// the switch, so an upstream that cannot take it is an HTTP error, not a closed socket.
    async fn transcode_ws(
        &self,
        route: Arc<MethodRoute>,
        mut req: GwRequest,
        started: Instant,
    ) -> Result<GwResponse, GwError> {
        let open = self.ws.enter()?;
        let switch = crate::ws::switch(&req.parts)
            .map_err(|e| GwError::http(StatusCode::BAD_REQUEST, Code::InvalidArgument, e.0))?;
        let on_upgrade = super::upgrade::take_upgrade(&mut req)?;
        let metadata = self.metadata(&req);
        let upstream = &self.upstreams[req.upstream];
        let fail = call_error(route.clone(), started, req.deadline);
        // Only a deadline the client set bounds the call (see transcode/ws.rs).
        let timeout = req.client_deadline.then_some(req.deadline);
        let (mut call, held) = upstream
            .grpc_open(&route.grpc_path, &metadata, timeout)
            .await
            .map_err(&fail)?;
        let query = req.parts.uri.query().map(str::to_string);
        if !route.takes_stream() {
            // A server stream's one request, from the path and the query.
            let msg = route.encode_request(&req.params, query.as_deref(), b"", &self.json)?;
            crate::gateway::upstream::grpc::send_message(&mut call.send, &msg, true)
                .await
                .map_err(&fail)?;
        }
        let bridge = crate::gateway::transcode::ws::Bridge {
            route,
            json: self.json.clone(),
            params: req.params,
            query,
            deadline: timeout.map(|t| tokio::time::Instant::from_std(started) + t),
            idle: self.ws.limits.idle_timeout,
            fail: Box::new(fail),
        };
        let limits = self.ws.limits;
        tokio::spawn(async move {
            let _open = open;
            if let Ok(socket) = crate::ws::server(on_upgrade, &limits).await {
                bridge.run(socket, call, held).await;
            }
        });
        let mut parts = switch;
        parts.headers.insert(REQUEST_ID, req.request_id);
        Ok(GwResponse::from_parts(
            parts,
            Either::Left(http_body_util::Full::new(bytes::Bytes::new())),
        ))
    }

    /// The request as it came (prefix stripped, headers rewritten) → the upstream's answer.
    async fn proxy(&self, p: &ProxyTarget, req: GwRequest) -> Result<GwResponse, GwError> {
        // The route's deadline covers the whole body, not just the head.
        let body_deadline = tokio::time::Instant::now() + req.deadline;
        let GwRequest {
            parts,
            body,
            request_id,
            peer,
            ..
        } = req;
        let pq = forward::upstream_path(&parts.uri, &p.strip)?;
        // The proxy forwards the request's headers as they are: it takes them, no copy.
        let headers =
            forward::request_headers(parts.headers, peer.map(PeerAddr).as_ref(), &request_id);
        let upstream = &self.upstreams[p.upstream];
        let mut resp = upstream
            .http_forward(&parts.method, &pq, &headers, body, body_deadline)
            .await?;
        forward::strip_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}

/// How a transcoded call's error status becomes the client's error.
fn call_error(
    route: Arc<MethodRoute>,
    started: Instant,
    deadline: Duration,
) -> impl Fn(tonic::Status) -> GwError + Send + Sync + 'static {
    move |s| match s.code() {
        // A server that gives up on the grpc-timeout it was sent may answer CANCELLED
        // (tonic's does): past the deadline, that is a 504.
        Code::Cancelled if started.elapsed() >= deadline => deadline_exceeded(deadline),
        _ if crate::gateway::upstream::grpc::is_bad_gateway(&s) => {
            GwError::http(StatusCode::BAD_GATEWAY, s.code(), s.message().to_string())
        }
        code => GwError::grpc(code, s.message().to_string())
            .with_details(route.render_details(s.details())),
    }
}

/// `core`'s upstream call as the innermost service of every stack.
pub(crate) fn service(core: Arc<Core>) -> RouteService {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |req: GwRequest| {
        let core = core.clone();
        async move { Ok::<_, Infallible>(core.call(req).await) }
    }))
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

/// A client-streaming or bidi RPC asked over plain HTTP: 426, naming the way in.
fn stream_needs_websocket(route: &MethodRoute) -> GwError {
    GwError::http(
        StatusCode::UPGRADE_REQUIRED,
        Code::FailedPrecondition,
        format!(
            "{} takes a stream of messages: open a WebSocket at this path (each text message one \
             JSON request, an empty one ends the stream)",
            route.rpc
        ),
    )
}
