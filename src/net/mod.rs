//! Listener plumbing shared by every server in the binary (mocks, gateway, admin endpoints):
//! binding with a clear error, a hyper accept loop serving HTTP/1.1 and h2c on one port
//! with graceful shutdown, and JSON responses in the project's error format.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use lean::ReqBody;

mod lean;
pub mod rewind;
pub mod rxstamp;
pub mod tls;
mod watch;

/// The body type of every response our HTTP servers build.
pub type Body = Full<Bytes>;

/// How long the mocks wait for in-flight requests after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's head (slowloris: a head sent a byte at a
/// time kept a connection, and a descriptor, for good).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay open with no request in flight and nothing read or
/// written (a kept-alive HTTP/1.1 connection between requests, an h2 connection without
/// streams). Longer than the header-read timeout, so clients that keep connections in a pool
/// for a while (nginx keeps them 75 s by default) do not race a close.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a server allows its clients, so that slow or many clients cannot take it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// How long in-flight requests may finish after shutdown is requested.
    pub drain: Duration,
    /// How long a request's head may take to arrive from its first byte (the connection is
    /// closed after).
    pub header_read_timeout: Duration,
    /// How long a connection may idle: no request in flight, nothing read or written.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is closed at once (cheaply, without a reply).
    pub max_connections: usize,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            drain: DRAIN_TIMEOUT,
            header_read_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// Connections a server takes at most by default: half the process's descriptors (a proxied
/// connection may need one upstream too), less a reserve for listeners, logs and pools.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    (soft.saturating_sub(128) / 2).max(16)
}

/// A listener could not be opened.
#[derive(Debug, Error)]
#[error("cannot listen on {addr} for {what}: {io}")]
pub struct BindError {
    /// What the listener was for, e.g. "the REST mock".
    pub what: String,
    /// The address asked for.
    pub addr: SocketAddr,
    /// The OS error (address in use, permission denied, …); part of the message, not a
    /// separate cause, so that it is printed once.
    pub io: std::io::Error,
}

/// Binds a TCP listener on `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|io| BindError {
        what: what.to_string(),
        addr,
        io,
    })
}

/// Binds a listener that shares its address with other threads' listeners
/// (`SO_REUSEPORT`: one accept queue each, balanced by the kernel), as per-core workers do.
/// Only where that sharing is wanted: a second process of the same user could share it too.
pub fn bind_shared(addr: SocketAddr, what: &str) -> Result<TcpListener, BindError> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    bind().map_err(|io| BindError {
        what: what.to_string(),
        addr,
        io,
    })
}

/// As [`bind_shared`], for the first of a process's workers: the address must be free, which
/// is checked by binding it once without `SO_REUSEPORT` first. Without the check, another
/// process already listening there with `SO_REUSEPORT` (a second `gwbench gateway` on the same
/// port) would share the port with this one, and the kernel would split the connections
/// between the two; with it, this one fails with "address in use".
pub fn bind_shared_first(addr: SocketAddr, what: &str) -> Result<TcpListener, BindError> {
    if addr.port() != 0 {
        let error = |io| BindError {
            what: what.to_string(),
            addr,
            io,
        };
        drop(std::net::TcpListener::bind(addr).map_err(error)?);
    }
    bind_shared(addr, what)
}

/// Opens a TCP connection for a client (TCP_NODELAY set: requests are written whole), within
/// `timeout` when given; a timeout is an `io::ErrorKind::TimedOut` error that says how long.
/// The one place every client of the binary connects.
pub async fn connect(
    addr: impl tokio::net::ToSocketAddrs,
    timeout: Option<Duration>,
) -> std::io::Result<tokio::net::TcpStream> {
    within(timeout, tokio::net::TcpStream::connect(addr)).await
}

/// Where a client connects, and from which local address (None: the kernel picks; a load
/// generator of a local fleet gives each instance its own `127.0.0.x`, so that their
/// connections do not share one address's ephemeral ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    /// The server.
    pub addr: SocketAddr,
    /// The local address to connect from.
    pub from: Option<std::net::IpAddr>,
}

/// [`connect`] to `dial.addr`, from `dial.from` when given.
pub async fn dial(dial: Dial, timeout: Option<Duration>) -> std::io::Result<tokio::net::TcpStream> {
    let Some(from) = dial.from else {
        return connect(dial.addr, timeout).await;
    };
    let socket = match dial.addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    within(timeout, socket.connect(dial.addr)).await
}

async fn within(
    timeout: Option<Duration>,
    connect: impl std::future::Future<Output = std::io::Result<tokio::net::TcpStream>>,
) -> std::io::Result<tokio::net::TcpStream> {
    let stream = match timeout {
        None => connect.await?,
        Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {}", humantime::format_duration(t)),
            )
        })??,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A response body that can carry one of our JSON bodies (for the 500 of a panicked handler).
pub trait FromFull {
    /// Wraps a complete body.
    fn from_full(body: Body) -> Self;
}

impl FromFull for Body {
    fn from_full(body: Body) -> Self {
        body
    }
}

impl<R> FromFull for http_body_util::Either<Body, R> {
    fn from_full(body: Body) -> Self {
        http_body_util::Either::Left(body)
    }
}

/// The answer to a request whose handler panicked.
fn internal_error() -> Response<Body> {
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        "the server failed while handling this request; its log says where",
    )
}

/// Makes a panic one log line (message and place), at most one a second with a count of
/// those left out, instead of the default hook's stderr text (and, with RUST_BACKTRACE set, a
/// backtrace of tens of kilobytes per panic: a client that can trigger one could fill a disk
/// and the memory symbolizing it). Panics are not turned into aborts: `serve_http` answers a
/// panicked request 500 and serves on, so a bug in a dependency costs one request, not the
/// process.
pub fn log_panics() {
    static LAST: std::sync::Mutex<Option<(std::time::Instant, u64)>> = std::sync::Mutex::new(None);
    std::panic::set_hook(Box::new(|info| {
        let Ok(mut last) = LAST.lock() else { return };
        match &mut *last {
            Some((at, skipped)) if at.elapsed() < Duration::from_secs(1) => *skipped += 1,
            slot => {
                let skipped = slot.map_or(0, |(_, n)| n);
                let place = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let thread = std::thread::current();
                let thread = thread.name().unwrap_or("unnamed");
                tracing::error!(
                    thread,
                    place,
                    left_out_since_the_last = skipped,
                    "panic: {message}"
                );
                *slot = Some((std::time::Instant::now(), 0));
            }
        }
    }));
}

/// The client's address, put in every request's extensions by [`serve_http`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `handler` on `listener` over HTTP/1.1 (keep-alive) and h2c until `shutdown` is
/// cancelled; then stops accepting and lets in-flight requests finish for up to
/// `limits.drain`. Each request carries the client's [`PeerAddr`] in its extensions. A head
/// must arrive within `limits.header_read_timeout` of its first byte, and a connection idle
/// for `limits.idle_timeout` is closed (both HTTP/1.1 and h2); past `limits.max_connections`, a new
/// connection is closed at once; failed accepts (out of descriptors) back off and are logged
/// at most once a second.
pub fn serve_http<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, ByHyper(handler), shutdown, limits, None)
}

/// As [`serve_http`], HTTP/1.1 requests served by the lean path ([`lean`]) where it can, and
/// by hyper for the rest of a connection from the first head it leaves (upgrades, h2c,
/// `Expect`, chunked bodies): the handler takes either body ([`ReqBody`]), and the client's
/// address as an argument (hyper's requests also carry it as [`PeerAddr`]).
pub fn serve_lean<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    limits: ServeLimits,
) -> JoinHandle<()>
where
    H: Fn(Request<ReqBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, Lean(handler), shutdown, limits, None)
}

/// [`serve_http`] over TLS (`tls`: certificate, key, ALPN h2 and http/1.1): each accepted
/// connection's handshake runs in its own task, bounded by the header-read timeout, and a
/// failed handshake closes only that connection.
pub fn serve_https<H, F, B>(
    listener: TcpListener,
    handler: H,
    shutdown: CancellationToken,
    limits: ServeLimits,
    tls: Arc<rustls::ServerConfig>,
) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(listener, ByHyper(handler), shutdown, limits, Some(tls))
}

/// hyper's HTTP/1.1 + h2 builder for the served connections, and the watcher's timeouts.
/// hyper's header-read timer also runs while a kept-alive connection waits, which would make
/// it the idle timeout: `watch` times heads and idleness apart instead.
fn connection_builder(limits: &ServeLimits) -> (auto::Builder<TokioExecutor>, watch::Timeouts) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    // RFC 8441: HTTP/2 clients may open WebSockets with extended CONNECT.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let timeouts = watch::Timeouts {
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    (builder, timeouts)
}

/// A failed accept (out of file descriptors and the like): back off instead of spinning, and
/// say so once a second, not once per attempt.
async fn back_off(err: &std::io::Error, last_warning: &mut Option<std::time::Instant>) {
    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        tracing::warn!(%err, "accept failed; backing off");
        *last_warning = Some(std::time::Instant::now());
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// The accept loop of `serve_http` and `serve_https`: each connection within the cap is served
/// on a task of its own; at `shutdown`, the listener closes and the connections drain.
fn serve(
    listener: TcpListener,
    serves: impl Serves,
    shutdown: CancellationToken,
    limits: ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> JoinHandle<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        let (builder, timeouts) = connection_builder(&limits);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let mut last_warning: Option<std::time::Instant> = None;
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        back_off(&err, &mut last_warning).await;
                        continue;
                    }
                },
            };
            // Past the cap, the connection is closed before any work is done for it.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let conn = Conn {
                builder: &builder,
                timeouts,
                stopping: &stopping,
                acceptor: acceptor.as_ref(),
                handshake_within: limits.header_read_timeout,
            };
            serves.conn(&conn, Accepted { stream, peer, slot });
        }
        drop(listener);
        // Drain: every connection is asked to shut down gracefully and is done when its slot
        // is back (bounded by the drain timeout).
        let _ = stop.send(true);
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(limits.drain, slots.acquire_many(all)).await;
    })
}

/// Whether a connection to a TLS listener opened with plain HTTP: its first byte is a letter
/// (a method), where a TLS client's is a handshake record (0x16).
async fn plain_http(stream: &tokio::net::TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    Ok(n == 1 && first[0].is_ascii_uppercase())
}

/// Answers a plain HTTP request on the TLS port as nginx does: 400 and a sentence, then close.
async fn refuse_plain_http(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = "400 Bad Request: a plain HTTP request was sent to the HTTPS port\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Drives a served connection to its end, shutting it down gracefully (h2: GOAWAY; HTTP/1.1:
/// closed between requests) when its watcher finds it idle or the server stops.
macro_rules! until_done {
    ($conn:expr, $idle:expr, $stopping:expr) => {{
        let conn = $conn;
        let (idle, mut stopping) = ($idle, $stopping);
        tokio::pin!(conn);
        let mut asked = *stopping.borrow();
        if asked {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                done = conn.as_mut() => break done,
                _ = idle.notified(), if !asked => {
                    asked = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = stopping.changed(), if !asked => {
                    asked = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }};
}

/// What serving one accepted connection needs from its listener's loop.
struct Conn<'a> {
    builder: &'a auto::Builder<TokioExecutor>,
    timeouts: watch::Timeouts,
    stopping: &'a tokio::sync::watch::Receiver<bool>,
    acceptor: Option<&'a tokio_rustls::TlsAcceptor>,
    handshake_within: Duration,
}

impl Conn<'_> {
    /// Serves one accepted connection on a task of its own (after its TLS handshake, when
    /// the listener has TLS), its requests watched for the head and idle timeouts; `slot` is
    /// held until the connection ends.
    fn serve<H, F, B>(
        &self,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        slot: tokio::sync::OwnedSemaphorePermit,
        handler: H,
    ) where
        H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<B>> + Send + 'static,
        B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let _ = stream.set_nodelay(true);
        let (builder, stopping, timeouts) =
            (self.builder.clone(), self.stopping.clone(), self.timeouts);
        let Some(acceptor) = self.acceptor else {
            // Client resets and protocol errors end that connection only.
            tokio::spawn(async move {
                by_hyper(&builder, timeouts, stopping, stream, peer, handler).await;
                drop(slot);
            });
            return;
        };
        let acceptor = acceptor.clone();
        let handshake_within = self.handshake_within;
        tokio::spawn(async move {
            let handshake = async {
                if plain_http(&stream).await? {
                    refuse_plain_http(stream).await;
                    return Err(io::Error::other("plain HTTP on the TLS port"));
                }
                acceptor.accept(stream).await
            };
            let Ok(Ok(tls)) = tokio::time::timeout(handshake_within, handshake).await else {
                drop(slot); // a failed or slow handshake: this connection only
                return;
            };
            // Watched above TLS: it sees the requests' bytes, so h2 is recognised and held to
            // the idle timeout, as on a cleartext connection.
            by_hyper(&builder, timeouts, stopping, tls, peer, handler).await;
            drop(slot);
        });
    }
}

/// hyper serving `io` (HTTP/1.1 with upgrades, or h2) to its end, each request carrying the
/// peer's address, a panicking handler answered 500, the connection watched for the head and
/// idle timeouts and shut down gracefully when idle or when the server stops.
async fn by_hyper<IO, H, F, B>(
    builder: &auto::Builder<TokioExecutor>,
    timeouts: watch::Timeouts,
    stopping: tokio::sync::watch::Receiver<bool>,
    io: IO,
    peer: std::net::SocketAddr,
    handler: H,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let requests = Arc::new(watch::Requests::default());
    let watching = requests.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = requests.enter();
        req.extensions_mut().insert(PeerAddr(peer));
        let fut = handler(req);
        async move {
            // A panic (a bug, ours or a dependency's) costs this request a 500, not
            // the connection an empty reply; the hook in `log_panics` says where.
            let response = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(response) => response,
                Err(_) => internal_error().map(B::from_full),
            };
            // A switched protocol (WebSocket) keeps its own timeouts from here on.
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                in_flight.upgraded();
            }
            drop(in_flight);
            Ok::<_, Infallible>(response)
        }
    });
    let io = watch::Watched::new(io, watching, timeouts);
    let idle = io.closing();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let _ = until_done!(conn, idle, stopping);
}

/// An accepted connection within the cap: its socket, its client, and its slot (held until
/// the connection ends).
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: tokio::sync::OwnedSemaphorePermit,
}

/// How the accept loop serves its connections: by hyper alone, or by the lean path first.
trait Serves: Clone + Send + 'static {
    fn conn(&self, conn: &Conn<'_>, accepted: Accepted);
}

/// Every connection by hyper.
#[derive(Clone)]
struct ByHyper<H>(H);

impl<H, F, B> Serves for ByHyper<H>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn conn(&self, conn: &Conn<'_>, a: Accepted) {
        conn.serve(a.stream, a.peer, a.slot, self.0.clone());
    }
}

/// Cleartext connections by the lean path ([`lean`]), handed to hyper for what it leaves;
/// TLS connections by hyper.
#[derive(Clone)]
struct Lean<H>(H);

impl<H, F, B> Serves for Lean<H>
where
    H: Fn(Request<ReqBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + FromFull + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn conn(&self, conn: &Conn<'_>, Accepted { stream, peer, slot }: Accepted) {
        let handler = self.0.clone();
        let h = handler.clone();
        let via_hyper =
            move |req: Request<Incoming>| h(req.map(http_body_util::Either::Left), peer);
        if conn.acceptor.is_some() {
            return conn.serve(stream, peer, slot, via_hyper);
        }
        let _ = stream.set_nodelay(true);
        let setting = lean::Setting {
            timeouts: conn.timeouts,
            stopping: conn.stopping.clone(),
            limits: crate::http1::server::Limits::default(),
        };
        let (builder, timeouts, stopping) =
            (conn.builder.clone(), conn.timeouts, conn.stopping.clone());
        tokio::spawn(async move {
            let end = lean::serve(stream, peer, &handler, setting).await;
            if let lean::End::Handover(stream, read) = end {
                let io = rewind::Rewind::new(read, stream);
                by_hyper(&builder, timeouts, stopping, io, peer, via_hyper).await;
            }
            drop(slot);
        });
    }
}

/// Keeps a timer pending in the runtime's timer wheel, re-armed every `period`, until
/// `shutdown`. Why: tokio wakes its I/O driver (an eventfd write, then one more `epoll_wait`)
/// whenever a timer is registered that expires before every pending one, which is every
/// request's deadline when the wheel is empty between requests: about 1.5 extra syscalls per
/// request on the gateway. With this timer pending, only deadlines shorter than `period` still
/// do that. It costs one wake-up per `period` when idle. `timer_tests` counts the wake-ups
/// (eventfd writes) with and without it, and with deadlines shorter than `period`, so that a
/// tokio release that changes this fails a test instead of silently undoing the saving.
pub fn keep_timer_armed(period: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
        }
    })
}

/// A JSON response with the given status.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error response in the project's format:
/// `{"error": {"code": "NOT_FOUND", "message": "...", "http_status": 404}}`, where `code` is the
/// gRPC status code name that corresponds to the HTTP status.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "http_status": status.as_u16() }
    });
    json(status, body.to_string())
}

/// Refuses (403) a request that changes state when it comes from another origin: a web page
/// could otherwise change it with a cross-origin `text/plain` POST, which browsers send without
/// asking. Command-line clients send no `Origin`; a page of the endpoint's own origin passes.
pub fn cross_origin_refusal(headers: &http::HeaderMap) -> Option<Response<Body>> {
    let origin = headers.get(http::header::ORIGIN)?;
    let own = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"));
    (own.as_deref() != origin.to_str().ok()).then(|| {
        json_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "changes from another origin are refused",
        )
    })
}

#[cfg(test)]
mod dial_tests {
    use super::*;

    #[tokio::test]
    async fn a_dial_from_a_loopback_address_arrives_from_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for from in [None, Some(std::net::IpAddr::from([127, 0, 0, 3]))] {
            let (client, accepted) =
                tokio::join!(dial(Dial { addr, from }, None), listener.accept());
            let (_, peer) = accepted.unwrap();
            assert_eq!(client.unwrap().local_addr().unwrap().ip(), peer.ip());
            if let Some(ip) = from {
                assert_eq!(peer.ip(), ip);
            }
        }
    }
}

/// `keep_timer_armed` rests on how tokio's timer wheel wakes its driver; these tests fail, and
/// say so, the day a tokio release changes it (then the helper saves nothing, or is no longer
/// needed).
#[cfg(test)]
mod timer_tests {
    use super::*;

    /// Write-family syscalls this thread has made (`syscw` of /proc/thread-self/io): the
    /// driver's wake-up is one eventfd write, made by the thread that registers the timer.
    fn writes_by_this_thread() -> Option<u64> {
        let io = std::fs::read_to_string("/proc/thread-self/io").ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// `n` request-like deadlines, as the gateway meets them: the runtime idles (its driver
    /// parked) until a "request" arrives from another thread, then registers the request's
    /// deadline and drops it with the quick answer. The writes this thread made meanwhile.
    async fn deadlines(n: u64) -> u64 {
        requests(n, Some(Duration::from_secs(5))).await
    }

    /// As [`deadlines`], with a deadline of that length or none.
    async fn requests(n: u64, deadline: Option<Duration>) -> u64 {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        let (ack, acked) = std::sync::mpsc::channel::<()>();
        let client = std::thread::spawn(move || {
            for _ in 0..n {
                if tx.blocking_send(()).is_err() || acked.recv().is_err() {
                    return;
                }
            }
        });
        let before = writes_by_this_thread().unwrap_or(0);
        while rx.recv().await.is_some() {
            match deadline {
                Some(d) => {
                    let _ = tokio::time::timeout(d, tokio::task::yield_now()).await;
                }
                None => tokio::task::yield_now().await,
            }
            if ack.send(()).is_err() {
                break;
            }
        }
        let writes = writes_by_this_thread().unwrap_or(0) - before;
        let _ = client.join();
        writes
    }

    #[test]
    fn an_armed_timer_spares_the_driver_wake_up_of_every_deadline() {
        if writes_by_this_thread().is_none() {
            eprintln!("no /proc/thread-self/io here: nothing to count");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let n = 2_000;
        // The same requests without a deadline make no write at all: what follows is the
        // deadlines' doing.
        assert_eq!(rt.block_on(requests(n, None)), 0);
        let bare = rt.block_on(deadlines(n));
        let (armed, shorter) = rt.block_on(async {
            // Shorter than the deadlines (5 s), as the gateway's 50 ms is shorter than its
            // routes' timeouts; long enough to fire at most a few times during the test.
            let stop = CancellationToken::new();
            let arm = keep_timer_armed(Duration::from_secs(1), stop.clone());
            tokio::task::yield_now().await; // its first tick is registered
            let writes = deadlines(n).await;
            // Deadlines shorter than the armed timer's period are the earliest again: the
            // saving is gone for them (why the gateway arms every 50 ms).
            let shorter = requests(n, Some(Duration::from_millis(100))).await;
            stop.cancel();
            let _ = arm.await;
            (writes, shorter)
        });
        eprintln!(
            "{n} deadlines: {bare} driver wake-ups (eventfd writes) bare, {armed} armed, \
             {shorter} armed with deadlines shorter than its period"
        );
        // How many of the n requests find the driver parked varies with the scheduling (on a
        // busy machine, fewer: the runtime is often still awake when the next one comes); each
        // that does pays one eventfd write for its deadline, unless a timer is armed. A floor
        // far below what a quiet machine shows (a tenth to a half of n) keeps the test about
        // tokio's behaviour, not the machine's load.
        assert!(
            bare >= n / 40,
            "without an armed timer {n} deadlines made only {bare} writes: tokio no longer wakes \
             its driver per earliest deadline, and keep_timer_armed saves nothing now"
        );
        assert!(
            armed <= bare / 10,
            "with an armed timer {n} deadlines still made {armed} writes (without: {bare}): \
             keep_timer_armed no longer spares the wake-ups"
        );
        // The same floor as `bare`'s, for the same reason: under load (the other tests of the
        // crate running beside it) fewer requests find the driver parked (seen: 132 of 2,000).
        assert!(
            shorter >= n / 40 && shorter > armed,
            "deadlines shorter than the armed period made only {shorter} writes: the model of \
             when the saving holds (keep_timer_armed's doc) is no longer tokio's"
        );
    }
}
