//! The gateway against the real mocks on 127.0.0.1 (free ports): transcoded and proxy routes,
//! error mapping, load balancing, deadlines; in-process (no socket) for routing; the proxy
//! client against an awkward hand-written upstream. Transcoding of protos written for the
//! tests (the conformance suite) is in `tests/transcoding.rs`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Stack, dev_token, gateway_config as config, get, post, send, url};
use gwbench::backend::behavior::{Behavior, Latency};
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::gateway::Gateway;
use gwbench::gateway::serve::server::GatewayServer;
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
        35,
        "11 annotated RPCs on the bare, /secure and /cached mounts, one proxy route, one aggregation"
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
    let token = dev_token("mallory");
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

#[tokio::test]
async fn per_core_workers_serve_on_one_address_and_share_one_rate_limit() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.transcode.mounts[1].auth = false; // /secure: the rate limit is what is tested
    cfg.rate_limit.rate = nz(1);
    cfg.rate_limit.per = gwbench::gateway::config::TextDuration(Duration::from_secs(3600));
    cfg.rate_limit.burst = nz(3);
    // A prefix of this test's own, so that its requests are the only ones under that route in
    // the process's metrics (the tallies of other tests' gateways are summed in too).
    cfg.proxy[0].prefix = "/percore/".into();
    cfg.proxy[0].strip_prefix = "/percore".into();
    let gw = gwbench::gateway::serve::workers::Workers::start(&cfg, 2)
        .await
        .unwrap();
    assert_eq!(gw.workers, 2);
    assert_ne!(gw.http.port(), 0, "port 0 became one port for every worker");
    // Every call opens its own connection, so the kernel spreads them over both workers'
    // listeners; the allowance is the gateway's, not each worker's.
    let mut statuses = Vec::new();
    for _ in 0..16 {
        let req = Request::get(url(gw.http, "/secure/api/users/1"))
            .header("x-api-key", "one-key")
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
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // Transcoded, proxied and admin routes all answer.
    for _ in 0..8 {
        let r = get(&url(gw.http, "/api/users/9")).await;
        assert_eq!(
            (r.status, r.json()["id"].clone()),
            (StatusCode::OK, "9".into())
        );
        assert_eq!(
            get(&url(gw.http, "/percore/api/users/9")).await.status,
            StatusCode::OK
        );
    }
    // Each worker counts in a tally of its own; the scrape adds them up, requests and
    // durations alike (8 proxied requests over 8 connections, spread over both workers).
    let page = String::from_utf8(get(&url(gw.admin, "/metrics")).await.body.to_vec()).unwrap();
    let sum = |name: &str| -> f64 {
        parse_prometheus(&page)
            .iter()
            .filter(|(n, l, _)| n == name && l.contains("route=\"/percore/"))
            .map(|s| s.2)
            .sum()
    };
    assert_eq!(sum("gwbench_requests_total"), 8.0, "{page}");
    assert_eq!(sum("gwbench_request_duration_seconds_count"), 8.0, "{page}");
    assert_eq!(page.matches("# TYPE gwbench_requests_total ").count(), 1);
    assert_eq!(
        get(&url(gw.admin, "/routes")).await.json()["routes"]
            .as_array()
            .unwrap()
            .len(),
        gw.gateway().routes().len()
    );
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_access_log_writes_one_json_line_per_request_with_route_upstream_and_subject() {
    let backends = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let grpc = vec![backends.grpc[0].to_string()];
    let rest = vec![backends.rest[0].to_string()];
    let dir = gwbench::process::TempDir::new("access-gw").unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let _ = std::fs::remove_file(&path);
    let mut cfg = config(&grpc, &rest);
    cfg.access_log.enabled = true;
    cfg.access_log.path = path.display().to_string();
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let token = dev_token("alice");
    let ok = get(&url(gw.http, "/api/users/7")).await;
    assert_eq!(ok.status, StatusCode::OK);
    let proxied = get(&url(gw.http, "/rest/api/users/7")).await;
    assert_eq!(proxied.status, StatusCode::OK);
    assert_eq!(
        get(&url(gw.http, "/nowhere")).await.status,
        StatusCode::NOT_FOUND
    );
    let req = Request::get(url(gw.http, "/secure/api/users/1"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let secure = common::client().request(req).await.unwrap();
    assert_eq!(secure.status(), StatusCode::OK);
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    common::eventually("four access-log lines", || async { lines().len() == 4 }).await;
    let lines = lines();
    let by_status: Vec<u64> = lines
        .iter()
        .map(|l| l["status"].as_u64().unwrap())
        .collect();
    assert_eq!(by_status, [200, 200, 404, 200]);
    let first = &lines[0];
    assert_eq!(first["method"], "GET");
    assert_eq!(first["route"], "/api/users/{id}");
    assert_eq!(first["upstream"], "grpc");
    assert!(first["upstream_ms"].as_f64().unwrap() <= first["total_ms"].as_f64().unwrap());
    assert_eq!(
        first["request_id"].as_str().unwrap(),
        ok.headers["x-request-id"].to_str().unwrap()
    );
    assert!(first["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(first["subject"], serde_json::Value::Null);
    assert_eq!(lines[1]["upstream"], "rest");
    assert_eq!(lines[2]["route"], serde_json::Value::Null);
    assert_eq!(lines[2]["upstream"], serde_json::Value::Null);
    assert_eq!(lines[3]["subject"], "alice");
    gw.shutdown().await;
    backends.shutdown().await;
}

#[tokio::test]
async fn a_reload_swaps_the_routes_while_in_flight_requests_finish_on_the_old_config() {
    // Every mock answer takes 300 ms: long enough to reload while one is in flight.
    let backends = Backends::start(&BackendsConfig {
        behavior: Behavior {
            latency: Latency::Fixed(Duration::from_millis(300)),
            ..Behavior::default()
        },
        ..BackendsConfig::ephemeral()
    })
    .await
    .unwrap();
    let grpc = vec![backends.grpc[0].to_string()];
    let rest = vec![backends.rest[0].to_string()];
    let old = config(&grpc, &rest);
    let gw = GatewayServer::start(&old).await.unwrap();
    let first = url(gw.http, "/rest/api/users/7");
    let in_flight = tokio::spawn(async move { get(&first).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The proxy moves from /rest/ to /v2/.
    let mut new = old.clone();
    new.proxy[0].prefix = "/v2/".into();
    new.proxy[0].strip_prefix = "/v2".into();
    let done = gw.reload.apply(new.clone()).await.unwrap();
    assert_eq!(done.routes, gw.gateway().routes().len());
    // The request that arrived before the reload finishes on the config it started with.
    assert_eq!(in_flight.await.unwrap().status, StatusCode::OK);
    assert_eq!(
        get(&url(gw.http, "/rest/api/users/7")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&url(gw.http, "/v2/api/users/7")).await.status,
        StatusCode::OK
    );
    let routes = |gw: &GatewayServer| -> Vec<String> {
        gw.gateway()
            .routes()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    };
    let before = routes(&gw);
    // Refused, each for its reason; the new config keeps serving.
    let mut moved = new.clone();
    moved.listen.admin = "127.0.0.1:1".parse().unwrap();
    let mut missing = new.clone();
    missing.transcode.descriptor_set = Some("/nonexistent/set.bin".into());
    let mut invalid = new.clone();
    invalid.limits.max_body_bytes = 0;
    for (bad, needle) in [
        (moved, "[listen]"),
        (missing, "/nonexistent/set.bin"),
        (invalid, "max_body_bytes"),
    ] {
        let err = gw.reload.apply(bad).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{needle}: {err}");
        assert_eq!(routes(&gw), before);
        assert_eq!(
            get(&url(gw.http, "/v2/api/users/7")).await.status,
            StatusCode::OK
        );
    }
    // POST /reload on the admin port: a source that fails is a 400 naming why; one that
    // reads the old config swaps it back.
    gw.reload.set_source(Box::new(|| {
        Err("config.toml: line 3: expected a table".into())
    }));
    let refused = send(Method::POST, &url(gw.admin, "/reload"), "").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 3")
    );
    assert_eq!(
        get(&url(gw.http, "/v2/api/users/7")).await.status,
        StatusCode::OK
    );
    let back = old.clone();
    gw.reload.set_source(Box::new(move || Ok(back.clone())));
    let reloaded = send(Method::POST, &url(gw.admin, "/reload"), "").await;
    assert_eq!(reloaded.status, StatusCode::OK, "{:?}", reloaded.json());
    assert_eq!(
        get(&url(gw.http, "/rest/api/users/7")).await.status,
        StatusCode::OK
    );
    gw.shutdown().await;
    backends.shutdown().await;
}

/// A hand-written OTLP/gRPC collector: keeps every span it is sent, with its resource's
/// `service.name`.
#[derive(Default, Clone)]
struct Collector(
    std::sync::Arc<std::sync::Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>,
);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        req: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    self.0.lock().unwrap().push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A hand-written HTTP/1.1 upstream that answers 200 to anything and keeps each request's
/// `traceparent`.
async fn traceparent_recorder() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_lowercase();
                let tp = text
                    .lines()
                    .find_map(|l| l.strip_prefix("traceparent: "))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                kept.lock().unwrap().push(tp);
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn tracing_exports_a_span_per_request_and_upstream_call_and_propagates_the_context() {
    let collector = Collector::default();
    let otlp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp_addr = otlp.local_addr().unwrap();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                    collector.clone(),
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(otlp)),
    );
    let (upstream, seen) = traceparent_recorder().await;
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    let request = |gw: SocketAddr| {
        let tp = traceparent.clone();
        async move {
            let req = Request::get(url(gw, "/rest/api/users/7"))
                .header("traceparent", tp)
                .body(Full::new(Bytes::new()))
                .unwrap();
            common::client().request(req).await.unwrap().status()
        }
    };
    // Off: no spans, and the client's context reaches the upstream as it came.
    let mut cfg = config(&[dead_addr()], &[upstream.to_string()]);
    let untraced = GatewayServer::start(&cfg).await.unwrap();
    assert_eq!(request(untraced.http).await, StatusCode::OK);
    assert_eq!(seen.lock().unwrap().last().unwrap(), &traceparent);
    untraced.shutdown().await;
    // On: the upstream sees the gateway's upstream-call span, in the client's trace.
    cfg.tracing.otlp_endpoint = format!("http://{otlp_addr}");
    let traced = GatewayServer::start(&cfg).await.unwrap();
    assert_eq!(request(traced.http).await, StatusCode::OK);
    let sent = seen.lock().unwrap().last().unwrap().clone();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts.len(), 4, "{sent}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", client_trace, "01"),
        "{sent}"
    );
    assert_ne!(
        parts[2], client_span,
        "the gateway's own span goes upstream"
    );
    // Exported in a batch within a second or so: the request's span, child of the client's,
    // and the upstream call's, child of the request's, whose id went upstream.
    common::eventually("two spans at the collector", || async {
        collector.0.lock().unwrap().len() >= 2
    })
    .await;
    let spans = collector.0.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans
        .iter()
        .find(|(_, s)| s.name.starts_with("GET /rest/"))
        .unwrap_or_else(|| panic!("{spans:?}"));
    let client = spans
        .iter()
        .find(|(_, s)| s.name == "upstream rest")
        .unwrap_or_else(|| panic!("{spans:?}"));
    assert!(server.0.contains("gwbench-gateway"), "{}", server.0);
    assert_eq!(hex(&server.1.trace_id), client_trace);
    assert_eq!(hex(&server.1.parent_span_id), client_span);
    assert_eq!(hex(&client.1.trace_id), client_trace);
    assert_eq!(hex(&client.1.parent_span_id), hex(&server.1.span_id));
    assert_eq!(hex(&client.1.span_id), parts[2]);
    traced.shutdown().await;
    serving.abort();
}
