//! TLS end to end: the gateway terminating TLS (`[listen.tls]`, ALPN h2 and
//! http/1.1, mTLS with `client_ca`) and the load generator's `https://` targets (a CA from
//! `--cacert`, `--insecure`, a client certificate), with handshakes counted apart from the
//! requests. Every certificate is made here, at run time, with rcgen: nothing is checked in.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use common::{gateway_config, load_json};
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::gateway::config::ListenTls;
use gwbench::gateway::serve::server::GatewayServer;
use gwbench::load::schedule::{Limit, Rate};
use gwbench::load::target::{Protocol, RequestTemplate};
use gwbench::load::{LoadConfig, LoadRun, run_load};
use gwbench::net::tls::ClientOptions;
use gwbench::report::json::LoadReport;
use http::Method;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, all
/// signed by the CA, as PEM files in a temp directory (removed on drop).
struct Pki {
    dir: gwbench::process::TempDir,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir = gwbench::process::TempDir::new(&format!("tls-{tag}")).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", ca_cert.pem());
        for (who, names) in [
            (
                "server",
                vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ),
            ("client", vec!["client.test".to_string()]),
        ] {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(names)
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            write(&format!("{who}.pem"), cert.pem());
            write(&format!("{who}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn listen(&self, mtls: bool) -> ListenTls {
        ListenTls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }

    fn trusting(&self) -> ClientOptions {
        ClientOptions {
            cacert: Some(self.path("ca.pem")),
            ..Default::default()
        }
    }
}

async fn stack(pki: &Pki, mtls: bool) -> (Backends, GatewayServer) {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = gateway_config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.listen.tls = Some(pki.listen(mtls));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    (b, gw)
}

/// A run's settings for these tests; the template is the caller's.
fn config_for_tests() -> LoadConfig {
    LoadConfig {
        template: RequestTemplate::new(
            Protocol::Http1,
            &["http://127.0.0.1:1/".to_string()],
            Method::GET,
            &[],
            Bytes::new(),
        )
        .unwrap(),
        rate: Rate::Constant(500.0),
        limit: Limit::Requests(100),
        warmup: Duration::ZERO,
        connections: 4,
        max_in_flight: 64,
        threads: 1,
        timeout: Duration::from_secs(5),
        spin: Duration::from_micros(20),
        progress: false,
        split: Default::default(),
        raw_limit: None,
        live: None,
        kernel_timestamps: true,
        start_gate: None,
    }
}

/// 100 requests at 500 req/s over 4 connections to `url` as `protocol` with `opts`: the run,
/// or why it did not start.
async fn try_load(
    url: String,
    protocol: Protocol,
    opts: ClientOptions,
) -> Result<LoadRun, gwbench::load::LoadError> {
    tokio::task::spawn_blocking(move || {
        let template = RequestTemplate::new(protocol, &[url], Method::GET, &[], Bytes::new())
            .unwrap()
            .with_tls(protocol, &opts)
            .unwrap();
        run_load(&LoadConfig {
            template,
            ..config_for_tests()
        })
    })
    .await
    .unwrap()
}

/// [`try_load`], which must start.
async fn load(url: String, protocol: Protocol, opts: ClientOptions) -> LoadRun {
    try_load(url, protocol, opts).await.expect("the run starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_loads_over_http1_and_h2_with_handshakes_apart() {
    let pki = Pki::new("both");
    let (b, gw) = stack(&pki, false).await;
    for (protocol, path) in [
        (Protocol::Http1, "/rest/api/users/42"),
        (Protocol::Http2, "/rest/api/users/42"),
        (Protocol::Http2, "/api/users/42"),
    ] {
        let url = format!("https://{}{path}", gw.http);
        let run = load(url.clone(), protocol, pki.trusting()).await;
        assert_eq!(
            run.outcomes.ok, 100,
            "{url} {protocol:?}: {:?}",
            run.outcomes
        );
        let report = LoadReport::from_run(&run);
        let tls = report.tls.expect("handshakes are reported");
        // One per connection, opened before the clock: none inside the latencies.
        assert!(tls.handshakes >= 1 && tls.handshakes <= 4, "{tls:?}");
        assert!(tls.duration_ns.max > 0);
        assert!(report.protocol.contains("TLS"), "{}", report.protocol);
    }
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_transport_error_and_insecure_accepts_it() {
    let pki = Pki::new("trust");
    let (b, gw) = stack(&pki, false).await;
    let url = format!("https://{}/rest/api/users/42", gw.http);
    // The system's roots do not know this CA: one handshake before the run says so, and the
    // run does not start (exit 2 on the command line), naming the reason.
    let refused = try_load(url.clone(), Protocol::Http1, ClientOptions::default()).await;
    match refused {
        Err(e @ gwbench::load::LoadError::Unreachable(_)) => {
            let text = e.to_string();
            assert!(
                text.contains("TLS handshake refused") && text.contains("UnknownIssuer"),
                "{text}"
            );
        }
        other => panic!("expected a refusal before the run, got {other:?}"),
    }
    let insecure = ClientOptions {
        insecure: true,
        ..Default::default()
    };
    let run = load(url, Protocol::Http1, insecure).await;
    assert_eq!(run.outcomes.ok, 100, "{:?}", run.outcomes);
    gw.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_needs_the_client_certificate() {
    let pki = Pki::new("mtls");
    let (b, gw) = stack(&pki, true).await;
    let url = format!("https://{}/rest/api/users/42", gw.http);
    let run = load(url.clone(), Protocol::Http1, pki.trusting()).await;
    assert_eq!(
        run.outcomes.ok, 0,
        "no client certificate: {:?}",
        run.outcomes
    );
    let with_cert = ClientOptions {
        identity: Some((pki.path("client.pem"), pki.path("client.key"))),
        ..pki.trusting()
    };
    let run = load(url, Protocol::Http1, with_cert).await;
    assert_eq!(run.outcomes.ok, 100, "{:?}", run.outcomes);
    gw.shutdown().await;
    b.shutdown().await;
}

/// The CLI: `https://` with `--cacert` is served, its ALPN picks h2 from the gateway, and the
/// summary shows the handshakes; a missing CA file is a one-line error, exit 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_negotiates_h2_by_alpn_and_reports_handshakes() {
    let pki = Pki::new("cli");
    let (b, gw) = stack(&pki, false).await;
    let url = format!("https://{}/rest/api/users/42", gw.http);
    let ca = pki.path("ca.pem");
    let report = tokio::task::spawn_blocking(move || {
        let ca = ca.to_str().expect("a UTF-8 temp path");
        load_json(&[&url, "--rps", "200", "-n", "50", "-c", "2", "--cacert", ca])
    })
    .await
    .unwrap();
    assert_eq!(report["requests"]["ok"], 50, "{report}");
    assert_eq!(report["protocol"], "h2 (TLS)", "ALPN chose h2");
    assert!(
        report["tls"]["handshakes"].as_u64().unwrap() >= 1,
        "{report}"
    );
    let bad = std::process::Command::new(assert_cmd::cargo::cargo_bin("gwbench"))
        .args([
            "load",
            &format!("https://{}/", gw.http),
            "--cacert",
            "/nonexistent.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("nonexistent.pem"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    gw.shutdown().await;
    b.shutdown().await;
}

/// A TLS-terminating TCP relay in front of a cleartext server (a mock): what an upstream
/// behind TLS looks like to the gateway. With `client_ca`, it requires client certificates.
async fn tls_relay(
    pki: &Pki,
    to: std::net::SocketAddr,
    client_ca: bool,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    let cfg = gwbench::net::tls::server_config(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        client_ca.then(|| pki.path("ca.pem")).as_deref(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                _ = stopped.cancelled() => break,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (addr, stop)
}

/// `[[upstreams]] tls`: the gateway reaches its REST (HTTP/1.1) and gRPC (h2 by ALPN) upstreams
/// over TLS, trusting the configured CA, presenting its client certificate where the upstream
/// requires one; without it, or not trusting the upstream, requests fail as upstream errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_upstreams_over_tls_and_mtls() {
    use gwbench::gateway::config::UpstreamTls;
    let pki = Pki::new("upstream");
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let (rest, stop_rest) = tls_relay(&pki, b.rest[0], true).await;
    let (grpc, stop_grpc) = tls_relay(&pki, b.grpc[0], true).await;
    let start = |tls: UpstreamTls| {
        let mut cfg = gateway_config(&[grpc.to_string()], &[rest.to_string()]);
        for u in &mut cfg.upstreams {
            u.tls = Some(tls.clone());
        }
        cfg
    };
    let full = UpstreamTls {
        ca: Some(pki.path("ca.pem")),
        cert: Some(pki.path("client.pem")),
        key: Some(pki.path("client.key")),
        ..Default::default()
    };
    let gw = GatewayServer::start(&start(full.clone())).await.unwrap();
    for path in ["/rest/api/users/42", "/api/users/42"] {
        let r = common::get(&common::url(gw.http, path)).await;
        assert_eq!(r.status, http::StatusCode::OK, "{path}: {:?}", r.body);
        assert_eq!(r.json()["id"], "42", "{path}");
    }
    gw.shutdown().await;
    // No client certificate, or a CA the upstream's certificate does not chain to: refused.
    for tls in [
        UpstreamTls {
            cert: None,
            key: None,
            ..full.clone()
        },
        UpstreamTls {
            ca: None,
            ..full.clone()
        },
    ] {
        let gw = GatewayServer::start(&start(tls)).await.unwrap();
        for path in ["/rest/api/users/42", "/api/users/42"] {
            let r = common::get(&common::url(gw.http, path)).await;
            assert!(r.status.is_server_error(), "{path}: {}", r.status);
        }
        gw.shutdown().await;
    }
    stop_rest.cancel();
    stop_grpc.cancel();
    b.shutdown().await;
}

/// A self-signed certificate that is its own CA, as `openssl req -x509` makes them, for
/// `names`: (cert.pem, key.pem) in `dir`.
fn self_signed_ca(dir: &std::path::Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("self.pem"), dir.join("self.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// A server presenting a self-signed CA certificate (what `openssl req -x509` makes, and what
/// nginx is often given) is trusted when that certificate is given with --cacert — rustls's own
/// verifier refuses a CA certificate as the server's (CaUsedAsEndEntity) — and still checked
/// for the server's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_given_with_cacert_is_trusted_for_its_names() {
    let pki = Pki::new("selfsigned");
    for (names, trusted) in [
        (&["localhost", "127.0.0.1"][..], true),
        (&["other.test"][..], false),
    ] {
        let (cert, key) = self_signed_ca(&pki.dir, names);
        let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
        let mut cfg = gateway_config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
        cfg.listen.tls = Some(ListenTls {
            cert: cert.clone(),
            key,
            client_ca: None,
        });
        let gw = GatewayServer::start(&cfg).await.unwrap();
        let url = format!("https://{}/rest/api/users/42", gw.http);
        let opts = ClientOptions {
            cacert: Some(cert),
            ..Default::default()
        };
        let result = try_load(url, Protocol::Http1, opts).await;
        match (result, trusted) {
            (Ok(run), true) => assert_eq!(run.outcomes.ok, 100, "{:?}", run.outcomes),
            (Err(e), false) => assert!(e.to_string().contains("NotValidForName"), "{e}"),
            (other, _) => panic!("{names:?}: {other:?}"),
        }
        gw.shutdown().await;
        b.shutdown().await;
    }
}

/// A real nginx (Debian's) terminating TLS on a free port, stopped on drop; None (and the test
/// says so) when nginx is not installed, unless GWBENCH_REQUIRE_NGINX=1 (CI installs it).
struct Nginx {
    child: std::process::Child,
    port: u16,
}

impl Nginx {
    fn start(
        dir: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
        http2: bool,
    ) -> Option<Nginx> {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1;\n\
             pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port} ssl{h2};\n\
                 ssl_certificate {cert}; ssl_certificate_key {key};\n\
                 location / {{ return 200 \"ok\\n\"; }} }} }}\n",
            h2 = if http2 { " http2" } else { "" },
            cert = cert.display(),
            key = key.display(),
        );
        let path = dir.join(format!("nginx-{port}.conf"));
        std::fs::write(&path, conf).unwrap();
        let binary = common::require_tool(&["nginx"], "GWBENCH_REQUIRE_NGINX", "nginx")?;
        let child = std::process::Command::new(binary)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let n = Nginx { child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(n)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Against a real nginx with the kind of certificate nginx is usually given for a test (a
/// self-signed one that is its own CA): `gwbench load https://` trusts it with --cacert, takes
/// h2 when ALPN offers it (without a second Host: nginx answered 400 to every request) and
/// HTTP/1.1 when not, every request answered.
#[test]
fn load_over_tls_against_a_real_nginx_with_a_self_signed_certificate() {
    let pki = Pki::new("nginx");
    let (cert, key) = self_signed_ca(&pki.dir, &["localhost", "127.0.0.1"]);
    for (http2, protocol) in [(true, "h2"), (false, "HTTP/1.1")] {
        let Some(nginx) = Nginx::start(&pki.dir, &cert, &key, http2) else {
            return;
        };
        let url = format!("https://127.0.0.1:{}/", nginx.port);
        let cert = cert.to_str().expect("a UTF-8 temp path");
        let report = load_json(&[
            &url, "--cacert", cert, "-n", "200", "--rps", "400", "-c", "4",
        ]);
        assert_eq!(report["requests"]["ok"], 200, "{protocol}: {report}");
        assert!(
            report["protocol"].as_str().unwrap().starts_with(protocol),
            "{protocol}: {}",
            report["protocol"]
        );
    }
}

/// An h2 connection over TLS is held to the idle timeout, not the header-read timeout: the
/// connection's watcher sits above TLS, where it sees h2's preface. Here a request, a pause
/// three times the header-read timeout, another request on the same connection (answered),
/// and then the close once idle.
#[tokio::test]
async fn h2_over_tls_is_held_to_the_idle_timeout_not_the_head_timeout() {
    let pki = Pki::new("h2idle");
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let mut cfg = gateway_config(&[b.grpc[0].to_string()], &[b.rest[0].to_string()]);
    cfg.listen.tls = Some(pki.listen(false));
    cfg.limits.header_read_timeout =
        gwbench::gateway::config::TextDuration(Duration::from_millis(300));
    cfg.limits.idle_timeout = gwbench::gateway::config::TextDuration(Duration::from_secs(2));
    let gw = GatewayServer::start(&cfg).await.unwrap();
    let gw_port = gw.http.port();
    let tls = gwbench::net::tls::ClientTls::new("localhost", &[b"h2"], &pki.trusting()).unwrap();
    let tcp = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    let stream = tls.handshake(tcp).await.unwrap();
    let (send, mut conn) = h2::client::handshake(stream).await.unwrap();
    let mut ping = conn.ping_pong().expect("the ping handle");
    let driven = tokio::spawn(conn);
    let get = |send: h2::client::SendRequest<Bytes>| async move {
        let mut send = send.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::get(format!("https://localhost:{}/api/users/7", gw_port))
            .body(())
            .unwrap();
        let (answer, _) = send.send_request(req, true).map_err(|e| e.to_string())?;
        let status = answer.await.map_err(|e| e.to_string())?.status();
        Ok::<_, String>((send, status))
    };
    let (send, status) = get(send).await.unwrap();
    assert_eq!(status, 200);
    // A PING after the answer (as pooled clients send to keep a connection): control frames,
    // not the start of a request head.
    ping.ping(h2::Ping::opaque()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (held, again) = match get(send).await {
        Ok((send, status)) => (Some(send), Ok(status)),
        Err(e) => (None, Err(e)),
    };
    assert_eq!(
        again,
        Ok(http::StatusCode::OK),
        "closed at the header-read timeout while idle"
    );
    // Idle past the idle timeout (the client still holds the connection open): the gateway
    // ends it, cleanly — GOAWAY first, so a pooled client knows not to use it.
    let ended = tokio::time::timeout(Duration::from_secs(10), driven).await;
    let Ok(Ok(ended)) = ended else {
        panic!("an idle h2 connection over TLS is held for good");
    };
    assert!(ended.is_ok(), "{ended:?}");
    drop(held);
    gw.shutdown().await;
    b.shutdown().await;
}

/// Plain HTTP sent to the TLS port gets what nginx answers — a 400 with a sentence — instead
/// of a TLS alert that no HTTP client can show.
#[tokio::test]
async fn plain_http_on_the_tls_port_is_a_400_that_says_so() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("plain");
    let (b, gw) = stack(&pki, false).await;
    let mut s = tokio::net::TcpStream::connect(gw.http).await.unwrap();
    s.write_all(b"GET /api/users/7 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("plain HTTP request was sent to the HTTPS port"),
        "{answer}"
    );
    // A TLS client is still served.
    let run = load(
        format!("https://localhost:{}/api/users/7", gw.http.port()),
        Protocol::Http1,
        pki.trusting(),
    )
    .await;
    assert_eq!(run.outcomes.failed(), 0);
    gw.shutdown().await;
    b.shutdown().await;
}
