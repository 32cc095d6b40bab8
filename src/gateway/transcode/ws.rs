//! Streaming RPCs over WebSocket, at their rule's path (grpc-websocket-proxy is the reference):
//!
//! - each text message from the client is one request message, decoded as a unary request's
//!   body is (proto3 JSON, with the rule's path variables and query parameters applied to
//!   each), and sent upstream as it arrives; a binary message is refused (1003);
//! - each response message is one text message (proto3 JSON, as a unary answer);
//! - an empty text message (never valid JSON, so never a request) is the client's end of the
//!   request stream (gRPC half-close), and the answers keep coming until the RPC ends; the
//!   client's close frame ends the connection and cancels the call (after a close, RFC 6455
//!   allows no more messages); a server-streaming RPC's one request is built from the path and
//!   query at the upgrade, and the client's text messages are not read as requests;
//! - the RPC's end: status OK closes with 1000; another status is written as one last text
//!   message, `{"error": ...}` in the route's error format (as a server stream's in-band
//!   error), then closes with 1008 for the client's errors (INVALID_ARGUMENT, NOT_FOUND,
//!   ALREADY_EXISTS, PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, OUT_OF_RANGE,
//!   RESOURCE_EXHAUSTED) and 1011 for the rest.
//!
//! The route's timeout bounds the opening of the call (before the switch). A deadline the
//! client sets on the upgrade request (`grpc-timeout`, `X-Request-Timeout`, shorter than the
//! route's, as for HTTP) bounds the whole
//! call and travels as `grpc-timeout`, as for HTTP; without one the call lasts as long as the
//! connection, which the idle timeout bounds (no message either way: closed 1001) — a route's
//! 5 s would otherwise end every long-lived stream. Where we differ from
//! grpc-websocket-proxy: it writes the messages as an NDJSON body to a grpc-gateway, has no
//! half-close (the request stream ends with the connection, so a client-streaming RPC's answer
//! has nowhere to go) and closes normally whatever the status; here the gateway speaks gRPC
//! itself, an empty message half-closes (improbable's grpc-web over WebSocket uses a marker
//! frame the same way), and the close code and a last error message say how the RPC ended.

use std::sync::Arc;

use futures_util::SinkExt;
use tokio::time::Instant;
use tonic::Code;

use super::method::{JsonOptions, MethodRoute};
use crate::gateway::status::GwError;
use crate::gateway::upstream::grpc::{Call, Messages, answer_head, finish, send_message};
use crate::gateway::upstream::inflight::Held;
use crate::ws::{Message, close};

/// What the bridge needs from the upgrade request.
pub(crate) struct Bridge {
    /// The rule's route.
    pub(crate) route: Arc<MethodRoute>,
    /// JSON options and the error format.
    pub(crate) json: JsonOptions,
    /// The path variables' values.
    pub(crate) params: Vec<String>,
    /// The query string, applied to each request message.
    pub(crate) query: Option<String>,
    /// When the call must have ended (the client's deadline), if ever.
    pub(crate) deadline: Option<Instant>,
    /// No message either way for this long closes the connection.
    pub(crate) idle: std::time::Duration,
    /// How a call's status becomes the client's error.
    pub(crate) fail: Box<dyn Fn(tonic::Status) -> GwError + Send + Sync>,
}

/// The close code for an RPC that ended with `code`.
pub(crate) fn close_code(code: Code) -> u16 {
    match code {
        Code::Ok => close::NORMAL,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted => close::POLICY,
        _ => close::INTERNAL,
    }
}

/// How the bridge ended: the close code and, for an error, the last message.
type Ending = (u16, Option<GwError>);

fn code_of(e: &GwError) -> Code {
    Code::from_i32(crate::grpc::code_number(e.code))
}

impl Bridge {
    /// Runs the call over `socket` until the RPC ends, the client goes, or the deadline.
    pub(crate) async fn run<S>(
        self,
        mut socket: tokio_tungstenite::WebSocketStream<S>,
        call: Call,
        held: Held,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let _held = held;
        let (code, error) = self.bridge(&mut socket, call).await;
        if let Some(e) = &error {
            let text = e.in_band(self.json.errors).to_string();
            let _ = socket.send(Message::text(text)).await;
        }
        let reason = error.as_ref().map_or("", |e| e.code);
        let _ = socket.send(crate::ws::close_message(code, reason)).await;
        // The client's close answers ours; it has the send timeout to do so.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            crate::ws::next_message(&mut socket),
        )
        .await;
    }

    async fn bridge<S>(
        &self,
        socket: &mut tokio_tungstenite::WebSocketStream<S>,
        call: Call,
    ) -> Ending
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let Call { mut send, head } = call;
        let mut head = Some(Box::pin(answer_head(head)));
        let mut answers: Option<Messages> = None;
        // A server-streaming call's request went at the upgrade: the client only closes.
        let mut requests_open = self.route.takes_stream();
        let fail = |e: GwError| (close_code(code_of(&e)), Some(e));
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let deadline = self.deadline.unwrap_or(far);
        let mut active = Instant::now();
        loop {
            tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {
                        let e = GwError::grpc(Code::DeadlineExceeded, "the call did not end within the client's deadline");
                        return fail(e);
                    }
                    () = tokio::time::sleep_until(active + self.idle) => return (close::GOING_AWAY, None),
                    r = async { head.as_mut().expect("guarded").await }, if head.is_some() => {
                        head = None;
                        match r {
                            Ok(m) => answers = Some(m),
                            Err(s) => return fail((self.fail)(s)),
                        }
                    }
                    r = async { answers.as_mut().expect("guarded").next().await }, if answers.is_some() => {
                        active = Instant::now();
                        if let Some(end) = self.to_client(socket, r).await {
                            return end;
                        }
                    }
                    m = crate::ws::next_message(socket) => {
                        active = Instant::now();
                        if let Some(end) = self.client_message(m, &mut send, &mut requests_open).await {
                            return end;
                        }
                    }
            }
        }
    }

    /// One answer of the RPC to the client (or the RPC's end); `Some` ends the bridge.
    async fn to_client<S>(
        &self,
        socket: &mut tokio_tungstenite::WebSocketStream<S>,
        answer: Result<Option<bytes::Bytes>, tonic::Status>,
    ) -> Option<Ending>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let fail = |e: GwError| Some((close_code(code_of(&e)), Some(e)));
        match answer {
            Ok(Some(bytes)) => {
                let json = match self.route.render_response(&bytes, &self.json) {
                    Ok(j) => j,
                    Err(e) => return fail(e),
                };
                let text = String::from_utf8(json).unwrap_or_default();
                let sent = socket.send(Message::text(text)).await;
                sent.err().map(|e| (crate::ws::close_code_of(&e), None))
            }
            Ok(None) => Some((close::NORMAL, None)),
            Err(s) => fail((self.fail)(s)),
        }
    }

    /// One message from the client: a request, the half-close, or the end; `Some` ends the
    /// bridge.
    async fn client_message(
        &self,
        m: Result<Option<Message>, tokio_tungstenite::tungstenite::Error>,
        send: &mut h2::SendStream<bytes::Bytes>,
        requests_open: &mut bool,
    ) -> Option<Ending> {
        let fail = |e: GwError| Some((close_code(code_of(&e)), Some(e)));
        match m {
            Ok(Some(Message::Text(text))) if *requests_open && text.is_empty() => {
                // The client's end of the request stream: the answers keep coming.
                *requests_open = false;
                finish(send).err().and_then(|s| fail((self.fail)(s)))
            }
            Ok(Some(Message::Text(text))) if *requests_open => {
                let (params, query) = (&self.params, self.query.as_deref());
                let msg = match self.route.encode_request_with(
                    params,
                    query,
                    text.as_bytes(),
                    None,
                    &self.json,
                ) {
                    Ok(m) => m,
                    Err(e) => return fail(e),
                };
                let sent = send_message(send, &msg, false).await;
                sent.err().and_then(|s| fail((self.fail)(s)))
            }
            Ok(Some(Message::Text(_))) => None,
            Ok(Some(_)) => {
                let e = GwError::grpc(
                    Code::InvalidArgument,
                    "request messages are JSON text, not binary",
                );
                Some((close::UNSUPPORTED, Some(e)))
            }
            // The client closed or went: the call is cancelled when its streams are dropped
            // (after a close, no answer may follow).
            Ok(None) => Some((close::NORMAL, None)),
            Err(e) => Some((crate::ws::close_code_of(&e), None)),
        }
    }
}
