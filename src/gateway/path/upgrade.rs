//! WebSocket upgrades on the request path, after intake and the mount's middleware (a refused
//! upgrade got its 401, 429 or 503 before reaching here): a proxy route's upgrade is forwarded
//! to its upstream and relayed ([`proxy`]); a streaming RPC's rule is served over WebSocket by
//! the translation (`transcode::ws`). Both take a slot of the worker's connection limit for
//! the connection's life and count it in `gwbench_ws_connections`.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{Either, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Code;

use crate::gateway::status::GwError;
use crate::gateway::types::{GwRequest, GwResponse, REQUEST_ID};
use crate::gateway::upstream::forward;
use crate::gateway::upstream::pool::Upstream;
use crate::gateway::upstream::ws::{Answer, relay};
use crate::net::PeerAddr;

/// A worker's WebSocket limits and its open connections.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// What each connection is held to.
    pub(crate) limits: crate::ws::Limits,
    slots: Arc<Semaphore>,
    max: usize,
}

impl Gate {
    /// At most `max` connections open at once on this worker.
    pub(crate) fn new(limits: crate::ws::Limits, max: usize) -> Self {
        Gate {
            limits,
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot for one more connection, or the 503 that refuses it before any switch.
    pub(crate) fn enter(&self) -> Result<Open, GwError> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            GwError::http(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::ResourceExhausted,
                format!(
                    "this worker already holds {} WebSocket connections",
                    self.max
                ),
            )
        })?;
        metrics::gauge!("gwbench_ws_connections").increment(1.0);
        Ok(Open(permit))
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new(crate::ws::Limits::default(), 10_000)
    }
}

/// An open WebSocket connection's slot, given back when the connection ends.
#[derive(Debug)]
pub(crate) struct Open(#[allow(dead_code)] OwnedSemaphorePermit);

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("gwbench_ws_connections").decrement(1.0);
    }
}

/// The client's side of the switch: hyper hands it over once the `101` is written. A request
/// that did not come over HTTP/1.1 (h2, or an in-process call) has none.
pub(crate) fn take_upgrade(req: &mut GwRequest) -> Result<hyper::upgrade::OnUpgrade, GwError> {
    let p = &req.parts;
    let h2 = crate::ws::is_extended_connect(&p.method, &p.extensions);
    let valid = h2 || p.version == http::Version::HTTP_11;
    req.parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| valid)
        .ok_or_else(|| {
            GwError::http(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                "a WebSocket needs an HTTP/1.1 upgrade or HTTP/2 extended CONNECT".to_string(),
            )
        })
}

/// What the upstream needs to see of an HTTP/2 client's extended CONNECT: an HTTP/1.1 upgrade
/// has a key and a version; RFC 8441 has neither, so the gateway makes them.
fn as_http1_upgrade(headers: &mut http::HeaderMap) {
    use http::header::{HeaderValue, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
    if !headers.contains_key(SEC_WEBSOCKET_KEY) {
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        if let Ok(v) = HeaderValue::from_str(&key) {
            headers.insert(SEC_WEBSOCKET_KEY, v);
        }
    }
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
}

/// The client's answer to a switch the upstream accepted: its `101` head over HTTP/1.1; over
/// HTTP/2, `200` with only the chosen subprotocol (no connection-level headers, no key).
fn client_head(mut parts: http::response::Parts, h2: bool) -> http::response::Parts {
    if h2 {
        parts.status = StatusCode::OK;
        let protocol = parts.headers.remove(http::header::SEC_WEBSOCKET_PROTOCOL);
        parts.headers.clear();
        if let Some(p) = protocol {
            parts
                .headers
                .insert(http::header::SEC_WEBSOCKET_PROTOCOL, p);
        }
    }
    parts
}

/// A proxy route's upgrade: forwarded to an endpoint; on its `101`, the client's and the
/// endpoint's connections are relayed on a task of their own.
pub(crate) async fn proxy(
    gate: &Gate,
    upstream: &Upstream,
    strip: &str,
    mut req: GwRequest,
) -> Result<GwResponse, GwError> {
    let open = gate.enter()?;
    let on_upgrade = take_upgrade(&mut req)?;
    let h2 = crate::ws::is_extended_connect(&req.parts.method, &req.parts.extensions);
    let pq = forward::upstream_path(&req.parts.uri, strip)?;
    let peer = req.peer.map(PeerAddr);
    let mut headers = forward::request_headers(req.parts.headers, peer.as_ref(), &req.request_id);
    if h2 {
        as_http1_upgrade(&mut headers);
    }
    let (answer, held) = upstream.ws_upgrade(&pq, &headers).await?;
    match answer {
        Answer::Refused(mut resp) => {
            forward::strip_hop_by_hop(resp.headers_mut());
            Ok(resp.map(|b| Either::Left(Full::new(b))))
        }
        Answer::Switched(parts, io, early) => {
            let mut parts = client_head(parts, h2);
            parts.headers.insert(REQUEST_ID, req.request_id.clone());
            let limits = gate.limits;
            tokio::spawn(async move {
                let _slot = (open, held);
                if let Ok(client) = on_upgrade.await {
                    relay(TokioIo::new(client), io, early, limits).await;
                }
            });
            Ok(GwResponse::from_parts(
                parts,
                Either::Left(Full::new(Bytes::new())),
            ))
        }
    }
}
