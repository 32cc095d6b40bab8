//! A minimal HTTP/1.1 client for the load path: the request bytes are prepared once (or written
//! into a reused buffer when the path has placeholders), sent with one write, and the response
//! is parsed in place with httparse and its body skipped without copying (Content-Length,
//! chunked, or until close). No task, channel or allocation per request: on this 2-core VM
//! hyper's client spent ~28% more CPU per request than wrk, most of it in the hand-off between
//! the request sender and hyper's connection task.

use bytes::{Buf, Bytes};

use super::recorder::Outcome;
use super::target::RequestTemplate;
use crate::http1::client::{ClientError, Conn, idempotent, may_resend};
use crate::http1::parked::Parked;

/// One HTTP/1.1 connection of a sender task (none yet, or broken: the next request reconnects).
#[derive(Debug, Default)]
pub struct H1Conn {
    conn: Option<Conn>,
    scratch: Vec<u8>,
    /// Ask the kernel for receive timestamps on each connection opened.
    stamp: bool,
    /// When the last answer arrived, by the kernel's stamp.
    arrival: Option<std::time::Instant>,
}

impl H1Conn {
    /// A connection slot; with `stamp`, its connections take the kernel's receive timestamps
    /// where they can (plain TCP).
    pub fn new(stamp: bool) -> Self {
        H1Conn {
            stamp,
            ..H1Conn::default()
        }
    }

    /// Opens the connection now (before the clock starts).
    pub async fn open(&mut self, target: &RequestTemplate) -> Result<(), &'static str> {
        self.conn = Some(self.connect(target).await.map_err(|e| e.kind())?);
        Ok(())
    }

    async fn connect(&self, target: &RequestTemplate) -> Result<Conn, ClientError> {
        let mut conn = Conn::open(target.dial(), target.tls.as_deref(), None).await?;
        if self.stamp {
            // Where the kernel refuses, the answer's read time stands in (as without).
            let _ = conn.stamp_arrivals();
        }
        Ok(conn)
    }

    /// When the last answer's final bytes arrived, by the kernel's receive timestamp (None
    /// without one: then its read time is all there is).
    pub fn arrival(&self) -> Option<std::time::Instant> {
        self.arrival
    }

    /// Whether the connection is open, over plain TCP, and stamped by the kernel: what the
    /// pacer (`h1_paced.rs`) needs to read its answers late at no cost in accuracy.
    pub fn parkable(&self) -> bool {
        self.conn.as_ref().is_some_and(Conn::parkable)
    }

    /// Takes the connection out of the runtime's reactor, for the pacer.
    pub fn park(&mut self) -> Option<Parked> {
        Parked::park(self.conn.take()?)
    }

    /// Puts a parked connection back (None: the slot reconnects on its next request).
    pub fn unpark(&mut self, parked: Option<Parked>) {
        self.conn = parked.and_then(|p| p.unpark().ok());
    }

    /// A new connection, stamped as the slot's are, parked.
    pub async fn connect_parked(&self, target: &RequestTemplate) -> Result<Parked, ClientError> {
        let conn = self.connect(target).await?;
        Parked::park(conn)
            .ok_or_else(|| ClientError::Connect(std::io::Error::other("not a plain TCP socket")))
    }

    /// Drops the connection (after a timeout the late response would arrive on it).
    pub fn discard(&mut self) {
        self.conn = None;
    }

    /// Sends request `index` of `template` (`fixed`: its prepared bytes) and reads the whole
    /// response, skipping its body. A failure drops the connection and is the request's
    /// outcome, except the one case [`may_resend`] names, where the request goes once more on
    /// a new connection.
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
        let reused = self.conn.is_some();
        self.arrival = None;
        let result = match self.exchange(template, &bytes).await {
            Err(e) if may_resend(&e, reused, idempotent(template.method())) => {
                self.exchange(template, &bytes).await
            }
            other => other,
        };
        result.unwrap_or_else(|e| Outcome::Transport(e.kind()))
    }

    /// One attempt on the current connection (opened first if there is none). The connection
    /// is kept only when the response said keep-alive and ended exactly.
    async fn exchange(
        &mut self,
        template: &RequestTemplate,
        bytes: &[u8],
    ) -> Result<Outcome, ClientError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.connect(template).await?,
        };
        conn.send(bytes, &[]).await?;
        let ((code, head), len) = conn
            .read_head(template.is_head(), |r, head, _| {
                Ok((r.code.unwrap_or(0), head))
            })
            .await?;
        conn.buf.advance(len);
        if let Some(framing) = head.framing {
            conn.skip_body(framing).await?;
        }
        if !conn.buf.is_empty() {
            // Bytes after the body: nothing was pipelined, so the server said too much.
            return Err(ClientError::protocol("bytes after the response"));
        }
        self.arrival = conn.arrival();
        if conn.reusable(head.keep_alive) {
            self.conn = Some(conn);
        }
        Ok(outcome(code))
    }
}

/// A complete answer's outcome by its status code.
pub(super) fn outcome(code: u16) -> Outcome {
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
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        assert!(conn.conn.is_some());
        assert_eq!(conn.execute(&t, fixed.as_ref(), 3).await, Outcome::Ok);
        assert!(conn.conn.is_none(), "connection: close is honoured");
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
        // An endless head is cut at 64 KiB, a named error, not memory without end.
        let mut endless = b"HTTP/1.1 200 OK\r\nx-pad: ".to_vec();
        endless.resize(256 * 1024, b'a');
        let addr = canned(vec![endless.leak()]).await;
        let t = get(addr);
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

    /// A server answers at a known time while the generator's thread is held (busy elsewhere)
    /// for 200 ms: with kernel receive timestamps the answer's arrival is that known time, so
    /// the hold is not counted as latency; without them all there is is the late read.
    #[test]
    fn the_generators_own_hold_is_not_counted_with_kernel_timestamps() {
        use std::sync::mpsc;
        use std::time::{Duration, Instant};
        const HOLD: Duration = Duration::from_millis(200);
        for stamp in [true, false] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let (seen_tx, seen) = mpsc::channel();
            let (go, go_rx) = mpsc::channel::<()>();
            let (written_tx, written) = mpsc::channel();
            let server = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).unwrap();
                seen_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .unwrap();
                written_tx.send(Instant::now()).unwrap();
                let _ = s.read(&mut buf);
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (outcome, sent, arrival, answered, read) = rt.block_on(async {
                let _on = crate::net::rxstamp::keep_stamping_on().await;
                let t = get(addr);
                let mut conn = H1Conn::new(stamp);
                conn.open(&t).await.unwrap();
                let sent = Instant::now();
                // The hold: once the server has the request, this thread is blocked until
                // 200 ms after the answer was written, so the answer waits in the socket.
                let hold = async {
                    while seen.try_recv().is_err() {
                        tokio::task::yield_now().await;
                    }
                    go.send(()).unwrap();
                    let answered: Instant = written.recv().unwrap();
                    std::thread::sleep(HOLD);
                    answered
                };
                let (outcome, answered) = tokio::join!(conn.execute(&t, None, 0), hold);
                (outcome, sent, conn.arrival(), answered, Instant::now())
            });
            server.join().unwrap();
            assert_eq!(outcome, Outcome::Ok);
            assert!(read >= answered + HOLD);
            match (stamp, arrival) {
                (true, Some(at)) => {
                    assert!(
                        at >= sent && at <= answered + HOLD / 2,
                        "{:?}",
                        at - answered
                    )
                }
                (false, None) => {}
                other => panic!("stamp, arrival: {other:?}"),
            }
        }
    }
}
