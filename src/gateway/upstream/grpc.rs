//! A lean gRPC client for transcoded calls: unary calls over one HTTP/2 connection per endpoint
//! (the `h2` crate, no tower buffer, no connection-task hand-off for the request). The request's
//! HEADERS and its one DATA frame are queued by the calling task before the connection task
//! flushes, so they leave in one write; through tonic's channel (and hyper's HTTP/2 client) the
//! DATA frame followed in a second write, waking the upstream twice per call.
//!
//! Server-streaming calls read the same way, message by message as they arrive ([`Messages`]).
//!
//! The connection opens on first use and again after it fails; a call that finds it dead before
//! sending anything goes out once more on a new one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, StatusCode};
use tonic::{Code, Status};

/// Largest response message accepted (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

type Sender = h2::client::SendRequest<Bytes>;

/// One gRPC endpoint's HTTP/2 connection.
pub(crate) struct GrpcConn {
    addr: String,
    authority: Authority,
    connect_timeout: Duration,
    /// TLS to the endpoint (`[[upstreams]] tls`; ALPN h2).
    tls: Option<std::sync::Arc<crate::net::tls::ClientTls>>,
    sender: Mutex<Option<Sender>>,
    /// Held while connecting, so that concurrent first calls share one connection.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GrpcConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcConn")
            .field("addr", &self.addr)
            .finish()
    }
}

fn unavailable(msg: String, source: std::io::Error) -> Status {
    let mut s = Status::unavailable(msg);
    s.set_source(Arc::new(source));
    s
}

fn from_h2(e: h2::Error) -> Status {
    if let Some(reason) = e.reason() {
        // A stream reset by the server: CANCEL is what a server sends when it gave up.
        let code = match reason {
            h2::Reason::CANCEL => Code::Cancelled,
            h2::Reason::REFUSED_STREAM => Code::Unavailable,
            h2::Reason::ENHANCE_YOUR_CALM => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        return Status::new(code, format!("HTTP/2 stream error: {e}"));
    }
    if e.is_io() {
        let text = e.to_string();
        return match e.into_io() {
            Some(io) => unavailable(format!("connection error: {text}"), io),
            None => Status::unavailable(text),
        };
    }
    Status::unavailable(format!("HTTP/2 error: {e}"))
}

impl GrpcConn {
    /// A connection to `addr` (`host:port`), opened on first use.
    pub(crate) fn new(
        addr: &str,
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<crate::net::tls::ClientTls>>,
    ) -> Result<Self, String> {
        Ok(GrpcConn {
            addr: addr.to_string(),
            authority: Authority::try_from(addr).map_err(|e| format!("endpoint {addr:?}: {e}"))?,
            connect_timeout,
            tls,
            sender: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<Sender> {
        self.sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn forget(&self) {
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn connect(&self) -> Result<Sender, Status> {
        let _one = self.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let addr = &self.addr;
        let tcp = crate::net::connect(addr.as_str(), Some(self.connect_timeout))
            .await
            .map_err(|e| unavailable(format!("connect to {addr}: {e}"), e))?;
        let tcp = crate::net::tls::wrap(tcp, self.tls.as_deref(), Some(self.connect_timeout))
            .await
            .map_err(|e| unavailable(format!("TLS to {addr}: {e}"), e))?;
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .handshake::<_, Bytes>(tcp)
            .await
            .map_err(from_h2)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "gRPC upstream connection ended");
            }
        });
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// A sender ready for one more stream: the cached connection, or a new one when it is gone.
    async fn ready(&self) -> Result<Sender, Status> {
        if let Some(s) = self.cached() {
            match s.ready().await {
                Ok(s) => return Ok(s),
                Err(_) => self.forget(), // closed (GOAWAY, reset): nothing was sent on it
            }
        }
        // Boxed: connecting is the rare case; unboxed, its state (TCP, TLS, h2 handshake) is
        // carried and moved by every call's future.
        Box::pin(self.connect()).await?.ready().await.map_err(|e| {
            self.forget();
            from_h2(e)
        })
    }

    /// Starts a call: the request's HEADERS (with `grpc-timeout` when `timeout` is set) are
    /// queued, and its messages follow on the returned [`Call`].
    pub(crate) async fn open(
        &self,
        path: &PathAndQuery,
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<Call, Status> {
        let mut sender = self.ready().await?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(match self.tls {
            Some(_) => Scheme::HTTPS,
            None => Scheme::HTTP,
        });
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path.clone());
        let mut req = Request::new(());
        *req.method_mut() = Method::POST;
        *req.uri_mut() = http::Uri::from_parts(uri).map_err(|e| Status::internal(e.to_string()))?;
        *req.headers_mut() = headers;
        let h = req.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if let Some(t) = timeout {
            h.insert(
                HeaderName::from_static(crate::grpc::TIMEOUT),
                crate::grpc::encode_timeout(t),
            );
        }
        let (head, send) = sender.send_request(req, false).map_err(from_h2)?;
        Ok(Call { send, head })
    }

    /// Sends one request message and waits for the response's head: `msg` is the encoded
    /// request message; `headers` are sent as metadata (with `grpc-timeout` when `timeout` is
    /// set). An answer that is an error already (trailers-only) or not gRPC is the error. The
    /// messages follow from [`Messages::next`] (a server-streaming call's, or a unary one's).
    pub(crate) async fn server_stream(
        &self,
        path: &PathAndQuery,
        msg: &[u8],
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<Messages, Status> {
        let Call { mut send, head } = self.open(path, headers, timeout).await?;
        // Queued with the HEADERS: both leave in the connection task's next write.
        send.send_data(crate::grpc::frame(msg), true)
            .map_err(from_h2)?;
        answer_head(head).await
    }

    /// One unary call (see [`GrpcConn::server_stream`]): exactly one message. Returns the encoded response message and the
    /// response's metadata (its headers, then its trailers).
    pub(crate) async fn unary(
        &self,
        path: &PathAndQuery,
        msg: &[u8],
        headers: HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<Reply, Status> {
        let mut answer = self.server_stream(path, msg, headers, timeout).await?;
        let Some(message) = answer.next().await? else {
            return Err(bad_gateway(
                "the upstream answered a unary call with no message".into(),
            ));
        };
        if answer.next().await?.is_some() {
            return Err(bad_gateway(
                "the upstream answered a unary call with more than one message".into(),
            ));
        }
        Ok(Reply {
            message,
            metadata: answer.metadata,
        })
    }
}

/// A call whose request messages are sent one by one (client-streaming and bidi RPCs).
#[derive(Debug)]
pub(crate) struct Call {
    /// Where the request messages go.
    pub(crate) send: h2::SendStream<Bytes>,
    /// The answer's head, then its messages ([`answer_head`]).
    pub(crate) head: h2::client::ResponseFuture,
}

/// Sends one request message on `send`, as the upstream's flow-control window allows (never
/// more than the window is queued); `end` closes the request side after it.
pub(crate) async fn send_message(
    send: &mut h2::SendStream<Bytes>,
    msg: &[u8],
    end: bool,
) -> Result<(), Status> {
    let mut framed = crate::grpc::frame(msg);
    while !framed.is_empty() {
        send.reserve_capacity(framed.len());
        let granted = std::future::poll_fn(|cx| send.poll_capacity(cx))
            .await
            .ok_or_else(|| Status::unavailable("the upstream closed the request stream"))?
            .map_err(from_h2)?;
        let chunk = framed.split_to(granted.min(framed.len()));
        send.send_data(chunk, end && framed.is_empty())
            .map_err(from_h2)?;
    }
    Ok(())
}

/// Ends the request side of a call (the client's half-close).
pub(crate) fn finish(send: &mut h2::SendStream<Bytes>) -> Result<(), Status> {
    send.send_data(Bytes::new(), true).map_err(from_h2)
}

/// The answer's head: an error when it is one already (trailers-only) or not gRPC; else the
/// messages that follow.
pub(crate) async fn answer_head(head: h2::client::ResponseFuture) -> Result<Messages, Status> {
    let resp = head.await.map_err(from_h2)?;
    let (parts, body) = resp.into_parts();
    // A trailers-only answer (an error, usually) carries the status in the headers.
    if let Some(status) = status_of(&parts.headers)? {
        return Err(status);
    }
    if parts.status != StatusCode::OK {
        return Err(Status::new(
            http_code(parts.status),
            format!("upstream answered HTTP {}", parts.status),
        ));
    }
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    if !content_type.is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")) {
        return Err(bad_gateway(format!(
            "the upstream answered with content-type {content_type:?}, not gRPC"
        )));
    }
    Ok(Messages {
        metadata: parts.headers,
        body,
        buf: BytesMut::new(),
        done: false,
        held: None,
    })
}

/// The messages of a call's answer, read as they arrive, each at most [`MAX_MESSAGE`] bytes.
#[derive(Debug)]
pub struct Messages {
    /// The response's headers; its trailers are added when the answer ends.
    pub metadata: HeaderMap,
    body: h2::RecvStream,
    buf: BytesMut,
    done: bool,
    /// The endpoint's in-flight count, held for as long as these messages live.
    held: Option<super::inflight::Held>,
}

impl Messages {
    /// Keeps `held` until these messages are dropped.
    pub fn hold(&mut self, held: super::inflight::Held) {
        self.held = Some(held);
    }

    /// The next message; `None` once the answer ended with grpc-status 0; the call's error
    /// when it ended with another (or broke the protocol).
    pub async fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.done {
            return Ok(None);
        }
        loop {
            match crate::grpc::next_message(&mut self.buf, MAX_MESSAGE) {
                Ok(Some(message)) => return Ok(Some(message)),
                Ok(None) => {}
                // A message over the limit is the upstream's doing (not the client's, whom a
                // RESOURCE_EXHAUSTED would tell to back off and retry): a bad gateway.
                Err(e) => return Err(bad_gateway(format!("the upstream's {e}"))),
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(from_h2)?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    // Bounded: a message's length was checked above once its prefix arrived,
                    // and a chunk is at most the window the connection grants.
                    self.buf.extend_from_slice(&chunk);
                }
                None => break,
            }
        }
        self.done = true;
        crate::grpc::finished(&self.buf).map_err(|e| bad_gateway(e.to_string()))?;
        let trailers = self
            .body
            .trailers()
            .await
            .map_err(from_h2)?
            .unwrap_or_default();
        match status_of(&trailers)? {
            Some(status) => Err(status),
            None if !trailers.contains_key(crate::grpc::STATUS) => {
                Err(Status::unknown("the upstream sent no grpc-status"))
            }
            None => {
                self.metadata.extend(trailers);
                Ok(None)
            }
        }
    }
}

/// A unary call's answer.
#[derive(Debug)]
pub struct Reply {
    /// The encoded response message.
    pub message: Bytes,
    /// The response's headers and trailers as the upstream sent them (protocol ones included).
    pub metadata: HeaderMap,
}

/// The error in `grpc-status` / `grpc-message`; None when it says OK or is absent; a bad
/// gateway when it is there but not a number.
fn status_of(headers: &HeaderMap) -> Result<Option<Status>, Status> {
    let Some(raw) = headers.get(crate::grpc::STATUS) else {
        return Ok(None);
    };
    let Some(code) = crate::grpc::status_code(headers) else {
        return Err(bad_gateway(format!(
            "the upstream sent grpc-status {raw:?}, not a number"
        )));
    };
    Ok(match code {
        0 => None,
        code => {
            let code = Code::from_i32(code);
            let message = crate::grpc::status_message(headers);
            // Typed details (a serialized google.rpc.Status), kept for the client; a value
            // that is not base64 is dropped, not fatal.
            match headers
                .get(DETAILS)
                .and_then(|v| crate::grpc::decode_base64(v.as_bytes()))
            {
                Some(details) => Some(Status::with_details(code, message, details)),
                None => Some(Status::new(code, message)),
            }
        }
    })
}

/// The trailer with an error's typed details: a google.rpc.Status, base64 (padding optional).
const DETAILS: &str = "grpc-status-details-bin";

/// Metadata key that marks a [`bad_gateway`] status.
const BAD_GATEWAY_MARK: &str = "x-gwbench-bad-gateway";

/// The upstream broke the gRPC protocol (a status that is no number, a body that is not a
/// gRPC answer): the gateway answers 502, as it does for a proxied answer that is not HTTP.
pub(crate) fn bad_gateway(message: String) -> Status {
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        BAD_GATEWAY_MARK,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    Status::with_metadata(Code::Unavailable, message, metadata)
}

/// Whether `status` came from [`bad_gateway`].
pub(crate) fn is_bad_gateway(status: &Status) -> bool {
    status.metadata().contains_key(BAD_GATEWAY_MARK)
}

/// gRPC's mapping of an HTTP status that is not 200 (the gRPC over HTTP/2 spec).
fn http_code(s: StatusCode) -> Code {
    match s.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_timeouts() {
        let mut h = HeaderMap::new();
        assert!(status_of(&h).unwrap().is_none());
        h.insert("grpc-status", HeaderValue::from_static("5"));
        h.insert("grpc-message", HeaderValue::from_static("no%20user%2042"));
        let s = status_of(&h).unwrap().unwrap();
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "no user 42");
        h.insert("grpc-status", HeaderValue::from_static("0"));
        assert!(status_of(&h).unwrap().is_none());
        h.insert("grpc-status", HeaderValue::from_static("abc"));
        assert!(is_bad_gateway(&status_of(&h).unwrap_err()));
        let timeout = crate::grpc::encode_timeout;
        assert_eq!(timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(
            http_code(StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
    }
}
