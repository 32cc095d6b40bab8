//! The generator's WebSocket side (`ws://`, `wss://`): per connection one sender task that
//! takes tickets, sends each message at its intended time (open loop: it does not wait for
//! the answer to the previous one), and times each answer against the message it answers.
//! In a closed loop (`--rps max`) each connection has one message in flight, as wrk's HTTP.
//!
//! An answer is matched to its message by the id in it when the message template has `{seq}`:
//! the template's text just before `{seq}` is looked for in the answer, and the number after
//! it names the message (so `{"id":{seq},...}` works for an echo and for any server that
//! returns the id). Without `{seq}`, or when an answer carries no id, answers are taken in the
//! order the messages went (one answer per message, as an echo or a bidi RPC answers).
//!
//! The upgrade handshakes (TCP, TLS, upgrade) happen before the clock starts and are timed
//! apart; a connection that fails mid-run fails the messages waiting on it and is opened again
//! for the next one (that message then waits for the handshake, as an HTTP request would).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::phase::{PhaseEnd, Run, WAIT_SLACK};
use super::recorder::Outcome;
use super::target::RequestTemplate;
use super::template::Part;
use super::timer::PreciseTimer;

/// How long opening a connection (TCP, TLS, upgrade) may take before the run.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages in flight on one connection at most; past it, the next message waits (counted as
/// waiting for a connection).
pub const MAX_IN_FLIGHT: usize = 4096;

type Socket = tokio_tungstenite::WebSocketStream<crate::net::tls::Stream>;

/// One WebSocket connection of the generator, opened before the run.
#[derive(Default)]
pub struct WsConn {
    socket: Option<Socket>,
    /// Its number (the upgrade path's `{seq}`).
    index: u64,
}

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsConn")
            .field("open", &self.socket.is_some())
            .finish()
    }
}

/// The message template, rendered per message, and where an answer carries the id.
#[derive(Debug, Clone)]
pub struct Messages {
    parts: Vec<Part>,
    /// The text before `{seq}` in the template (None: answers are matched in order).
    id_prefix: Option<String>,
}

impl Messages {
    /// Prepares `--data` (UTF-8 text with `{seq}`, `{rand:A-B}`).
    pub fn new(template: &RequestTemplate) -> Result<Self, super::LoadError> {
        let text = template.body_text()?;
        let parts =
            Part::scan(text).map_err(|e| super::LoadError::Config(format!("--data: {e}")))?;
        let id_prefix = parts.iter().position(|p| matches!(p, Part::Seq)).map(|i| {
            let before: String = parts[..i]
                .iter()
                .rev()
                .take_while(|p| matches!(p, Part::Lit(_)))
                .map(|p| match p {
                    Part::Lit(s) => s.clone(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            before
        });
        Ok(Messages {
            parts,
            id_prefix: id_prefix.filter(|p| !p.is_empty()),
        })
    }

    /// An empty template (the pool's, until it is opened with the target's).
    pub fn placeholder() -> Self {
        Messages {
            parts: Vec::new(),
            id_prefix: None,
        }
    }

    fn render(&self, seq: u64) -> String {
        Part::render(&self.parts, seq)
    }

    /// The id an answer carries, if the template has one and the answer has it.
    fn id_of(&self, answer: &str) -> Option<u64> {
        let prefix = self.id_prefix.as_deref()?;
        let at = answer.find(prefix)? + prefix.len();
        let digits: &str = &answer[at..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        digits[..end].parse().ok()
    }
}

impl WsConn {
    /// Sends a normal close and waits (1 s at most) for the server's.
    pub async fn close(&mut self) {
        if let Some(mut socket) = self.socket.take() {
            let bye = async {
                let _ = socket.close(None).await;
                while let Some(Ok(_)) = socket.next().await {}
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
        }
    }

    /// Opens the connection (TCP, TLS, upgrade) within `timeout`; how long it took.
    pub async fn open(
        &mut self,
        template: &RequestTemplate,
        index: u64,
        timeout: Duration,
    ) -> Result<Duration, &'static str> {
        self.index = index;
        let started = Instant::now();
        let open = async {
            let stream =
                crate::net::tls::connect(template.dial(), template.tls.as_deref(), Some(timeout))
                    .await
                    .map_err(|e| crate::http1::client::io_kind(&e))?;
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let base = template.ws_request(index);
            let mut req = base
                .uri()
                .clone()
                .into_client_request()
                .map_err(|_| "bad_url")?;
            for (name, value) in base.headers() {
                req.headers_mut().append(name.clone(), value.clone());
            }
            let cfg = crate::ws::Limits::default().tungstenite();
            let (socket, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(cfg))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(_) => "upgrade_refused",
                    _ => "upgrade_failed",
                })?;
            Ok::<_, &'static str>(socket)
        };
        let socket = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| "connect_timeout")??;
        self.socket = Some(socket);
        Ok(started.elapsed())
    }
}

/// A message sent and not answered yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    intended: Instant,
    sent: Instant,
}

/// One connection's sender for a phase.
pub(super) async fn ws_sender(
    run: &Run<'_>,
    conn: &mut WsConn,
    messages: &Messages,
) -> std::io::Result<PhaseEnd> {
    let mut s = Sender {
        run,
        conn,
        messages,
        pending: VecDeque::new(),
        end: PhaseEnd::default(),
        timer: PreciseTimer::new()?,
    };
    while let Some((ticket, intended)) = run.take() {
        s.wait_until(intended.unwrap_or_else(Instant::now)).await?;
        expire(run, &mut s.pending, run.shared.timeout, &mut s.end);
        s.make_room(intended).await;
        let now = Instant::now();
        if run.too_late(&ticket, now) {
            s.end.not_sent += u64::from(ticket.at.is_some());
            break;
        }
        s.send(ticket.index + 1, intended, now).await;
    }
    s.drain().await;
    Ok(s.end)
}

/// One connection's sender and the messages it waits answers for.
struct Sender<'r, 'a> {
    run: &'r Run<'a>,
    conn: &'r mut WsConn,
    messages: &'r Messages,
    pending: VecDeque<Pending>,
    end: PhaseEnd,
    timer: PreciseTimer,
}

impl Sender<'_, '_> {
    /// Reads one answer (or the connection's end, which fails every message waiting).
    fn on_answer(&mut self, m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) {
        if !answered(self.run, &mut self.pending, self.messages, m, &mut self.end) {
            fail_all(
                self.run,
                &mut self.pending,
                "connection_closed",
                &mut self.end,
            );
            self.conn.socket = None;
        }
    }

    /// Sleeps precisely until `due`, reading answers meanwhile.
    async fn wait_until(&mut self, due: Instant) -> std::io::Result<()> {
        while let Some(socket) = self.conn.socket.as_mut() {
            tokio::select! {
                r = self.timer.sleep_until(due, self.run.shared.spin) => return r,
                m = socket.next() => self.on_answer(m),
            }
        }
        self.timer.sleep_until(due, self.run.shared.spin).await
    }

    /// Waits for answers while the connection holds its most messages in flight: one in a
    /// closed loop (`--rps max`, as an HTTP/1.1 connection), else [`MAX_IN_FLIGHT`].
    async fn make_room(&mut self, intended: Option<Instant>) {
        let most = if intended.is_some() { MAX_IN_FLIGHT } else { 1 };
        while self.pending.len() >= most {
            let Some(socket) = self.conn.socket.as_mut() else {
                return;
            };
            let m = socket.next().await;
            self.on_answer(m);
            if intended.is_some_and(|t| Instant::now() > t + WAIT_SLACK) {
                self.end.waited_for_connection += 1;
            }
        }
    }

    /// Sends message `seq` (reopening the connection first when it failed).
    async fn send(&mut self, seq: u64, intended: Option<Instant>, now: Instant) {
        let (run, timeout) = (self.run, self.run.shared.timeout);
        if self.conn.socket.is_none() {
            // Reopened for this message, which waits for it (its latency shows the wait).
            let index = self.conn.index;
            if let Err(kind) = self.conn.open(&run.shared.template, index, timeout).await {
                self.end.finished = Some(run.record(intended, now, Outcome::Transport(kind)));
                return;
            }
        }
        let text = self.messages.render(seq);
        let sent = Instant::now();
        self.end.last_send = Some(sent);
        let Some(socket) = self.conn.socket.as_mut() else {
            return;
        };
        let failed = match tokio::time::timeout(timeout, socket.send(Message::text(text))).await {
            Ok(Ok(())) => {
                let intended = intended.unwrap_or(sent);
                self.pending.push_back(Pending {
                    seq,
                    intended,
                    sent,
                });
                return;
            }
            Ok(Err(_)) => Outcome::Transport("send_failed"),
            Err(_) => Outcome::Timeout,
        };
        self.end.finished = Some(run.record(intended, sent, failed));
        fail_all(run, &mut self.pending, "connection_closed", &mut self.end);
        self.conn.socket = None;
    }

    /// Waits for the answers still due, each within the timeout.
    async fn drain(&mut self) {
        let timeout = self.run.shared.timeout;
        while let Some(oldest) = self.pending.front().copied() {
            let Some(socket) = self.conn.socket.as_mut() else {
                break;
            };
            let give_up = tokio::time::Instant::from_std(oldest.sent + timeout);
            tokio::select! {
                () = tokio::time::sleep_until(give_up) => {
                    expire(self.run, &mut self.pending, timeout, &mut self.end);
                }
                m = socket.next() => self.on_answer(m),
            }
        }
        fail_all(
            self.run,
            &mut self.pending,
            "connection_closed",
            &mut self.end,
        );
    }
}

/// Records the message an answer answers; false when the connection ended or failed.
fn answered(
    run: &Run<'_>,
    pending: &mut VecDeque<Pending>,
    messages: &Messages,
    m: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    end: &mut PhaseEnd,
) -> bool {
    let text = match m {
        Some(Ok(Message::Text(t))) => t,
        Some(Ok(Message::Binary(b))) => match String::from_utf8(b.to_vec()) {
            Ok(t) => t.into(),
            Err(_) => Default::default(),
        },
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
        Some(Ok(_)) => return true, // ping, pong
    };
    let at = messages
        .id_of(&text)
        .and_then(|id| pending.iter().position(|p| p.seq == id))
        .unwrap_or(0);
    if let Some(p) = pending.remove(at) {
        end.finished = Some(run.record(Some(p.intended), p.sent, Outcome::Ok));
    }
    true
}

/// Messages waiting longer than the timeout are timed out.
fn expire(run: &Run<'_>, pending: &mut VecDeque<Pending>, timeout: Duration, end: &mut PhaseEnd) {
    let now = Instant::now();
    pending.retain(|p| {
        if now >= p.sent + timeout {
            end.finished = Some(run.record(Some(p.intended), p.sent, Outcome::Timeout));
            false
        } else {
            true
        }
    });
}

/// Every message still waiting fails with `kind` (its connection ended).
fn fail_all(
    run: &Run<'_>,
    pending: &mut VecDeque<Pending>,
    kind: &'static str,
    end: &mut PhaseEnd,
) {
    for p in pending.drain(..) {
        end.finished = Some(run.record(Some(p.intended), p.sent, Outcome::Transport(kind)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(data: &str) -> Messages {
        let t = RequestTemplate::new(
            super::super::target::Protocol::WebSocket,
            &["ws://127.0.0.1:1/".to_string()],
            http::Method::GET,
            &[],
            bytes::Bytes::from(data.to_string()),
        )
        .unwrap();
        Messages::new(&t).unwrap()
    }

    #[test]
    fn answers_are_matched_by_the_id_where_the_template_put_it() {
        let m = messages(r#"{"id":{seq},"x":1}"#);
        assert_eq!(m.render(7), r#"{"id":7,"x":1}"#);
        assert_eq!(m.id_of(r#"{"id":7,"x":1}"#), Some(7));
        assert_eq!(m.id_of(r#"{"other":1}"#), None);
        let plain = messages("hello");
        assert_eq!(plain.id_of("hello"), None);
    }
}
