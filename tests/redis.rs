//! Rate limits shared through a real `redis-server` (Debian's; `.ci/run` installs it): each test
//! starts its own on a free port of 127.0.0.1 with a temporary directory and stops it (also on
//! failure). Without `redis-server` the tests say so and pass, unless GWBENCH_REQUIRE_REDIS=1
//! (set by CI) makes that a failure.

mod common;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, gateway_config, url};
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::gateway::config::{GatewayConfig, OnStoreError, RateLimitStore, TextDuration};
use gwbench::gateway::serve::server::GatewayServer;
use http::{Request, StatusCode};
use http_body_util::Full;

/// A redis-server of the test's own, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Starts one on `port` (0: a free one); None when redis-server is not installed.
    fn start(port: u16) -> Option<Redis> {
        let port = match port {
            0 => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            }
            p => p,
        };
        let dir = std::env::temp_dir().join(format!("gwbench-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program =
            common::require_tool(&["redis-server"], "GWBENCH_REQUIRE_REDIS", "redis-server")?;
        let child = match Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let r = Redis { child, port, dir };
        // Ready when it accepts a connection (bounded: 10 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The default config over `b`'s mocks with the /secure mount's rate limit (auth off) shared
/// through `url`: 5 at once per key, 1 more an hour (nothing refills while a test runs).
fn shared(b: &Backends, url: &str, on_error: OnStoreError) -> GatewayConfig {
    let mut cfg = gateway_config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.transcode.mounts[1].auth = false;
    cfg.rate_limit.rate = NonZeroU32::new(1).unwrap();
    cfg.rate_limit.per = TextDuration(Duration::from_secs(3600));
    cfg.rate_limit.burst = NonZeroU32::new(5).unwrap();
    cfg.rate_limit.store = RateLimitStore::Redis;
    cfg.rate_limit.redis.url = url.to_string();
    cfg.rate_limit.redis.timeout = TextDuration(Duration::from_millis(200));
    cfg.rate_limit.redis.on_error = on_error;
    cfg.validate().unwrap();
    cfg
}

/// One call with an API key; its status and `RateLimit-Remaining`.
async fn call(gw: SocketAddr, key: &str) -> (StatusCode, Option<u32>) {
    let req = Request::get(url(gw, "/secure/api/users/1"))
        .header("x-api-key", key)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), common::client().request(req))
        .await
        .expect("no hang")
        .unwrap();
    let remaining = resp
        .headers()
        .get("ratelimit-remaining")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (resp.status(), remaining)
}

#[tokio::test]
async fn two_gateways_share_one_allowance_through_redis() {
    let Some(redis) = Redis::start(0) else { return };
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let cfg = shared(&b, &redis.url(), OnStoreError::Deny);
    let (one, two) = (
        GatewayServer::start(&cfg).await.unwrap(),
        GatewayServer::start(&cfg).await.unwrap(),
    );
    let mut got = Vec::new();
    for i in 0..10 {
        let gw = if i % 2 == 0 { one.http } else { two.http };
        got.push(call(gw, "team-a").await);
    }
    // Five in all, whichever instance answered, with exact remaining counts.
    let ok: Vec<_> = got.iter().filter(|(s, _)| *s == StatusCode::OK).collect();
    assert_eq!(ok.len(), 5, "{got:?}");
    assert_eq!(
        got[..5].iter().map(|(_, r)| r.unwrap()).collect::<Vec<_>>(),
        [4, 3, 2, 1, 0],
        "{got:?}"
    );
    assert!(
        got[5..]
            .iter()
            .all(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS),
        "{got:?}"
    );
    // Another key has its own allowance.
    assert_eq!(call(one.http, "team-b").await, (StatusCode::OK, Some(4)));
    one.shutdown().await;
    two.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_down_applies_the_failure_policy_and_sharing_resumes_when_it_is_back() {
    let Some(mut redis) = Redis::start(0) else {
        return;
    };
    let port = redis.port;
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let allow = GatewayServer::start(&shared(&b, &redis.url(), OnStoreError::Allow))
        .await
        .unwrap();
    let deny = GatewayServer::start(&shared(&b, &redis.url(), OnStoreError::Deny))
        .await
        .unwrap();
    // Spend key "flood" through Redis; the refusal is remembered locally until its retry time.
    for _ in 0..5 {
        assert_eq!(call(allow.http, "flood").await.0, StatusCode::OK);
    }
    assert_eq!(
        call(allow.http, "flood").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    redis.stop();
    // Down: "allow" lets a fresh key through with its whole allowance, "deny" refuses it —
    // neither is a 5xx, neither hangs.
    assert_eq!(call(allow.http, "fresh").await, (StatusCode::OK, Some(5)));
    assert_eq!(
        call(deny.http, "fresh").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The key Redis refused stays refused without asking it (the local fast path).
    assert_eq!(
        call(allow.http, "flood").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Back on the same port (empty): decisions are Redis's again, without a restart.
    let _again = Redis::start(port).expect("redis-server ran a moment ago");
    eventually("decisions come from Redis again", || async {
        call(allow.http, "fresh-2").await.1.is_some_and(|r| r < 5)
    })
    .await;
    allow.shutdown().await;
    deny.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_redis_that_never_answers_costs_the_timeout_and_the_local_share_decides() {
    // A hostile peer: it accepts connections and never answers a byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = shared(&b, &format!("redis://{silent}"), OnStoreError::Local);
    cfg.rate_limit.redis.instances = NonZeroU32::new(1).unwrap();
    let gw = GatewayServer::start(&cfg).await.unwrap();
    // The local share (5 / 1 instance) decides: five pass, then 429 — answered, not hung.
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(call(gw.http, "k").await.0);
    }
    assert_eq!(&got[..5], &[StatusCode::OK; 5], "{got:?}");
    assert_eq!(got[5], StatusCode::TOO_MANY_REQUESTS);
    gw.shutdown().await;
    b.shutdown().await;
    hold.abort();
}
