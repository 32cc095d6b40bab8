//! The gateway's proxy against hand-written upstreams that misbehave on purpose, on 127.0.0.1:
//! bytes written past a response, responses that cannot be framed safely, a connection closed
//! after a request was written. Each upstream counts what it received.

mod common;

use std::sync::{Arc, Mutex};

use common::{gateway_config, get, post, url};
use gwbench::gateway::serve::server::GatewayServer;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What a hostile upstream does after reading request `n` on connection `conn`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Act {
    /// Answer `200 ok` (Content-Length framed, keep-alive).
    Ok,
    /// Answer `200 ok`, wait to be told, then write a whole second response nobody asked for.
    OkThenLateExtra,
    /// Answer with both Content-Length and Transfer-Encoding.
    Smuggle,
    /// Close without answering.
    Close,
    /// Send the head and part of the body, then hold the connection without a word.
    Stall,
    /// Read the request and never answer.
    Silent,
}

/// A hostile upstream: `plan(conn, n)` decides each answer; every request line is recorded.
struct Hostile {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    write_extra: Arc<Notify>,
    extra_written: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    async fn start(plan: fn(usize, usize) -> Act) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (write_extra, extra_written) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (s, w, x) = (seen.clone(), write_extra.clone(), extra_written.clone());
        let task = tokio::spawn(async move {
            let mut conns = Vec::new();
            for conn in 0.. {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let (s, w, x) = (s.clone(), w.clone(), x.clone());
                conns.push(tokio::spawn(serve(stream, conn, plan, s, w, x)));
            }
        });
        Hostile {
            addr,
            seen,
            write_extra,
            extra_written,
            task,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

async fn serve(
    mut stream: TcpStream,
    conn: usize,
    plan: fn(usize, usize) -> Act,
    seen: Arc<Mutex<Vec<String>>>,
    write_extra: Arc<Notify>,
    extra_written: Arc<Notify>,
) {
    for n in 0.. {
        let Some(line) = read_request(&mut stream).await else {
            return;
        };
        seen.lock().unwrap().push(line);
        match plan(conn, n) {
            Act::Ok => {
                let _ = stream.write_all(OK).await;
            }
            Act::OkThenLateExtra => {
                let _ = stream.write_all(OK).await;
                write_extra.notified().await;
                let extra = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nSTOLEN";
                let _ = stream.write_all(extra).await;
                extra_written.notify_one();
            }
            Act::Smuggle => {
                let smuggled = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
                let _ = stream.write_all(smuggled).await;
            }
            Act::Close => return,
            Act::Silent => std::future::pending::<()>().await,
            Act::Stall => {
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nthe start";
                let _ = stream.write_all(head).await;
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Reads one request (head and Content-Length body); returns its request line.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(head.lines().next().unwrap_or("").to_string())
}

/// A gateway whose `/rest/` proxy route leads to `upstream` (its gRPC upstream is unused).
async fn gateway(upstream: &Hostile) -> GatewayServer {
    let unused = "127.0.0.1:9".to_string();
    let cfg = gateway_config(&[unused], &[upstream.addr.to_string()]);
    GatewayServer::start(&cfg).await.unwrap()
}

#[tokio::test]
async fn bytes_written_past_a_response_never_reach_the_next_client() {
    let up = Hostile::start(|conn, n| match (conn, n) {
        (0, 0) => Act::OkThenLateExtra,
        _ => Act::Ok,
    })
    .await;
    let gw = gateway(&up).await;
    let first = get(&url(gw.http, "/rest/first")).await;
    assert_eq!(
        (first.status, &first.body[..]),
        (StatusCode::OK, &b"ok"[..])
    );
    // The upstream now writes a second response on the idle pooled connection.
    up.write_extra.notify_one();
    up.extra_written.notified().await;
    let second = get(&url(gw.http, "/rest/second")).await;
    assert_eq!(
        (second.status, &second.body[..]),
        (StatusCode::OK, &b"ok"[..]),
        "the next client got bytes that answered nobody"
    );
    assert_eq!(up.seen().len(), 2, "{:?}", up.seen());
    gw.shutdown().await;
}

#[tokio::test]
async fn responses_that_cannot_be_framed_safely_are_502() {
    let up = Hostile::start(|_, _| Act::Smuggle).await;
    let gw = gateway(&up).await;
    let r = get(&url(gw.http, "/rest/x")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("both Content-Length and Transfer-Encoding"),
        "{:?}",
        r.body
    );
    gw.shutdown().await;
}

/// An upstream whose first connection answers one request, then reads the second and closes
/// unanswered; a gateway in front of it with that connection pooled (one GET answered).
async fn warm_then_closing() -> (Hostile, GatewayServer) {
    let up = Hostile::start(|conn, n| match (conn, n) {
        (0, 1) => Act::Close,
        _ => Act::Ok,
    })
    .await;
    let gw = gateway(&up).await;
    let warm = get(&url(gw.http, "/rest/warm")).await;
    assert_eq!(warm.status, StatusCode::OK);
    (up, gw)
}

#[tokio::test]
async fn a_post_that_may_have_arrived_is_never_sent_twice() {
    let (up, gw) = warm_then_closing().await;
    let r = post(&url(gw.http, "/rest/orders"), "{}").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    let posts = up.seen().iter().filter(|l| l.starts_with("POST")).count();
    assert_eq!(posts, 1, "{:?}", up.seen());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idempotent_request_goes_again_on_a_new_connection() {
    let (up, gw) = warm_then_closing().await;
    let r = get(&url(gw.http, "/rest/again")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let again = up
        .seen()
        .iter()
        .filter(|l| l.starts_with("GET /again"))
        .count();
    assert_eq!(
        again,
        2,
        "sent once more on a fresh connection: {:?}",
        up.seen()
    );
    gw.shutdown().await;
}

/// Sends `raw` to the gateway on a fresh connection; returns the status of the answer.
async fn raw_status(gw: &GatewayServer, raw: &[u8]) -> u16 {
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the gateway answers")
        .unwrap();
    let line = String::from_utf8_lossy(&buf[..n]).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn http11_requests_without_exactly_one_host_are_400() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway(&up).await;
    let missing = raw_status(&gw, b"GET /rest/x HTTP/1.1\r\n\r\n").await;
    let two = raw_status(&gw, b"GET /rest/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").await;
    let one = raw_status(&gw, b"GET /rest/x HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!((missing, two, one), (400, 400, 200));
    assert_eq!(
        up.seen().len(),
        1,
        "only the valid request reached the upstream"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn dot_segments_in_any_spelling_never_reach_the_upstream() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway(&up).await;
    for path in ["/rest/.%2e/admin", "/rest/%2e./admin", "/rest/%2E%2E/admin"] {
        let r = get(&url(gw.http, path)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
    gw.shutdown().await;
}

/// A gateway in front of `upstream` with its config changed by `edit`.
async fn gateway_with(
    upstream: &Hostile,
    edit: impl FnOnce(&mut gwbench::gateway::config::GatewayConfig),
) -> GatewayServer {
    let unused = "127.0.0.1:9".to_string();
    let mut cfg = gateway_config(&[unused], &[upstream.addr.to_string()]);
    edit(&mut cfg);
    GatewayServer::start(&cfg).await.unwrap()
}

/// 300 ms, as a config duration.
fn ms300() -> gwbench::gateway::config::TextDuration {
    gwbench::gateway::config::TextDuration(std::time::Duration::from_millis(300))
}

/// Reads until the peer closes; None if it is still open after 10 s.
async fn closed_within_10s(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(got)
}

#[tokio::test]
async fn a_head_sent_slowly_does_not_hold_a_connection_for_good() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway_with(&up, |c| c.limits.header_read_timeout = ms300()).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET /rest/x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    assert!(
        closed_within_10s(&mut s).await.is_some(),
        "the gateway still waits for the rest of the head"
    );
    assert!(up.seen().is_empty());
    // A kept-alive connection waiting longer than the header-read timeout for its next
    // request is idle, not slow: it is still served.
    let mut kept = TcpStream::connect(gw.http).await.unwrap();
    let request = b"GET /rest/x HTTP/1.1\r\nHost: a\r\n\r\n";
    kept.write_all(request).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered first");
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    kept.write_all(request).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "closed while idle for less than the idle timeout: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout_http1_and_h2() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway_with(&up, |c| c.limits.idle_timeout = ms300()).await;
    let mut idle = TcpStream::connect(gw.http).await.unwrap();
    idle.write_all(b"GET /rest/x HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within_10s(&mut idle)
        .await
        .expect("an idle keep-alive connection is never closed");
    assert!(got.starts_with(b"HTTP/1.1 200"), "answered first");
    // An h2 connection that opens no stream: hyper has no timer of its own for it.
    let mut h2 = TcpStream::connect(gw.http).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let said = closed_within_10s(&mut h2)
        .await
        .expect("an h2 connection without streams is held for good");
    // Before closing, the gateway says GOAWAY (frame type 7), so a pooled client stops using
    // the connection instead of racing a request against the close.
    let mut frames = Vec::new();
    let mut rest = &said[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(frames.contains(&7), "frame types {frames:?}: no GOAWAY");
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_slots_come_back() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway_with(&up, |c| c.limits.max_connections = 3).await;
    let request = b"GET /rest/x HTTP/1.1\r\nHost: a\r\n\r\n";
    // Three kept-alive connections, each with an answered request.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.http).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    // A fourth is closed without an answer.
    let mut extra = TcpStream::connect(gw.http).await.unwrap();
    let _ = extra.write_all(request).await;
    assert_eq!(
        closed_within_10s(&mut extra).await.as_deref(),
        Some(&[][..])
    );
    // One leaves: a new connection is served again.
    drop(held.pop());
    common::eventually("a slot is free again", || async {
        let Ok(mut s) = TcpStream::connect(gw.http).await else {
            return false;
        };
        let _ = s.write_all(request).await;
        let mut buf = [0u8; 64];
        matches!(s.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn the_route_deadline_covers_the_whole_body() {
    let up = Hostile::start(|_, _| Act::Stall).await;
    let gw = gateway_with(&up, |c| c.proxy[0].timeout = ms300()).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET /rest/slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    // The head and what came of the body reach the client; then the connection ends instead
    // of waiting on the stalled upstream for good.
    let got = closed_within_10s(&mut s)
        .await
        .expect("the client still waits past the route's deadline");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // The client sees the 100-byte length and only the 9 bytes that came: a cut body, never
    // one that looks complete.
    let (head, body) = got.split_once("\r\n\r\n").expect("a whole head");
    assert!(head.contains("content-length: 100"), "{head}");
    assert_eq!(body, "the start");
    gw.shutdown().await;
}

/// A gRPC upstream over h2c that answers every call with `content_type` and a `grpc-status`
/// trailer of `status` (the request's message echoed back as the body).
async fn hostile_grpc(content_type: &'static str, status: &'static str) -> std::net::SocketAddr {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.parse().unwrap());
    grpc_upstream_with(content_type, trailers).await
}

/// A gRPC upstream that answers every call with the request's bytes and `trailers`.
async fn grpc_upstream_with(
    content_type: &'static str,
    trailers: http::HeaderMap,
) -> std::net::SocketAddr {
    common::grpc_echo(common::headers(&[("content-type", content_type)]), trailers)
        .await
        .0
}

#[tokio::test]
async fn a_grpc_upstream_that_breaks_the_protocol_is_a_502() {
    for (content_type, status) in [("application/grpc", "abc"), ("text/html", "0")] {
        let up = hostile_grpc(content_type, status).await;
        let cfg = gateway_config(&[up.to_string()], &["127.0.0.1:9".to_string()]);
        let gw = GatewayServer::start(&cfg).await.unwrap();
        let r = get(&url(gw.http, "/api/users/1")).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{content_type}, grpc-status {status}: {:?}",
            r.body
        );
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_body_sent_slowly_is_answered_408_within_the_deadline() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway_with(&up, |c| c.proxy[0].timeout = ms300()).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"POST /rest/orders HTTP/1.1\r\nHost: a\r\ncontent-length: 100\r\n\r\n{\"a\"")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the gateway still waits for the rest of the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(up.seen().is_empty(), "nothing reached the upstream");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_costs_its_request_a_500_and_the_server_serves_on() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let task = gwbench::net::serve_http(
        listener,
        |req: http::Request<hyper::body::Incoming>| async move {
            if req.uri().path() == "/boom" {
                panic!("a bug reached by a request");
            }
            gwbench::net::json(StatusCode::OK, "{}")
        },
        shutdown.clone(),
        gwbench::net::ServeLimits::default(),
    );
    let r = get(&url(addr, "/boom")).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["error"]["code"], "INTERNAL");
    assert_eq!(get(&url(addr, "/ok")).await.status, StatusCode::OK);
    shutdown.cancel();
    task.await.unwrap();
}

/// A google.rpc.Status with details of a type the gateway's protos define (gwbench.v1.User),
/// one unknown to it, and a standard one (google.rpc.DebugInfo), serialized as grpc-status-details-bin carries it (base64, no padding).
fn status_details() -> String {
    use base64::Engine;
    use prost::Message;
    use prost_reflect::{DynamicMessage, Value};
    let pool = gwbench::proto::descriptor_pool();
    let any = |url: &str, value: Vec<u8>| {
        let mut a = DynamicMessage::new(pool.get_message_by_name("google.protobuf.Any").unwrap());
        a.set_field_by_name("type_url", Value::String(url.into()));
        a.set_field_by_name("value", Value::Bytes(value.into()));
        Value::Message(a)
    };
    let user = gwbench::proto::v1::User {
        id: 7,
        username: "ada".into(),
        ..Default::default()
    };
    let mut status = DynamicMessage::new(pool.get_message_by_name("google.rpc.Status").unwrap());
    status.set_field_by_name("code", Value::I32(5));
    status.set_field_by_name("message", Value::String("no such user".into()));
    // A standard detail type (google/rpc/error_details.proto), always known to the gateway.
    let mut debug = DynamicMessage::new(pool.get_message_by_name("google.rpc.DebugInfo").unwrap());
    debug.set_field_by_name(
        "stack_entries",
        Value::List(vec![Value::String("foo:1".into())]),
    );
    debug.set_field_by_name("detail", Value::String("error debug details".into()));
    status.set_field_by_name(
        "details",
        Value::List(vec![
            any("type.googleapis.com/gwbench.v1.User", user.encode_to_vec()),
            any("type.googleapis.com/acme.v1.Unknown", vec![1, 2]),
            any(
                "type.googleapis.com/google.rpc.DebugInfo",
                debug.encode_to_vec(),
            ),
        ]),
    );
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec())
}

#[tokio::test]
async fn an_upstream_errors_typed_details_reach_the_client_in_either_format() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", "5".parse().unwrap());
    trailers.insert("grpc-message", "no such user".parse().unwrap());
    trailers.insert("grpc-status-details-bin", status_details().parse().unwrap());
    let up = grpc_upstream_with("application/grpc", trailers).await;
    let mut cfg = gateway_config(&[up.to_string()], &["127.0.0.1:9".to_string()]);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(gw.http, "/api/users/7")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let j = r.json();
    assert_eq!(j["error"]["code"], "NOT_FOUND", "{j}");
    let details = j["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 3, "{j}");
    assert_eq!(
        details[0]["@type"], "type.googleapis.com/gwbench.v1.User",
        "{j}"
    );
    assert_eq!(details[0]["username"], "ada", "{j}");
    assert_eq!(
        details[1]["@type"], "type.googleapis.com/acme.v1.Unknown",
        "{j}"
    );
    assert_eq!(
        details[1]["value"], "AQI=",
        "an unknown type keeps its bytes: {j}"
    );
    assert_eq!(
        details[2],
        serde_json::json!({"@type": "type.googleapis.com/google.rpc.DebugInfo",
            "stackEntries": ["foo:1"], "detail": "error debug details"}),
        "a standard detail type is JSON, not base64: {j}"
    );
    gw.shutdown().await;

    cfg.transcode.error_format = gwbench::gateway::config::ErrorFormat::Google;
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(gw.http, "/api/users/7")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let j = r.json();
    assert_eq!(j["code"], 5, "google.rpc.Status JSON: {j}");
    assert_eq!(j["message"], "no such user", "{j}");
    assert_eq!(j["details"].as_array().unwrap().len(), 3, "{j}");
    assert_eq!(j["details"][2]["detail"], "error debug details", "{j}");
    // Errors that are not the transcoded route's keep the gateway's shape.
    let r = get(&url(gw.http, "/nowhere")).await;
    assert_eq!(r.json()["error"]["code"], "NOT_FOUND");
    gw.shutdown().await;
}

/// A web page's cross-origin POST to the admin port's `/reload` — what a browser sends without
/// asking: `text/plain`, with its `Origin` — is refused 403 and reloads nothing; the same POST
/// from a command-line client (no `Origin`) reloads. The client is hand-written bytes.
#[tokio::test]
async fn a_cross_origin_post_cannot_reload_the_gateway() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cfg = gateway_config(std::slice::from_ref(&dead), std::slice::from_ref(&dead));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    gw.reload.set_source(Box::new(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(cfg.clone())
    }));
    let admin = gw.admin;
    let post = |origin: &'static str| async move {
        let mut conn = TcpStream::connect(admin).await.unwrap();
        let head = format!(
            "POST /reload HTTP/1.1\r\nHost: {admin}\r\n{origin}Content-Type: text/plain\r\n\
             Content-Length: 4\r\nConnection: close\r\n\r\nhi!\n"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let refused = post("Origin: http://evil.example\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("another origin"), "{refused}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 0);
    let own = post("").await;
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    gw.shutdown().await;
}

/// A client rotating API keys on a rate-limited mount cannot grow the gateway's key store past
/// `max_keys` (each new key past it shares one overflow allowance), and a key of 300 KB is
/// refused with 400 instead of being kept whole.
#[tokio::test]
async fn rotating_and_huge_api_keys_cannot_grow_the_rate_limit_store() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut cfg = gateway_config(std::slice::from_ref(&dead), std::slice::from_ref(&dead));
    cfg.rate_limit.max_keys = 50;
    cfg.transcode
        .mounts
        .push(toml::from_str("prefix = \"/limited\"\nrate_limit = true").unwrap());
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let held = |gw: &GatewayServer| -> usize {
        gw.gateway()
            .rate_limit_stores()
            .iter()
            .map(|s| s.len())
            .sum()
    };
    for i in 0..300 {
        let key = format!("{i:0>200}");
        let req = format!(
            "GET /limited/api/users/1 HTTP/1.1\r\nHost: gw\r\nX-Api-Key: {key}\r\n\
             Connection: close\r\n\r\n"
        );
        let status = raw_status(&gw, req.as_bytes()).await;
        assert_ne!(status, 0, "request {i} got no answer");
    }
    assert!(held(&gw) <= 50, "{} keys held, max_keys 50", held(&gw));
    let huge = "k".repeat(300 * 1024);
    let req = format!(
        "GET /limited/api/users/1 HTTP/1.1\r\nHost: gw\r\nX-Api-Key: {huge}\r\n\
         Connection: close\r\n\r\n"
    );
    // 431 on the lean path (RFC 6585), 400 on hyper's.
    let status = raw_status(&gw, req.as_bytes()).await;
    assert!(matches!(status, 400 | 431), "{status}");
    assert!(held(&gw) <= 50);
    gw.shutdown().await;
}

/// `access_log.path` naming a FIFO nobody reads: opening it would block for good. A reload to
/// it is refused at once with the reason, and the admin side (here `/healthz`) keeps answering;
/// a gateway started with it fails to start with the reason instead of hanging.
#[tokio::test]
async fn an_access_log_fifo_without_a_reader_cannot_hang_the_admin_side() {
    let dir = gwbench::process::TempDir::new("fifo").unwrap();
    let fifo = dir.join("log.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo");
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cfg = gateway_config(std::slice::from_ref(&dead), std::slice::from_ref(&dead));
    let mut to_fifo = cfg.clone();
    to_fifo.access_log.enabled = true;
    to_fifo.access_log.path = fifo.display().to_string();
    let within = std::time::Duration::from_secs(10);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let refused = tokio::time::timeout(within, gw.reload.apply(to_fifo.clone()))
        .await
        .expect("the reload answered instead of hanging");
    let err = refused.unwrap_err().to_string();
    assert!(err.contains("FIFO with no reader"), "{err}");
    let health = get(&url(gw.admin, "/healthz")).await;
    assert_eq!(health.status, StatusCode::OK);
    gw.shutdown().await;
    let started = tokio::time::timeout(within, GatewayServer::start(&to_fifo))
        .await
        .expect("the start answered instead of hanging");
    let Err(err) = started else {
        panic!("a gateway started on a FIFO without a reader");
    };
    let err = err.to_string();
    assert!(err.contains("FIFO with no reader"), "{err}");
}

/// A gRPC upstream whose answer announces a message over the 4 MiB limit broke the contract:
/// the client gets 502 naming it, not a 429 RESOURCE_EXHAUSTED that tells it to back off and
/// retry. The upstream is hand-written: a 5-byte prefix announcing 5 MiB, then a few bytes.
#[tokio::test]
async fn an_upstream_grpc_message_over_the_limit_is_a_502() {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let prefix: &[u8] = &[0, 0x00, 0x50, 0x00, 0x00, 1, 2, 3];
                    let frames = futures_util::stream::iter([
                        Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from(prefix))),
                        Ok(Frame::trailers(common::headers(&[("grpc-status", "0")]))),
                    ]);
                    let mut resp = http::Response::new(StreamBody::new(frames));
                    resp.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    let cfg = gateway_config(&[up.to_string()], &["127.0.0.1:9".to_string()]);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(gw.http, "/api/users/1")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    let message = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("over the limit"), "{message}");
    gw.shutdown().await;
    server.abort();
}

/// Every answer on one connection after writing `raw` in one piece, until the gateway closes it
/// or 10 s pass: the status codes in order, and the whole text.
async fn raw_exchange(gw: &GatewayServer, raw: &[u8]) -> (Vec<u16>, String) {
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(raw).await.unwrap();
    let got = closed_within_10s(&mut s).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&got).to_string();
    let statuses = text
        .match_indices("HTTP/1.")
        .filter_map(|(i, _)| text[i..].split(' ').nth(1)?.parse().ok())
        .collect();
    (statuses, text)
}

/// The request-smuggling and malformed-head cases of RFC 9112, sent raw. Each must be refused
/// before anything reaches the upstream, or read in exactly one way: the request hidden in its
/// body (`/rest/smuggled`) never reaches the upstream. Run on the lean path and (CI, with
/// `GWBENCH_TEST_HTTP1=hyper`) on hyper's; where hyper's reading differs, both are named.
#[tokio::test]
async fn smuggling_attempts_and_malformed_heads_never_reach_the_upstream() {
    let lean = common::http1_server() == gwbench::gateway::config::Http1Server::Lean;
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway(&up).await;
    let hidden = "GET /rest/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let long_line = format!("GET /rest/{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let many = (0..120)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect::<String>();
    let big_head = format!("GET /rest/x HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let huge_field = format!(
        "GET /rest/x HTTP/1.1\r\nHost: a\r\nX-A: {}\r\n\r\n",
        "v".repeat(70_000)
    );
    // (what, request, status on the lean path, status on hyper's). None: hyper reads it one
    // way of its own, not checked here (CL+TE: Transfer-Encoding wins, RFC 9112 §6.3's
    // tolerated reading; a 9 KB line or a 70 KB field: within its 400 KB buffer).
    let cases: Vec<(&str, String, u16, Option<u16>)> = vec![
        (
            "CL.TE",
            format!(
                "POST /rest/x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
            ),
            400,
            None,
        ),
        (
            "TE.CL",
            format!(
                "POST /rest/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n{hidden}"
            ),
            400,
            None,
        ),
        (
            "obfuscated TE",
            format!(
                "POST /rest/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{hidden}"
            ),
            400,
            Some(400),
        ),
        (
            "TE with a space before its colon",
            format!(
                "POST /rest/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n{hidden}"
            ),
            400,
            Some(400),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /rest/x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\n{hidden}"
            ),
            400,
            Some(400),
        ),
        (
            "a negative Content-Length",
            format!("POST /rest/x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n{hidden}"),
            400,
            Some(400),
        ),
        (
            "obs-fold",
            format!("GET /rest/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n{hidden}"),
            400,
            Some(400),
        ),
        (
            "a request hidden in a body over the limit",
            format!("POST /rest/x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n{hidden}"),
            413,
            Some(413),
        ),
        ("a request line over 8 KiB", long_line, 414, None),
        ("120 header fields", big_head, 431, Some(431)),
        ("a 70 KB field", huge_field, 431, None),
        (
            "no Host",
            "GET /rest/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
            400,
            Some(400),
        ),
        (
            "two Hosts",
            "GET /rest/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_string(),
            400,
            Some(400),
        ),
    ];
    for (what, raw, on_lean, on_hyper) in &cases {
        let want = match (lean, on_hyper) {
            (true, _) => *on_lean,
            (false, Some(status)) => *status,
            (false, None) => continue,
        };
        let (statuses, text) = raw_exchange(&gw, raw.as_bytes()).await;
        assert_eq!(statuses.first(), Some(&want), "{what}: {text}");
        assert!(up.seen().is_empty(), "{what}: {:?}", up.seen());
    }
    // A bare LF as a line end: the lean path refuses it (RFC 9112 §2.2 lets a server accept
    // it; accepting it is how two readers come to disagree); hyper reads it as a CRLF.
    let bare_lf = b"GET /rest/x HTTP/1.1\nHost: a\nConnection: close\n\n";
    let (statuses, _) = raw_exchange(&gw, bare_lf).await;
    assert_eq!(statuses, [if lean { 400 } else { 200 }]);
    gw.shutdown().await;
}

/// The connection-level behaviour a client relies on, on whichever path serves it: pipelined
/// requests answered in order, a head arriving in pieces, a HEAD without a body, HTTP/1.0
/// closed after its answer, a chunked body and `Expect: 100-continue` (hyper's, after the lean
/// path hands the connection over) between requests on one connection.
#[tokio::test]
async fn pipelined_split_and_handed_over_requests_are_answered_in_order() {
    let up = Hostile::start(|_, _| Act::Ok).await;
    let gw = gateway(&up).await;
    let get = "GET /rest/one HTTP/1.1\r\nHost: a\r\n\r\n";
    let post = "POST /rest/two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    let chunked = "POST /rest/three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let head = "HEAD /rest/four HTTP/1.1\r\nHost: a\r\n\r\n";
    let last = "GET /rest/five HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let all = format!("{get}{post}{head}{chunked}{get}{last}");
    let (statuses, text) = raw_exchange(&gw, all.as_bytes()).await;
    assert_eq!(statuses, [200; 6], "{text}");
    assert_eq!(
        text.matches("\r\n\r\nok").count(),
        5,
        "HEAD's answer has no body: {text}"
    );
    let paths: Vec<String> = up
        .seen()
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/one", "/two", "/four", "/three", "/one", "/five"]);

    // A head written a few bytes at a time, then an HTTP/1.0 request: closed after it.
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    for piece in get.as_bytes().chunks(7) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    s.write_all(b"GET /rest/six HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let got = closed_within_10s(&mut s)
        .await
        .expect("HTTP/1.0 is closed after its answer");
    let text = String::from_utf8_lossy(&got);
    // The lean path answers HTTP/1.0 as HTTP/1.1 (RFC 9110 §6.2, as nginx); hyper mirrors 1.0.
    assert_eq!(text.matches(" 200 OK\r\n").count(), 2, "{text}");

    // HTTP/1.0 with keep-alive (ab -k): told it is kept, and it is.
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    let ten = b"GET /rest/ten HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let mut buf = [0u8; 1024];
    for _ in 0..2 {
        s.write_all(ten).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(text.contains(" 200 ok\r\n"), "{text}");
        assert!(text.contains("connection: keep-alive\r\n"), "{text}");
    }

    // Expect: 100-continue: the interim answer, then the final one.
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"POST /rest/seven HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.unwrap();
    let n = s.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    gw.shutdown().await;
}

/// A client that hangs up while its request waits on the upstream: the request is dropped (the
/// upstream call with it) and counted as 499, on whichever path served it.
#[tokio::test]
async fn a_client_hanging_up_mid_request_is_counted_499() {
    let up = Hostile::start(|_, _| Act::Silent).await;
    let gw = gateway(&up).await;
    let mut s = TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET /rest/held HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    common::eventually("the request reaches the upstream", || async {
        !up.seen().is_empty()
    })
    .await;
    drop(s);
    let admin = url(gw.admin, "/metrics");
    common::eventually("the abandoned request is counted 499", || {
        let admin = admin.clone();
        async move {
            let page = get(&admin).await.body;
            String::from_utf8_lossy(&page).lines().any(|l| {
                l.starts_with("gwbench_requests_total{")
                    && l.contains("route=\"/rest/")
                    && l.contains("status=\"499\"")
            })
        }
    })
    .await;
    gw.shutdown().await;
}
