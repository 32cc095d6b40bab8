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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1::{Framing, Step};

const READ_CHUNK: usize = 16 * 1024;
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;
/// Idle connections kept per endpoint.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A streamed response body (the rest of a response that was not read with its head).
pub type StreamedBody =
    StreamBody<Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send>>>;

/// A proxied response's body: all of it, or a stream.
pub type ProxyBody = Either<Full<Bytes>, StreamedBody>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// No connection could be made (refused, timed out): the request never left.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed while sending or receiving.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The upstream's answer is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Protocol(String),
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

/// Idle keep-alive connections to one endpoint.
pub struct Pool {
    /// `host:port`, also sent as the Host.
    addr: String,
    connect_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.idle.lock().map_or(0, |v| v.len()))
            .finish()
    }
}

fn protocol(msg: impl Into<String>) -> H1Error {
    H1Error::Protocol(msg.into())
}

async fn write_request(stream: &mut TcpStream, head: &[u8], body: &Bytes) -> std::io::Result<()> {
    if body.is_empty() {
        return stream.write_all(head).await;
    }
    let mut bufs = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
    let mut slices: &mut [std::io::IoSlice<'_>] = &mut bufs;
    while !slices.is_empty() {
        let n = stream.write_vectored(slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Reads more into `buf`; Ok(false) at end of stream.
async fn fill(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<bool> {
    buf.reserve(READ_CHUNK);
    Ok(stream.read_buf(buf).await? > 0)
}

impl Pool {
    /// An empty pool for the endpoint at `addr` (`host:port`).
    pub fn new(addr: &str, connect_timeout: Duration) -> Self {
        Pool {
            addr: addr.to_string(),
            connect_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if c.idle_since.elapsed() < IDLE_TIMEOUT {
                return Some(c);
            }
        }
        None
    }

    fn checkin(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Sends one request to the endpoint (its address is the Host) and returns the response,
    /// whose body may still be streaming. A reused connection that the upstream had closed (no
    /// byte of the answer) is replaced and the request sent once more.
    pub async fn send(
        self: &std::sync::Arc<Self>,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response<ProxyBody>, H1Error> {
        let head = request_head(method, path, &self.addr, headers, body.len());
        let mut reused = self.checkout();
        loop {
            let fresh = reused.is_none();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => Conn {
                    stream: connect(&self.addr, self.connect_timeout).await?,
                    buf: BytesMut::with_capacity(READ_CHUNK),
                    idle_since: Instant::now(),
                },
            };
            match self.exchange(&mut conn, &head, body, method).await {
                Ok(Exchange::Answered(resp, framing, keep_alive)) => {
                    return Ok(self.finish(conn, resp, framing, keep_alive));
                }
                Ok(Exchange::ClosedBeforeAnswer) if !fresh => continue,
                Ok(Exchange::ClosedBeforeAnswer) => {
                    return Err(protocol(
                        "the upstream closed the connection without answering",
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn exchange(
        &self,
        conn: &mut Conn,
        head: &[u8],
        body: &Bytes,
        method: &Method,
    ) -> Result<Exchange, H1Error> {
        conn.buf.clear();
        // A connection the upstream closed while idle fails here, or reads nothing: either way
        // no byte of an answer came, so the request can go again on a new connection.
        if write_request(&mut conn.stream, head, body).await.is_err() {
            return Ok(Exchange::ClosedBeforeAnswer);
        }
        loop {
            match fill(&mut conn.stream, &mut conn.buf).await {
                Ok(true) => {}
                Ok(false) | Err(_) if conn.buf.is_empty() => {
                    return Ok(Exchange::ClosedBeforeAnswer);
                }
                Ok(false) => {
                    return Err(protocol("the connection closed inside the response head"));
                }
                Err(e) => return Err(H1Error::Io(e)),
            }
            match parse_head(&mut conn.buf, method)? {
                Some(parsed) => {
                    let (resp, framing, keep_alive) = parsed;
                    return Ok(Exchange::Answered(resp, framing, keep_alive));
                }
                None if conn.buf.len() > MAX_HEAD => {
                    return Err(protocol("response head over 64 KiB"));
                }
                None => {}
            }
        }
    }

    /// The body: whole if it is all in the buffer already, else a stream that checks the
    /// connection back in when it ends.
    fn finish(
        self: &std::sync::Arc<Self>,
        mut conn: Conn,
        resp: Response<()>,
        mut framing: Option<Framing>,
        keep_alive: bool,
    ) -> Response<ProxyBody> {
        let Some(f) = framing.as_mut() else {
            if keep_alive && conn.buf.is_empty() {
                self.checkin(conn);
            }
            return resp.map(|()| Either::Left(Full::new(Bytes::new())));
        };
        // Decode what is buffered; the usual small answer is all there already.
        let mut chunks: Vec<Bytes> = Vec::new();
        loop {
            match f.step(&mut conn.buf, false) {
                Ok(Step::Data(n)) => chunks.push(conn.buf.split_to(n).freeze()),
                Ok(Step::Done) => {
                    let body = match chunks.len() {
                        0 => Bytes::new(),
                        1 => chunks.pop().unwrap_or_default(),
                        _ => chunks.concat().into(),
                    };
                    if keep_alive && conn.buf.is_empty() {
                        self.checkin(conn);
                    }
                    return resp.map(|()| Either::Left(Full::new(body)));
                }
                // The rest streams (a decoding error surfaces there, as the body's error).
                Ok(Step::NeedMore) | Err(_) => break,
            }
        }
        let state = Streaming {
            conn: Some(conn),
            framing: *f,
            pending: chunks.into(),
            pool: self.clone(),
            keep_alive,
            done: false,
        };
        let stream = futures_util::stream::unfold(state, |mut s| async move {
            let item = s.next().await?;
            Some((item, s))
        });
        resp.map(|()| Either::Right(StreamBody::new(Box::pin(stream) as _)))
    }
}

enum Exchange {
    Answered(Response<()>, Option<Framing>, bool),
    ClosedBeforeAnswer,
}

struct Streaming {
    conn: Option<Conn>,
    framing: Framing,
    pending: std::collections::VecDeque<Bytes>,
    pool: std::sync::Arc<Pool>,
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
                    if self.keep_alive && !eof && conn.buf.is_empty() {
                        self.pool.checkin(conn);
                    }
                    return None;
                }
                Ok(Step::NeedMore) => match fill(&mut conn.stream, &mut conn.buf).await {
                    Ok(more) => eof = !more,
                    Err(e) => {
                        self.done = true;
                        self.conn = None;
                        return Some(Err(e));
                    }
                },
                Err(e) => {
                    self.done = true;
                    self.conn = None;
                    return Some(Err(std::io::Error::other(e)));
                }
            }
        }
    }
}

async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, H1Error> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(H1Error::Connect(e)),
        Err(_) => {
            return Err(H1Error::Connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no connection within {}",
                    humantime::format_duration(timeout)
                ),
            )));
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
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

type Parsed = (Response<()>, Option<Framing>, bool);

/// Parses a response head from the front of `buf` (skipping 1xx answers), leaving the body
/// bytes in it. None: incomplete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Parsed>, H1Error> {
    loop {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut raw);
        let len = match r.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(protocol(e.to_string())),
        };
        let code = r.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|e| protocol(e.to_string()))?;
        if status.is_informational() && code != 101 {
            buf.advance(len);
            continue; // 100 Continue and friends: the real answer follows
        }
        if code == 101 {
            return Err(protocol("protocol upgrades are not proxied"));
        }
        let framing = crate::http1::head(&r, *method == Method::HEAD).map_err(protocol)?;
        let base = buf.as_ptr() as usize;
        // Header values are kept as slices of the head (no copy): their offsets now, the
        // slices once the head is split off the buffer.
        let mut values: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(r.headers.len());
        for h in r.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|e| protocol(format!("header name {:?}: {e}", h.name)))?;
            let at = if h.value.is_empty() {
                0
            } else {
                h.value.as_ptr() as usize - base
            };
            values.push((name, at, at + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.reserve(values.len());
        for (name, from, to) in values {
            let value = HeaderValue::from_maybe_shared(head.slice(from..to))
                .map_err(|e| protocol(format!("header {name}: {e}")))?;
            headers.append(name, value);
        }
        if matches!(framing.framing, Some(Framing::Chunked(_))) {
            // The body is re-framed by the gateway's server: a length it also had is dropped.
            headers.remove(header::CONTENT_LENGTH);
        }
        return Ok(Some((resp, framing.framing, framing.keep_alive)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
