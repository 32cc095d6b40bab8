//! A lean HTTP/1.1 client for proxy routes: per endpoint, a pool of idle keep-alive connections;
//! the request is written by the calling task (one `writev`-sized write) and the response head
//! parsed in place with httparse. A body that is already in the read buffer when the head is
//! parsed (the usual API answer) comes back as one `Full` chunk and the connection goes back to
//! the pool at once; a longer one streams from the connection, which returns to the pool when
//! the body ends. Content-Length, chunked and until-close bodies are handled.
//!
//! Why not hyper's pooled client: each request crossed from the calling task to a spawned
//! connection task and back through channels, and the response body through another one. Under
//! proxy load that hand-off was the gateway's largest user-space cost (see BENCHMARKS.md).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;

use crate::http1::client::{ClientError, Conn, idempotent, may_resend};
use crate::http1::{Framing, Head, Step};

/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A streamed response body (the rest of a response that was not read with its head).
pub(crate) type StreamedBody =
    StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>>;

/// A proxied response's body: all of it, or a stream.
pub(crate) type ProxyBody = Either<Full<Bytes>, StreamedBody>;

/// An idle connection and since when.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// Idle keep-alive connections to one endpoint.
pub(crate) struct Pool {
    /// `host:port`, also sent as the Host.
    addr: String,
    connect_timeout: Duration,
    /// TLS to the endpoint (`[[upstreams]] tls`).
    tls: Option<std::sync::Arc<crate::net::tls::ClientTls>>,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle.lock().map_or(0, |v| v.len()))
            .finish()
    }
}

/// A response head as the proxy forwards it, with how its body ends.
type Parsed = (Response<()>, Head);

impl Pool {
    /// An empty pool for the endpoint at `addr` (`host:port`).
    pub(crate) fn new(
        addr: &str,
        connect_timeout: Duration,
        tls: Option<std::sync::Arc<crate::net::tls::ClientTls>>,
    ) -> Self {
        Pool {
            addr: addr.to_string(),
            connect_timeout,
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A new connection to the endpoint, outside the pool (a WebSocket upgrade keeps it).
    pub(crate) async fn dial(&self) -> std::io::Result<crate::net::tls::Stream> {
        let tcp = crate::net::connect(self.addr.as_str(), Some(self.connect_timeout)).await?;
        crate::net::tls::wrap(tcp, self.tls.as_deref(), Some(self.connect_timeout)).await
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            // Stray bytes or a close since the checkin: never reused (they would answer the
            // next request).
            if c.since.elapsed() < IDLE_TIMEOUT && c.conn.idle_clean() {
                return Some(c.conn);
            }
        }
        None
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Sends one request to the endpoint (its address is the Host) and returns the response,
    /// whose body may still be streaming. A failure is the request's answer, except the one
    /// case [`may_resend`] names, where the request goes once more on a new connection.
    /// The body must have arrived by `deadline` (the route's): a body that stalls past it ends
    /// with an error, and its connection is not reused.
    pub(crate) async fn send(
        self: &Arc<Self>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<Response<ProxyBody>, ClientError> {
        let head = request_head(method, path, &self.addr, headers, body.len());
        let replayable = idempotent(method);
        let mut reused = self.checkout();
        loop {
            let was_reused = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                // Boxed: connecting (and a TLS handshake) is the rare case, and its state
                // would otherwise make every request's future larger (and moved) by its size.
                None => {
                    Box::pin(Conn::connect_tls(
                        self.addr.as_str(),
                        self.tls.as_deref(),
                        Some(self.connect_timeout),
                    ))
                    .await?
                }
            };
            match exchange(&mut conn, &head, body, method).await {
                Ok((resp, head)) => return self.finish(conn, resp, head, deadline),
                Err(e) if may_resend(&e, was_reused, replayable) => continue,
                Err(ClientError::ClosedBeforeResponse | ClientError::NotSent) => {
                    return Err(ClientError::protocol(
                        "the upstream closed the connection without answering",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The body: whole if it is all in the buffer already, else a stream that checks the
    /// connection back in when it ends. A body that is invalid in what was already read is an
    /// error (502: nothing was sent to the client yet); later, the stream ends with an error
    /// (the client's response is aborted, never cut short as if complete).
    fn finish(
        self: &Arc<Self>,
        mut conn: Conn,
        resp: Response<()>,
        head: Head,
        deadline: tokio::time::Instant,
    ) -> Result<Response<ProxyBody>, ClientError> {
        let Some(mut framing) = head.framing else {
            if conn.reusable(head.keep_alive) {
                self.checkin(conn);
            }
            return Ok(resp.map(|()| Either::Left(Full::new(Bytes::new()))));
        };
        // Decode what is buffered; the usual small answer is all there already, in one piece
        // (kept without a `Vec`: that was one allocation a response).
        let mut chunks: pieces::Pieces = Default::default();
        loop {
            match framing.step(&mut conn.buf, false) {
                Ok(Step::Data(n)) => chunks.push(conn.buf.split_to(n).freeze()),
                Ok(Step::Done) => {
                    let body = chunks.into_one();
                    if conn.reusable(head.keep_alive) {
                        self.checkin(conn);
                    }
                    return Ok(resp.map(|()| Either::Left(Full::new(body))));
                }
                // The rest streams (a later decoding error ends the stream with an error).
                Ok(Step::NeedMore) => break,
                Err(e) => return Err(ClientError::protocol(format!("response body: {e}"))),
            }
        }
        let state = Streaming {
            conn: Some(conn),
            deadline,
            framing,
            pending: chunks.into_deque(),
            pool: self.clone(),
            keep_alive: head.keep_alive,
            done: false,
        };
        let stream = futures_util::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        });
        Ok(resp.map(|()| Either::Right(StreamBody::new(Box::pin(stream) as _))))
    }
}

/// Writes the request and reads the response head; body bytes that came with it stay in the
/// connection's buffer.
async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    body: &Bytes,
    method: &Method,
) -> Result<Parsed, ClientError> {
    conn.send(head, body).await?;
    let (parsed, len) = conn.read_head(*method == Method::HEAD, head_of).await?;
    let (offsets, status, framing) = parsed;
    // Header values are kept as slices of the head (no copy).
    let bytes = conn.buf.split_to(len).freeze();
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.reserve(offsets.len());
    for (name, from, to) in offsets {
        let value = HeaderValue::from_maybe_shared(bytes.slice(from..to))
            .map_err(|e| ClientError::protocol(format!("header {name}: {e}")))?;
        headers.append(name, value);
    }
    if matches!(framing.framing, Some(Framing::Chunked(_))) {
        // The body is re-framed by the gateway's server: a length it also had is dropped.
        headers.remove(header::CONTENT_LENGTH);
    }
    Ok((resp, framing))
}

/// Header names and where their values are in the head's bytes, the status, the framing.
type HeadOffsets = (Vec<(HeaderName, usize, usize)>, StatusCode, Head);

/// What the proxy keeps of a parsed head: names now, values as offsets into its bytes (turned
/// into slices once the head is split off the buffer). Upgrades (101) are refused.
fn head_of(
    r: &httparse::Response<'_, '_>,
    framing: Head,
    bytes: &[u8],
) -> Result<HeadOffsets, ClientError> {
    let code = r.code.unwrap_or(0);
    if code == 101 {
        return Err(ClientError::protocol("protocol upgrades are not proxied"));
    }
    let status = StatusCode::from_u16(code).map_err(|e| ClientError::protocol(e.to_string()))?;
    let base = bytes.as_ptr() as usize;
    let mut values = Vec::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        let name = crate::http1::header_name(h.name.as_bytes())
            .map_err(|e| ClientError::protocol(format!("header name {:?}: {e}", h.name)))?;
        let at = match h.value.is_empty() {
            true => 0,
            false => h.value.as_ptr() as usize - base,
        };
        values.push((name, at, at + h.value.len()));
    }
    Ok((values, status, framing))
}

struct Streaming {
    conn: Option<Conn>,
    /// When the whole body must have arrived.
    deadline: tokio::time::Instant,
    framing: Framing,
    pending: std::collections::VecDeque<Bytes>,
    pool: Arc<Pool>,
    keep_alive: bool,
    done: bool,
}

impl Streaming {
    async fn next(&mut self) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        if let Some(b) = self.pending.pop_front() {
            return Some(Ok(Frame::data(b)));
        }
        if self.done {
            return None;
        }
        let conn = self.conn.as_mut()?;
        let mut eof = false;
        loop {
            match self.framing.step(&mut conn.buf, eof) {
                Ok(Step::Data(n)) => return Some(Ok(Frame::data(conn.buf.split_to(n).freeze()))),
                Ok(Step::Done) => {
                    self.done = true;
                    let conn = self.conn.take()?;
                    if !eof && conn.reusable(self.keep_alive) {
                        self.pool.checkin(conn);
                    }
                    return None;
                }
                Ok(Step::NeedMore) => {
                    match tokio::time::timeout_at(self.deadline, conn.fill()).await {
                        Ok(Ok(more)) => eof = !more,
                        Ok(Err(e)) => return self.fail(std::io::Error::other(e)),
                        Err(_) => {
                            let late = std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "the upstream's body did not arrive within the route's deadline",
                            );
                            return self.fail(late);
                        }
                    }
                }
                Err(e) => return self.fail(std::io::Error::other(e)),
            }
        }
    }

    /// Ends the body with an error; the connection is dropped, never reused.
    fn fail(&mut self, e: std::io::Error) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        self.done = true;
        self.conn = None;
        Some(Err(e))
    }
}

/// The request line and headers (hop-by-hop headers are already gone); the body is framed with
/// Content-Length.
fn request_head(
    method: &Method,
    path: &str,
    authority: &str,
    headers: &HeaderMap,
    body_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::HOST || name == header::CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length =
        body_len > 0 || matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if needs_length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body_len.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A parsed head as the tests look at it: the response, its framing, keep-alive.
#[cfg(test)]
type TestHead = (Response<()>, Option<Framing>, bool);

/// Parses a response head from the front of `buf` as the proxy does (for tests).
#[cfg(test)]
fn parse_head(buf: &mut bytes::BytesMut, method: &Method) -> Result<Option<TestHead>, ClientError> {
    let mut build = head_of;
    let Some(((offsets, status, framing), len)) =
        crate::http1::client::parse_head(buf, *method == Method::HEAD, &mut build)?
    else {
        return Ok(None);
    };
    let bytes = buf.split_to(len).freeze();
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    for (name, from, to) in offsets {
        let value = HeaderValue::from_maybe_shared(bytes.slice(from..to))
            .map_err(|e| ClientError::protocol(e.to_string()))?;
        resp.headers_mut().append(name, value);
    }
    Ok(Some((resp, framing.framing, framing.keep_alive)))
}

/// The pieces of a body decoded from the buffer: one without allocating, more in a `Vec`.
mod pieces {
    use bytes::Bytes;

    #[derive(Default)]
    pub(super) enum Pieces {
        #[default]
        None,
        One(Bytes),
        Many(Vec<Bytes>),
    }

    impl Pieces {
        pub(super) fn push(&mut self, b: Bytes) {
            *self = match std::mem::take(self) {
                Pieces::None => Pieces::One(b),
                Pieces::One(a) => Pieces::Many(vec![a, b]),
                Pieces::Many(mut v) => {
                    v.push(b);
                    Pieces::Many(v)
                }
            };
        }

        /// All of it as one `Bytes` (copied only when there were several pieces).
        pub(super) fn into_one(self) -> Bytes {
            match self {
                Pieces::None => Bytes::new(),
                Pieces::One(b) => b,
                Pieces::Many(v) => v.concat().into(),
            }
        }

        pub(super) fn into_deque(self) -> std::collections::VecDeque<Bytes> {
            match self {
                Pieces::None => Default::default(),
                Pieces::One(b) => [b].into(),
                Pieces::Many(v) => v.into(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn heads_parse_with_their_framing() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n\r\nok"[..],
        );
        let (resp, framing, keep) = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-a"], "b");
        assert_eq!(framing, Some(Framing::Length(2)));
        assert!(keep);
        assert_eq!(&buf[..], b"ok");

        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\nrest"[..]);
        let (_, framing, keep) = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(framing, Some(Framing::UntilClose));
        assert!(!keep);

        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"[..],
        );
        let (_, framing, keep) = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(framing, Some(Framing::Chunked(crate::http1::Chunk::Size)));
        assert!(!keep);

        let mut buf =
            BytesMut::from(&b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"[..]);
        let (_, framing, _) = parse_head(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(framing, None);

        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-len"[..]);
        assert!(parse_head(&mut buf, &Method::GET).unwrap().is_none());
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, &Method::GET).is_err());
    }

    #[test]
    fn the_request_head_is_framed_by_length() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let head = request_head(&Method::POST, "/a?b=c", "127.0.0.1:9", &h, 3);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: 127.0.0.1:9\r\nx-request-id: r1\r\ncontent-length: 3\r\n\r\n"
        );
    }
}
