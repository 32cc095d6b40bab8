//! A server-streaming RPC's answer as one streamed HTTP response: each message is rendered
//! and written as it arrives (newline-delimited JSON, a JSON array, or, for
//! google.api.HttpBody, the raw bytes), and an error mid-stream is written in-band.
//!
//! The head (status 200 and the upstream's headers as `Grpc-Metadata-*`) leaves once the first
//! message (or the end) arrived, so a call that fails before any message gets the HTTP error
//! status a unary call would. Later, the stream has a 200 already: the error becomes the last
//! element (`{"error": ...}`), as grpc-gateway and Envoy write it. A raw HttpBody stream has
//! no place for it: its body is aborted, so the client sees a broken response, never a short
//! one that looks whole. Upstream trailers arrive after the head and are not forwarded.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{Either, StreamBody};
use hyper::body::Frame;

use super::method::{JsonOptions, MethodRoute};
use crate::gateway::GwResponse;
use crate::gateway::config::StreamFormat;
use crate::gateway::status::GwError;
use crate::gateway::upstream::grpc::Messages;

/// How the answer is written, fixed by the route and the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Ndjson,
    Array,
    Raw,
}

/// Where the writer is in the answer.
struct Writer {
    messages: Messages,
    route: Arc<MethodRoute>,
    json: JsonOptions,
    shape: Shape,
    /// A call's error, turned into a response-shaped error.
    fail: Box<dyn Fn(tonic::Status) -> GwError + Send + Sync>,
    deadline: tokio::time::Instant,
    /// The first message, taken before the head was answered.
    first: Option<Bytes>,
    /// Elements written so far (the array's commas).
    written: usize,
    done: bool,
}

impl Writer {
    /// The next piece of the body; None after the last.
    async fn piece(&mut self) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        if self.done {
            return None;
        }
        let next = match self.first.take() {
            Some(m) => Ok(Some(m)),
            None => match tokio::time::timeout_at(self.deadline, self.messages.next()).await {
                Ok(r) => r.map_err(|s| (self.fail)(s)),
                Err(_) => Err(GwError::grpc(
                    tonic::Code::DeadlineExceeded,
                    "the stream did not end within the route's deadline",
                )),
            },
        };
        let mut out = BytesMut::new();
        match next {
            Ok(Some(m)) => match self.render(&m) {
                Ok(rendered) => self.element(&mut out, &rendered),
                Err(e) => return self.error(out, e),
            },
            Ok(None) => {
                self.done = true;
                match self.shape {
                    Shape::Array if self.written == 0 => out.put_slice(b"[]"),
                    Shape::Array => out.put_u8(b']'),
                    Shape::Ndjson | Shape::Raw => return None,
                }
            }
            Err(e) => return self.error(out, e),
        }
        Some(Ok(Frame::data(out.freeze())))
    }

    fn render(&self, message: &[u8]) -> Result<Vec<u8>, GwError> {
        match self.shape {
            Shape::Raw => self
                .route
                .render_http_body(message)
                .map(|(data, _)| data.to_vec()),
            Shape::Ndjson | Shape::Array => self.route.render_response(message, &self.json),
        }
    }

    /// Writes one element: a message, or the error that ends the stream.
    fn element(&mut self, out: &mut BytesMut, rendered: &[u8]) {
        match self.shape {
            Shape::Ndjson => {
                out.put_slice(b"{\"result\":");
                out.put_slice(rendered);
                out.put_slice(b"}\n");
            }
            Shape::Array => {
                out.put_u8(if self.written == 0 { b'[' } else { b',' });
                out.put_slice(rendered);
            }
            Shape::Raw => out.put_slice(rendered),
        }
        self.written += 1;
    }

    /// The stream ends with `e`: in-band where the shape has room for it, else aborted.
    fn error(
        &mut self,
        mut out: BytesMut,
        e: GwError,
    ) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        self.done = true;
        tracing::debug!(rpc = %self.route.rpc, code = e.code, message = %e.message, "stream ended with an error");
        match self.shape {
            Shape::Raw => Some(Err(std::io::Error::other(e.message))),
            Shape::Ndjson | Shape::Array => {
                let element = e.in_band(self.json.errors).to_string();
                match self.shape {
                    Shape::Ndjson => {
                        out.put_slice(element.as_bytes());
                        out.put_u8(b'\n');
                    }
                    _ => {
                        self.element(&mut out, element.as_bytes());
                        out.put_u8(b']');
                    }
                }
                Some(Ok(Frame::data(out.freeze())))
            }
        }
    }
}

/// The streamed response for `messages`: waits for the first message (an error before it is
/// the caller's to answer), then writes the rest as it arrives until the end or `deadline`.
pub(crate) async fn respond(
    route: Arc<MethodRoute>,
    mut messages: Messages,
    json: &JsonOptions,
    deadline: tokio::time::Instant,
    fail: Box<dyn Fn(tonic::Status) -> GwError + Send + Sync>,
) -> Result<GwResponse, GwError> {
    let first = messages.next().await.map_err(&fail)?;
    let shape = if route.answers_http_body() {
        Shape::Raw
    } else {
        match json.stream {
            StreamFormat::Ndjson => Shape::Ndjson,
            StreamFormat::Array => Shape::Array,
        }
    };
    let content_type = match shape {
        Shape::Ndjson => Some("application/x-ndjson".to_string()),
        Shape::Array => Some("application/json".to_string()),
        // The first message says what the bytes are (as the unary answer does).
        Shape::Raw => match &first {
            Some(m) => route.render_http_body(m)?.1,
            None => None,
        },
    };
    let mut resp = http::Response::new(());
    *resp.status_mut() = StatusCode::OK;
    resp.extensions_mut()
        .insert(crate::gateway::types::Streamed);
    if let Some(v) = content_type.and_then(|ct| http::HeaderValue::from_str(&ct).ok()) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    super::metadata::metadata_to_client(&messages.metadata, resp.headers_mut());
    let writer = Writer {
        messages,
        route,
        json: json.clone(),
        shape,
        fail,
        deadline,
        first,
        written: 0,
        done: false,
    };
    let body = futures_util::stream::unfold(writer, |mut w| async move {
        let piece = w.piece().await?;
        Some((piece, w))
    });
    Ok(resp.map(|()| Either::Right(StreamBody::new(Box::pin(body) as _))))
}
