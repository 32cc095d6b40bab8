//! A client connection kept out of the runtime's reactor: written and read without waiting.
//!
//! tokio registers every socket it owns with its epoll for reading and writing, edge-triggered,
//! so each arriving answer wakes the thread even when no task waits for it. A load generator
//! that paces its sends and takes each answer's arrival from the kernel's receive stamp does not
//! need that wake-up: it can read the answer at its next send's wake-up. A [`Parked`] connection
//! is that plain TCP socket outside the reactor: [`Parked::send`] writes a request (waiting only
//! when the socket's buffer is full, which a small request on an idle connection never meets),
//! [`Parked::advance`] reads whatever has arrived and walks the response as far as it goes, and
//! [`Parked::wait_readable`] registers the socket for one wait when the caller must block (all
//! connections busy, the end of a phase). [`Parked::park`] makes one;
//! [`Parked::unpark`] gives the connection back to the reactor.
//!
//! Unlike [`Conn::reusable`](super::client::Conn::reusable), a parked connection is not probed
//! for stray bytes after each answer (that probe is one more system call a request): bytes the
//! server sends after a complete answer are found when the next answer is parsed, as a protocol
//! error of that request.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::client::{ClientError, Conn, READ_CHUNK, closed_by_peer, parse_head};
use super::{Framing, Step};
use crate::net::rxstamp::StampedReader;

/// A plain TCP client connection outside the reactor, with its read buffer.
#[derive(Debug)]
pub struct Parked {
    tcp: std::net::TcpStream,
    buf: BytesMut,
    /// Reads through `recvmsg`, which hands back the kernel's arrival stamps when it has any.
    reader: Box<StampedReader>,
    /// The kernel was asked to stamp this connection's arrivals.
    stamped: bool,
    arrival: Option<Instant>,
}

/// How far the answer to the last request has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// The head has not been parsed yet.
    Head {
        /// Some bytes of it have come.
        received: bool,
    },
    /// Inside the body.
    Body {
        /// The answer's status code.
        code: u16,
        /// Whether the connection may carry another request afterwards.
        keep_alive: bool,
        /// How the body ends, and how far it went.
        framing: Framing,
        /// Nothing more will arrive.
        eof: bool,
    },
}

impl Reading {
    /// Before the first byte of an answer.
    pub const START: Reading = Reading::Head { received: false };
}

/// A complete answer: its status code and whether the connection may carry another request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub code: u16,
    /// The answer said keep-alive and ended exactly.
    pub keep_alive: bool,
}

/// A parked socket's descriptor, registered with the reactor for one wait (deregistered when
/// dropped). It borrows the socket, so the socket outlives the registration.
struct Registered<'a>(BorrowedFd<'a>);

impl AsRawFd for Registered<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Registers `tcp` with the reactor for `interest`, for as long as the result lives.
fn register(tcp: &std::net::TcpStream, interest: Interest) -> io::Result<AsyncFd<Registered<'_>>> {
    // SAFETY: the descriptor is borrowed from `tcp`, which stays open and the same socket for
    // the borrow's lifetime, which bounds the registration's.
    unsafe { AsyncFd::register_with_interest(Registered(tcp.as_fd()), interest) }
        .map_err(|e| e.into_parts().1)
}

impl Parked {
    fn new(tcp: std::net::TcpStream, buf: BytesMut, stamped: Option<Box<StampedReader>>) -> Parked {
        Parked {
            tcp,
            buf,
            stamped: stamped.is_some(),
            reader: stamped.unwrap_or_else(|| Box::new(StampedReader::new(READ_CHUNK))),
            arrival: None,
        }
    }

    /// Takes a plain TCP connection out of the runtime's reactor. None for a TLS connection
    /// (dropped: check [`Conn::parkable`] first), or when the runtime would not release the
    /// socket (then it is closed).
    pub fn park(conn: Conn) -> Option<Parked> {
        let (crate::net::tls::Stream::Plain(tcp), buf, stamped) = conn.into_parts() else {
            return None;
        };
        Some(Parked::new(tcp.into_std().ok()?, buf, stamped))
    }

    /// Gives the connection back to the reactor (must be called inside the runtime).
    pub fn unpark(self) -> io::Result<Conn> {
        let tcp = tokio::net::TcpStream::from_std(self.tcp)?;
        let stamped = self.stamped.then_some(self.reader);
        Ok(Conn::from_parts(tcp, self.buf, stamped))
    }

    /// Whether the kernel stamps what arrives on this connection.
    pub fn stamped(&self) -> bool {
        self.stamped
    }

    /// When the last bytes read since the last send arrived, if the kernel stamped them.
    pub fn arrival(&self) -> Option<Instant> {
        self.arrival
    }

    /// Writes a request whole. The socket's buffer takes a small request at once; only when it
    /// does not is the socket registered, for as long as the rest takes. Errors as
    /// [`Conn::send`]: [`ClientError::NotSent`] when the peer had closed before any byte.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.buf.clear();
        self.arrival = None;
        let mut written = 0;
        let mut registered: Option<AsyncFd<Registered>> = None;
        while written < bytes.len() {
            match (&self.tcp).write(&bytes[written..]) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = match &registered {
                        Some(fd) => fd,
                        None => registered.insert(
                            register(&self.tcp, Interest::WRITABLE).map_err(ClientError::Io)?,
                        ),
                    };
                    fd.writable().await.map_err(ClientError::Io)?.clear_ready();
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(match (closed_by_peer(&e), written) {
                        (true, 0) => ClientError::NotSent,
                        (true, _) => ClientError::ClosedBeforeResponse,
                        (false, _) => ClientError::Io(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits until something can be read (or the connection ends): the socket is registered
    /// with the reactor for this wait only.
    pub async fn wait_readable(&self) -> io::Result<()> {
        let fd = register(&self.tcp, Interest::READABLE)?;
        fd.readable().await?.retain_ready();
        Ok(())
    }

    /// Reads what has arrived and walks the answer as far as it goes: the answer once it is
    /// complete, None while more is to come. Errors as the waiting client's
    /// [`Conn::read_head`] and [`Conn::skip_body`], and bytes after a complete answer are a
    /// protocol error (nothing was pipelined).
    pub fn advance(
        &mut self,
        reading: &mut Reading,
        head_request: bool,
    ) -> Result<Option<Answer>, ClientError> {
        loop {
            match reading {
                Reading::Head { received } => {
                    let parsed = parse_head(&mut self.buf, head_request, &mut |r, head, _| {
                        Ok((r.code.unwrap_or(0), head))
                    })?;
                    if let Some(((code, head), len)) = parsed {
                        self.buf.advance(len);
                        let Some(framing) = head.framing else {
                            return self.end(code, head.keep_alive).map(Some);
                        };
                        *reading = Reading::Body {
                            code,
                            keep_alive: head.keep_alive,
                            framing,
                            eof: false,
                        };
                        continue;
                    }
                    match self.try_fill() {
                        Ok(None) => return Ok(None),
                        Ok(Some(n)) if n > 0 => *received = true,
                        Ok(Some(_)) | Err(_) if !*received && self.buf.is_empty() => {
                            return Err(ClientError::ClosedBeforeResponse);
                        }
                        Ok(Some(_)) => return Err(ClientError::ClosedInside("head")),
                        Err(e) => return Err(ClientError::Io(e)),
                    }
                }
                Reading::Body {
                    code,
                    keep_alive,
                    framing,
                    eof,
                } => match framing.step(&mut self.buf, *eof) {
                    Ok(Step::Data(n)) => self.buf.advance(n),
                    Ok(Step::Done) => return self.end(*code, *keep_alive).map(Some),
                    Ok(Step::NeedMore) => match self.try_fill() {
                        Ok(None) => return Ok(None),
                        Ok(Some(n)) => *eof = n == 0,
                        // A body that ends with the connection ends on a reset too.
                        Err(_) if *framing == Framing::UntilClose => *eof = true,
                        Err(e) => return Err(ClientError::Io(e)),
                    },
                    Err(_) if *eof => return Err(ClientError::ClosedInside("body")),
                    Err(e) => return Err(ClientError::protocol(e)),
                },
            }
        }
    }

    /// The answer is complete: nothing may follow it.
    fn end(&self, code: u16, keep_alive: bool) -> Result<Answer, ClientError> {
        if !self.buf.is_empty() {
            return Err(ClientError::protocol("bytes after the response"));
        }
        Ok(Answer { code, keep_alive })
    }

    /// One read without waiting: Some(bytes read, 0 at end of stream), None when nothing is
    /// there yet.
    fn try_fill(&mut self) -> io::Result<Option<usize>> {
        loop {
            match self.reader.try_read(self.tcp.as_raw_fd(), &mut self.buf) {
                Ok((n, at)) => {
                    self.arrival = at;
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A parked client and the server's end of its connection, on loopback.
    fn pair() -> (Parked, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_nonblocking(true).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Parked::new(client, BytesMut::new(), None), server)
    }

    /// Writes `wire` to the parked client in pieces cut at `cuts`, walking the answer after
    /// each (then closes the server's end when `close`): what the walk ended with, and whether
    /// it ended only after the last piece.
    fn walk(
        wire: &[u8],
        cuts: &[usize],
        close: bool,
    ) -> (Result<Option<Answer>, ClientError>, bool) {
        let (mut client, mut server) = pair();
        let mut reading = Reading::START;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.extend([0, wire.len()]);
        points.sort_unstable();
        points.dedup();
        for piece in points.windows(2) {
            server.write_all(&wire[piece[0]..piece[1]]).unwrap();
            let done = client.advance(&mut reading, false);
            if !matches!(done, Ok(None)) {
                return (done, piece[1] == wire.len());
            }
        }
        if close {
            server.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // The last bytes (or the close) may take a moment to be readable on a busy machine.
        for _ in 0..2000 {
            let done = client.advance(&mut reading, false);
            if !matches!(done, Ok(None)) {
                return (done, true);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        (Ok(None), true)
    }

    const CHUNKED: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Nope\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n";

    proptest! {
        /// However the answer arrives, it is walked to the same end, and only once it is all
        /// there.
        #[test]
        fn any_split_of_an_answer_walks_to_the_same_end(
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let length = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
            let close = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
            for (wire, code, keep_alive) in [
                (&length[..], 200, true),
                (CHUNKED, 503, true),
                (&close[..], 200, false),
                (&b"HTTP/1.1 204 No Content\r\n\r\n"[..], 204, true),
            ] {
                let (done, at_end) = walk(wire, &cuts, false);
                prop_assert_eq!(done.unwrap(), Some(Answer { code, keep_alive }));
                prop_assert!(at_end);
            }
        }
    }

    #[test]
    fn a_body_until_close_ends_with_the_connection() {
        let (done, _) = walk(b"HTTP/1.1 200 OK\r\n\r\nsome body", &[20], true);
        let answer = done.unwrap().unwrap();
        assert_eq!((answer.code, answer.keep_alive), (200, false));
    }

    #[test]
    fn closes_and_trailing_bytes_are_the_errors_the_waiting_client_names() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "the connection closed before any byte of the response"),
            (
                b"HTTP/1.1 200 OK\r\ncontent-le",
                "the connection closed inside the response head",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                "the connection closed inside the response body",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1",
                "invalid response: bytes after the response",
            ),
        ];
        for (wire, error) in cases {
            let (done, _) = walk(wire, &[], true);
            assert_eq!(done.unwrap_err().to_string(), error, "{wire:?}");
        }
    }
}
