//! The gateway against the real mocks on 127.0.0.1 (free ports): transcoded and proxy routes,
//! error mapping, load balancing, deadlines; in-process (no socket) for routing; and a
//! descriptor set compiled in the test, served by a hand-made gRPC server, to show the
//! transcoder is generic.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Seen, Stack, compile_set, gateway_config as config, get, headers, post, send, url};
use gwbench::backend::behavior::{Behavior, Latency};
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::gateway::Gateway;
use gwbench::gateway::server::GatewayServer;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};

fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn transcoded_routes_answer_what_the_rest_mock_answers() {
    let s = Stack::start(1).await;
    let (b, gw) = (&s.backends, &s.gateway);
    for path in [
        "/api/users/42",
        "/api/users?page_size=2&page_token=10",
        "/api/orders/ord-42-3",
        "/api/orders?user_id=42&page_size=3",
        "/api/products/7",
        "/api/products/search?q=lamp&limit=3",
        "/api/inventory/7",
    ] {
        let via = get(&url(gw.http, path)).await;
        let direct = get(&url(b.rest[0], path)).await;
        assert_eq!(via.status, StatusCode::OK, "{path}: {:?}", via.body);
        assert_eq!(via.headers["content-type"], "application/json");
        assert_eq!(via.json(), direct.json(), "{path}");
        assert_eq!(
            via.headers["x-request-id"].len(),
            32,
            "a request id is generated"
        );
    }
    let body = r#"{"username":"grace","email":"g@example.com","address":{"city":"Arlington"}}"#;
    let via = post(&url(gw.http, "/api/users"), body).await;
    let direct = post(&url(b.rest[0], "/api/users"), body).await;
    assert_eq!(via.status, StatusCode::OK);
    assert_eq!(via.json(), direct.json());
    // The proxy route strips /rest and returns the upstream's answer untouched.
    let proxied = get(&url(gw.http, "/rest/api/users/42")).await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert_eq!(
        proxied.json(),
        get(&url(b.rest[0], "/api/users/42")).await.json()
    );
    assert_eq!(proxied.headers["x-gwbench-instance"], "0");
    let routes = get(&url(gw.admin, "/routes")).await.json();
    assert_eq!(
        routes["routes"].as_array().unwrap().len(),
        26,
        "8 annotated RPCs on the bare, /secure and /cached mounts, one proxy route, one aggregation"
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_input_is_answered_as_json_and_never_reaches_the_upstream() {
    let s = Stack::start(1).await;
    let (b, gw) = (&s.backends, &s.gateway);
    let at = |p: &str| url(gw.http, p);
    for (method, path, body, status, code, needle) in [
        (Method::GET, "/api/users/0", "", 404, "NOT_FOUND", "user 0"),
        (
            Method::GET,
            "/api/users/abc",
            "",
            400,
            "INVALID_ARGUMENT",
            "field id",
        ),
        (
            Method::GET,
            "/api/users?colour=red",
            "",
            400,
            "INVALID_ARGUMENT",
            "colour",
        ),
        (
            Method::GET,
            "/api/users?page_size=x",
            "",
            400,
            "INVALID_ARGUMENT",
            "page_size",
        ),
        (
            Method::GET,
            "/nothing/here",
            "",
            404,
            "NOT_FOUND",
            "no route",
        ),
        (
            Method::POST,
            "/api/users",
            "{\"username\": ",
            400,
            "INVALID_ARGUMENT",
            "line 1 column",
        ),
        (
            Method::POST,
            "/api/users",
            "{\"username\": 5}",
            400,
            "INVALID_ARGUMENT",
            "expected a string",
        ),
        (
            Method::POST,
            "/api/users",
            "{\"usernme\": \"x\"}",
            400,
            "INVALID_ARGUMENT",
            "usernme",
        ),
        (
            Method::DELETE,
            "/api/users/1",
            "",
            405,
            "UNIMPLEMENTED",
            "allowed: GET",
        ),
        (
            Method::GET,
            "/rest/../admin",
            "",
            400,
            "INVALID_ARGUMENT",
            "not allowed",
        ),
        (
            Method::GET,
            "/rest/%2e%2e/admin",
            "",
            400,
            "INVALID_ARGUMENT",
            "not allowed",
        ),
    ] {
        let r = send(method.clone(), &at(path), body.to_string()).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {:?}", r.body);
        assert_eq!(r.headers["content-type"], "application/json", "{path}");
        let json = r.json();
        assert_eq!(json["error"]["code"], code, "{path}: {json}");
        assert_eq!(json["error"]["http_status"], status);
        assert!(
            json["error"]["message"].as_str().unwrap().contains(needle),
            "{path}: {json}"
        );
    }
    let r = send(Method::DELETE, &at("/api/users/1"), "").await;
    assert_eq!(r.headers["allow"], "GET");
    let big = format!("{{\"username\": \"{}\"}}", "x".repeat(2 << 20));
    assert_eq!(
        post(&at("/api/users"), &big).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // Only the valid not-found lookup reached a mock.
    let stats = get(&url(b.admin, "/admin/stats")).await.json();
    let total: u64 = stats["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "{stats}");
    s.stop().await;
}

/// `n` times, the gRPC-translated route and the REST proxy route both answer 200.
async fn both_routes_ok(gw: &GatewayServer, n: usize) {
    for _ in 0..n {
        for path in ["/api/users/1", "/rest/api/users/1"] {
            let reply = get(&url(gw.http, path)).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
        }
    }
}

#[tokio::test]
async fn round_robin_uses_every_instance_and_skips_a_dead_one() {
    let s = Stack::start(2).await;
    let b = &s.backends;
    both_routes_ok(&s.gateway, 20).await;
    let stats = get(&url(b.admin, "/admin/stats")).await.json();
    for l in stats["listeners"].as_array().unwrap() {
        assert!(
            l["requests"].as_u64().unwrap() >= 5,
            "every instance gets traffic: {stats}"
        );
    }

    // One endpoint refuses connections: every request is still served by the other.
    let grpc = vec![dead_addr(), b.grpc[0].to_string()];
    let rest = vec![dead_addr(), b.rest[0].to_string()];
    let gw = GatewayServer::start(&config(&grpc, &rest)).await.unwrap();
    both_routes_ok(&gw, 10).await;
    gw.shutdown().await;

    // Nothing accepts connections: 503.
    let gw = GatewayServer::start(&config(&[dead_addr()], &[dead_addr()]))
        .await
        .unwrap();
    for path in ["/api/users/1", "/rest/api/users/1"] {
        let r = get(&url(gw.http, path)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(r.json()["error"]["code"], "UNAVAILABLE");
    }
    gw.shutdown().await;
    s.stop().await;
}

/// Mocks on free ports that take `latency` to answer every call.
async fn slow_backends(latency: Duration) -> Backends {
    let slow = Behavior {
        latency: Latency::Fixed(latency),
        ..Default::default()
    };
    Backends::start(&BackendsConfig {
        behavior: slow,
        ..BackendsConfig::ephemeral()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deadline_the_client_shortened_does_not_open_the_shared_breaker() {
    let b = slow_backends(Duration::from_millis(50)).await;
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.transcode.mounts[1].auth = false; // /secure: rate limit and breaker (opens after 5)
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let target = url(gw.http, "/secure/api/users/1");
    // A client that asks for 1 ms gets its 504s, ten times over...
    for timeout in [
        "1ms", "1ms", "1ms", "1ms", "1ms", "1ms", "1ms", "1ms", "1ms", "1ms",
    ] {
        let req = Request::get(&target)
            .header("x-request-timeout", timeout)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = common::client().request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    }
    // ...and everyone else still reaches the upstream: the circuit stayed closed.
    let r = get(&target).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn deadlines_answer_504() {
    let b = slow_backends(Duration::from_millis(400)).await;
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.transcode.timeout = gwbench::gateway::config::TextDuration(Duration::from_millis(100));
    cfg.proxy[0].timeout = gwbench::gateway::config::TextDuration(Duration::from_millis(100));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    for path in ["/api/users/1", "/rest/api/users/1"] {
        let r = get(&url(gw.http, path)).await;
        assert_eq!(
            r.status,
            StatusCode::GATEWAY_TIMEOUT,
            "{path}: {:?}",
            r.body
        );
        assert_eq!(r.json()["error"]["code"], "DEADLINE_EXCEEDED");
    }
    gw.shutdown().await;

    // A client's shorter grpc-timeout wins over the route's 5 s.
    let gw = GatewayServer::start(&config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]))
        .await
        .unwrap();
    let req = Request::get(url(gw.http, "/api/users/1"))
        .header("grpc-timeout", "50m")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn proxy_headers_and_h2c() {
    // An upstream that echoes what it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = listener.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    gwbench::net::serve_http(
        listener,
        |req: Request<hyper::body::Incoming>| async move {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                .collect();
            let (method, uri) = (req.method().to_string(), req.uri().to_string());
            let received = req.into_body().collect().await.unwrap().to_bytes();
            let body = serde_json::json!({
                "method": method, "uri": uri, "headers": headers,
                "body": String::from_utf8_lossy(&received),
            });
            gwbench::net::json(StatusCode::OK, body.to_string())
        },
        shutdown,
        gwbench::net::ServeLimits {
            drain: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let gw = GatewayServer::start(&config(&[dead_addr()], &[echo_addr.to_string()]))
        .await
        .unwrap();
    let req = Request::get(url(gw.http, "/rest/echo/x?y=1"))
        .header("x-request-id", "req-123")
        .header("x-forwarded-for", "10.0.0.1")
        .header("connection", "keep-alive, x-drop")
        .header("x-drop", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let echoed: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echoed["uri"], "/echo/x?y=1", "{echoed}");
    let h = &echoed["headers"];
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
    assert!(
        h["forwarded"]
            .as_str()
            .unwrap()
            .starts_with("for=127.0.0.1;proto=http;host="),
        "{h}"
    );
    assert_eq!(h["host"], echo_addr.to_string());
    assert!(
        h.get("x-drop").is_none()
            && h.get("connection")
                .is_none_or(|c| c != "keep-alive, x-drop"),
        "{h}"
    );

    // A request body goes upstream whole, framed by its length (here it came chunked).
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
    let chunked = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    tokio::spawn(async move {
        for part in [&b"{\"name\": "[..], &b"\"ada\"}"[..]] {
            let _ = tx
                .send(Ok(hyper::body::Frame::data(Bytes::from_static(part))))
                .await;
        }
    });
    let req = Request::post(url(gw.http, "/rest/echo/post"))
        .header("content-type", "application/json")
        .body(chunked)
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    let echoed: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["body"], r#"{"name": "ada"}"#, "{echoed}");
    assert_eq!(echoed["headers"]["content-length"], "15", "{echoed}");
    assert!(
        echoed["headers"].get("transfer-encoding").is_none(),
        "{echoed}"
    );

    // The same listener speaks h2c (prior knowledge).
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let resp = h2
        .get(url(gw.http, "/rest/echo/h2").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_on_a_failing_upstream_and_closes_when_it_recovers() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.transcode.mounts[1].auth = false; // this test is about the breaker
    cfg.breaker.cooldown = gwbench::gateway::config::TextDuration(Duration::from_millis(200));
    cfg.breaker.max_cooldown = gwbench::gateway::config::TextDuration(Duration::from_millis(400));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let secure = url(gw.http, "/secure/api/users/1");
    let requests = || async {
        let stats = get(&url(b.admin, "/admin/stats")).await.json();
        stats["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["requests"].as_u64().unwrap())
            .sum::<u64>()
    };
    // The users service fails: 5 failures in a row open the circuit.
    post(
        &url(b.admin, "/admin/behavior/users"),
        r#"{"error_rate": 1.0}"#,
    )
    .await;
    for _ in 0..5 {
        let r = get(&secure).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("injected"),
            "the upstream's own error"
        );
    }
    let before = requests().await;
    let r = get(&secure).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("circuit open for upstream grpc")
    );
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        requests().await,
        before,
        "an open circuit does not reach the upstream"
    );
    // Routes without the breaker still reach it; other services keep serving.
    assert_eq!(
        get(&url(gw.http, "/api/users/1")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(requests().await, before + 1);
    assert_eq!(
        get(&url(gw.http, "/rest/api/products/1")).await.status,
        StatusCode::OK
    );
    // The upstream recovers: after the cooldown a probe succeeds and the circuit closes.
    send(Method::DELETE, &url(b.admin, "/admin/behavior"), "").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if get(&secure).await.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the circuit did not close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..5 {
        assert_eq!(get(&secure).await.status, StatusCode::OK);
    }
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_authenticated_client_cannot_multiply_its_allowance_by_rotating_api_keys() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    // /secure: JWT auth and a rate limit keyed by API key; burst 2, nothing refills.
    cfg.rate_limit.rate = nz(1);
    cfg.rate_limit.per = gwbench::gateway::config::TextDuration(Duration::from_secs(3600));
    cfg.rate_limit.burst = nz(2);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = gwbench::gateway::middleware::auth::mint(
        "HS256",
        gwbench::gateway::config::dev_secret().as_bytes(),
        Some("dev"),
        &serde_json::json!({"sub": "mallory", "iss": "gwbench", "aud": "gwbench-api", "exp": now + 300}),
    )
    .unwrap();
    let mut statuses = Vec::new();
    for i in 0..4 {
        let req = Request::get(url(gw.http, "/secure/api/users/1"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-api-key", format!("fresh-key-{i}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        statuses.push(
            common::client()
                .request(req)
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 429, 429], "one subject, one allowance");
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn rate_limits_are_per_key_and_say_when_to_retry() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.transcode.mounts[1].auth = false; // this test is about the rate limit
    // One request per hour, burst 2: nothing refills while the test runs, however slow.
    cfg.rate_limit.rate = nz(1);
    cfg.rate_limit.per = gwbench::gateway::config::TextDuration(Duration::from_secs(3600));
    cfg.rate_limit.burst = nz(2);
    cfg.rate_limit.overrides = vec![gwbench::gateway::config::RateLimitOverride {
        key: "key:vip".into(),
        rate: nz(1),
        per: gwbench::gateway::config::TextDuration(Duration::from_secs(3600)),
        burst: nz(5),
    }];
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let call = |key: Option<&'static str>, xff: &'static str| {
        let target = url(gw.http, "/secure/api/users/1");
        async move {
            let mut req = Request::get(target).header("x-forwarded-for", xff);
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            common::client()
                .request(req.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap()
        }
    };
    let first = call(Some("alice"), "1.1.1.1").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert!(
        first.headers()["ratelimit-policy"]
            .to_str()
            .unwrap()
            .contains("q=2")
    );
    assert!(first.headers().contains_key("ratelimit"));
    assert_eq!(
        call(Some("alice"), "1.1.1.1").await.status(),
        StatusCode::OK
    );
    let refused = call(Some("alice"), "1.1.1.1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 3000 && retry <= 3600, "{retry}");
    let body: serde_json::Value =
        serde_json::from_slice(&refused.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "RESOURCE_EXHAUSTED");
    // A key with an override has its own, larger allowance.
    for _ in 0..5 {
        let r = call(Some("vip"), "1.1.1.1").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["ratelimit-limit"], "5");
    }
    assert_eq!(
        call(Some("vip"), "1.1.1.1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Alice's flood does not touch Bob's allowance.
    assert_eq!(call(Some("bob"), "1.1.1.1").await.status(), StatusCode::OK);
    // Without a key the client address counts, and a spoofed X-Forwarded-For does not change it.
    assert_eq!(call(None, "2.2.2.2").await.status(), StatusCode::OK);
    assert_eq!(call(None, "3.3.3.3").await.status(), StatusCode::OK);
    assert_eq!(
        call(None, "4.4.4.4").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The bare mount has no limit.
    for _ in 0..5 {
        assert_eq!(
            get(&url(gw.http, "/api/users/1")).await.status,
            StatusCode::OK
        );
    }
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_secure_mount_requires_a_token_from_gwbench_token() {
    let s = Stack::start(1).await;
    let gw = &s.gateway;
    let target = url(gw.http, "/secure/api/users/42");
    let r = get(&target).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"gwbench\"");
    assert_eq!(r.json()["error"]["code"], "UNAUTHENTICATED");
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("gwbench"))
        .args(["token", "--sub", "alice", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let req = Request::get(&target)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().contains_key("ratelimit-remaining"),
        "the rate limit runs after auth"
    );
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body,
        get(&url(gw.http, "/api/users/42")).await.json(),
        "same answer as the bare route"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_cached_mount_answers_repeats_from_the_cache() {
    let s = Stack::start(1).await;
    let (b, gw) = (&s.backends, &s.gateway);
    let target = url(gw.http, "/cached/api/users/9");
    let first = get(&target).await;
    assert_eq!(
        (first.status, first.headers["x-cache"].to_str().unwrap()),
        (StatusCode::OK, "MISS")
    );
    let second = get(&target).await;
    assert_eq!(second.headers["x-cache"], "HIT");
    assert_eq!(second.json(), first.json());
    let stats = get(&url(b.admin, "/admin/stats")).await.json();
    let total: u64 = stats["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "the second answer came from the cache");
    // A not-found answer is not cached.
    for _ in 0..2 {
        let r = get(&url(gw.http, "/cached/api/users/0")).await;
        assert_eq!(
            (r.status, r.headers["x-cache"].to_str().unwrap()),
            (StatusCode::NOT_FOUND, "MISS")
        );
    }
    s.stop().await;
}

/// Parses Prometheus text exposition: (metric name, labels, value) per sample line; panics on a
/// line that is not a comment and not a sample.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {l:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {l:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.strip_suffix('}')
                        .unwrap_or_else(|| panic!("bad labels in {l:?}")),
                ),
                None => (series, ""),
            };
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name in {l:?}"
            );
            (name.to_string(), labels.to_string(), value)
        })
        .collect()
}

#[tokio::test]
async fn metrics_scrape_cleanly() {
    let s = Stack::start(1).await;
    let gw = &s.gateway;
    for _ in 0..3 {
        get(&url(gw.http, "/api/users/5")).await;
        get(&url(gw.http, "/cached/api/users/5")).await;
    }
    get(&url(gw.http, "/no/route")).await;
    let r = get(&url(gw.admin, "/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let samples = parse_prometheus(&text);
    let value = |name: &str, label_part: &str| -> f64 {
        samples
            .iter()
            .filter(|(n, l, _)| n == name && l.contains(label_part))
            .map(|s| s.2)
            .sum()
    };
    // Other tests share this process's recorder: at least what this test did is there.
    assert!(
        value("gwbench_requests_total", "route=\"/api/users/{id}\"") >= 3.0,
        "{text}"
    );
    assert!(
        value("gwbench_requests_total", "route=\"(none)\"") >= 1.0,
        "{text}"
    );
    assert!(
        value("gwbench_cache_total", "result=\"HIT\"") >= 2.0,
        "{text}"
    );
    assert!(
        value(
            "gwbench_request_duration_seconds_count",
            "route=\"/api/users/{id}\""
        ) >= 3.0,
        "{text}"
    );
    assert!(
        value(
            "gwbench_upstream_duration_seconds_count",
            "upstream=\"grpc\""
        ) >= 3.0,
        "{text}"
    );
    assert!(
        samples
            .iter()
            .any(|(n, _, _)| n == "gwbench_request_duration_seconds_bucket"),
        "a histogram, not a summary"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_dashboard_aggregates_four_services_and_reports_what_is_missing() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    // Stock once per recommended product, instead of the default's first product only.
    let stock = cfg.aggregations[0]
        .parts
        .iter_mut()
        .find(|p| p.name == "stock")
        .unwrap();
    stock.for_each = Some("products".into());
    stock
        .request
        .insert("product_id".into(), serde_json::json!("{item.id}"));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let target = url(gw.http, "/api/dashboard?user_id=42");
    let r = get(&target).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.headers["x-gwbench-completed"], "true");
    let doc = r.json();
    assert_eq!(doc["user"]["id"], "42");
    assert_eq!(doc["orders"]["orders"].as_array().unwrap().len(), 5);
    let products = doc["recommended"]["products"].as_array().unwrap();
    let stock = doc["stock"].as_array().unwrap();
    assert_eq!(
        stock.len(),
        products.len(),
        "stock is fetched for each recommended product"
    );
    assert_eq!(stock[0]["productId"], products[0]["id"]);
    assert_eq!(doc["_meta"]["complete"], true);

    // A failing optional part is null and listed.
    post(
        &url(b.admin, "/admin/behavior/orders"),
        r#"{"error_rate": 1.0}"#,
    )
    .await;
    let r = get(&target).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["x-gwbench-completed"], "false");
    let doc = r.json();
    assert!(doc["orders"].is_null());
    assert_eq!(doc["_meta"]["missing"], serde_json::json!(["orders"]));
    assert!(
        doc["_meta"]["errors"]["orders"]
            .as_str()
            .unwrap()
            .contains("UNAVAILABLE")
    );
    // A failing required part fails the whole with 502.
    let r = get(&url(gw.http, "/api/dashboard?user_id=0")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    // A user_id missing or malformed is the client's error: 400, and nothing is called.
    for bad in [
        "/api/dashboard",
        "/api/dashboard?user_id=abc",
        "/api/dashboard?uid=42",
    ] {
        let r = get(&url(gw.http, bad)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert_eq!(r.json()["error"]["code"], "INVALID_ARGUMENT");
    }
    // Everything slower than the 500 ms deadline: 504.
    post(
        &url(b.admin, "/admin/behavior"),
        r#"{"latency": "fixed:700ms"}"#,
    )
    .await;
    let r = get(&target).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", r.body);
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_mount_configures_middleware_route_by_route() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.rate_limit.per = gwbench::gateway::config::TextDuration(Duration::from_secs(3600));
    cfg.transcode.mounts.push(gwbench::gateway::config::Mount {
        prefix: "/limited".into(),
        rpcs: Some(vec!["gwbench.v1.UserService.GetUser".into()]),
        rate_limit: true,
        rate: Some(nz(1)),
        burst: Some(nz(1)),
        ..Default::default()
    });
    cfg.validate().unwrap();
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let at = |p: &str| url(gw.http, p);
    let first = get(&at("/limited/api/users/1")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.headers["ratelimit-limit"], "1",
        "the mount's own burst"
    );
    assert_eq!(
        get(&at("/limited/api/users/1")).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Only the listed RPC is mounted there; the shared /secure limit is untouched.
    assert_eq!(
        get(&at("/limited/api/products/1")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&at("/api/users/1")).await.status, StatusCode::OK);
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn routing_in_process_without_a_socket() {
    // Upstreams are never contacted for these: no route, wrong method, bad input.
    let gw = Gateway::new(&config(&[dead_addr()], &[dead_addr()])).unwrap();
    let call = |method: Method, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "gw.test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = gw.handle(call(Method::GET, "/nope")).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = gw.handle(call(Method::PUT, "/api/users")).await;
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    let resp = gw.handle(call(Method::GET, "/api/inventory/x")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("product_id"),
        "{json}"
    );
}

// ===== a descriptor set built in the test =====

const ECHO_PROTO: &str = r#"
syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";
service Echo {
  rpc Say(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/say/{name}" };
  }
}
message SayRequest { string name = 1; int32 times = 2; repeated string tags = 3; }
message SayReply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

/// A gateway config in front of a new echo upstream (gRPC; the REST upstream is dead), without
/// the default aggregations (they call gwbench's own services).
async fn echo_config() -> (gwbench::gateway::config::GatewayConfig, Seen) {
    let (upstream, seen) = echo_grpc_server().await;
    let mut cfg = config(&[upstream.to_string()], &[dead_addr()]);
    cfg.aggregations.clear();
    (cfg, seen)
}

/// A gRPC upstream for any unary method that answers with the request's own bytes (SayRequest
/// and SayReply share their field numbers), so the reply shows what the gateway encoded; it
/// keeps the last request's headers, and answers with a header `x-served-by: echo` and a
/// trailer `x-trailer: t` of its own.
async fn echo_grpc_server() -> (SocketAddr, Seen) {
    let head = headers(&[
        ("content-type", "application/grpc"),
        ("x-served-by", "echo"),
    ]);
    common::grpc_echo(head, headers(&[("grpc-status", "0"), ("x-trailer", "t")])).await
}

#[tokio::test]
async fn a_descriptor_set_built_here_is_routed_and_transcoded() {
    let (dir, set) = compile_set("echo", "echo/v1/echo.proto", ECHO_PROTO);

    let (mut cfg, seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&format!(
        "http://{}/v1/say/bob%20smith?times=3&tags=a&tags=b",
        gw.http
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"text": "bob smith", "count": 3, "labels": ["a", "b"]})
    );
    // The call carried gRPC's headers, the request id and the route's deadline.
    {
        let h = seen.lock().unwrap();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["x-request-id"].len(), 32, "{h:?}");
        assert!(h["grpc-timeout"].to_str().unwrap().ends_with('u'), "{h:?}");
    }
    // Through the /secure mount, the verified subject travels as metadata too.
    let token = gwbench::gateway::middleware::auth::mint(
        "HS256",
        gwbench::gateway::config::dev_secret().as_bytes(),
        Some("dev"),
        &serde_json::json!({"sub": "alice", "iss": "gwbench", "aud": "gwbench-api",
            "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300}),
    )
    .unwrap();
    let req = Request::get(url(gw.http, "/secure/v1/say/bob"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-user-id", "mallory") // a client's own copy is replaced
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap()["x-user-id"], "alice");
    // The gateway's own routes are not there: only what this descriptor set annotates.
    assert_eq!(
        get(&url(gw.http, "/api/users/1")).await.status,
        StatusCode::NOT_FOUND
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A hand-written HTTP/1.1 upstream that answers each path in its own awkward way, to exercise
/// the gateway's proxy client: chunked bodies in many writes, a large body, answers that close
/// the connection (with or without saying so), HEAD, and garbage.
async fn awkward_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request head (no request bodies in this test).
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let w = match path.as_str() {
                        "/chunked" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                                .await;
                            for i in 0..300u32 {
                                let piece = vec![b'a' + (i % 26) as u8; 1000];
                                let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                                c.extend_from_slice(&piece);
                                c.extend_from_slice(b"\r\n");
                                let _ = s.write_all(&c).await;
                                if i % 50 == 0 {
                                    tokio::time::sleep(Duration::from_millis(2)).await;
                                }
                            }
                            s.write_all(b"0\r\n\r\n").await
                        }
                        "/big" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n")
                                .await;
                            let mut r = Ok(());
                            for i in 0..16u8 {
                                r = s.write_all(&[b'0' + i % 10; 65536]).await;
                            }
                            r
                        }
                        "/close" => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nbye")
                                .await;
                            return; // no length: the body ends with the connection
                        }
                        "/stale" => {
                            // Says keep-alive, then closes anyway (as an idle timeout would).
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                            return;
                        }
                        "/head" => {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n")
                                .await
                        }
                        "/garbage" => {
                            let _ = s.write_all(b"SPDY/9 whatever\r\n\r\n").await;
                            return;
                        }
                        _ => {
                            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                                .await
                        }
                    };
                    if w.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn the_proxy_client_handles_every_body_framing_and_closed_connections() {
    let (up, task) = awkward_upstream().await;
    let gw = GatewayServer::start(&config(&[dead_addr()], &[up.to_string()]))
        .await
        .unwrap();
    let at = |p: &str| url(gw.http, &format!("/rest{p}"));

    let r = get(&at("/chunked")).await;
    assert_eq!(r.status, StatusCode::OK);
    let expected: Vec<u8> = (0..300u32)
        .flat_map(|i| vec![b'a' + (i % 26) as u8; 1000])
        .collect();
    assert!(
        r.body == expected[..],
        "chunked body: {} bytes",
        r.body.len()
    );

    let r = get(&at("/big")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), 1 << 20);
    assert!(
        r.body
            .chunks(65536)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == b'0' + (i % 10) as u8))
    );

    // A body that ends with the connection, then a connection closed behind the pool's back:
    // the next request goes out again on a new connection.
    for path in ["/close", "/stale", "/stale", "/x", "/stale", "/x"] {
        let r = get(&at(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    }
    let r = get(&at("/x")).await;
    assert_eq!(&r.body[..], b"hello");

    let req = Request::head(at("/head"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), common::client().request(req))
        .await
        .expect("a HEAD answer without a body does not hang")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // An answer that is not HTTP/1.1 is a bad gateway (502), like one that cannot be framed.
    let r = get(&at("/garbage")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid response")
    );

    gw.shutdown().await;
    task.abort();
}

fn nz(v: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(v).expect("a test's allowance is above 0")
}

/// Echo plus an RPC whose rule names a field its request does not have: a rule no gateway
/// could serve.
const ECHO_WITH_A_BAD_RULE: &str = r#"
syntax = "proto3";
package echo.v1;
import "google/api/annotations.proto";
service Echo {
  rpc Say(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/say/{name}" };
  }
  rpc Broken(SayRequest) returns (SayReply) {
    option (google.api.http) = { get: "/v1/broken/{no_such_field}" };
  }
  rpc Upload(stream SayRequest) returns (SayReply) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
}
message SayRequest { string name = 1; int32 times = 2; repeated string tags = 3; }
message SayReply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

#[tokio::test]
async fn one_rule_that_cannot_be_served_is_skipped_not_fatal_unless_strict() {
    let (dir, set) = compile_set("badrule", "echo/v1/echo.proto", ECHO_WITH_A_BAD_RULE);

    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&format!("http://{}/v1/say/bob", gw.http)).await;
    assert_eq!(r.status, StatusCode::OK, "the servable rule is served");
    let routes = get(&url(gw.admin, "/routes")).await.json();
    let skipped = routes["skipped"].as_array().unwrap();
    // Once per mount (the default config mounts the RPCs at / and at /secure).
    assert!(!skipped.is_empty(), "{routes}");
    assert!(
        skipped.iter().any(|s| s["rpc"] == "echo.v1.Echo.Upload"),
        "{routes}"
    );
    assert_eq!(
        post(&format!("http://{}/v1/upload", gw.http), "{}")
            .await
            .status,
        StatusCode::NOT_FOUND,
        "a client-streaming RPC is refused at start, not answered 500 per request"
    );
    for s in skipped {
        if s["rpc"] == "echo.v1.Echo.Upload" {
            assert!(s["reason"].as_str().unwrap().contains("streaming"), "{s}");
            continue;
        }
        assert_eq!(s["rpc"], "echo.v1.Echo.Broken", "{s}");
        assert!(
            s["rule"]
                .as_str()
                .unwrap()
                .contains("/v1/broken/{no_such_field}"),
            "{s}"
        );
        assert!(
            s["reason"].as_str().unwrap().contains("no_such_field"),
            "{s}"
        );
    }
    gw.shutdown().await;

    cfg.transcode.strict = true;
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("echo.v1.Echo.Broken") && err.contains("strict"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Templates beyond `{v}` and a final `{v=**}`: multi-segment variables, custom verbs, and a
/// literal path that overlaps a variable one.
const LIBRARY_PROTO: &str = r#"
syntax = "proto3";
package library.v1;
import "google/api/annotations.proto";
service Library {
  rpc GetBook(Req) returns (Reply) {
    option (google.api.http) = { get: "/v1/{name=publishers/*/books/*}" };
  }
  rpc Featured(Req) returns (Reply) {
    option (google.api.http) = { get: "/v1/publishers/special/books/featured" };
  }
  rpc SearchBooks(Req) returns (Reply) {
    option (google.api.http) = { get: "/v1/books:search" };
  }
  rpc CancelOperation(Req) returns (Reply) {
    option (google.api.http) = { post: "/v1/{name=operations/*}:cancel" body: "*" };
  }
}
message Req { string name = 1; int32 times = 2; repeated string tags = 3; }
message Reply { string text = 1; int32 count = 2; repeated string labels = 3; }
"#;

#[tokio::test]
async fn verbs_and_multi_segment_variables_route_as_grpc_gateway_does() {
    let (dir, set) = compile_set("library", "library/v1/library.proto", LIBRARY_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    cfg.transcode.strict = true; // every rule must be served
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let text = |r: &common::Reply| r.json()["text"].as_str().unwrap_or("").to_string();

    // The variable's value is the whole matched text, percent-decoded. (An encoded '/' never
    // gets this far: the intake refuses encoded separators on every path.)
    let r = get(&url(gw.http, "/v1/publishers/123/books/b%201")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(text(&r), "publishers/123/books/b 1");
    // The literal route beats the variable one it overlaps.
    let r = get(&url(gw.http, "/v1/publishers/special/books/featured")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        serde_json::json!({}),
        "the literal route was chosen"
    );
    // Custom verbs.
    let r = get(&url(gw.http, "/v1/books:search?name=dune")).await;
    assert_eq!((r.status, text(&r)), (StatusCode::OK, "dune".to_string()));
    let r = send(
        http::Method::POST,
        &url(gw.http, "/v1/operations/7:cancel"),
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(
        (r.status, text(&r)),
        (StatusCode::OK, "operations/7".to_string())
    );
    // A verb that is not the route's, and the wrong method, are not matched.
    assert_eq!(
        send(
            http::Method::POST,
            &url(gw.http, "/v1/operations/7:undo"),
            Bytes::from_static(b"{}")
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    let r = get(&url(gw.http, "/v1/operations/7:cancel")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Request and reply are the same message (the echo upstream answers with the request's
/// bytes): well-known types and bytes in the query, a nested body field, non-finite doubles.
const WKT_PROTO: &str = r#"
syntax = "proto3";
package wkt.v1;
import "google/api/annotations.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
service Things {
  rpc Get(Thing) returns (Thing) {
    option (google.api.http) = { get: "/v2/things/{name}" };
  }
  rpc Put(Thing) returns (Thing) {
    option (google.api.http) = { post: "/v2/nested/{name}" body: "payload.input_value" };
  }
}
message Payload { string input_value = 1; }
message Thing {
  google.protobuf.Timestamp at = 1;
  google.protobuf.Duration wait = 2;
  google.protobuf.Int32Value n = 3;
  google.protobuf.BoolValue flag = 4;
  google.protobuf.FieldMask mask = 5;
  bytes data = 6;
  Payload payload = 7;
  google.protobuf.DoubleValue ratio = 8;
  string name = 9;
  double plain = 10;
}
"#;

#[tokio::test]
async fn well_known_types_in_the_query_nested_body_fields_and_the_path_winning() {
    let (dir, set) = compile_set("wkt", "wkt/v1/wkt.proto", WKT_PROTO);
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    cfg.transcode.strict = true;
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(
        gw.http,
        "/v2/things/x?at=2026-12-02T10:00:00Z&wait=1.5s&n=7&flag=true&mask=a.b,c\
         &data=_-8&name=ignored&ratio=0.25",
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["name"], "x", "the path wins over the query: {j}");
    assert_eq!(j["at"], "2026-12-02T10:00:00Z", "{j}");
    assert!(j["wait"].as_str().unwrap().starts_with("1.5"), "{j}");
    assert_eq!(
        (j["n"].clone(), j["flag"].clone()),
        (serde_json::json!(7), serde_json::json!(true))
    );
    assert_eq!(j["mask"], "a.b,c", "{j}");
    assert_eq!(j["data"], "/+8=", "URL-safe base64 in, standard out: {j}");
    assert_eq!(j["ratio"], 0.25, "{j}");
    // body: "payload.input_value" — the body is that nested field.
    let r = send(
        http::Method::POST,
        &url(gw.http, "/v2/nested/y"),
        Bytes::from_static(br#""hello""#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["payload"]["inputValue"], "hello", "{}", r.json());
    // Non-finite doubles are strings in proto3 JSON, in wrappers and plain fields alike.
    let r = get(&url(gw.http, "/v2/things/z?ratio=NaN&plain=-Infinity")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["ratio"], "NaN", "{}", r.json());
    assert_eq!(r.json()["plain"], "-Infinity", "{}", r.json());
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn proto_files_are_compiled_at_start_without_protoc() {
    let dir = std::env::temp_dir().join(format!("gwbench-protos-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("echo/v1")).unwrap();
    let file = dir.join("echo/v1/echo.proto");
    std::fs::write(&file, ECHO_PROTO).unwrap();
    let (mut cfg, _seen) = echo_config().await;
    // google/api/annotations.proto comes bundled: only the user's own directory is given.
    cfg.transcode.protos = vec![file.clone()];
    cfg.transcode.proto_paths = vec![dir.clone()];
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let r = get(&url(gw.http, "/v1/say/bob")).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["text"], "bob");
    gw.shutdown().await;
    // A broken file: the start fails and says which file.
    std::fs::write(&file, "syntax = \"proto3\";\nmessage Oops {").unwrap();
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("transcode.protos") && err.contains("echo.proto"),
        "{err}"
    );
    // Both a descriptor set and protos: refused, both named.
    cfg.transcode.descriptor_set = Some(dir.join("x.pb"));
    let err = GatewayServer::start(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("descriptor_set") && err.contains("protos"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn grpc_metadata_crosses_both_ways_under_grpc_gateways_prefix() {
    let (dir, set) = compile_set("meta", "echo/v1/echo.proto", ECHO_PROTO);
    let (mut cfg, seen) = echo_config().await;
    cfg.transcode.descriptor_set = Some(set);
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let req = Request::get(url(gw.http, "/v1/say/bob"))
        .header("grpc-metadata-tenant", "acme")
        .header("grpc-metadata-x-request-id", "forged")
        .header("grpc-metadata-grpc-timeout", "1n")
        .header("x-not-metadata", "1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    {
        let h = seen.lock().unwrap();
        assert_eq!(h["tenant"], "acme", "{h:?}");
        assert_eq!(
            h["x-request-id"].len(),
            32,
            "the gateway's own id wins: {h:?}"
        );
        assert!(h.get("x-not-metadata").is_none(), "{h:?}");
        assert!(
            h["grpc-timeout"].to_str().unwrap().ends_with('u'),
            "protocol names are not taken from clients: {h:?}"
        );
    }
    let h = resp.headers();
    assert_eq!(h["grpc-metadata-x-served-by"], "echo", "{h:?}");
    assert_eq!(h["grpc-metadata-x-trailer"], "t", "trailers too: {h:?}");
    assert!(h.get("grpc-metadata-grpc-status").is_none(), "{h:?}");
    assert!(h.get("grpc-metadata-content-type").is_none(), "{h:?}");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// google.api.HttpBody in and out (the echo upstream answers with the request's bytes, so each
/// reply type shares the request's field numbers).
const FILES_PROTO: &str = r#"
syntax = "proto3";
package files.v1;
import "google/api/annotations.proto";
import "google/api/httpbody.proto";
service Files {
  rpc Download(Req) returns (google.api.HttpBody) {
    option (google.api.http) = { get: "/v1/files/{name}" };
  }
  rpc Upload(google.api.HttpBody) returns (Echoed) {
    option (google.api.http) = { post: "/v1/upload" body: "*" };
  }
  rpc Attach(AttachReq) returns (AttachReq) {
    option (google.api.http) = { post: "/v1/attach/{name}" body: "file" };
  }
}
message Req { string content_type = 1; bytes data = 2; string name = 4; }
message Echoed { string content_type = 1; bytes data = 2; }
message AttachReq { string name = 1; google.api.HttpBody file = 2; }
"#;

#[tokio::test]
async fn http_body_requests_and_responses_are_raw_bytes_with_their_content_type() {
    let dir = std::env::temp_dir().join(format!("gwbench-files-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("files/v1")).unwrap();
    let file = dir.join("files/v1/files.proto");
    std::fs::write(&file, FILES_PROTO).unwrap();
    let (mut cfg, _seen) = echo_config().await;
    cfg.transcode.strict = true;
    // google/api/httpbody.proto comes bundled with the binary.
    cfg.transcode.protos = vec![file];
    cfg.transcode.proto_paths = vec![dir.clone()];
    let gw = GatewayServer::start(&cfg).await.unwrap();
    // Out: the HttpBody's bytes are the body, its content_type the Content-Type.
    let r = get(&url(
        gw.http,
        "/v1/files/report?content_type=text/plain&data=aGVsbG8=",
    ))
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(&r.body[..], b"hello");
    assert_eq!(r.headers["content-type"], "text/plain");
    // In, as the whole request: the body is not parsed as JSON.
    let req = Request::post(url(gw.http, "/v1/upload"))
        .header("content-type", "text/csv")
        .body(Full::new(Bytes::from_static(b"a,b")))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let j: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"contentType": "text/csv", "data": "YSxi"})
    );
    // In, as the body field, beside a path variable.
    let req = Request::post(url(gw.http, "/v1/attach/x"))
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from_static(b"raw")))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let j: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        j,
        serde_json::json!({"name": "x", "file": {"contentType": "application/octet-stream", "data": "cmF3"}})
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
