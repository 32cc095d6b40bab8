//! A proxy route's WebSocket upgrades: the upgrade request goes to an endpoint on a connection
//! of its own (never a pooled one), the endpoint's `101` comes back to the client, and the two
//! connections are then joined by [`relay`]. An endpoint that answers anything but `101` has
//! that answer forwarded as an ordinary response.
//!
//! The relay forwards each direction's bytes unchanged (a client's masked frames stay masked:
//! nothing is unmasked, re-masked or copied into messages) while `ws::frame::Scanner` reads
//! their headers: messages and bytes are counted each way, and a frame or message over the
//! limits, broken framing, a peer that does not take its bytes within `send_timeout`, and no
//! frame either way for `idle_timeout` end the connection. The gateway's own close frame
//! (1009, 1008, 1002, 1001) is written to a side only when that side's stream is at a frame
//! boundary; otherwise the connection is just closed. Extensions (permessage-deflate) are not
//! offered upstream, so the frames seen are the messages.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::Code;

use crate::gateway::status::GwError;
use crate::ws::frame::{Scanner, Sender, Violation, close_frame};
use crate::ws::{Limits, close};

/// Largest upstream answer head to an upgrade.
const MAX_HEAD: usize = 16 << 10;
/// Largest body of a refused upgrade that is forwarded.
const MAX_REFUSAL_BODY: usize = 64 << 10;

/// What the endpoint answered to the upgrade.
pub(crate) enum Answer<S> {
    /// `101`: the head for the client, the connection, and bytes that came after the head.
    Switched(http::response::Parts, S, Bytes),
    /// Anything else, forwarded as a response (its hop-by-hop headers still in it).
    Refused(http::Response<Bytes>),
}

/// Sends the upgrade request (`pq`, the forwarded `headers`) on `io` and reads the answer.
pub(crate) async fn handshake<S>(
    mut io: S,
    host: &str,
    pq: &str,
    headers: &HeaderMap,
) -> Result<Answer<S>, GwError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = format!(
        "GET {pq} HTTP/1.1\r\nhost: {host}\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
    )
    .into_bytes();
    for (name, value) in headers {
        if name == header::HOST || name == header::SEC_WEBSOCKET_EXTENSIONS {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    io.write_all(&head).await.map_err(unavailable)?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if io.read_buf(&mut buf).await.map_err(unavailable)? == 0 {
            return Err(bad_gateway(
                "the upstream closed the connection before answering the upgrade",
            ));
        }
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let parts = head_parts(&resp)?;
                let rest = buf.split_off(len).freeze();
                return answer(io, parts, rest).await;
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) => {
                return Err(bad_gateway("the upstream's answer head is over 16 KiB"));
            }
            Err(e) => {
                return Err(bad_gateway(&format!(
                    "the upstream's answer is not HTTP/1.1: {e}"
                )));
            }
        }
    }
}

fn head_parts(resp: &httparse::Response<'_, '_>) -> Result<http::response::Parts, GwError> {
    let status = resp
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| bad_gateway("the upstream's answer has no valid status"))?;
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    for h in resp.headers.iter() {
        let name = header::HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_bytes(h.value);
        if let (Ok(name), Ok(value)) = (name, value) {
            parts.headers.append(name, value);
        }
    }
    Ok(parts)
}

async fn answer<S>(
    mut io: S,
    mut parts: http::response::Parts,
    rest: Bytes,
) -> Result<Answer<S>, GwError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        if !crate::ws::is_upgrade(&parts.headers) {
            return Err(bad_gateway(
                "the upstream switched protocols, but not to WebSocket",
            ));
        }
        // Only what the client must see: the accept key and the chosen subprotocol.
        let keep = [header::SEC_WEBSOCKET_ACCEPT, header::SEC_WEBSOCKET_PROTOCOL];
        let mut headers = HeaderMap::new();
        for name in keep {
            if let Some(v) = parts.headers.get(&name) {
                headers.insert(name, v.clone());
            }
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        parts.headers = headers;
        return Ok(Answer::Switched(parts, io, rest));
    }
    // A refusal (401, 404, …): its body, as far as its length says and the bound allows.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(rest.len())
        .min(MAX_REFUSAL_BODY);
    let mut body = BytesMut::from(&rest[..rest.len().min(length)]);
    while body.len() < length {
        if io.read_buf(&mut body).await.map_err(unavailable)? == 0 {
            break;
        }
    }
    body.truncate(length);
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Answer::Refused(http::Response::from_parts(
        parts,
        body.freeze(),
    )))
}

fn unavailable(e: std::io::Error) -> GwError {
    GwError::grpc(Code::Unavailable, format!("WebSocket upstream: {e}"))
}

fn bad_gateway(what: &str) -> GwError {
    GwError::http(StatusCode::BAD_GATEWAY, Code::Unavailable, what.to_string())
}

// ===== relay =====

/// Counters of one direction, resolved once per connection.
#[derive(Clone)]
pub(crate) struct Tap {
    messages: metrics::Counter,
    bytes: metrics::Counter,
}

impl Tap {
    fn new(direction: &'static str) -> Self {
        Tap {
            messages: metrics::counter!("gwbench_ws_messages_total", "direction" => direction),
            bytes: metrics::counter!("gwbench_ws_bytes_total", "direction" => direction),
        }
    }
}

/// How one direction of the relay ended.
#[derive(Debug)]
enum Ended {
    /// Its sender closed the stream (after a close frame, or without one).
    Closed,
    /// Its sender broke a limit or the protocol.
    Violated(Violation),
    /// Its receiver did not take the bytes within the send timeout.
    SlowReader,
    /// Reading or writing failed.
    Failed,
    /// Neither side sent a frame for the idle timeout.
    Idle,
}

/// One direction's scanner, and whether what was forwarded so far ends on a frame boundary
/// (the gateway may then write a close frame of its own).
struct Direction {
    scanner: Scanner,
    whole_frames: bool,
}

impl Direction {
    fn new(sender: Sender, limits: &Limits) -> Self {
        Direction {
            scanner: Scanner::new(sender, limits.frames()),
            whole_frames: true,
        }
    }
}

/// One direction: reads `from`, scans, writes to `to`, counting; ends at EOF or a violation.
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    dir: &mut Direction,
    tap: &Tap,
    limits: &Limits,
    activity: &AtomicU64,
    epoch: tokio::time::Instant,
) -> Ended
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                // Passed on at once: after a close handshake, the server closes first.
                let _ = to.shutdown().await;
                return Ended::Closed;
            }
            Ok(n) => n,
            Err(_) => return Ended::Failed,
        };
        activity.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        let seen = match dir.scanner.scan(&buf[..n]) {
            Ok(seen) => seen,
            Err(v) => return Ended::Violated(v),
        };
        match tokio::time::timeout(limits.send_timeout, to.write_all(&buf[..n])).await {
            Ok(Ok(())) => dir.whole_frames = dir.scanner.at_boundary(),
            Ok(Err(_)) => return Ended::Failed,
            Err(_) => return Ended::SlowReader,
        }
        tap.messages.increment(seen.messages);
        tap.bytes.increment(seen.bytes);
        if let Some(code) = seen.close {
            metrics::counter!("gwbench_ws_closes_total", "code" => code_label(code)).increment(1);
        }
    }
}

/// A close code as a bounded label: the registered codes by number, the rest by range.
pub(crate) fn code_label(code: u16) -> &'static str {
    const KNOWN: [&str; 16] = [
        "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008", "1009", "1010",
        "1011", "1012", "1013", "1014", "1015",
    ];
    match code {
        1000..=1015 => KNOWN[usize::from(code - 1000)],
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

/// Waits until neither direction has moved for the idle timeout.
async fn idle(limits: &Limits, activity: &AtomicU64, epoch: tokio::time::Instant) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let due = epoch + last + limits.idle_timeout;
        if tokio::time::Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// Joins the client's upgraded connection and the upstream's until both have closed, one
/// breaks a limit, or both idle. `early` are upstream bytes that came with its `101`.
pub(crate) async fn relay<C, U>(client: C, upstream: U, early: Bytes, limits: Limits)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let mut up_dir = Direction::new(Sender::Client, &limits);
    let mut down_dir = Direction::new(Sender::Server, &limits);
    let (to_up, to_client) = (Tap::new("to_upstream"), Tap::new("to_client"));
    if !early.is_empty() {
        match down_dir.scanner.scan(&early) {
            Ok(seen) if cw.write_all(&early).await.is_ok() => {
                down_dir.whole_frames = down_dir.scanner.at_boundary();
                to_client.messages.increment(seen.messages);
                to_client.bytes.increment(seen.bytes);
            }
            _ => return,
        }
    }
    let epoch = tokio::time::Instant::now();
    let activity = AtomicU64::new(0);
    // How the relay ended, unless both sides closed.
    let ending: Option<Ended> = {
        let up = pump(
            &mut cr,
            &mut uw,
            &mut up_dir,
            &to_up,
            &limits,
            &activity,
            epoch,
        );
        let down = pump(
            &mut ur,
            &mut cw,
            &mut down_dir,
            &to_client,
            &limits,
            &activity,
            epoch,
        );
        tokio::pin!(up, down);
        let grace = limits.send_timeout;
        tokio::select! {
            e = &mut up => match e {
                // The client is done: the upstream's close (or EOF) may still be on its way.
                Ended::Closed => {
                    let _ = tokio::time::timeout(grace, &mut down).await;
                    None
                }
                other => Some(other),
            },
            e = &mut down => match e {
                Ended::Closed => {
                    let _ = tokio::time::timeout(grace, &mut up).await;
                    None
                }
                other => Some(other),
            },
            () = idle(&limits, &activity, epoch) => Some(Ended::Idle),
        }
    };
    let Some(ended) = ending else {
        let _ = cw.shutdown().await;
        let _ = uw.shutdown().await;
        return;
    };
    let ends = Ends {
        client: cw,
        upstream: uw,
        client_whole: down_dir.whole_frames,
        upstream_whole: up_dir.whole_frames,
    };
    ends.close(&ended, &limits).await;
}

/// The write sides of a relay that ended short of both closes, and whether each has only whole
/// frames so far (a close frame of the gateway's may follow).
struct Ends<C, U> {
    client: C,
    upstream: U,
    client_whole: bool,
    upstream_whole: bool,
}

impl<C: AsyncWrite + Unpin, U: AsyncWrite + Unpin> Ends<C, U> {
    /// Tells each side why (when it can take a frame), counts it, and closes both.
    async fn close(mut self, ended: &Ended, limits: &Limits) {
        let (code, reason) = match ended {
            Ended::Idle => {
                violation("idle");
                (close::GOING_AWAY, "idle timeout".to_string())
            }
            Ended::Violated(v) => {
                violation(v.reason());
                (v.close_code(), v.to_string())
            }
            Ended::SlowReader => {
                violation("slow_reader");
                (
                    close::POLICY,
                    "a peer did not read its messages in time".into(),
                )
            }
            Ended::Closed | Ended::Failed => (close::GOING_AWAY, String::new()),
        };
        let within = limits.send_timeout;
        if self.client_whole {
            let frame = close_frame(code, &reason, None);
            let _ = tokio::time::timeout(within, self.client.write_all(&frame)).await;
        }
        if self.upstream_whole {
            let frame = close_frame(close::GOING_AWAY, "", Some(rand::random::<[u8; 4]>()));
            let _ = tokio::time::timeout(within, self.upstream.write_all(&frame)).await;
        }
        metrics::counter!("gwbench_ws_closes_total", "code" => code_label(code)).increment(1);
        let _ = self.client.shutdown().await;
        let _ = self.upstream.shutdown().await;
    }
}

fn violation(reason: &'static str) {
    metrics::counter!("gwbench_ws_violations_total", "reason" => reason).increment(1);
}
