//! The HTTP/1.1 client core that both lean clients drive: the proxy's pool (`gateway::h1`, which
//! forwards bodies) and the generator's connections (`load::h1`, which skips them). Connect,
//! write a request, read a response head (interim 1xx answers skipped, size bounded), skip a
//! body, one typed error, and the one rule for sending a request again ([`may_resend`]). Each
//! caller keeps only what differs: how it builds the head it parsed, and what it does with the
//! body.

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::ToSocketAddrs;

use super::{Framing, Head, Step};

/// Bytes reserved for each read.
pub const READ_CHUNK: usize = 16 * 1024;
/// Longest response head (status line and headers) read before giving up.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most response headers parsed.
pub const MAX_HEADERS: usize = 100;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (refused, timed out): the request never left.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The peer had closed the connection before any byte of the request was written: the
    /// request never left.
    #[error("the connection was closed before the request was written")]
    NotSent,
    /// The connection closed (or was reset) before any byte of the response came, after some
    /// or all of the request was written: the server may have acted on it.
    #[error("the connection closed before any byte of the response")]
    ClosedBeforeResponse,
    /// The connection closed inside the response (`"head"` or `"body"`).
    #[error("the connection closed inside the response {0}")]
    ClosedInside(&'static str),
    /// The connection failed while sending or receiving.
    #[error("{0}")]
    Io(io::Error),
    /// The answer is not valid HTTP/1.1 (or not one this client takes).
    #[error("invalid response: {0}")]
    Protocol(String),
}

impl ClientError {
    /// A response that is not valid HTTP/1.1.
    pub fn protocol(msg: impl Into<String>) -> Self {
        ClientError::Protocol(msg.into())
    }

    /// A stable, short name of the failure (the load generator counts outcomes by it).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(e) | ClientError::Io(e) => io_kind(e),
            ClientError::NotSent
            | ClientError::ClosedBeforeResponse
            | ClientError::ClosedInside(_) => "connection_closed",
            ClientError::Protocol(_) => "protocol_error",
        }
    }
}

/// The one reuse rule: a request goes out again, once, on a new connection only when it went
/// out on a reused keep-alive connection that the server had closed while idle — and then only
/// if no byte of it was written, or its method is idempotent (RFC 9110 §9.2.2, RFC 9112
/// §9.3.1: a POST that may have reached the server is never sent twice; bodies are held whole,
/// so they can be replayed). On a fresh connection the same is an error.
pub fn may_resend(err: &ClientError, reused: bool, idempotent: bool) -> bool {
    reused
        && match err {
            ClientError::NotSent => true,
            ClientError::ClosedBeforeResponse => idempotent,
            _ => false,
        }
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): sending it twice has the effect of once.
pub fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// Classifies an I/O error into a stable kind.
pub fn io_kind(err: &io::Error) -> &'static str {
    use io::ErrorKind::*;
    // rustls reports a failed handshake (untrusted certificate, no client certificate, …) as
    // InvalidData carrying its own error.
    if err
        .get_ref()
        .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
    {
        return "tls_error";
    }
    match err.kind() {
        ConnectionRefused => "connect_refused",
        ConnectionReset => "connection_reset",
        ConnectionAborted => "connection_aborted",
        BrokenPipe => "broken_pipe",
        UnexpectedEof => "connection_closed",
        TimedOut => "connect_timeout",
        AddrNotAvailable => "addr_not_available",
        _ => "io_error",
    }
}

/// A write that failed because the peer had closed the connection.
pub(super) fn closed_by_peer(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | NotConnected
    )
}

/// One connection and its read buffer.
#[derive(Debug)]
pub struct Conn {
    stream: crate::net::tls::Stream,
    /// What was read and not consumed yet: the rest of the head, then body bytes.
    pub buf: BytesMut,
    /// Reads through `recvmsg` with the kernel's arrival stamps (see [`Conn::stamp_arrivals`]).
    stamped: Option<Box<crate::net::rxstamp::StampedReader>>,
    /// When the last bytes read since the last send arrived, by the kernel's stamp.
    arrival: Option<std::time::Instant>,
}

impl Conn {
    /// Connects ([`crate::net::connect`]), within `timeout` when given.
    pub async fn connect(
        addr: impl ToSocketAddrs,
        timeout: Option<Duration>,
    ) -> Result<Conn, ClientError> {
        let stream = crate::net::connect(addr, timeout)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Conn::over(crate::net::tls::Stream::Plain(stream)))
    }

    /// Connects to `addr` (`host:port`), with TLS when `tls` is given, within `timeout` for
    /// each of the TCP connect and the handshake.
    pub async fn connect_tls(
        addr: &str,
        tls: Option<&crate::net::tls::ClientTls>,
        timeout: Option<Duration>,
    ) -> Result<Conn, ClientError> {
        let tcp = crate::net::connect(addr, timeout)
            .await
            .map_err(ClientError::Connect)?;
        let stream = crate::net::tls::wrap(tcp, tls, timeout)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Conn::over(stream))
    }

    /// Connects as `dial` says, with TLS when `tls` is given (the handshake timed by it).
    pub async fn open(
        dial: crate::net::Dial,
        tls: Option<&crate::net::tls::ClientTls>,
        timeout: Option<Duration>,
    ) -> Result<Conn, ClientError> {
        let stream = crate::net::tls::connect(dial, tls, timeout)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Conn::over(stream))
    }

    fn over(stream: crate::net::tls::Stream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            stamped: None,
            arrival: None,
        }
    }

    /// Asks the kernel to stamp what arrives on this connection, so [`Conn::arrival`] can say
    /// when an answer arrived however late it is read. Plain TCP only: TLS reads go through
    /// rustls (the reason is returned, and the connection reads as before).
    pub fn stamp_arrivals(&mut self) -> Result<(), String> {
        let crate::net::tls::Stream::Plain(tcp) = &self.stream else {
            return Err("not over TLS".into());
        };
        crate::net::rxstamp::enable(tcp)?;
        self.stamped = Some(Box::new(crate::net::rxstamp::StampedReader::new(
            READ_CHUNK,
        )));
        Ok(())
    }

    /// The connection's parts: its socket, what was read and not consumed, its stamped
    /// reader (for [`super::parked`], which takes a plain one out of the reactor).
    pub(super) fn into_parts(
        self,
    ) -> (
        crate::net::tls::Stream,
        BytesMut,
        Option<Box<crate::net::rxstamp::StampedReader>>,
    ) {
        (self.stream, self.buf, self.stamped)
    }

    /// Whether `Parked::park` can take this connection (plain TCP) and the kernel stamps its
    /// arrivals.
    pub fn parkable(&self) -> bool {
        matches!(self.stream, crate::net::tls::Stream::Plain(_)) && self.stamped.is_some()
    }

    /// A connection from its parts (a parked one's, back in the reactor).
    pub(super) fn from_parts(
        tcp: tokio::net::TcpStream,
        buf: BytesMut,
        stamped: Option<Box<crate::net::rxstamp::StampedReader>>,
    ) -> Conn {
        Conn {
            stream: crate::net::tls::Stream::Plain(tcp),
            buf,
            stamped,
            arrival: None,
        }
    }

    /// When the last bytes read since the last send arrived, if the kernel stamped them.
    pub fn arrival(&self) -> Option<std::time::Instant> {
        self.arrival
    }

    /// Writes a request (its head, then its body) and forgets what an earlier exchange left
    /// in the buffer. A write the peer refused because it had closed the connection is
    /// [`ClientError::NotSent`] when nothing was written yet, else
    /// [`ClientError::ClosedBeforeResponse`].
    pub async fn send(&mut self, head: &[u8], body: &[u8]) -> Result<(), ClientError> {
        self.buf.clear();
        self.arrival = None;
        let mut written = 0;
        write_all_counted(&mut self.stream, head, body, &mut written)
            .await
            .map_err(|e| match (closed_by_peer(&e), written) {
                (true, 0) => ClientError::NotSent,
                (true, _) => ClientError::ClosedBeforeResponse,
                (false, _) => ClientError::Io(e),
            })
    }

    /// Whether an idle connection is still clean: nothing readable (no stray bytes from the
    /// server, no end of stream). A connection with bytes the last response did not account
    /// for must never carry another request: they would be read as its answer.
    pub fn idle_clean(&self) -> bool {
        self.stream.idle_clean()
    }

    /// Reads more into the buffer; `Ok(false)` at end of stream.
    pub async fn fill(&mut self) -> Result<bool, ClientError> {
        if let (Some(reader), crate::net::tls::Stream::Plain(tcp)) =
            (self.stamped.as_mut(), &self.stream)
        {
            let (n, at) = reader
                .read(tcp, &mut self.buf)
                .await
                .map_err(ClientError::Io)?;
            self.arrival = at;
            return Ok(n > 0);
        }
        self.buf.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(n) => Ok(n > 0),
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Reads the response head, skipping interim 1xx answers (101 is final), and hands it to
    /// `build` with its framing and its bytes (the parsed values are slices of them). Returns what `build` made and the head's length, which is
    /// still at the front of the buffer (the caller advances past it or splits it off).
    pub async fn read_head<T>(
        &mut self,
        head_request: bool,
        mut build: impl FnMut(&httparse::Response<'_, '_>, Head, &[u8]) -> Result<T, ClientError>,
    ) -> Result<(T, usize), ClientError> {
        let mut received = false;
        loop {
            if let Some(done) = parse_head(&mut self.buf, head_request, &mut build)? {
                return Ok(done);
            }
            match self.fill().await {
                Ok(true) => received = true,
                Ok(false) | Err(_) if !received && self.buf.is_empty() => {
                    return Err(ClientError::ClosedBeforeResponse);
                }
                Ok(false) => return Err(ClientError::ClosedInside("head")),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads and discards a body framed by `framing`.
    pub async fn skip_body(&mut self, mut framing: Framing) -> Result<(), ClientError> {
        let mut eof = false;
        loop {
            match framing.step(&mut self.buf, eof) {
                Ok(Step::Data(n)) => self.buf.advance(n),
                Ok(Step::Done) => return Ok(()),
                Ok(Step::NeedMore) => match self.fill().await {
                    Ok(more) => eof = !more,
                    // A body that ends with the connection ends on a reset too.
                    Err(_) if framing == Framing::UntilClose => eof = true,
                    Err(e) => return Err(e),
                },
                // Cut short by the peer closing: the body did not end as framed.
                Err(_) if eof => return Err(ClientError::ClosedInside("body")),
                Err(e) => return Err(ClientError::protocol(e)),
            }
        }
    }

    /// Whether the connection may carry another request: the response said keep-alive, ended
    /// exactly (nothing after it is buffered) and nothing more is readable.
    pub fn reusable(&self, keep_alive: bool) -> bool {
        keep_alive && self.buf.is_empty() && self.idle_clean()
    }
}

/// Parses a response head at the front of `buf`: interim 1xx answers are consumed, a final one
/// goes to `build`. None: incomplete (an error once the head is over [`MAX_HEAD`]).
pub fn parse_head<T>(
    buf: &mut BytesMut,
    head_request: bool,
    build: &mut impl FnMut(&httparse::Response<'_, '_>, Head, &[u8]) -> Result<T, ClientError>,
) -> Result<Option<(T, usize)>, ClientError> {
    loop {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut r = httparse::Response::new(&mut raw);
        let len = match r.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(ClientError::protocol("response head over 64 KiB"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ClientError::protocol(e.to_string())),
        };
        let code = r.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue; // 100 Continue and friends: the real answer follows
        }
        let head = super::head(&r, head_request).map_err(ClientError::protocol)?;
        return Ok(Some((build(&r, head, &buf[..len])?, len)));
    }
}

/// Writes `head` then `body` (one vectored write when it can), counting what was written.
async fn write_all_counted(
    stream: &mut crate::net::tls::Stream,
    head: &[u8],
    body: &[u8],
    written: &mut usize,
) -> io::Result<()> {
    let mut bufs = [io::IoSlice::new(head), io::IoSlice::new(body)];
    let mut slices: &mut [io::IoSlice<'_>] = &mut bufs[..if body.is_empty() { 1 } else { 2 }];
    while !slices.is_empty() {
        let n = stream.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *written += n;
        io::IoSlice::advance_slices(&mut slices, n);
    }
    // TLS may hold the last records until flushed (a no-op on plain TCP).
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Status code and framing, and where the head ends in the wire.
    type Found = ((u16, Head), usize);

    /// The code and framing of the head at the front of `wire`, and its length.
    fn head_of(wire: &[u8]) -> Result<Option<Found>, ClientError> {
        let mut buf = BytesMut::from(wire);
        parse_head(&mut buf, false, &mut |r, h, _| Ok((r.code.unwrap_or(0), h)))
            .map(|o| o.map(|(t, len)| (t, len + wire.len() - buf.len())))
    }

    #[test]
    fn interim_answers_are_skipped_and_the_head_is_bounded() {
        let wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        let ((code, head), len) = head_of(wire).unwrap().unwrap();
        assert_eq!((code, head.framing), (200, Some(Framing::Length(2))));
        assert_eq!(&wire[len..], b"ok");
        assert!(
            head_of(b"HTTP/1.1 200 OK\r\ncontent-len")
                .unwrap()
                .is_none()
        );
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(head_of(&huge), Err(ClientError::Protocol(_))));
        assert!(matches!(
            head_of(b"SPDY/9 what\r\n\r\n"),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn only_a_reused_connection_closed_before_the_answer_is_retried() {
        assert!(may_resend(&ClientError::ClosedBeforeResponse, true, true));
        assert!(may_resend(&ClientError::NotSent, true, false));
        assert!(
            !may_resend(&ClientError::ClosedBeforeResponse, true, false),
            "a POST that may have arrived is not sent twice"
        );
        assert!(!may_resend(&ClientError::ClosedBeforeResponse, false, true));
        assert!(!may_resend(&ClientError::ClosedInside("head"), true, true));
        assert!(!may_resend(&ClientError::protocol("x"), true, true));
        assert!(idempotent(&http::Method::PUT) && !idempotent(&http::Method::POST));
        assert_eq!(
            ClientError::ClosedBeforeResponse.kind(),
            "connection_closed"
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(ClientError::Connect(refused).kind(), "connect_refused");
    }

    /// Valid responses of every framing, each with its body.
    fn responses() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(any::<u8>(), 0..300);
        (body, 0usize..4, any::<bool>()).prop_map(|(body, kind, interim)| {
            let mut wire = Vec::new();
            if interim {
                wire.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            match kind {
                0 => {
                    wire.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    wire.extend_from_slice(&body);
                }
                1 => {
                    wire.extend_from_slice(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    );
                    for chunk in body.chunks(37) {
                        wire.extend_from_slice(format!("{:x};ext=1\r\n", chunk.len()).as_bytes());
                        wire.extend_from_slice(chunk);
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"0\r\nx-trailer: t\r\n\r\n");
                }
                2 => wire.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n"),
                _ => {
                    wire.extend_from_slice(b"HTTP/1.0 200 OK\r\n\r\n");
                    wire.extend_from_slice(&body);
                }
            }
            wire
        })
    }

    /// Head and body of `wire` fed in reads of the given sizes: (code, body), or the first
    /// error.
    fn decode_in_reads(wire: &[u8], reads: &[usize]) -> Result<(u16, Vec<u8>), ClientError> {
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut sizes = reads.iter().copied().cycle();
        let mut feed = |buf: &mut BytesMut| -> bool {
            if fed == wire.len() {
                return false;
            }
            let n = sizes.next().unwrap_or(1).clamp(1, wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + n]);
            fed += n;
            true
        };
        let mut build =
            |r: &httparse::Response<'_, '_>, h: Head, _: &[u8]| Ok((r.code.unwrap_or(0), h));
        let ((code, head), len) = loop {
            if let Some(done) = parse_head(&mut buf, false, &mut build)? {
                break done;
            }
            if !feed(&mut buf) {
                return Err(ClientError::ClosedInside("head"));
            }
        };
        buf.advance(len);
        let mut body = Vec::new();
        if let Some(mut framing) = head.framing {
            let mut eof = false;
            loop {
                match framing.step(&mut buf, eof).map_err(ClientError::protocol)? {
                    Step::Data(n) => body.extend_from_slice(&buf.split_to(n)),
                    Step::Done => break,
                    Step::NeedMore => eof = !feed(&mut buf),
                }
            }
        }
        Ok((code, body))
    }

    proptest! {
        /// Any split of a valid response into reads decodes the same as one read.
        #[test]
        fn any_split_decodes_the_same(
            wire in responses(),
            reads in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let whole = decode_in_reads(&wire, &[wire.len().max(1)]).unwrap();
            let split = decode_in_reads(&wire, &reads).unwrap();
            prop_assert_eq!(whole, split);
        }

        /// Arbitrary bytes, in arbitrary reads, end in a response or an error: never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(
            wire in proptest::collection::vec(any::<u8>(), 0..512),
            reads in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let _ = decode_in_reads(&wire, &reads);
        }

        /// Arbitrary bytes after a valid status line and a chunked head: never a panic.
        #[test]
        fn arbitrary_chunked_bodies_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            wire.extend_from_slice(&body);
            let _ = decode_in_reads(&wire, &[7]);
        }
    }
}
