//! What each gateway feature costs in isolation (criterion). Each middleware is benched alone
//! around a no-op inner service and driven with `oneshot`; below them, the pieces they are made of
//! (route table, JWT verification, key store, breaker, transcoding); on top, the whole gateway
//! (`Gateway::handle`) over an in-process upstream stub, so no network and no backend is timed.
//!
//!   cargo bench --bench middleware               # everything
//!   cargo bench --bench middleware -- jwt        # one group
//!   cargo bench --bench middleware -- --save-baseline before
//!   cargo bench --bench middleware -- --baseline before
//!
//! Targets and measured medians: BENCHMARKS.md.

use std::convert::Infallible;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Empty, Full};
use prost::Message;
use tower::{Layer, ServiceExt};

use gwbench::gateway::config::{
    AuthConfig, AuthKey, BreakerConfig, CacheConfig, GatewayConfig, Mount, RateLimitConfig,
};
use gwbench::gateway::middleware::breaker::Admission;
use gwbench::gateway::middleware::ratelimit::overrides;
use gwbench::gateway::middleware::{
    Auth, Breaker, Breakers, CacheLayer, GovernorStore, KeyStore, Metrics, PolicyLayer, RateLimit,
    Verifier,
};
use gwbench::gateway::path::router::{ProxyTarget, Router, Target};
use gwbench::gateway::transcode::method::{JsonOptions, MethodRoute};
use gwbench::gateway::{Gateway, GwRequest, GwResponse, RouteService};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A routed request as the middleware sees it (a proxy target, no body).
fn request(uri: &str, headers: &[(&str, &str)]) -> GwRequest {
    let mut b = Request::builder().method(Method::GET).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let (parts, ()) = b.body(()).expect("a valid request").into_parts();
    GwRequest {
        parts,
        body: Bytes::new(),
        params: vec![],
        target: Target::Proxy(Arc::new(ProxyTarget {
            prefix: "/".into(),
            strip: String::new(),
            upstream: 0,
            timeout: Duration::from_secs(1),
        })),
        route: Arc::from("/api/users/{id}"),
        upstream: 0,
        request_id: HeaderValue::from_static("bench"),
        deadline: Duration::from_secs(1),
        client_deadline: false,
        peer: None,
    }
}

fn ok_response() -> GwResponse {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(
        br#"{"id":"42","username":"user42"}"#,
    ))));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The no-op inner service every middleware is benched around.
fn noop() -> RouteService {
    tower::util::BoxCloneSyncService::new(tower::service_fn(|_req: GwRequest| async {
        Ok::<_, Infallible>(ok_response())
    }))
}

/// Benches `svc` driven with `oneshot`, a fresh request from `make` per iteration (made outside
/// the timed part, as criterion's `iter_batched` does).
fn bench_oneshot<S>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: &S,
    mut make: impl FnMut() -> GwRequest,
) where
    S: tower::Service<GwRequest, Response = GwResponse, Error = Infallible> + Clone,
{
    g.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            &mut make,
            |req| svc.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn auth_config() -> AuthConfig {
    let key = |kid: &str, alg: &str, secret: Option<&str>, pem: Option<&str>| AuthKey {
        kid: Some(kid.into()),
        algorithms: vec![alg.into()],
        secret: secret.map(str::to_string),
        public_key_file: pem.map(|f| format!("{FIXTURES}{f}").into()),
    };
    AuthConfig {
        keys: vec![
            key(
                "hs",
                "HS256",
                Some(gwbench::gateway::config::dev_secret()),
                None,
            ),
            key("rs", "RS256", None, Some("rsa_public.pem")),
            key("es", "ES256", None, Some("ec_public.pem")),
        ],
        ..AuthConfig::default()
    }
}

/// A token for `kid` (`hs`, `rs`, `es`; `none` is the default config's HS256 key, which has no
/// key id) that expires `exp_in` seconds from now.
fn token(kid: &str, exp_in: i64) -> String {
    let claims = serde_json::json!({
        "sub": "bench-user", "iss": "gwbench", "aud": "gwbench-api",
        "iat": now_s(), "exp": now_s() + exp_in, "scope": "read write",
    });
    let (alg, key) = match kid {
        "hs" | "none" => (
            "HS256",
            gwbench::gateway::config::dev_secret().as_bytes().to_vec(),
        ),
        "rs" => (
            "RS256",
            std::fs::read(format!("{FIXTURES}rsa_private.pem")).unwrap(),
        ),
        _ => (
            "ES256",
            std::fs::read(format!("{FIXTURES}ec_private.pem")).unwrap(),
        ),
    };
    let kid = (kid != "none").then_some(kid);
    gwbench::gateway::middleware::auth::mint(alg, &key, kid, &claims).expect("a token")
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

// ===== router =====

/// 50 routes: 25 static, 20 with one variable, 5 with two, compiled from a proto made here.
fn fifty_routes() -> Router {
    let mut proto = String::from(
        "syntax = \"proto3\";\npackage bench.v1;\nimport \"google/api/annotations.proto\";\n\
         message Req { string a = 1; string b = 2; }\nmessage Resp {}\nservice Bench {\n",
    );
    for i in 0..50 {
        let path = match i {
            0..25 => format!("/v1/static{i}/items"),
            25..45 => format!("/v1/res{i}/{{a}}"),
            _ => format!("/v1/res{i}/{{a}}/parts/{{b}}"),
        };
        proto.push_str(&format!(
            "  rpc M{i}(Req) returns (Resp) {{ option (google.api.http) = {{get: \"{path}\"}}; }}\n"
        ));
    }
    proto.push_str("}\n");
    let dir = std::env::temp_dir().join(format!("gwbench-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("bench/v1")).unwrap();
    std::fs::write(dir.join("bench/v1/bench.proto"), proto).unwrap();
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let mut compiler = protox::Compiler::new([dir.to_str().unwrap(), proto_root]).unwrap();
    compiler
        .include_imports(true)
        .open_file("bench/v1/bench.proto")
        .unwrap();
    let pool =
        prost_reflect::DescriptorPool::decode(compiler.encode_file_descriptor_set().as_ref())
            .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let mut router = Router::new();
    let added = router
        .add_annotated(&pool, &Default::default(), 0, &mut Default::default())
        .unwrap();
    assert_eq!(added, 50);
    router
}

fn router(c: &mut Criterion) {
    let r = fifty_routes();
    let mut g = c.benchmark_group("router");
    let get = Method::GET;
    g.bench_function("static hit", |b| {
        b.iter(|| r.at(&get, black_box("/v1/static17/items")).is_ok())
    });
    g.bench_function("hit, 2 params", |b| {
        b.iter(|| r.at(&get, black_box("/v1/res47/abc123/parts/p-9")).is_ok())
    });
    g.bench_function("miss", |b| {
        b.iter(|| r.at(&get, black_box("/v1/nowhere/at/all")).is_err())
    });
    g.finish();
}

// ===== JWT =====

fn jwt(c: &mut Criterion) {
    let v = Verifier::new(&auth_config()).expect("a verifier");
    let mut g = c.benchmark_group("jwt");
    for kid in ["hs", "rs", "es"] {
        let h = bearer(&token(kid, 3600));
        assert!(v.verify(&h).is_ok(), "{kid} token accepted");
        let alg = match kid {
            "hs" => "HS256",
            "rs" => "RS256",
            _ => "ES256",
        };
        g.bench_function(format!("verify {alg}"), |b| {
            b.iter(|| v.verify(black_box(&h)).is_ok())
        });
    }
    for kid in ["hs", "rs"] {
        // Flip one character in the middle of the signature.
        let mut t = token(kid, 3600).into_bytes();
        let i = t.len() - 10;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        let h = bearer(&String::from_utf8(t).unwrap());
        assert!(v.verify(&h).is_err(), "a bad signature is refused");
        g.bench_function(
            format!("reject bad signature {}", kid.to_uppercase()),
            |b| b.iter(|| v.verify(black_box(&h)).is_err()),
        );
    }
    let h = bearer(&token("hs", -3600));
    assert!(v.verify(&h).is_err(), "an expired token is refused");
    g.bench_function("reject expired HS256", |b| {
        b.iter(|| v.verify(black_box(&h)).is_err())
    });
    g.finish();
}

// ===== rate limiter =====

fn store() -> GovernorStore {
    // Never denies during a bench: the cost of an allowed check is what is measured.
    GovernorStore::new(
        NonZeroU32::new(1_000_000_000).unwrap(),
        Duration::from_secs(1),
        NonZeroU32::new(1_000_000).unwrap(),
        usize::MAX,
    )
}

fn rate_limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");
    let s = store();
    g.bench_function("check, 1 key", |b| {
        b.iter(|| s.check(black_box("key:client-1")))
    });
    let s = store();
    let keys: Vec<String> = (0..100_000).map(|i| format!("key:client-{i:06}")).collect();
    for k in &keys {
        s.check(k);
    }
    let mut i = 0;
    g.bench_function("check, 100k keys round-robin", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            s.check(&keys[i])
        })
    });
    let s = Arc::new(store());
    g.bench_function("check, 1 key from 2 threads", |b| {
        // Both threads check the same key `iters` times; the time per check is the wall time of
        // one thread's share, so contention shows as a longer time.
        b.iter_custom(|iters| {
            let other = {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..iters {
                        black_box(s.check("key:shared"));
                    }
                })
            };
            let start = std::time::Instant::now();
            for _ in 0..iters {
                black_box(s.check("key:shared"));
            }
            let mine = start.elapsed();
            other.join().unwrap();
            mine
        })
    });
    let rt = runtime();
    let cfg = Arc::new(RateLimitConfig {
        rate: NonZeroU32::new(1_000_000_000).unwrap(),
        burst: NonZeroU32::new(1_000_000).unwrap(),
        ..RateLimitConfig::default()
    });
    let layer = PolicyLayer::new(RateLimit::new(Arc::new(store()), overrides(&cfg), cfg));
    let svc = layer.layer(noop());
    bench_oneshot(&mut g, &rt, "layer (x-api-key, allowed)", &svc, || {
        request("/api/users/42", &[("x-api-key", "client-1")])
    });
    redis_decisions(&mut g, &rt);
    g.finish();
}

/// A decision of the shared store on a redis-server of its own on loopback, beside the local
/// store's check above (skipped, and said, when redis-server is not installed).
fn redis_decisions(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
) {
    use gwbench::gateway::middleware::shared_limit::{RedisLimiter, Scope};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let Ok(mut child) = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("ratelimit/redis: skipped (redis-server is not installed)");
        return;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let redis = gwbench::gateway::config::RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        timeout: gwbench::gateway::config::TextDuration(std::time::Duration::from_millis(100)),
        ..Default::default()
    };
    let limiter = RedisLimiter::new(&redis).expect("a valid URL");
    let scope = Scope::new(
        "bench",
        NonZeroU32::new(1_000_000_000).unwrap(),
        std::time::Duration::from_secs(1),
        NonZeroU32::new(1_000_000).unwrap(),
        NonZeroU32::MIN,
        100_000,
    );
    g.bench_function("redis decision, 1 key (loopback)", |b| {
        b.iter(|| rt.block_on(limiter.decide(&scope, black_box("key:client-1"))))
    });
    let _ = child.kill();
    let _ = child.wait();
}

// ===== circuit breaker =====

fn breaker(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker");
    let closed = Breaker::new("bench", BreakerConfig::default());
    g.bench_function("admit, closed", |b| {
        b.iter(|| matches!(closed.admit(), Admission::Pass { .. }))
    });
    g.bench_function("record success", |b| b.iter(|| closed.record(false, false)));
    // Failures in a row open it (consecutive_failures), so record them on a breaker that can
    // never trip: the cost of counting a failure, not of opening.
    let counting = Breaker::new(
        "bench",
        BreakerConfig {
            consecutive_failures: u32::MAX,
            failure_ratio: 1.1,
            ..BreakerConfig::default()
        },
    );
    g.bench_function("record failure", |b| {
        b.iter(|| counting.record(false, true))
    });
    let open = Breaker::new("bench", BreakerConfig::default());
    for _ in 0..10 {
        open.record(false, true);
    }
    assert!(matches!(open.admit(), Admission::Reject(_)), "it is open");
    g.bench_function("admit, open (reject)", |b| {
        b.iter(|| matches!(open.admit(), Admission::Reject(_)))
    });
    let rt = runtime();
    let svc = PolicyLayer::new(Breakers::new(Arc::new(vec![Arc::new(Breaker::new(
        "bench",
        BreakerConfig::default(),
    ))])))
    .layer(noop());
    bench_oneshot(&mut g, &rt, "layer, closed", &svc, || {
        request("/api/users/42", &[])
    });
    g.finish();
}

// ===== cache =====

fn cache(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("cache");
    let cfg = Arc::new(CacheConfig {
        ttl: gwbench::gateway::config::TextDuration(Duration::from_secs(3600)),
        max_entries: 1_000_000,
        ..CacheConfig::default()
    });
    let svc = CacheLayer::new(cfg).layer(noop());
    let key = [("x-api-key", "client-1")];
    // 100,000 entries resident before measuring.
    rt.block_on(async {
        for i in 0..100_000 {
            let r = svc
                .clone()
                .oneshot(request(&format!("/api/users/{i}"), &key))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let r = svc
            .clone()
            .oneshot(request("/api/users/42", &key))
            .await
            .unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT");
    });
    bench_oneshot(&mut g, &rt, "hit (100k resident)", &svc, || {
        request("/api/users/42", &key)
    });
    let mut n = 1_000_000u64;
    bench_oneshot(&mut g, &rt, "miss + insert (100k resident)", &svc, || {
        n += 1;
        request(&format!("/api/users/{n}"), &key)
    });
    g.finish();
}

// ===== auth and metrics layers =====

fn layers(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("layer");
    bench_oneshot(&mut g, &rt, "none (oneshot of the no-op)", &noop(), || {
        request("/api/users/42", &[])
    });
    let verifier = Arc::new(Verifier::new(&auth_config()).unwrap());
    let svc = PolicyLayer::new(Auth::new(verifier)).layer(noop());
    let t = format!("Bearer {}", token("hs", 3600));
    bench_oneshot(&mut g, &rt, "auth HS256", &svc, || {
        request("/api/users/42", &[("authorization", &t)])
    });
    let svc = PolicyLayer::new(Metrics::new()).layer(noop());
    bench_oneshot(&mut g, &rt, "metrics", &svc, || {
        request("/api/users/42", &[])
    });
    g.finish();
}

// ===== transcoding =====

fn transcoding(c: &mut Criterion) {
    let pool = gwbench::proto::descriptor_pool();
    let mut router = Router::new();
    router
        .add_annotated(pool, &Default::default(), 0, &mut Default::default())
        .unwrap();
    let route = |m: Method, path: &str| -> (Arc<MethodRoute>, Vec<String>) {
        let hit = router.at(&m, path).unwrap();
        match hit.target {
            Target::Transcode(r) => (r.clone(), hit.params),
            _ => panic!("{path} is transcoded"),
        }
    };
    let opts = JsonOptions::new(false, false, false);
    let mut g = c.benchmark_group("transcode");
    let (get_user, params) = route(Method::GET, "/api/users/42");
    g.bench_function("request GetUser (path param)", |b| {
        b.iter(|| get_user.encode_request(black_box(&params), None, b"", &opts))
    });
    g.bench_function("request GetUser (path param), DynamicMessage", |b| {
        b.iter(|| get_user.encode_dynamic(black_box(&params), None, b"", None, &opts))
    });
    let (create, params) = route(Method::POST, "/api/users");
    let body = serde_json::to_vec(&serde_json::json!({
        "username": "ada", "displayName": "Ada Lovelace", "email": "ada@example.com",
        "tier": "USER_TIER_PRO",
        "address": {"lines": ["12 St James's Square"], "city": "London",
                    "postalCode": "SW1Y 4JH", "countryCode": "GB"},
        "roles": ["admin", "analyst"], "labels": {"team": "engines", "floor": "2"},
    }))
    .unwrap();
    create
        .encode_request(&params, None, &body, &opts)
        .expect("the CreateUser body is valid");
    g.bench_function("request CreateUser (nested body)", |b| {
        b.iter(|| create.encode_request(&params, None, black_box(&body), &opts))
    });
    // The same through a DynamicMessage (what every request took before json_wire).
    g.bench_function("request CreateUser (nested body), DynamicMessage", |b| {
        b.iter(|| create.encode_dynamic(&params, None, black_box(&body), None, &opts))
    });
    let user = gwbench::backend::data::user(42).unwrap().encode_to_vec();
    g.bench_function("response User to JSON", |b| {
        b.iter(|| get_user.render_response(black_box(&user), &opts))
    });
    let (list, _) = route(Method::GET, "/api/orders");
    let orders = gwbench::backend::data::list_orders(&gwbench::proto::v1::ListOrdersRequest {
        user_id: 42,
        page_size: 20,
    })
    .unwrap();
    assert_eq!(orders.orders.len(), 20);
    let orders = orders.encode_to_vec();
    g.bench_function("response ListOrders (20) to JSON", |b| {
        b.iter(|| list.render_response(black_box(&orders), &opts))
    });
    g.finish();
}

// ===== the whole gateway over an in-process upstream =====

fn whole_stack(c: &mut Criterion) {
    let rt = runtime();
    let mut cfg = GatewayConfig::default_config();
    cfg.rate_limit.rate = NonZeroU32::new(1_000_000_000).unwrap();
    cfg.rate_limit.burst = NonZeroU32::new(1_000_000).unwrap();
    cfg.transcode.mounts.push(Mount {
        prefix: "/all".into(),
        auth: true,
        rate_limit: true,
        breaker: true,
        cache: true,
        ..Mount::default()
    });
    let gw = rt.block_on(async { Gateway::with_upstream(&cfg, noop()).expect("a gateway") });
    let t = format!("Bearer {}", token("none", 3600));
    let mut g = c.benchmark_group("gateway");
    for (name, path, auth) in [
        ("bare route", "/api/users/42", false),
        (
            "auth + rate limit + breaker (HS256)",
            "/secure/api/users/42",
            true,
        ),
        (
            "auth + rate limit + cache hit + breaker",
            "/all/api/users/42",
            true,
        ),
    ] {
        let make = || {
            let mut b = Request::builder()
                .uri(path)
                .header("host", "gw")
                .header("x-api-key", "client-1");
            if auth {
                b = b.header("authorization", &t);
            }
            b.body(Empty::<Bytes>::new()).unwrap()
        };
        let status = rt.block_on(gw.handle(make())).status();
        assert_eq!(status, StatusCode::OK, "{path}");
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter_batched(make, |req| gw.handle(req), BatchSize::SmallInput)
        });
    }
    // What the operability features cost when on (off, they are the "bare route" above): the
    // access log (lines to /dev/null) and spans (OTLP to a closed port: the batch exporter
    // fails in the background, its bounded queue drops).
    let mut logged = cfg.clone();
    logged.access_log.enabled = true;
    logged.access_log.path = "/dev/null".into();
    let mut traced = cfg.clone();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    traced.tracing.otlp_endpoint = format!("http://{}", closed.local_addr().expect("its address"));
    drop(closed);
    for (name, cfg) in [
        ("bare route + access log", logged),
        ("bare route + tracing", traced),
    ] {
        let gw = rt.block_on(async { Gateway::with_upstream(&cfg, noop()).expect("a gateway") });
        let make = || {
            Request::builder()
                .uri("/api/users/42")
                .header("host", "gw")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        assert_eq!(rt.block_on(gw.handle(make())).status(), StatusCode::OK);
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter_batched(make, |req| gw.handle(req), BatchSize::SmallInput)
        });
    }
    g.finish();
}

/// What the proxy does to a typical message's headers on the way through (forward.rs): a
/// curl-like request's (Host, User-Agent, Accept) and the REST mock's response's.
fn forwarding(c: &mut Criterion) {
    use gwbench::gateway::upstream::forward;
    let mut g = c.benchmark_group("forward");
    let mut req = HeaderMap::new();
    req.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    req.insert("user-agent", HeaderValue::from_static("curl/7.88.1"));
    req.insert("accept", HeaderValue::from_static("*/*"));
    let peer = gwbench::net::PeerAddr("127.0.0.1:40000".parse().expect("an address"));
    let id = HeaderValue::from_static("0b7f3c2a9e8d4f10");
    g.bench_function("request headers", |b| {
        b.iter_batched(
            || req.clone(),
            |h| forward::request_headers(h, Some(&peer), &id),
            BatchSize::SmallInput,
        )
    });
    let mut resp = HeaderMap::new();
    resp.insert("content-type", HeaderValue::from_static("application/json"));
    resp.insert("content-length", HeaderValue::from_static("187"));
    resp.insert(
        "date",
        HeaderValue::from_static("Wed, 02 Dec 2026 15:00:00 GMT"),
    );
    g.bench_function("response headers", |b| {
        b.iter_batched(
            || resp.clone(),
            |mut h| {
                forward::strip_hop_by_hop(&mut h);
                h
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

// ===== websocket =====

/// Per message: the proxy's frame scan (a masked 64-byte text frame), a tungstenite message
/// written and read back over an in-memory pipe (what the mocks, the translation and the
/// generator pay), and the translation's JSON -> wire (a StockMovement) and wire -> JSON (a
/// Stock).
fn websocket(c: &mut Criterion) {
    use futures_util::{SinkExt, StreamExt};
    use gwbench::ws::frame::{Scanner, Sender, encode};
    let mut g = c.benchmark_group("websocket");
    let text = br#"{"id":1,"event":"price","symbol":"GWB","bid":101.25,"ask":101.5}"#;
    let frame = encode(true, 0x1, text, Some([1, 2, 3, 4]));
    let limits = gwbench::ws::Limits::default().frames();
    g.bench_function("proxy_scan_64B_frame", |b| {
        let mut scanner = Scanner::new(Sender::Client, limits);
        b.iter(|| scanner.scan(black_box(&frame)).unwrap())
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (client, server) = tokio::io::duplex(1 << 16);
    let (mut client, mut server) = rt.block_on(async {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let c =
            tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let s =
            tokio_tungstenite::WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        (c, s)
    });
    let msg = String::from_utf8(text.to_vec()).unwrap();
    g.bench_function("tungstenite_send_and_read_64B", |b| {
        b.iter(|| {
            rt.block_on(async {
                client
                    .send(gwbench::ws::Message::text(msg.clone()))
                    .await
                    .unwrap();
                server.next().await.unwrap().unwrap()
            })
        })
    });
    let pool = gwbench::proto::descriptor_pool();
    let mut router = Router::new();
    router
        .add_annotated(pool, &Default::default(), 0, &mut Default::default())
        .unwrap();
    let hit = router.at(&Method::POST, "/api/inventory/sync").unwrap();
    let Target::Transcode(sync) = hit.target else {
        panic!("SyncStock is transcoded");
    };
    let sync = sync.clone();
    let opts = JsonOptions::new(false, false, true);
    let movement = br#"{"productId":"7","warehouseId":"wh-fra-1","delta":1}"#;
    g.bench_function("translate_json_to_wire_StockMovement", |b| {
        b.iter(|| {
            sync.encode_request(&[], None, black_box(movement), &opts)
                .unwrap()
        })
    });
    let stock = gwbench::backend::data::stock(7).unwrap();
    let stock = prost::Message::encode_to_vec(&stock);
    g.bench_function("translate_wire_to_json_Stock", |b| {
        b.iter(|| sync.render_response(black_box(&stock), &opts).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    router,
    forwarding,
    jwt,
    rate_limit,
    breaker,
    cache,
    layers,
    transcoding,
    websocket,
    whole_stack
);
criterion_main!(benches);
