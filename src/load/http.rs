//! How to send: connection pools and the send/receive of one request, for HTTP/1.1 (one
//! request at a time per connection, keep-alive, reconnect when closed), and HTTP/2 (h2c, shared
//! connections, streams bounded by a semaphore) which also carries gRPC. Every transport
//! failure is classified into a stable kind for the report.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::recorder::Outcome;
use super::target::Protocol;

type Body = Full<Bytes>;

/// Classifies an I/O error into a transport-error kind.
fn io_kind(err: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
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

/// Classifies a hyper error into a transport-error kind.
fn hyper_kind(err: &hyper::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_kind(io);
        }
        source = s.source();
    }
    if err.is_incomplete_message() || err.is_closed() || err.is_canceled() {
        "connection_closed"
    } else if err.is_parse() {
        "protocol_error"
    } else {
        "http_error"
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, &'static str> {
    let stream = TcpStream::connect(addr).await.map_err(|e| io_kind(&e))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn connect_h1(addr: SocketAddr) -> Result<http1::SendRequest<Body>, &'static str> {
    let io = TokioIo::new(connect(addr).await?);
    let (sender, conn) = http1::handshake(io).await.map_err(|e| hyper_kind(&e))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn connect_h2(addr: SocketAddr) -> Result<http2::SendRequest<Body>, &'static str> {
    let io = TokioIo::new(connect(addr).await?);
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(io)
        .await
        .map_err(|e| hyper_kind(&e))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reads the whole response body (discarding it) and decides the outcome.
async fn finish(resp: Response<Incoming>, protocol: Protocol) -> Outcome {
    let status = resp.status();
    let mut grpc_status = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok());
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && let Some(code) = trailers
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                {
                    grpc_status = Some(code);
                }
            }
            Err(e) => return Outcome::Transport(hyper_kind(&e)),
        }
    }
    match protocol {
        Protocol::Grpc if status == http::StatusCode::OK => match grpc_status {
            Some(0) => Outcome::Ok,
            Some(code) => Outcome::Grpc(code),
            // A gRPC response without a status is UNKNOWN (2), as clients treat it.
            None => Outcome::Grpc(2),
        },
        _ if status.is_success() => Outcome::Ok,
        _ => Outcome::Http(status.as_u16()),
    }
}

// ===== pools =====

/// One HTTP/1.1 connection slot: a connection, or none yet / broken.
#[derive(Debug, Default)]
pub struct H1Slot(Option<http1::SendRequest<Body>>);

/// An HTTP/2 connection shared by many streams.
#[derive(Debug, Default)]
pub struct H2Conn(RefCell<Option<http2::SendRequest<Body>>>);

/// One generator thread's connections.
#[derive(Debug)]
pub enum Pool {
    /// HTTP/1.1: idle slots come back through a channel; waiting for one is generator lag.
    H1 {
        /// Idle slots.
        idle: mpsc::UnboundedReceiver<H1Slot>,
        /// Where finished requests return their slot.
        back: mpsc::UnboundedSender<H1Slot>,
    },
    /// HTTP/2 and gRPC: connections used round-robin, streams bounded by `streams`.
    H2 {
        /// The connections.
        conns: Vec<Rc<H2Conn>>,
        /// Next connection to use.
        next: usize,
        /// Bounds requests in flight.
        streams: Arc<Semaphore>,
    },
}

/// The right to send one request: a connection and, for HTTP/2, a stream permit.
#[derive(Debug)]
pub enum Lease {
    /// An HTTP/1.1 slot, returned on drop of the lease through `back`.
    H1(H1Slot, mpsc::UnboundedSender<H1Slot>),
    /// An HTTP/2 connection and a stream permit.
    H2(Rc<H2Conn>, OwnedSemaphorePermit),
}

impl Pool {
    /// A pool of `connections` connections (opened lazily) allowing `in_flight` requests.
    pub fn new(protocol: Protocol, connections: usize, in_flight: usize) -> Pool {
        match protocol {
            Protocol::Http1 => {
                let (back, idle) = mpsc::unbounded_channel();
                for _ in 0..connections {
                    let _ = back.send(H1Slot::default());
                }
                Pool::H1 { idle, back }
            }
            Protocol::Http2 | Protocol::Grpc => Pool::H2 {
                conns: (0..connections)
                    .map(|_| Rc::new(H2Conn::default()))
                    .collect(),
                next: 0,
                streams: Arc::new(Semaphore::new(in_flight.max(1))),
            },
        }
    }

    /// Waits for a free connection (HTTP/1.1) or stream (HTTP/2).
    pub async fn acquire(&mut self) -> Lease {
        match self {
            Pool::H1 { idle, back } => {
                // The pool holds a sender, so the channel never closes.
                let slot = idle.recv().await.unwrap_or_default();
                Lease::H1(slot, back.clone())
            }
            Pool::H2 {
                conns,
                next,
                streams,
            } => {
                let permit = streams
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let conn = conns[*next % conns.len()].clone();
                *next = next.wrapping_add(1);
                Lease::H2(conn, permit)
            }
        }
    }

    /// Opens every connection now (before the clock starts), so that the first requests do not
    /// pay for the handshake. Returns the first failure.
    pub async fn warm(&mut self, addr: SocketAddr) -> Result<(), &'static str> {
        match self {
            Pool::H1 { idle, back } => {
                let mut slots = Vec::new();
                while let Ok(slot) = idle.try_recv() {
                    slots.push(slot);
                }
                let mut result = Ok(());
                for mut slot in slots {
                    match connect_h1(addr).await {
                        Ok(s) => slot.0 = Some(s),
                        Err(e) => result = Err(e),
                    }
                    let _ = back.send(slot);
                }
                result
            }
            Pool::H2 { conns, .. } => {
                for conn in conns.iter() {
                    *conn.0.borrow_mut() = Some(connect_h2(addr).await?);
                }
                Ok(())
            }
        }
    }
}

impl Lease {
    /// Sends `req` and reads the whole response. On any failure the connection is dropped, so
    /// the next request on this slot reconnects.
    pub async fn execute(
        &mut self,
        addr: SocketAddr,
        protocol: Protocol,
        req: Request<Body>,
    ) -> Outcome {
        match self {
            Lease::H1(slot, _) => {
                let mut sender = match slot.0.take() {
                    Some(s) if !s.is_closed() => s,
                    _ => match connect_h1(addr).await {
                        Ok(s) => s,
                        Err(kind) => return Outcome::Transport(kind),
                    },
                };
                if let Err(e) = sender.ready().await {
                    return Outcome::Transport(hyper_kind(&e));
                }
                let outcome = match sender.send_request(req).await {
                    Ok(resp) => finish(resp, protocol).await,
                    Err(e) => Outcome::Transport(hyper_kind(&e)),
                };
                if !matches!(outcome, Outcome::Transport(_)) {
                    slot.0 = Some(sender);
                }
                outcome
            }
            Lease::H2(conn, _) => {
                let existing = conn.0.borrow().clone().filter(|s| !s.is_closed());
                let mut sender = match existing {
                    Some(s) => s,
                    None => match connect_h2(addr).await {
                        Ok(s) => {
                            *conn.0.borrow_mut() = Some(s.clone());
                            s
                        }
                        Err(kind) => return Outcome::Transport(kind),
                    },
                };
                if let Err(e) = sender.ready().await {
                    conn.0.borrow_mut().take();
                    return Outcome::Transport(hyper_kind(&e));
                }
                let outcome = match sender.send_request(req).await {
                    Ok(resp) => finish(resp, protocol).await,
                    Err(e) => Outcome::Transport(hyper_kind(&e)),
                };
                if matches!(outcome, Outcome::Transport(_)) {
                    conn.0.borrow_mut().take();
                }
                outcome
            }
        }
    }

    /// Marks the connection as unusable (after a timeout, the response may still arrive on it).
    pub fn discard_connection(&mut self) {
        match self {
            Lease::H1(slot, _) => slot.0 = None,
            // An HTTP/2 stream is reset when its future is dropped; the connection stays.
            Lease::H2(..) => {}
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Lease::H1(slot, back) = self {
            let _ = back.send(std::mem::take(slot));
        }
    }
}
