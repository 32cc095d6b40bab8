//! WebSocket's shared vocabulary (RFC 6455), below the mocks, the gateway and the generator:
//! the upgrade handshake both ways, close codes, the limits every endpoint is held to, and the
//! frame scanner of the gateway's proxy ([`frame`]).
//!
//! Messages are read and written by `tokio-tungstenite` (mocks, the gateway's translation to
//! gRPC streams, the load generator); the proxy forwards frames unchanged and only scans them.

pub mod frame;

use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::TokioIo;
pub use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// A server's side of an upgraded connection, as tungstenite reads and writes it.
pub type ServerSocket = tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Close codes (RFC 6455 §7.4.1) the project sends or reads.
pub mod close {
    /// The purpose of the connection was fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The endpoint is going away (the server stops, or the connection idled).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the protocol.
    pub const PROTOCOL: u16 = 1002;
    /// A message of a type the endpoint does not read (binary where JSON text is expected).
    pub const UNSUPPORTED: u16 = 1003;
    /// No code was in the close frame (never sent).
    pub const NO_STATUS: u16 = 1005;
    /// A text message that is not UTF-8, or a message that is not what the endpoint reads.
    pub const INVALID_DATA: u16 = 1007;
    /// A policy of the endpoint (too many fragments, a reader too slow, too many connections).
    pub const POLICY: u16 = 1008;
    /// A message or frame over the limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server met a condition that stopped it (an upstream failure, an injected fault).
    pub const INTERNAL: u16 = 1011;
}

/// The limits a WebSocket endpoint holds its peer to, with their defaults (the gateway's
/// `[websocket]` section; the mocks use the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (all fragments together).
    pub max_message: usize,
    /// Largest frame.
    pub max_frame: usize,
    /// Most fragments in one message.
    pub max_fragments: u32,
    /// A connection with no frame either way for this long is closed (1001).
    pub idle_timeout: Duration,
    /// A peer that takes longer than this to accept bytes waiting for it is closed: its
    /// messages are not buffered without bound.
    pub send_timeout: Duration,
    /// Bytes of outgoing messages a connection may hold for a slow reader.
    pub send_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message: 1 << 20,
            max_frame: 1 << 20,
            max_fragments: 1024,
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            send_buffer: 256 << 10,
        }
    }
}

impl Limits {
    /// tungstenite's configuration for these limits (client frames must be masked).
    pub fn tungstenite(&self) -> WebSocketConfig {
        let mut c = WebSocketConfig::default();
        c.max_message_size = Some(self.max_message);
        c.max_frame_size = Some(self.max_frame);
        c.write_buffer_size = 0;
        c.max_write_buffer_size = self.send_buffer.max(self.max_frame + 64);
        c
    }

    /// The scanner's limits for the proxy.
    pub fn frames(&self) -> frame::FrameLimits {
        frame::FrameLimits {
            max_frame: self.max_frame as u64,
            max_message: self.max_message as u64,
            max_fragments: self.max_fragments,
        }
    }
}

/// Whether `headers` ask to switch to WebSocket (`Connection: upgrade`, `Upgrade: websocket`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::CONNECTION, "upgrade")
        && has_token(headers, header::UPGRADE, "websocket")
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether a request is HTTP/2's extended CONNECT for WebSocket (RFC 8441: `:method CONNECT`,
/// `:protocol websocket`), which the servers allow (`SETTINGS_ENABLE_CONNECT_PROTOCOL`).
pub fn is_extended_connect(method: &Method, extensions: &http::Extensions) -> bool {
    method == Method::CONNECT
        && extensions
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Whether a request asks for a WebSocket, over HTTP/1.1 (`Upgrade`) or HTTP/2 (extended
/// CONNECT).
pub fn wants_websocket(
    method: &Method,
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> bool {
    is_upgrade(headers) || is_extended_connect(method, extensions)
}

/// The answer that switches a valid WebSocket request: `101` with the accept key over
/// HTTP/1.1, `200` over HTTP/2 (RFC 8441 has no key).
pub fn switch(req: &http::request::Parts) -> Result<http::response::Parts, BadUpgrade> {
    if is_extended_connect(&req.method, &req.extensions) {
        if req
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() != b"13")
        {
            return Err(BadUpgrade("Sec-WebSocket-Version must be 13".into()));
        }
        return Ok(http::Response::new(()).into_parts().0);
    }
    accept(&req.method, &req.headers)
}

/// Why an upgrade request was refused (answered 400 before any switch).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadUpgrade(pub String);

/// The `101 Switching Protocols` head that accepts a valid upgrade request (RFC 6455 §4.2).
pub fn accept(method: &Method, headers: &HeaderMap) -> Result<http::response::Parts, BadUpgrade> {
    if method != Method::GET {
        return Err(BadUpgrade(format!(
            "a WebSocket upgrade must be a GET, not {method}"
        )));
    }
    if !is_upgrade(headers) {
        return Err(BadUpgrade(
            "missing Connection: upgrade and Upgrade: websocket".into(),
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(BadUpgrade("Sec-WebSocket-Version must be 13".into()));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| valid_key(k.as_bytes()))
        .ok_or_else(|| BadUpgrade("Sec-WebSocket-Key must be 16 bytes in base64".into()))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = StatusCode::SWITCHING_PROTOCOLS;
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        parts.headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(parts)
}

fn valid_key(key: &[u8]) -> bool {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16)
}

/// The server's socket once hyper has handed over the upgraded connection.
pub async fn server(on: hyper::upgrade::OnUpgrade, limits: &Limits) -> hyper::Result<ServerSocket> {
    let io = on.await?;
    Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(io),
        Role::Server,
        Some(limits.tungstenite()),
    )
    .await)
}

/// A close frame's payload for tungstenite.
pub fn close_message(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: code.into(),
        reason: reason[..end].to_string().into(),
    }))
}

/// The close code a tungstenite error earns when the peer is told why.
pub fn close_code_of(err: &tokio_tungstenite::tungstenite::Error) -> u16 {
    use tokio_tungstenite::tungstenite::Error as E;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match err {
        E::Capacity(CapacityError::MessageTooLong { .. }) => close::TOO_BIG,
        E::Capacity(_) => close::TOO_BIG,
        E::Utf8(_) => close::INVALID_DATA,
        E::Protocol(_) => close::PROTOCOL,
        E::WriteBufferFull(_) => close::POLICY,
        _ => close::INTERNAL,
    }
}

/// Reads the next message, the peer's close, or nothing within `idle`: pings are answered
/// by tungstenite and pongs skipped; `Ok(None)` is the end (a close or EOF).
pub async fn next_message<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
) -> Result<Option<Message>, tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt;
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(e),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(m)) => return Ok(Some(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_rfc_example_and_refuses_the_rest() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let parts = accept(&Method::GET, &h).unwrap();
        assert_eq!(parts.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            parts.headers[header::SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert!(accept(&Method::POST, &h).is_err());
        let mut short = h.clone();
        short.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("c2hvcnQ="),
        );
        assert!(accept(&Method::GET, &short).is_err());
        let mut old = h.clone();
        old.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert!(accept(&Method::GET, &old).is_err());
        h.remove(header::UPGRADE);
        assert!(!is_upgrade(&h));
    }
}
