//! How to send: connection pools, and for HTTP/2 (h2c, shared connections, streams bounded by a
//! semaphore; it also carries gRPC) the send/receive of one request over hyper. HTTP/1.1 uses
//! the lean client in [`super::h1`]. Every transport failure is classified into a stable kind.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2;

use super::h1::H1Conn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::Semaphore;

use super::recorder::Outcome;
use super::target::{Protocol, RequestTemplate};

type Body = ReqBody;

pub use super::body::{Paced, ReqBody, SentTimes};

pub(super) use crate::http1::client::io_kind;

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

async fn connect_h2(target: &RequestTemplate) -> Result<http2::SendRequest<Body>, &'static str> {
    let stream = crate::net::tls::connect(target.dial(), target.tls.as_deref(), None)
        .await
        .map_err(|e| io_kind(&e))?;
    if matches!(stream, crate::net::tls::Stream::Tls(_))
        && stream.alpn() != Some(crate::net::tls::ALPN_H2)
    {
        return Err("tls_alpn_not_h2"); // the server would not speak HTTP/2 over this TLS
    }
    let io = TokioIo::new(stream);
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
    finish_with(resp, protocol, |_| {}).await
}

/// What a streaming call's answers are timed against.
#[derive(Debug)]
pub struct StreamTiming {
    /// The call's intended send time.
    pub intended: Instant,
    /// Its actual send time.
    pub sent: Instant,
    /// Bidi: when each request message went out (paced), answer `n` timed from message `n`'s.
    pub requests: Option<SentTimes>,
    /// Bidi: answer `n` answers request message `n`.
    pub paired: bool,
}

/// Reads a streaming call's answer, timing each message as its last byte arrives (a body
/// ending inside a message is a `truncated_message`).
async fn finish_stream(
    resp: Response<Incoming>,
    timing: &StreamTiming,
    stats: &RefCell<crate::load::recorder::StreamHists>,
) -> Outcome {
    let mut ends = crate::grpc::MessageEnds::default();
    let (mut n, mut prev) = (0u64, timing.sent);
    let outcome = finish_with(resp, Protocol::Grpc, |data| {
        let now = Instant::now();
        let mut stats = stats.borrow_mut();
        ends.feed(data, || {
            let request = match (&timing.requests, timing.paired) {
                (Some(times), true) => times.lock().ok().and_then(|t| {
                    usize::try_from(n)
                        .ok()
                        .and_then(|i| t.get(i).or(t.last()).copied())
                }),
                _ => None,
            };
            let since = prev.max(request.unwrap_or(timing.sent));
            stats.message_ended(n, timing.intended, since, now);
            prev = now;
            n += 1;
        });
    })
    .await;
    match outcome {
        Outcome::Ok if !ends.at_boundary() => Outcome::Transport("truncated_message"),
        other => other,
    }
}

/// Reads the whole response body, handing each data chunk to `on_data`, and decides the
/// outcome.
async fn finish_with(
    resp: Response<Incoming>,
    protocol: Protocol,
    mut on_data: impl FnMut(&[u8]),
) -> Outcome {
    let status = resp.status();
    let mut grpc_status = crate::grpc::status_code(resp.headers());
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => on_data(&data),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers()
                        && let Some(code) = crate::grpc::status_code(&trailers)
                    {
                        grpc_status = Some(code);
                    }
                }
            },
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

// ===== connections =====

/// An HTTP/2 connection shared by many streams.
#[derive(Debug, Default)]
pub struct H2Conn(RefCell<Option<http2::SendRequest<Body>>>);

impl H2Conn {
    /// Opens the connection now (before the clock starts).
    pub async fn open(&self, target: &RequestTemplate) -> Result<(), &'static str> {
        *self.0.borrow_mut() = Some(connect_h2(target).await?);
        Ok(())
    }

    /// Sends `req` on a new stream and reads the whole response; reconnects if the connection
    /// is gone, and drops it on a transport failure.
    pub async fn execute(&self, target: &RequestTemplate, req: Request<Body>) -> Outcome {
        let protocol = target.protocol;
        let outcome = match self.send(target, req).await {
            Ok(resp) => finish(resp, protocol).await,
            Err(outcome) => outcome,
        };
        self.after(outcome)
    }

    /// A gRPC streaming call: as [`execute`](Self::execute), each answer message timed into
    /// `stats` as it arrives.
    pub async fn execute_stream(
        &self,
        target: &RequestTemplate,
        req: Request<Body>,
        timing: &StreamTiming,
        stats: &RefCell<crate::load::recorder::StreamHists>,
    ) -> Outcome {
        let outcome = match self.send(target, req).await {
            Ok(resp) => finish_stream(resp, timing, stats).await,
            Err(outcome) => outcome,
        };
        self.after(outcome)
    }

    /// Drops the connection after a transport failure.
    fn after(&self, outcome: Outcome) -> Outcome {
        if matches!(outcome, Outcome::Transport(_)) {
            self.0.borrow_mut().take();
        }
        outcome
    }

    /// Sends `req` (reconnecting if the connection is gone) and waits for the answer's head.
    async fn send(
        &self,
        target: &RequestTemplate,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Outcome> {
        let existing = self.0.borrow().clone().filter(|s| !s.is_closed());
        let mut sender = match existing {
            Some(s) => s,
            None => match connect_h2(target).await {
                Ok(s) => {
                    *self.0.borrow_mut() = Some(s.clone());
                    s
                }
                Err(kind) => return Err(Outcome::Transport(kind)),
            },
        };
        if let Err(e) = sender.ready().await {
            return Err(Outcome::Transport(hyper_kind(&e)));
        }
        sender
            .send_request(req)
            .await
            .map_err(|e| Outcome::Transport(hyper_kind(&e)))
    }
}

/// One generator thread's connections.
#[derive(Debug)]
pub enum Pool {
    /// HTTP/1.1: one sender task per slot, one request at a time per connection; a slot holds
    /// one connection, or one per target URL when every URL goes out for each ticket (`group`).
    H1(Vec<Vec<H1Conn>>),
    /// HTTP/2 and gRPC: connections used round-robin, requests in flight bounded by `streams`.
    H2 {
        /// The connections.
        conns: Vec<Rc<H2Conn>>,
        /// Bounds requests in flight.
        streams: Arc<Semaphore>,
    },
    /// WebSocket: one sender per connection, many messages in flight on each.
    Ws {
        /// The connections.
        conns: Vec<super::ws::WsConn>,
        /// The message template.
        messages: super::ws::Messages,
    },
}

impl Pool {
    /// A pool of `connections` connections (not yet open) allowing `in_flight` requests.
    pub fn new(protocol: Protocol, connections: usize, in_flight: usize, group: usize) -> Pool {
        match protocol {
            Protocol::Http1 => Pool::H1(
                (0..connections)
                    .map(|_| (0..group.max(1)).map(|_| H1Conn::default()).collect())
                    .collect(),
            ),
            Protocol::WebSocket => Pool::Ws {
                conns: (0..connections)
                    .map(|_| super::ws::WsConn::default())
                    .collect(),
                messages: super::ws::Messages::placeholder(),
            },
            Protocol::Http2 | Protocol::Grpc => Pool::H2 {
                conns: (0..connections)
                    .map(|_| Rc::new(H2Conn::default()))
                    .collect(),
                streams: Arc::new(Semaphore::new(in_flight.max(1))),
            },
        }
    }

    /// With `stamp`, HTTP/1.1 connections take the kernel's receive timestamps.
    pub fn stamped(mut self, stamp: bool) -> Pool {
        if let Pool::H1(slots) = &mut self {
            for c in slots.iter_mut().flatten() {
                *c = H1Conn::new(stamp);
            }
        }
        self
    }

    /// Ends the connections politely after the run: a WebSocket's with a close frame (1000),
    /// each within 1 s; the others are dropped, as HTTP's keep-alive connections may be.
    pub async fn close(&mut self) {
        if let Pool::Ws { conns, .. } = self {
            let closes = conns.iter_mut().map(super::ws::WsConn::close);
            futures_util::future::join_all(closes).await;
        }
    }

    /// Opens every connection now, so that the first requests do not pay for the handshake.
    /// Returns the last failure (the run goes on; failed connections retry per request).
    pub async fn open(&mut self, target: &RequestTemplate) -> Result<(), &'static str> {
        let mut result = Ok(());
        match self {
            Pool::H1(slots) => {
                for c in slots.iter_mut().flatten() {
                    if let Err(e) = c.open(target).await {
                        result = Err(e);
                    }
                }
            }
            Pool::Ws { conns, messages } => {
                *messages = super::ws::Messages::new(target).map_err(|_| "bad_message_template")?;
                for (i, c) in conns.iter_mut().enumerate() {
                    match c.open(target, i as u64, super::ws::CONNECT_TIMEOUT).await {
                        Ok(took) => target.note_connect(took),
                        Err(e) => result = Err(e),
                    }
                }
            }
            Pool::H2 { conns, .. } => {
                for c in conns.iter() {
                    if let Err(e) = c.open(target).await {
                        result = Err(e);
                    }
                }
            }
        }
        result
    }
}
