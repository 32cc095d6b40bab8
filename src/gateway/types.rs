//! The vocabulary the request path shares: the routed request, the response and its body, the
//! stack's service type, the headers the gateway reads and writes, and the build error.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use thiserror::Error;

use super::path::router::Target;
use super::upstream::h1;

/// Response body: a whole body (JSON, or a proxied answer that arrived with its head), or the
/// rest of a proxied answer streaming from the upstream connection.
pub type GwBody = h1::ProxyBody;

/// A response of the gateway.
pub type GwResponse = Response<GwBody>;

/// A mount's middleware stack around the upstream call. Errors are responses already.
pub type RouteService =
    tower::util::BoxCloneSyncService<GwRequest, GwResponse, std::convert::Infallible>;

/// Header carrying the request id to upstreams and back to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Header a client may set to shorten the route's deadline (`500ms`, `2s`, or seconds).
pub const REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// The gateway could not be built from its configuration.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct GatewayError(pub String);

/// A request after intake and routing, as the middleware stack and the upstream call see it.
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
    pub route: Arc<str>,
    /// Index of the upstream that serves it.
    pub upstream: usize,
    /// The request id (also sent upstream and back).
    pub request_id: HeaderValue,
    /// Time the upstream call may take.
    pub deadline: Duration,
    /// Whether the client shortened `deadline` below the route's (`X-Request-Timeout`,
    /// `grpc-timeout`): missing it is then not the upstream's fault.
    pub client_deadline: bool,
    /// The client's address (the socket's peer), when the server said.
    pub peer: Option<std::net::SocketAddr>,
}

/// A response extension: the body is a stream of messages with no set end (a server-streaming
/// RPC): never stored by the cache, which would hold it back until it ended.
#[derive(Debug, Clone, Copy)]
pub struct Streamed;

/// A response extension: the request ran out of a deadline the client set shorter than the
/// route's. Not an upstream failure (the circuit breaker does not count it).
#[derive(Debug, Clone, Copy)]
pub struct ClientDeadline;

/// A routed request for unit tests of the middleware (a proxy target, no body).
#[cfg(test)]
pub(crate) fn test_request(method: http::Method, uri: &str, headers: &[(&str, &str)]) -> GwRequest {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (parts, _) = b.body(()).expect("a valid test request").into_parts();
    GwRequest {
        parts,
        body: Bytes::new(),
        params: vec![],
        target: Target::Proxy(Arc::new(super::path::router::ProxyTarget {
            prefix: "/".into(),
            strip: String::new(),
            upstream: 0,
            timeout: Duration::from_secs(1),
        })),
        route: Arc::from("/test"),
        upstream: 0,
        request_id: HeaderValue::from_static("r"),
        deadline: Duration::from_secs(1),
        client_deadline: false,
        peer: None,
    }
}
