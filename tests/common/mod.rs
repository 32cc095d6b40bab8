//! Helpers shared by the integration tests: a small HTTP client over hyper, URLs, waiting for
//! a readiness signal, and a stack of mocks and gateway started and stopped in one place.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::gateway::config::GatewayConfig;
use gwbench::gateway::serve::server::GatewayServer;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request; panics (failing the test) after 10 s rather than hanging.
pub async fn send(method: Method, url: &str, body: impl Into<Bytes>) -> Reply {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    let fut = async {
        let resp = client().request(req).await.expect("request failed");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body read failed").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("request timed out")
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, Bytes::new()).await
}

pub async fn post(url: &str, body: &str) -> Reply {
    send(Method::POST, url, body.to_string()).await
}

/// `http://{addr}{path}`: the one way tests write a URL.
pub fn url(addr: impl std::fmt::Display, path: &str) -> String {
    format!("http://{addr}{path}")
}

/// Waits until `ready` says yes (a readiness signal, polled every 10 ms); fails the test naming
/// `what` after 10 s rather than hanging.
pub async fn eventually<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !ready().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The gateway's default config on free ports, pointed at `grpc` and `rest` endpoints.
pub fn gateway_config(grpc: &[String], rest: &[String]) -> GatewayConfig {
    let mut cfg = GatewayConfig::default_config();
    cfg.listen.http = "127.0.0.1:0".parse().unwrap();
    cfg.listen.admin = "127.0.0.1:0".parse().unwrap();
    cfg.listen.http1 = http1_server();
    for u in &mut cfg.upstreams {
        u.endpoints = if u.name == "grpc" {
            grpc.to_vec()
        } else {
            rest.to_vec()
        };
    }
    cfg.validate().unwrap();
    cfg
}

/// The gateway's HTTP/1.1 server for this test run: the lean path (the default), or hyper with
/// `GWBENCH_TEST_HTTP1=hyper` (`.ci/run` runs the hostile and gateway tests both ways).
pub fn http1_server() -> gwbench::gateway::config::Http1Server {
    match std::env::var("GWBENCH_TEST_HTTP1").as_deref() {
        Ok("hyper") => gwbench::gateway::config::Http1Server::Hyper,
        _ => gwbench::gateway::config::Http1Server::Lean,
    }
}

/// In-process mocks and a gateway in front of them, on free ports; `stop` ends both (and so
/// does dropping it: both stop on drop).
pub struct Stack {
    pub backends: Backends,
    pub gateway: GatewayServer,
}

impl Stack {
    /// `instances` of each mock behind the gateway's default config.
    pub async fn start(instances: usize) -> Stack {
        let backends = Backends::start(&BackendsConfig {
            instances,
            ..BackendsConfig::ephemeral()
        })
        .await
        .unwrap();
        let grpc: Vec<String> = backends.grpc.iter().map(|a| a.to_string()).collect();
        let rest: Vec<String> = backends.rest.iter().map(|a| a.to_string()).collect();
        let gateway = GatewayServer::start(&gateway_config(&grpc, &rest))
            .await
            .unwrap();
        Stack { backends, gateway }
    }

    /// Stops the gateway, then the mocks.
    pub async fn stop(self) {
        self.gateway.shutdown().await;
        self.backends.shutdown().await;
    }
}

/// The request headers (gRPC metadata) a [`grpc_echo`] server saw last.
pub type Seen = std::sync::Arc<std::sync::Mutex<http::HeaderMap>>;

/// A hand-written gRPC (h2) upstream for any unary method: it answers with the request's own
/// bytes as the body, under `headers` (content-type included: a hostile test may send a
/// non-gRPC one) and then `trailers`, and keeps the last request's headers.
pub async fn grpc_echo(
    headers: http::HeaderMap,
    trailers: http::HeaderMap,
) -> (std::net::SocketAddr, Seen) {
    grpc_echo_stream(headers, 1, None, trailers).await
}

/// [`grpc_echo`] for streams: the request's own bytes `copies` times (each one message, in its
/// own DATA frame), then `trailers`; with a `gate`, only the first copy before the gate is
/// opened (`notify_one`), the rest after.
pub async fn grpc_echo_stream(
    headers: http::HeaderMap,
    copies: usize,
    gate: Option<std::sync::Arc<tokio::sync::Notify>>,
    trailers: http::HeaderMap,
) -> (std::net::SocketAddr, Seen) {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let seen = Seen::default();
    let keep = seen.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (keep, headers, trailers, gate) = (
                keep.clone(),
                headers.clone(),
                trailers.clone(),
                gate.clone(),
            );
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (keep, headers, trailers, gate) = (
                            keep.clone(),
                            headers.clone(),
                            trailers.clone(),
                            gate.clone(),
                        );
                        async move {
                            *keep.lock().unwrap() = req.headers().clone();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let frames = futures_util::stream::unfold(0usize, move |i| {
                                let (body, trailers, gate) =
                                    (body.clone(), trailers.clone(), gate.clone());
                                async move {
                                    if i > copies {
                                        return None;
                                    }
                                    if i == 1
                                        && let Some(g) = gate
                                    {
                                        g.notified().await;
                                    }
                                    let frame = if i == copies {
                                        Frame::trailers(trailers)
                                    } else {
                                        Frame::data(body)
                                    };
                                    Some((Ok::<_, std::convert::Infallible>(frame), i + 1))
                                }
                            });
                            let mut resp = http::Response::new(StreamBody::new(frames));
                            *resp.headers_mut() = headers;
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (addr, seen)
}

/// Compiles `proto` (saved as `<package dir>/<file>`) with the repository's protos on the
/// import path into a descriptor set; returns the temporary directory and the set's path.
pub fn compile_set(
    tag: &str,
    rel: &str,
    proto: &str,
) -> (gwbench::process::TempDir, std::path::PathBuf) {
    let dir = gwbench::process::TempDir::new(tag).unwrap();
    let file = dir.join(rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, proto).unwrap();
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let mut compiler = protox::Compiler::new([dir.to_str().unwrap(), proto_root]).unwrap();
    compiler.include_imports(true).open_file(rel).unwrap();
    let set = dir.join(format!("{tag}.pb"));
    std::fs::write(&set, compiler.encode_file_descriptor_set()).unwrap();
    (dir, set)
}

/// A header map from (name, value) pairs.
pub fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                http::HeaderValue::from_str(v).unwrap(),
            )
        })
        .collect()
}

/// Runs `gwbench load --json -q` with `args`, expecting success; returns the report.
pub fn load_json(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("gwbench"))
        .arg("load")
        .args(args)
        .args(["--warmup", "0s", "--json", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_valid_load(&report);
    report
}

/// Checks `report` against the gwbench.load.v1 schema.
pub fn assert_valid_load(report: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../reports/schema/load.json")).unwrap();
    assert!(
        jsonschema::validator_for(&schema).unwrap().is_valid(report),
        "not a valid gwbench.load.v1 object: {report}"
    );
}

/// An optional real component a test needs (`programs`: the names it goes by, or paths): the
/// first one installed, searched on `PATH` and in `/usr/sbin`. When none is, the test says so
/// and skips (None) — unless the environment variable `require` is set (CI sets it after
/// installing the Debian package `package`), which makes a missing component a failure.
pub fn require_tool(programs: &[&str], require: &str, package: &str) -> Option<std::path::PathBuf> {
    let dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .collect();
    let found = programs.iter().find_map(|p| {
        let p = std::path::Path::new(p);
        if p.is_absolute() {
            return p.is_file().then(|| p.to_path_buf());
        }
        dirs.iter().map(|d| d.join(p)).find(|c| c.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "{} is not installed (Debian: apt-get install -y {package})",
            programs[0]
        );
        assert!(
            std::env::var_os(require).is_none(),
            "{msg}, and {require} is set"
        );
        eprintln!("skipped: {msg}");
    }
    found
}

/// A child process of a test, killed on drop (however the test ends).
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Waits for the child to exit; fails the test (the child then killed) after `within`.
    pub fn exit_within(&mut self, within: Duration, what: &str) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: still running after {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the child SIGINT, as Ctrl-C at a terminal does.
    pub fn interrupt(&self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    }

    /// What the child wrote on its (piped) stdout, to the end.
    pub fn stdout_text(&mut self) -> String {
        let mut text = String::new();
        if let Some(mut out) = self.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
        }
        text
    }
}

/// Runs a finished command's check: it succeeded (else its stdout and stderr are the message);
/// returns its stdout.
pub fn succeeded(run: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// The `summary.json` a run wrote into `dir`.
pub fn summary_in(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

/// A token the default config's dev key verifies, for `sub`, valid for five minutes.
pub fn dev_token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    gwbench::gateway::middleware::auth::mint(
        "HS256",
        gwbench::gateway::config::dev_secret().as_bytes(),
        Some("dev"),
        &serde_json::json!({"sub": sub, "iss": "gwbench", "aud": "gwbench-api", "exp": now + 300}),
    )
    .unwrap()
}
