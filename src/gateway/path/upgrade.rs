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
    req.parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .filter(|_| req.parts.version == http::Version::HTTP_11)
        .ok_or_else(|| {
            GwError::http(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                "a WebSocket upgrade needs an HTTP/1.1 connection".to_string(),
            )
        })
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
    let pq = forward::upstream_path(&req.parts.uri, strip)?;
    let peer = req.parts.extensions.get::<PeerAddr>();
    let headers = forward::request_headers(req.parts.headers, peer, &req.request_id);
    let (answer, held) = upstream.ws_upgrade(&pq, &headers).await?;
    match answer {
        Answer::Refused(mut resp) => {
            forward::strip_hop_by_hop(resp.headers_mut());
            Ok(resp.map(|b| Either::Left(Full::new(b))))
        }
        Answer::Switched(mut parts, io, early) => {
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
