//! The lean HTTP/1.1 serving path (issue #30): one task per connection reading into one
//! reusable buffer, heads parsed in place by [`crate::http1::server`] (the smuggling rules
//! decided there, once), the answer's head and body written with one write. A body that came
//! with its head is handed to the handler whole; one that arrives later is passed on in pieces
//! as the connection reads it ([`LeanBody`]), so that the handler's body limit (413) and
//! deadline (408) hold as on hyper's path. What it does not serve it hands, with the bytes
//! already read, to hyper for the rest of the connection's life (a
//! [`Rewind`](super::rewind::Rewind) in front of the socket): a head `http1::server` leaves
//! to the general server (`Upgrade`, `Expect`, absolute-form, the HTTP/2 preface of h2c with
//! prior knowledge), and a chunked body.
//!
//! The decision is made per head, from the parse that is needed anyway. What hyper did for
//! the served requests and this keeps: pipelined requests answered in order; `Date`;
//! `Connection: close` when the client or the server ends the connection; a HEAD's answer
//! without a body; a panicking handler answered 500; the client hanging up while its request
//! is in flight drops the request (counted 499 by the gateway's metrics); the header-read and
//! idle timeouts; on shutdown, a connection closes between requests (drain); a body its
//! handler did not read to the end closes the connection after the answer.

use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::pin;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Either};
use hyper::body::{Body, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::http1::server::{self, BodyFraming, Head, Parsed, Spans};

/// The request body a handler served by the lean path takes: hyper's, for the requests it
/// serves, or the lean path's ([`LeanBody`]).
pub type ReqBody = Either<Incoming, LeanBody>;

/// A request body read by the lean path: what came with the head, then (when the head came
/// first) the rest as the connection's task reads it, in pieces through a small channel, so
/// that the handler's own limit and deadline apply to it as they do to hyper's bodies.
#[derive(Debug)]
pub struct LeanBody {
    first: Bytes,
    rest: Option<tokio::sync::mpsc::Receiver<Bytes>>,
    /// Bytes still to come after `first`.
    left: u64,
}

impl LeanBody {
    /// A body that is all here.
    pub fn whole(body: Bytes) -> LeanBody {
        LeanBody {
            first: body,
            rest: None,
            left: 0,
        }
    }
}

impl Body for LeanBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, io::Error>>> {
        use std::task::Poll;
        if !self.first.is_empty() {
            let first = std::mem::take(&mut self.first);
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match std::task::ready!(rest.poll_recv(cx)) {
            Some(piece) => {
                self.left = self.left.saturating_sub(piece.len() as u64);
                Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
            }
            None => {
                self.rest = None;
                let what = "the client closed the connection before its body ended";
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    what,
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_empty() && self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.first.len() as u64 + self.left)
    }
}

/// Pieces of a body in the channel to its handler at most (then the connection's buffer
/// holds what comes, up to [`READ_AHEAD`], and reading stops until the handler takes more).
const BODY_PIECES: usize = 4;

/// The sending end of a body that is still arriving: the channel and what is still to come.
struct Arriving {
    to: tokio::sync::mpsc::Sender<Bytes>,
    left: u64,
}

/// The receiving end of a body that is still arriving, and how much is to come.
type Rest = (tokio::sync::mpsc::Receiver<Bytes>, u64);

/// Ready when the body's channel has room for a piece (or its handler dropped it).
async fn room(arriving: &Option<Arriving>) {
    if let Some(a) = arriving {
        drop(a.to.reserve().await);
    }
}

/// What woke a request in flight.
enum Event<R> {
    Answered(R),
    Room,
    Read(io::Result<usize>),
}

/// The read buffer's first room, and how much it grows by.
const READ_ROOM: usize = 8 * 1024;

/// Bytes of pipelined requests read ahead while one is in flight (reading is what notices a
/// client hanging up; past this much it stops until the answer is written).
const READ_AHEAD: usize = 64 * 1024;

/// A body at most this long is copied behind its head and written with it in one write.
const COPY_BODY: usize = 16 * 1024;

/// What a lean connection needs from its listener.
pub(super) struct Setting {
    pub timeouts: super::watch::Timeouts,
    pub stopping: tokio::sync::watch::Receiver<bool>,
    pub limits: server::Limits,
}

/// How a lean connection ended.
pub(super) enum End {
    /// Closed (by either side, a timeout, a refusal or the drain).
    Closed,
    /// The rest is hyper's: the connection, with these bytes read from it first.
    Handover(TcpStream, Bytes),
}

/// Serves `stream` until it closes or is handed over.
pub(super) async fn serve<H, F, B>(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: &H,
    mut setting: Setting,
) -> End
where
    H: Fn(Request<ReqBody>, SocketAddr) -> F,
    F: std::future::Future<Output = Response<B>>,
    B: Body<Data = Bytes> + super::FromFull,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = Conn {
        buf: BytesMut::with_capacity(READ_ROOM),
        spans: Spans::default(),
        out: Vec::with_capacity(1024),
        last_activity: Instant::now(),
        timer: Box::pin(tokio::time::sleep(setting.timeouts.idle)),
    };
    loop {
        let head = match conn.next_head(&mut stream, &mut setting).await {
            Next::Head(head) => head,
            Next::Closed => return End::Closed,
            Next::Handover => return End::Handover(stream, conn.buf.freeze()),
            Next::Refused(refusal) => {
                let status =
                    StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
                conn.refuse(&mut stream, status, refusal.reason).await;
                return End::Closed;
            }
        };
        let Some((here, mut arriving, rest)) = conn.body_of(&head) else {
            return End::Handover(stream, conn.buf.freeze()); // chunked: hyper's
        };
        let head_request = conn.buf[head.method.clone()] == *b"HEAD";
        let request = match conn.request(&head, here, rest) {
            Ok(request) => request,
            Err(reason) => {
                conn.refuse(&mut stream, StatusCode::BAD_REQUEST, reason)
                    .await;
                return End::Closed;
            }
        };
        // Pinned where it is made: the gateway's request future is a few KB, copied whole at
        // every move.
        let answer = pin!(AssertUnwindSafe(handler(request, peer)).catch_unwind());
        let Some(response) = conn.in_flight(&mut stream, answer, &mut arriving).await else {
            return End::Closed; // the client left: the request was dropped with its future
        };
        // A body its handler did not read to the end (a 413, an early answer) leaves the
        // connection where the next request cannot be found: it closes after this answer.
        let unread = arriving.is_some_and(|a| a.left > 0);
        let keep = head.keep_alive && !unread && !*setting.stopping.borrow();
        let asked = Asked {
            keep,
            head: head_request,
            http11: head.http11,
        };
        match conn.answer(&mut stream, response, asked).await {
            Ok(true) => conn.last_activity = Instant::now(),
            Ok(false) | Err(_) => {
                let _ = stream.shutdown().await;
                return End::Closed;
            }
        }
    }
}

/// The error code name of a refusal's status (the project's JSON error shape).
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        414 | 431 => "OUT_OF_RANGE",
        _ => "INVALID_ARGUMENT",
    }
}

/// What the front of the connection holds next.
enum Next {
    Head(Head),
    Closed,
    Handover,
    Refused(server::Refusal),
}

/// One connection's reusable state.
struct Conn {
    buf: BytesMut,
    spans: Spans,
    out: Vec<u8>,
    last_activity: Instant,
    /// Armed lazily: it may fire early (then the deadline is checked and it is re-armed), so a
    /// request arriving in one read costs no timer operation.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    /// Reads until a whole head is at the front of the buffer, within the idle timeout (no
    /// byte yet) and the header-read timeout (from the head's first byte).
    async fn next_head(&mut self, stream: &mut TcpStream, setting: &mut Setting) -> Next {
        let mut head_started: Option<Instant> = None;
        loop {
            if !self.buf.is_empty() {
                match server::parse(&self.buf, &setting.limits, &mut self.spans) {
                    Ok(Parsed::Head(head)) => return Next::Head(head),
                    Ok(Parsed::Other) => return Next::Handover,
                    Ok(Parsed::Partial) => {}
                    Err(refusal) => return Next::Refused(refusal),
                }
                head_started.get_or_insert_with(Instant::now);
            } else if *setting.stopping.borrow() {
                return Next::Closed; // drained between requests
            }
            let deadline = match head_started {
                Some(at) => at + setting.timeouts.header_read,
                None => self.last_activity + setting.timeouts.idle,
            };
            if self.buf.capacity() - self.buf.len() < READ_ROOM / 2 {
                self.buf.reserve(READ_ROOM);
            }
            // Armed lazily: only when the armed time is later than the deadline or past.
            let armed = self.timer.deadline();
            if armed > deadline || armed <= Instant::now() {
                self.timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                read = stream.read_buf(&mut self.buf) => match read {
                    Ok(0) | Err(_) => return Next::Closed,
                    Ok(_) => {}
                },
                () = self.timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return Next::Closed;
                    }
                }
                _ = setting.stopping.changed(), if head_started.is_none() => {}
            }
        }
    }

    /// Where `head`'s body is: the bytes of it already here, and when more is to come, the
    /// channel that takes it to the handler (both ends). None: a chunked body (hyper's).
    fn body_of(&self, head: &Head) -> Option<(usize, Option<Arriving>, Option<Rest>)> {
        let n = match head.body {
            BodyFraming::None => return Some((0, None, None)),
            BodyFraming::Length(n) => n,
            BodyFraming::Chunked => return None,
        };
        let here = (self.buf.len() - head.len).min(usize::try_from(n).unwrap_or(usize::MAX));
        match n - here as u64 {
            0 => Some((here, None, None)),
            left => {
                let (to, from) = tokio::sync::mpsc::channel(BODY_PIECES);
                Some((here, Some(Arriving { to, left }), Some((from, left))))
            }
        }
    }

    /// Answers a request that cannot be served with `status` and `reason`, and closes.
    async fn refuse(&mut self, stream: &mut TcpStream, status: StatusCode, reason: &str) {
        let answer = super::json_error(status, code_of(status), reason);
        let _ = self.answer(stream, answer, Asked::CLOSING).await;
        let _ = stream.shutdown().await;
    }

    /// The request at the front of the buffer (head and `body_len` bytes of body), taken off
    /// it, the rest of its body to come through `rest`; its fields' values share the buffer's
    /// bytes, not copied.
    fn request(
        &mut self,
        head: &Head,
        body_len: usize,
        rest: Option<Rest>,
    ) -> Result<Request<ReqBody>, &'static str> {
        let bytes = self.buf.split_to(head.len + body_len).freeze();
        let method = Method::from_bytes(&bytes[head.method.clone()])
            .map_err(|_| "a malformed request method")?;
        let uri = Uri::from_maybe_shared(bytes.slice(head.target.clone()))
            .map_err(|_| "a malformed request target")?;
        // Room for what the gateway adds before forwarding (request id, X-Forwarded-For,
        // Forwarded): growing the map was one more allocation a request.
        let mut headers = HeaderMap::with_capacity(self.spans.fields.len() + 4);
        for (name, value) in &self.spans.fields {
            let name = crate::http1::header_name(&bytes[name.clone()])
                .map_err(|_| "a malformed field name")?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(value.clone()))
                .map_err(|_| "a malformed field value")?;
            headers.append(name, value);
        }
        let mut body = LeanBody::whole(bytes.slice(head.len..));
        if let Some((from, left)) = rest {
            (body.rest, body.left) = (Some(from), left);
        }
        let mut request = Request::new(Either::Right(body));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = match head.http11 {
            true => http::Version::HTTP_11,
            false => http::Version::HTTP_10,
        };
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Awaits the answer, reading meanwhile: the rest of the request's body (handed to it in
    /// pieces as it arrives), then ahead. None when the client hung up first (the request's
    /// future is dropped here, which is how the gateway counts a 499).
    async fn in_flight<F, B>(
        &mut self,
        stream: &mut TcpStream,
        mut answer: std::pin::Pin<&mut F>,
        arriving: &mut Option<Arriving>,
    ) -> Option<Response<B>>
    where
        F: std::future::Future<Output = std::thread::Result<Response<B>>>,
        B: Body<Data = Bytes> + super::FromFull,
    {
        loop {
            if self.buf.capacity() - self.buf.len() < READ_ROOM / 2 && self.buf.len() < READ_AHEAD {
                self.buf.reserve(READ_ROOM);
            }
            // Body bytes waiting in the buffer go to the handler when the channel has room.
            let body_waiting = !self.buf.is_empty()
                && arriving
                    .as_ref()
                    .is_some_and(|a| a.left > 0 && !a.to.is_closed());
            let event = tokio::select! {
                biased;
                answered = answer.as_mut() => Event::Answered(answered),
                () = room(arriving), if body_waiting => Event::Room,
                read = stream.read_buf(&mut self.buf), if self.buf.len() < READ_AHEAD => Event::Read(read),
            };
            match event {
                Event::Answered(answered) => {
                    // A panic (a bug, ours or a dependency's) costs this request a 500.
                    return Some(
                        answered.unwrap_or_else(|_| super::internal_error().map(B::from_full)),
                    );
                }
                Event::Room => {
                    if let Some(a) = arriving.as_mut() {
                        let n = usize::try_from(a.left)
                            .unwrap_or(usize::MAX)
                            .min(self.buf.len());
                        // The only sender, and room was just seen: this fails only when the
                        // handler dropped the body (it then stays unread, and the connection
                        // closes after the answer).
                        if a.to.try_send(self.buf.split_to(n).freeze()).is_ok() {
                            a.left -= n as u64;
                        }
                    }
                }
                Event::Read(Ok(0) | Err(_)) => return None,
                Event::Read(Ok(_)) => {}
            }
        }
    }

    /// Writes `response` (head and body) as `asked`; Ok(true) when the connection may carry
    /// another request.
    async fn answer<B>(
        &mut self,
        stream: &mut TcpStream,
        response: Response<B>,
        asked: Asked,
    ) -> io::Result<bool>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let bodiless = asked.head || (100..200).contains(&status) || status == 204 || status == 304;
        let closes = parts
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let keep = asked.keep && !closes;
        let exact = body.size_hint().exact();
        let declared = declared_length(&parts.headers);
        let framing = match (bodiless, exact, declared) {
            (true, _, _) => Out::None,
            (false, Some(n), _) => Out::Length(n),
            (false, None, Some(n)) => Out::Length(n),
            // HTTP/1.0 has no chunked coding: its stream ends with the connection.
            (false, None, None) if keep && asked.http11 => Out::Chunked,
            (false, None, None) => Out::UntilClose,
        };
        self.out.clear();
        write_head(&mut self.out, &parts, framing, Asked { keep, ..asked });
        let body = pin!(body);
        if bodiless {
            stream.write_all(&self.out).await?;
            return Ok(keep && framing != Out::UntilClose);
        }
        let complete = self.write_body(stream, body, framing).await?;
        Ok(keep && complete && framing != Out::UntilClose)
    }

    /// Writes the body after the head waiting in `out`: the usual answer, one data frame,
    /// with the head in one write; a stream's frames as they come (a server stream's messages
    /// must not wait). Whether the body was written whole (a body that fails midway is cut:
    /// what came is written, and the connection must close).
    async fn write_body<B>(
        &mut self,
        stream: &mut TcpStream,
        mut body: std::pin::Pin<&mut B>,
        framing: Out,
    ) -> io::Result<bool>
    where
        B: Body<Data = Bytes>,
    {
        let mut left = match framing {
            Out::Length(n) => Some(n),
            _ => None,
        };
        let mut failed = false;
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(_)) => {
                    failed = true;
                    break;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers are not sent on HTTP/1.1 (hyper does not either, unasked)
            };
            let data = match &mut left {
                // Never past the length the head declared.
                Some(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    *left -= n as u64;
                    data.slice(..n)
                }
                None => data,
            };
            if !data.is_empty() {
                self.put_data(stream, &data, framing).await?;
            }
            if !body.is_end_stream() && !self.out.is_empty() {
                stream.write_all(&self.out).await?;
                self.out.clear();
            }
        }
        if framing == Out::Chunked && !failed {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        if !self.out.is_empty() {
            stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(!failed && left.is_none_or(|l| l == 0))
    }

    /// Adds `data` to what is to be written (a chunk's framing around it when chunked),
    /// writing it out with what is pending when it is large.
    async fn put_data(
        &mut self,
        stream: &mut TcpStream,
        data: &[u8],
        framing: Out,
    ) -> io::Result<()> {
        if framing == Out::Chunked {
            use std::io::Write;
            // Into the buffer itself: no `String` per chunk.
            let _ = write!(self.out, "{:x}\r\n", data.len());
        }
        if data.len() <= COPY_BODY {
            self.out.extend_from_slice(data);
        } else {
            write_both(stream, &self.out, data).await?;
            self.out.clear();
        }
        if framing == Out::Chunked {
            self.out.extend_from_slice(b"\r\n");
        }
        if self.out.len() > COPY_BODY {
            stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Writes `a` then `b`, vectored.
async fn write_both(stream: &mut TcpStream, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = stream
            .write_vectored(&[io::IoSlice::new(a), io::IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

/// What the request asked of its answer.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// The client and the server both keep the connection.
    keep: bool,
    /// The request was HEAD: no body.
    head: bool,
    /// The request was HTTP/1.1 (else 1.0).
    http11: bool,
}

impl Asked {
    /// A refusal's: the connection closes after it.
    const CLOSING: Asked = Asked {
        keep: false,
        head: false,
        http11: true,
    };
}

/// How an answer's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The answer's own `Content-Length` (a streamed proxy answer keeps its upstream's).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    crate::http1::content_length(headers.get(http::header::CONTENT_LENGTH)?.as_bytes())
}

/// The status line and fields: the framing fields are this path's own (the handler's are
/// left out, but a HEAD answer's `Content-Length`, which says what a GET would get); `Date`
/// added when the handler set none.
fn write_head(out: &mut Vec<u8>, parts: &http::response::Parts, framing: Out, asked: Asked) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(parts.status.as_u16()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut dated = false;
    for (name, value) in &parts.headers {
        let framing_field = *name == http::header::CONTENT_LENGTH
            || *name == http::header::TRANSFER_ENCODING
            || *name == http::header::CONNECTION;
        if framing_field && !(asked.head && *name == http::header::CONTENT_LENGTH) {
            continue;
        }
        dated |= *name == http::header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Out::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Out::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Out::None | Out::UntilClose => {}
    }
    if !asked.keep || framing == Out::UntilClose {
        out.extend_from_slice(b"connection: close\r\n");
    } else if !asked.http11 {
        // An HTTP/1.0 client closes after the answer unless told otherwise (ab -k).
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Calls `f` with the HTTP date of now, formatted at most once a second per thread.
fn date(f: impl FnOnce(&[u8])) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second || cached.1.is_empty() {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncWriteExt;

    /// What the handler saw of a request.
    type Seen = (String, String, Vec<u8>);

    /// Serves one connection of `pieces` (written one after another; then, with `answers`,
    /// read until that many 200s came, else the write side closed and read to the end) with
    /// a handler that records each request and answers 200 `ok`; returns what it
    /// recorded, the bytes answered, and the bytes handed over with the connection (None: the
    /// lean path closed it).
    fn exchange(
        pieces: Vec<Vec<u8>>,
        answers: Option<usize>,
    ) -> (Vec<Seen>, Vec<u8>, Option<Bytes>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                for piece in pieces {
                    if s.write_all(&piece).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                let mut got = Vec::new();
                let Some(n) = answers else {
                    let _ = s.shutdown().await;
                    let _ = s.read_to_end(&mut got).await;
                    return got;
                };
                // Pipelining clients keep their write side open until answered.
                let count =
                    |got: &[u8]| String::from_utf8_lossy(got).matches(" 200 OK\r\n").count();
                let mut buf = [0u8; 4096];
                while count(&got) < n {
                    let read =
                        tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf));
                    match read.await {
                        Ok(Ok(read)) if read > 0 => got.extend_from_slice(&buf[..read]),
                        _ => break,
                    }
                }
                got
            });
            let (stream, peer) = listener.accept().await.unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let record = seen.clone();
            let handler = move |req: Request<ReqBody>, _peer: SocketAddr| {
                let record = record.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    record.lock().unwrap().push((
                        parts.method.to_string(),
                        parts.uri.to_string(),
                        body.to_vec(),
                    ));
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }
            };
            let (_stop, stopping) = tokio::sync::watch::channel(false);
            let setting = Setting {
                timeouts: crate::net::watch::Timeouts {
                    header_read: std::time::Duration::from_secs(5),
                    idle: std::time::Duration::from_secs(5),
                },
                stopping,
                limits: server::Limits::default(),
            };
            let end = match serve(stream, peer, &handler, setting).await {
                End::Closed => None,
                End::Handover(stream, read) => {
                    // hyper serves the rest, as `net::Lean` has it do.
                    let io = super::super::rewind::Rewind::new(read.clone(), stream);
                    let h = handler.clone();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let answer = h(req.map(Either::Left), peer);
                        async move { Ok::<_, std::convert::Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                        .await;
                    Some(read)
                }
            };
            let answered = client.await.unwrap();
            let seen = seen.lock().unwrap().clone();
            (seen, answered, end)
        })
    }

    /// `bytes` cut at `cuts` (positions, any order, out of range ignored).
    fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            if to > from {
                pieces.push(bytes[from..to].to_vec());
                from = to;
            }
        }
        pieces
    }

    fn request() -> impl Strategy<Value = Seen> {
        let path = "/[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}(\\?[a-z]=[0-9]{1,3})?";
        let body = proptest::collection::vec(any::<u8>(), 0..64);
        (prop::bool::ANY, path, body).prop_map(|(post, path, body)| match post {
            true => ("POST".to_string(), path, body),
            false => ("GET".to_string(), path, Vec::new()),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Pipelined requests however their bytes arrive: the handler sees exactly them, in
        /// order, and each gets its answer, all on the lean path (a body arriving after its
        /// head included).
        #[test]
        fn any_split_of_pipelined_requests_serves_the_same_requests(
            requests in proptest::collection::vec(request(), 1..5),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut raw = Vec::new();
            let mut want = Vec::new();
            for (method, path, body) in &requests {
                let mut head = format!("{method} {path} HTTP/1.1\r\nHost: h\r\n");
                if method == "POST" {
                    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
                }
                head.push_str("\r\n");
                raw.extend_from_slice(head.as_bytes());
                raw.extend_from_slice(body);
                want.push((method.clone(), path.clone(), body.clone()));
            }
            let (seen, answered, end) = exchange(split(&raw, &cuts), Some(want.len()));
            prop_assert_eq!(end, None);
            prop_assert_eq!(&seen, &want);
            let answered = String::from_utf8_lossy(&answered);
            prop_assert_eq!(answered.matches(" 200 OK\r\n").count(), want.len());
        }

        /// Arbitrary bytes never panic the loop: it answers what it serves, refuses with a
        /// 4xx, hands the connection over, or closes.
        #[test]
        fn arbitrary_bytes_end_in_an_answer_a_refusal_or_a_handover(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let (_, answered, _) = exchange(split(&bytes, &cuts), None);
            let answered = String::from_utf8_lossy(&answered);
            for status in answered.match_indices("HTTP/1.1 ").filter_map(|(i, _)| answered.get(i + 9..i + 12)) {
                prop_assert!(matches!(status, "200" | "400" | "414" | "431"), "{}", answered);
            }
        }
    }

    #[test]
    fn heads_it_leaves_are_handed_over_with_every_byte_read() {
        let upgrade =
            b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let chunked = b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let first = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n";
        for later in [
            &upgrade[..],
            &chunked[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let mut raw = first.to_vec();
            raw.extend_from_slice(later);
            let (seen, _, end) = exchange(vec![raw], None);
            assert_eq!(seen[0].1, "/first", "the first request is served here");
            assert_eq!(
                end.as_deref(),
                Some(later),
                "the rest goes to hyper, every byte"
            );
        }
    }
}
