//! WebSocket end to end: a client that is not ours (Python's `websockets`) against the mocks
//! and through the gateway (the proxied echo and the translated inventory streams), and
//! hand-written hostile clients and upstreams against the gateway's limits.

mod common;

use std::time::Duration;

use common::{Stack, get, url};
use gwbench::gateway::config::{GatewayConfig, ProxyRoute, TextDuration, Upstream};
use gwbench::gateway::serve::server::GatewayServer;
use gwbench::ws::frame::{close_frame, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Python 3 with `websockets`, or None (the test then says so and skips; CI requires it).
fn python_websockets() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "python3 with the websockets package is not installed (pip install websockets)";
        assert!(
            std::env::var_os("GWBENCH_REQUIRE_WEBSOCKETS").is_none(),
            "{msg}, and GWBENCH_REQUIRE_WEBSOCKETS is set"
        );
        eprintln!("skipped: {msg}");
        return None;
    }
    Some("python3")
}

/// Runs `script` with `args` under a 30 s bound (killed past it); its stdout lines.
async fn python(script: &str, args: &[String]) -> Vec<String> {
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = common::Guard(child);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Python client ran past 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    use std::io::Read;
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "python failed:\n{stdout}\n{stderr}");
    stdout.lines().map(str::to_string).collect()
}

/// Echo (text, binary, fragmented, ping), a close code chosen by the server, and the two
/// inventory streams, at `base`; one line per check.
const CLIENT: &str = r#"
import asyncio, json, sys, websockets
async def main(base, watch, sync):
    async with websockets.connect(base + "/ws/echo") as ws:
        await ws.send("héllo"); print("text", await ws.recv())
        await ws.send(b"\x00\xff"); print("binary", (await ws.recv()).hex())
        await ws.send(["frag", "mented"]); print("fragmented", await ws.recv())
        await (await ws.ping(b"p"))
        print("pong ok")
    async with websockets.connect(base + "/ws/echo?close_after=1&close_code=4001") as ws:
        await ws.send("a"); await ws.recv()
        try:
            await ws.recv()
        except websockets.ConnectionClosed as e:
            print("closed", e.rcvd.code)
    async with websockets.connect(watch) as ws:
        n = 0
        async for m in ws:
            n += 1; last = json.loads(m)
        print("watch", n, last["productId"], ws.close_code)
    async with websockets.connect(sync) as ws:
        await ws.send(json.dumps({"productId": "7", "delta": 5}))
        print("sync", json.loads(await ws.recv())["productId"])
asyncio.run(main(*sys.argv[1:]))
"#;

#[tokio::test]
async fn a_foreign_client_talks_to_the_mocks_and_through_the_gateway() {
    if python_websockets().is_none() {
        return;
    }
    let s = Stack::start(1).await;
    let mock = format!("ws://{}", s.backends.rest[0]);
    let direct = python(
        CLIENT,
        &[
            mock.clone(),
            format!("{mock}/ws/inventory/7/watch?updates=3"),
            format!("{mock}/ws/inventory/sync"),
        ],
    )
    .await;
    let gw = format!("ws://{}", s.gateway.http);
    // The proxied echo, and the gateway's translation of the gRPC streams at their rules.
    let via = python(
        CLIENT,
        &[
            format!("{gw}/rest"),
            format!("{gw}/api/inventory/7/watch?updates=3"),
            format!("{gw}/api/inventory/sync"),
        ],
    )
    .await;
    let want = [
        "text héllo",
        "binary 00ff",
        "fragmented fragmented",
        "pong ok",
        "closed 4001",
        "watch 3 7 1000",
        "sync 7",
    ];
    assert_eq!(direct, want);
    assert_eq!(via, want);
    let metrics = get(&url(s.gateway.admin, "/metrics")).await;
    let page = String::from_utf8_lossy(&metrics.body).into_owned();
    let sample = |name: &str| -> f64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    };
    // Four text or binary messages each way on the proxied echo, one more on the close test.
    assert!(
        sample("gwbench_ws_messages_total{direction=\"to_upstream\"}") >= 5.0,
        "{page}"
    );
    assert!(
        sample("gwbench_ws_closes_total{code=\"4xxx\"}") >= 1.0,
        "{page}"
    );
    s.stop().await;
}

/// A bidi RPC and a client-streaming one through the translation, the RPC's error status, and
/// a request that is not JSON, as a foreign client sees them.
const TRANSLATED: &str = r#"
import asyncio, json, sys, websockets
async def closed(ws):
    try:
        await ws.recv()
    except websockets.ConnectionClosed as e:
        return e.rcvd.code
async def main(gw):
    async with websockets.connect(gw + "/api/inventory/sync") as ws:
        for d in (5, -1):
            await ws.send(json.dumps({"productId": "7", "delta": d}))
            print("answer", json.loads(await ws.recv())["productId"])
        await ws.send("")
        print("end", await closed(ws))
    async with websockets.connect(gw + "/api/inventory/movements") as ws:
        for d in (1, 2, 3):
            await ws.send(json.dumps({"productId": "7", "delta": d}))
        await ws.send("")
        print("summary", await ws.recv())
        print("end", await closed(ws))
    async with websockets.connect(gw + "/api/inventory/sync") as ws:
        await ws.send(json.dumps({"productId": "0", "delta": 1}))
        print("error", json.loads(await ws.recv())["error"]["code"])
        print("end", await closed(ws))
    async with websockets.connect(gw + "/api/inventory/sync") as ws:
        await ws.send("{not json")
        print("error", json.loads(await ws.recv())["error"]["code"])
        print("end", await closed(ws))
asyncio.run(main(sys.argv[1]))
"#;

#[tokio::test]
async fn streaming_rpcs_are_translated_for_a_foreign_client() {
    if python_websockets().is_none() {
        return;
    }
    let s = Stack::start(1).await;
    let lines = python(TRANSLATED, &[format!("ws://{}", s.gateway.http)]).await;
    assert_eq!(
        lines,
        [
            "answer 7",
            "answer 7",
            "end 1000",
            r#"summary {"movements":3,"netDelta":"6"}"#,
            "end 1000",
            "error NOT_FOUND",
            "end 1008",
            "error INVALID_ARGUMENT",
            "end 1008",
        ]
    );
    s.stop().await;
}

/// The generator's side: Python's `websockets` server (not ours) answers `gwbench load ws://`.
const ECHO_SERVER: &str = r#"
import asyncio, sys, websockets
async def echo(ws):
    async for m in ws:
        await ws.send(m)
async def main():
    async with websockets.serve(echo, "127.0.0.1", 0) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(60)
asyncio.run(main())
"#;

#[test]
fn the_load_generator_measures_a_foreign_websocket_server() {
    if python_websockets().is_none() {
        return;
    }
    use std::io::BufRead;
    let child = std::process::Command::new("python3")
        .args(["-c", ECHO_SERVER])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = common::Guard(child);
    let mut line = String::new();
    std::io::BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the server printed its port");
    let target = format!("ws://127.0.0.1:{port}/");
    let json = common::load_json(&[
        &target,
        "--rps",
        "200",
        "-d",
        "1s",
        "-c",
        "2",
        "--data",
        r#"{"n":{seq}}"#,
    ]);
    assert_eq!(json["protocol"], "WebSocket", "{json}");
    // Every message of the 1 s at 200/s answered (the schedule is exact: 200 messages).
    assert_eq!(json["requests"]["ok"].as_u64(), Some(200), "{json}");
    assert_eq!(json["connect"]["handshakes"].as_u64(), Some(2), "{json}");
}

// ===== hostile peers =====

/// A gateway with small WebSocket limits in front of the mocks, and a proxy route to a silent
/// upstream (accepts connections, never answers).
async fn small_limits(s: &Stack, silent: &std::net::SocketAddr) -> GatewayServer {
    let grpc = vec![s.backends.grpc[0].to_string()];
    let rest = vec![s.backends.rest[0].to_string()];
    let mut cfg: GatewayConfig = common::gateway_config(&grpc, &rest);
    cfg.websocket.max_message_bytes = 4096;
    cfg.websocket.max_frame_bytes = 1024;
    cfg.websocket.max_fragments = 8;
    cfg.websocket.send_timeout = TextDuration(Duration::from_millis(500));
    let mut silent_up: Upstream = cfg
        .upstreams
        .iter()
        .find(|u| u.name == "rest")
        .unwrap()
        .clone();
    silent_up.name = "silent".into();
    silent_up.endpoints = vec![silent.to_string()];
    cfg.upstreams.push(silent_up);
    cfg.proxy.push(ProxyRoute {
        prefix: "/silent/".into(),
        upstream: "silent".into(),
        strip_prefix: "/silent".into(),
        timeout: TextDuration(Duration::from_millis(500)),
    });
    cfg.validate().unwrap();
    GatewayServer::start(&cfg).await.unwrap()
}

/// Sends an upgrade request for `path`; the answer's status and the open stream.
async fn upgrade(addr: std::net::SocketAddr, path: &str, extra: &str) -> (u16, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("an answer head within 10 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before the head ended: {}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&got[9..12]).parse().unwrap();
    (status, tcp)
}

/// Reads frames until a close frame (its code) or the end of the stream (None), within 10 s.
async fn close_code(tcp: &mut TcpStream) -> Option<u16> {
    until_close(tcp).await.1
}

/// The opcodes of the frames before a close frame, and the close's code (None: the stream
/// ended without one), within 10 s.
async fn until_close(tcp: &mut TcpStream) -> (Vec<u8>, Option<u16>) {
    let mut seen = Vec::new();
    let read = async {
        loop {
            let mut h = [0u8; 2];
            tcp.read_exact(&mut h).await.ok()?;
            let len = match h[1] & 0x7F {
                126 => u64::from(tcp.read_u16().await.ok()?),
                127 => tcp.read_u64().await.ok()?,
                n => u64::from(n),
            };
            let mut payload = vec![0u8; len as usize];
            tcp.read_exact(&mut payload).await.ok()?;
            if h[0] & 0x0F == 0x8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
            seen.push(h[0]);
        }
    };
    let code = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the gateway ended the connection within 10 s");
    (seen, code)
}

const KEY: Option<[u8; 4]> = Some([0x11, 0x22, 0x33, 0x44]);

#[tokio::test]
async fn hostile_clients_are_closed_with_the_right_code() {
    let s = Stack::start(1).await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = small_limits(&s, &silent.local_addr().unwrap()).await;
    let echo = "/rest/ws/echo";
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a frame over max_frame_bytes",
            encode(true, 0x1, &[b'a'; 2000], KEY),
            1009,
        ),
        (
            "a message over max_message_bytes in frames within the limit",
            (0..5)
                .flat_map(|i| encode(i == 4, if i == 0 { 0x2 } else { 0x0 }, &[0; 1000], KEY))
                .collect(),
            1009,
        ),
        (
            "a flood of continuation frames",
            std::iter::once(encode(false, 0x1, b"", KEY))
                .chain((0..100).map(|_| encode(false, 0x0, b"", KEY)))
                .flatten()
                .collect(),
            1008,
        ),
        (
            "an unmasked client frame",
            encode(true, 0x1, b"hi", None),
            1002,
        ),
        // The proxy does not read text; the mock behind it refuses it.
        (
            "invalid UTF-8 in a text frame",
            encode(true, 0x1, &[0xC3, 0x28], KEY),
            1007,
        ),
    ];
    for (what, bytes, want) in cases {
        let (status, mut tcp) = upgrade(gw.http, echo, "").await;
        assert_eq!(status, 101, "{what}");
        tcp.write_all(&bytes).await.unwrap();
        assert_eq!(close_code(&mut tcp).await, Some(want), "{what}");
    }
    // The same limits on a translated stream (tungstenite's, same numbers).
    let (status, mut tcp) = upgrade(gw.http, "/api/inventory/sync", "").await;
    assert_eq!(status, 101);
    tcp.write_all(&encode(true, 0x1, &[b' '; 5000], KEY))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut tcp).await,
        Some(1009),
        "translated: a message over the limit"
    );
    let (_, mut tcp) = upgrade(gw.http, "/api/inventory/sync", "").await;
    tcp.write_all(&encode(true, 0x1, &[0xC3, 0x28], KEY))
        .await
        .unwrap();
    assert_eq!(
        close_code(&mut tcp).await,
        Some(1007),
        "translated: invalid UTF-8"
    );

    // An upgrade without a token on an authenticated mount: 401, no switch.
    let (status, _) = upgrade(gw.http, "/secure/api/inventory/sync", "").await;
    assert_eq!(status, 401);
    // An upstream that never answers the upgrade: the route's deadline, then 504.
    let (status, _) = upgrade(gw.http, "/silent/ws/echo", "").await;
    assert_eq!(status, 504);
    // A proper close still passes both ways.
    let (_, mut tcp) = upgrade(gw.http, echo, "").await;
    tcp.write_all(&close_frame(1000, "bye", KEY)).await.unwrap();
    assert_eq!(close_code(&mut tcp).await, Some(1000));
    gw.shutdown().await;
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_closed_and_others_are_served_meanwhile() {
    let s = Stack::start(1).await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gw = small_limits(&s, &silent.local_addr().unwrap()).await;
    let before = slow_readers(&gw).await;
    // A ping flood and a stream of messages whose echoes the client never reads: the echoes
    // and pongs back up to the gateway, which closes the client after the send timeout
    // instead of buffering them.
    let (_, mut flood) = upgrade(gw.http, "/rest/ws/echo", "").await;
    let ping = encode(true, 0x9, b"ping", KEY);
    let msg = encode(true, 0x2, &[7; 1000], KEY);
    let writer = tokio::spawn(async move {
        for i in 0..200_000 {
            let frame = if i % 2 == 0 { &ping } else { &msg };
            if flood.write_all(frame).await.is_err() {
                return true; // the gateway closed it
            }
        }
        false
    });
    // Meanwhile another client is answered.
    let (_, mut other) = upgrade(gw.http, "/rest/ws/echo", "").await;
    other
        .write_all(&encode(true, 0x1, b"still here", KEY))
        .await
        .unwrap();
    let mut h = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), other.read_exact(&mut h))
        .await
        .expect("answered within 10 s")
        .unwrap();
    assert_eq!(&h[2..], b"still here");
    let closed = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the flood ended within 20 s")
        .unwrap();
    assert!(closed, "the gateway closed the client that never read");
    assert!(slow_readers(&gw).await > before, "counted as a slow reader");
    gw.shutdown().await;
    s.stop().await;
}

async fn slow_readers(gw: &GatewayServer) -> f64 {
    let page = get(&url(gw.admin, "/metrics")).await;
    String::from_utf8_lossy(&page.body)
        .lines()
        .find_map(|l| {
            l.strip_prefix("gwbench_ws_violations_total{reason=\"slow_reader\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Opens a WebSocket over HTTP/2 (RFC 8441 extended CONNECT) at `path`; the answer's status,
/// the stream to send frames on and the body frames come back in.
async fn h2_websocket(
    addr: std::net::SocketAddr,
    path: &str,
) -> (u16, h2::SendStream<bytes::Bytes>, h2::RecvStream) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    // The server's SETTINGS (with SETTINGS_ENABLE_CONNECT_PROTOCOL) arrive after the handshake.
    common::eventually("the gateway allowed extended CONNECT", || {
        let on = client.is_extended_connect_protocol_enabled();
        async move { on }
    })
    .await;
    let mut req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{addr}{path}"))
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (resp, send) = client.send_request(req, false).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("an answer within 10 s")
        .unwrap();
    (resp.status().as_u16(), send, resp.into_body())
}

/// The payload of the next data frame the server sends on an HTTP/2 WebSocket.
async fn h2_next_text(body: &mut h2::RecvStream, buf: &mut Vec<u8>) -> Vec<u8> {
    loop {
        if buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1] & 0x7F) {
            let len = usize::from(buf[1] & 0x7F);
            assert!(len < 126, "short test messages only");
            let payload = buf[2..2 + len].to_vec();
            buf.drain(..2 + len);
            return payload;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.data())
            .await
            .expect("a frame within 10 s")
            .expect("the stream is open")
            .unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn an_http2_client_opens_websockets_with_extended_connect() {
    let s = Stack::start(1).await;
    // The proxied echo: the gateway upgrades to the mock over HTTP/1.1 for the h2 client.
    let (status, mut send, mut body) = h2_websocket(s.gateway.http, "/rest/ws/echo").await;
    assert_eq!(status, 200);
    send.send_data(encode(true, 0x1, b"over h2", KEY).into(), false)
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(h2_next_text(&mut body, &mut buf).await, b"over h2");
    drop((send, body));
    // A bidi RPC through the translation.
    let (status, mut send, mut body) = h2_websocket(s.gateway.http, "/api/inventory/sync").await;
    assert_eq!(status, 200);
    let movement = br#"{"productId":"7","delta":1}"#;
    send.send_data(encode(true, 0x1, movement, KEY).into(), false)
        .unwrap();
    let mut buf = Vec::new();
    // An answer longer than 125 bytes has a 16-bit length: read its header by hand.
    let first = loop {
        if buf.len() >= 4 {
            break buf.clone();
        }
        let chunk = body.data().await.unwrap().unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
    };
    assert_eq!(first[0], 0x81, "a final text frame");
    drop((send, body));
    s.stop().await;
}

/// A translated stream outlives the route's timeout (it bounds the opening, not a long-lived
/// stream), ends at a deadline the client set, and is closed when idle.
#[tokio::test]
async fn translated_streams_end_at_the_clients_deadline_or_when_idle_not_at_the_routes() {
    let s = Stack::start(1).await;
    let grpc = vec![s.backends.grpc[0].to_string()];
    let rest = vec![s.backends.rest[0].to_string()];
    let mut cfg: GatewayConfig = common::gateway_config(&grpc, &rest);
    cfg.transcode.timeout = TextDuration(Duration::from_millis(300));
    cfg.websocket.idle_timeout = TextDuration(Duration::from_secs(1));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let movement = encode(true, 0x1, br#"{"productId":"7","delta":1}"#, KEY);
    let (status, mut tcp) = upgrade(gw.http, "/api/inventory/sync", "").await;
    assert_eq!(status, 101);
    // Past the route's 300 ms, the stream still answers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    tcp.write_all(&movement).await.unwrap();
    // A text message answers the movement; then nothing either way for the idle timeout:
    // closed 1001.
    assert_eq!(until_close(&mut tcp).await, (vec![0x81], Some(1001)));
    // A deadline the client set ends the call: a last error message, then 1011.
    let (status, mut tcp) = upgrade(
        gw.http,
        "/api/inventory/sync",
        "X-Request-Timeout: 200ms\r\n",
    )
    .await;
    assert_eq!(status, 101);
    assert_eq!(
        until_close(&mut tcp).await,
        (vec![0x81], Some(1011)),
        "the error, then the close"
    );
    gw.shutdown().await;
    s.stop().await;
}
