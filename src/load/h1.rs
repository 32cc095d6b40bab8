//! A minimal HTTP/1.1 client for the load path: the request bytes are prepared once (or written
//! into a reused buffer when the path has placeholders), sent with one write, and the response
//! is parsed in place with httparse and its body skipped without copying (Content-Length,
//! chunked, or until close). No task, channel or allocation per request: on this 2-core VM
//! hyper's client spent ~28% more CPU per request than wrk, most of it in the hand-off between
//! the request sender and hyper's connection task.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::recorder::Outcome;
use super::target::RequestTemplate;
use crate::http1::{Framing, Step};

const READ_CHUNK: usize = 16 * 1024;
const MAX_HEADERS: usize = 96;

/// One HTTP/1.1 connection of a sender task (none yet, or broken: the next request reconnects).
#[derive(Debug)]
pub struct H1Conn {
    stream: Option<TcpStream>,
    buf: BytesMut,
    scratch: Vec<u8>,
}

impl Default for H1Conn {
    fn default() -> Self {
        H1Conn {
            stream: None,
            buf: BytesMut::with_capacity(READ_CHUNK),
            scratch: Vec::new(),
        }
    }
}

fn io_kind(err: &std::io::Error) -> &'static str {
    super::http::io_kind(err)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, &'static str> {
    let stream = TcpStream::connect(addr).await.map_err(|e| io_kind(&e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl H1Conn {
    /// Opens the connection now (before the clock starts).
    pub async fn open(&mut self, addr: SocketAddr) -> Result<(), &'static str> {
        self.stream = Some(connect(addr).await?);
        Ok(())
    }

    /// Drops the connection (after a timeout the late response would arrive on it).
    pub fn discard(&mut self) {
        self.stream = None;
    }

    /// Sends request `index` of `template` (`fixed`: its prepared bytes) and reads the whole
    /// response. A kept-alive connection that turns out closed before any byte of the response
    /// (the server timed it out) is reopened and the request sent once more, as browsers and
    /// hyper do; any other failure drops the connection and is the request's outcome.
    pub async fn execute(
        &mut self,
        template: &RequestTemplate,
        fixed: Option<&Bytes>,
        index: u64,
    ) -> Outcome {
        let bytes: Bytes = match fixed {
            Some(b) => b.clone(),
            None => {
                template.write_h1(index, &mut self.scratch);
                Bytes::copy_from_slice(&self.scratch)
            }
        };
        let reused = self.stream.is_some();
        match self.exchange(template, &bytes).await {
            Err(Stale) if reused => {
                self.stream = None;
                self.exchange(template, &bytes)
                    .await
                    .unwrap_or(Outcome::Transport("connection_closed"))
            }
            Err(Stale) => Outcome::Transport("connection_closed"),
            Ok(outcome) => outcome,
        }
    }

    /// One attempt; `Err(Stale)` when the connection closed before any response byte.
    async fn exchange(
        &mut self,
        template: &RequestTemplate,
        bytes: &[u8],
    ) -> Result<Outcome, Stale> {
        if self.stream.is_none() {
            match connect(template.addr).await {
                Ok(s) => self.stream = Some(s),
                Err(kind) => return Ok(Outcome::Transport(kind)),
            }
        }
        let stream = self.stream.as_mut().expect("connected above");
        if let Err(e) = stream.write_all(bytes).await {
            self.stream = None;
            return match e.kind() {
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Err(Stale),
                _ => Ok(Outcome::Transport(io_kind(&e))),
            };
        }
        self.buf.clear();
        let result = self.read_response(template.is_head()).await;
        match result {
            Ok((outcome, keep_alive)) => {
                if !keep_alive {
                    self.stream = None;
                }
                Ok(outcome)
            }
            Err(kind) => {
                self.stream = None;
                if kind == "stale" {
                    Err(Stale)
                } else {
                    Ok(Outcome::Transport(kind))
                }
            }
        }
    }

    /// Reads more bytes into the buffer; `Err` on EOF or error.
    async fn fill(&mut self) -> Result<(), &'static str> {
        let stream = self.stream.as_mut().ok_or("connection_closed")?;
        self.buf.reserve(READ_CHUNK);
        match stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("connection_closed"),
            Ok(_) => Ok(()),
            Err(e) => Err(io_kind(&e)),
        }
    }

    async fn read_response(&mut self, head: bool) -> Result<(Outcome, bool), &'static str> {
        // Status line and headers (skipping 1xx interim responses).
        let (code, framing) = loop {
            if !self.buf.is_empty() {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut resp = httparse::Response::new(&mut headers);
                match resp.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len)) => {
                        let code = resp.code.unwrap_or(0);
                        let parsed =
                            crate::http1::head(&resp, head).map_err(|_| "protocol_error")?;
                        self.buf.advance(len);
                        if (100..200).contains(&code) && code != 101 {
                            continue;
                        }
                        break (code, parsed);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return Err("protocol_error"),
                }
            }
            let first = self.buf.is_empty();
            if let Err(kind) = self.fill().await {
                // Closed before the first byte of a response: the connection was stale.
                return Err(if first && kind == "connection_closed" {
                    "stale"
                } else {
                    kind
                });
            }
        };
        // The body is skipped in place as it arrives.
        if let Some(mut body) = framing.framing {
            let until_close = body == Framing::UntilClose;
            loop {
                match body.step(&mut self.buf, false) {
                    Ok(Step::Data(n)) => self.buf.advance(n),
                    Ok(Step::Done) => break,
                    Ok(Step::NeedMore) => match self.fill().await {
                        Ok(()) => {}
                        Err(_) if until_close => break,
                        Err(kind) => return Err(kind),
                    },
                    Err(_) => return Err("protocol_error"),
                }
            }
        }
        if !self.buf.is_empty() {
            return Err("protocol_error"); // bytes after the body: nothing was pipelined
        }
        Ok((outcome(code), framing.keep_alive))
    }
}
/// The connection closed before any byte of the response.
struct Stale;

fn outcome(code: u16) -> Outcome {
    if (200..300).contains(&code) {
        Outcome::Ok
    } else {
        Outcome::Http(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next canned response.
    async fn canned(responses: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            for r in responses {
                let _ = s.read(&mut buf).await;
                s.write_all(r).await.unwrap();
            }
        });
        addr
    }

    fn get(addr: SocketAddr) -> RequestTemplate {
        let urls = [format!("http://{addr}/")];
        let http1 = super::super::target::Protocol::Http1;
        RequestTemplate::new(http1, &urls, Method::GET, &[], Bytes::new()).unwrap()
    }

    #[tokio::test]
    async fn reads_every_framing_and_keeps_the_connection() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let t = get(addr);
        let fixed = t.h1_fixed();
        let mut conn = H1Conn::default();
        assert_eq!(conn.execute(&t, fixed.as_ref(), 0).await, Outcome::Ok);
        assert_eq!(
            conn.execute(&t, fixed.as_ref(), 1).await,
            Outcome::Http(503)
        );
        assert_eq!(conn.execute(&t, fixed.as_ref(), 2).await, Outcome::Ok);
        assert!(conn.stream.is_some());
        assert_eq!(conn.execute(&t, fixed.as_ref(), 3).await, Outcome::Ok);
        assert!(conn.stream.is_none(), "connection: close is honoured");
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_transport_errors() {
        let addr = canned(vec![b"SPDY/9 what\r\n\r\n"]).await;
        let t = get(addr);
        let mut conn = H1Conn::default();
        assert_eq!(
            conn.execute(&t, None, 0).await,
            Outcome::Transport("protocol_error")
        );
        let addr = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"]).await;
        let t = get(addr);
        assert_eq!(
            conn.execute(&t, None, 0).await,
            Outcome::Transport("connection_closed")
        );
    }
}
