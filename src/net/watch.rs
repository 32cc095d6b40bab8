//! Per-connection timing of the servers: a request head must arrive within the header-read
//! timeout of its first byte, and a connection with no request in flight and no byte read or
//! written for the idle timeout is closed. hyper's own header-read timer starts when an
//! HTTP/1.1 connection begins waiting for a head, which makes it the keep-alive idle timeout
//! too, and h2 has none; this wrapper keeps the two apart and covers both protocols.
//!
//! An idle connection is closed gracefully: the wrapper asks the connection's task to shut it
//! down ([`Watched::closing`]: hyper then sends h2's GOAWAY, or closes an HTTP/1.1 connection
//! between requests), and only if it is still open [`CLOSE_GRACE`] later do its reads fail.
//! A slow head is cut at once.
//!
//! The wrapper sits under hyper as the connection's IO. It learns where the connection is
//! from two counters the service keeps ([`Requests`]): requests started and requests in
//! flight. Its timer is re-armed lazily (only when it fires, or when a head starts to
//! arrive in pieces), so a request that arrives in one read costs two clock reads and no
//! timer operation.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long an idle connection asked to close gracefully may take before its reads fail.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The two timeouts a connection is held to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// What the service tells the connection's IO: requests started and still in flight.
#[derive(Debug, Default)]
pub(super) struct Requests {
    started: AtomicU64,
    in_flight: AtomicUsize,
    /// The connection switched protocols (a WebSocket): HTTP's head and idle rules no longer
    /// apply; the new protocol's endpoint times it.
    upgraded: AtomicBool,
}

impl Requests {
    /// Marks a request as started; it is in flight until the returned guard is dropped.
    pub(super) fn enter(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight on its connection (see [`Requests::enter`]).
pub(super) struct InFlight(Arc<Requests>);

impl InFlight {
    /// The request's answer switched the connection to another protocol.
    pub(super) fn upgraded(&self) {
        self.0.upgraded.store(true, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A server connection's IO, closed (reads fail with `TimedOut`) when a head is slow or the
/// connection idles.
pub(super) struct Watched<S> {
    inner: S,
    requests: Arc<Requests>,
    timeouts: Timeouts,
    last_activity: Instant,
    /// When the first byte of a head arrived while no request was in flight, and how many
    /// requests had started then: the head is complete once another one starts.
    head: Option<(Instant, u64)>,
    /// Whether the connection speaks h2 (seen from its first bytes; h2 reads control frames
    /// between requests, so only the idle rule applies to it).
    h2: Option<bool>,
    timer: Pin<Box<Sleep>>,
    /// Told when the connection has idled past the timeout; when that was.
    close: Arc<tokio::sync::Notify>,
    asked_to_close: Option<Instant>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, requests: Arc<Requests>, timeouts: Timeouts) -> Self {
        let now = Instant::now();
        Watched {
            inner,
            requests,
            timeouts,
            last_activity: now,
            head: None,
            h2: None,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.idle)),
            close: Arc::new(tokio::sync::Notify::new()),
            asked_to_close: None,
        }
    }

    /// Notified once when the connection has idled past the idle timeout: its task should
    /// then shut it down gracefully.
    pub(super) fn closing(&self) -> Arc<tokio::sync::Notify> {
        self.close.clone()
    }

    /// When the connection is to be closed if nothing happens before; None while a request
    /// is in flight.
    fn deadline(&mut self) -> Option<Instant> {
        if self.requests.upgraded.load(Ordering::Relaxed) {
            return None;
        }
        if let Some((first_byte, started)) = self.head {
            if self.requests.started.load(Ordering::Relaxed) == started {
                return Some(first_byte + self.timeouts.header_read);
            }
            self.head = None;
        }
        if self.requests.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(self.last_activity + self.timeouts.idle)
    }

    /// Bytes were read: note the activity, the protocol, and the start of a head.
    fn on_read(&mut self, bytes: &[u8]) {
        let now = Instant::now();
        self.last_activity = now;
        if self.h2.is_none() && (bytes.len() >= 4 || !b"PRI ".starts_with(bytes)) {
            self.h2 = Some(bytes.starts_with(b"PRI "));
        }
        // Until the protocol is known, the first bytes are held to the header-read timeout.
        if self.h2 != Some(true)
            && self.head.is_none()
            && self.requests.in_flight.load(Ordering::Relaxed) == 0
        {
            self.head = Some((now, self.requests.started.load(Ordering::Relaxed)));
        }
    }

    /// The read would wait: Pending with the timer armed, or the timeout error when the
    /// deadline has passed. While a request is in flight the timer is still armed, an idle
    /// period ahead: hyper may not read again after answering (it waits on the read it
    /// already started), so the timer is what brings it back to check.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let now = Instant::now();
            let deadline = match self.deadline() {
                Some(deadline) if deadline <= now && self.head.is_some() => {
                    let what = "request head not received within the header-read timeout";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Some(deadline) if deadline <= now => match self.asked_to_close {
                    // Idle: first ask for a graceful close, then, if it is still open after
                    // the grace, fail its reads.
                    None => {
                        self.asked_to_close = Some(now);
                        self.close.notify_one();
                        now + CLOSE_GRACE
                    }
                    Some(asked) if now >= asked + CLOSE_GRACE => {
                        let what = "connection idle past the idle timeout";
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                    }
                    Some(asked) => asked + CLOSE_GRACE,
                },
                Some(deadline) => deadline,
                None => now + self.timeouts.idle,
            };
            let armed = self.timer.deadline();
            if armed > deadline || armed <= now {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.on_read(&buf.filled()[before..]);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.last_activity = Instant::now();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.last_activity = Instant::now();
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
