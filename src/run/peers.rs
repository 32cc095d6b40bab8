//! Other gateways beside ours (`compare --gateway nginx,haproxy,caddy`): each one's config
//! written in a temp dir — a reverse proxy of every path to the same REST mock, and on a second
//! port gRPC over h2c passed through to the gRPC mock, upstream keep-alive, no access log, one
//! worker (or thread) per core of the layout's gateway share,
//! and the settings its own documentation gives for performance — started pinned as our
//! gateway is, waited for, its CPU read by PID with its children's (nginx's workers), and
//! stopped (its whole process group) when dropped.
//!
//! Each is the real program from the machine's packages (`apt-get install -y nginx haproxy
//! caddy`); a missing one is a one-line error naming its package.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use super::process::{ChildProcess, Cpus, Source, TempDir, find_from, with_free_ports};

/// A gateway `compare --gateway` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Gateway {
    /// gwbench's own (`gwbench gateway`), started by the stack.
    Gwbench,
    /// nginx, `proxy_pass` to an upstream with keep-alive.
    Nginx,
    /// HAProxy in HTTP mode, connection reuse to the server.
    Haproxy,
    /// Caddy's `reverse_proxy`.
    Caddy,
    /// Traefik (not in Debian; taken from PATH when there).
    Traefik,
}

impl Gateway {
    /// Every gateway, in the order a run measures them.
    pub(crate) const ALL: [Gateway; 5] = [
        Gateway::Gwbench,
        Gateway::Nginx,
        Gateway::Haproxy,
        Gateway::Caddy,
        Gateway::Traefik,
    ];

    /// Its name on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Gateway::Gwbench => "gwbench",
            Gateway::Nginx => "nginx",
            Gateway::Haproxy => "haproxy",
            Gateway::Caddy => "caddy",
            Gateway::Traefik => "traefik",
        }
    }

    /// `--gateway`'s list: known names, each once, in the order given.
    pub(crate) fn parse_list(list: &str) -> Result<Vec<Gateway>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some(g) = Gateway::ALL.into_iter().find(|g| g.name() == name) else {
                let known: Vec<&str> = Gateway::ALL.iter().map(|g| g.name()).collect();
                return Err(format!(
                    "--gateway: unknown gateway {name:?} (known: {})",
                    known.join(", ")
                ));
            };
            if out.contains(&g) {
                return Err(format!("--gateway: {name} is named twice"));
            }
            out.push(g);
        }
        if out.is_empty() {
            return Err("--gateway: name at least one gateway".into());
        }
        Ok(out)
    }

    /// The program and where it comes from (None for ours).
    fn program(self) -> Option<(&'static str, Source)> {
        match self {
            Gateway::Gwbench => None,
            Gateway::Nginx => Some(("nginx", Source::Debian("nginx"))),
            Gateway::Haproxy => Some(("haproxy", Source::Debian("haproxy"))),
            Gateway::Caddy => Some(("caddy", Source::Debian("caddy"))),
            Gateway::Traefik => Some((
                "traefik",
                Source::Elsewhere(
                    "not in Debian: put its release binary from github.com/traefik/traefik on PATH",
                ),
            )),
        }
    }

    /// Which of compare's scenarios this gateway can serve: the REST proxy route for every
    /// one, and gRPC — for the others as pass-through (gRPC in, gRPC to the mock), for ours
    /// as transcoding; the middleware and WebSocket scenarios are gwbench's own.
    pub(crate) fn serves(self, scenario: &str) -> bool {
        self == Gateway::Gwbench || scenario == "rest" || scenario == "grpc"
    }
}

/// A peer gateway running in front of the REST mock; stopped when dropped.
#[derive(Debug)]
pub(crate) struct PeerGateway {
    pub(crate) gateway: Gateway,
    child: ChildProcess,
    /// Where it listens for HTTP/1.1 (proxied to the REST mock).
    pub(crate) addr: SocketAddr,
    /// Where it listens for gRPC over h2c (passed through to the gRPC mock).
    pub(crate) grpc_addr: SocketAddr,
    /// Its version line, as the program prints it.
    pub(crate) version: String,
    _dir: TempDir,
}

impl PeerGateway {
    /// Starts `gateway` (not gwbench's) pinned to `cpus` with `threads` workers, proxying every
    /// path to the REST mock at `mocks.0` and, on a second port over h2c, gRPC to the gRPC mock
    /// at `mocks.1`; waits until it listens. A start that fails names the program and its log's
    /// last line.
    pub(crate) fn start(
        gateway: Gateway,
        cpus: &Cpus,
        threads: usize,
        mocks: (SocketAddr, SocketAddr),
    ) -> anyhow::Result<PeerGateway> {
        let Some((program, source)) = gateway.program() else {
            anyhow::bail!("gwbench's own gateway is started by the stack");
        };
        let path = find_from(program, source, &format!("--gateway {program}"))?;
        let version = version(&path, gateway);
        let dir = TempDir::new(program).context("a directory for the gateway's config")?;
        // Caddy's and Traefik's threads are Go's: GOMAXPROCS is their one-worker-per-core
        // setting.
        let env = [("GOMAXPROCS", threads.to_string())];
        let started = with_free_ports(2, |ports| {
            let [addr, grpc_addr] =
                [ports[0], ports[1]].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
            let args = write_config(gateway, &dir, (addr, grpc_addr), mocks, threads)?;
            let child = ChildProcess::spawn_with_env(program, &path, &args, &env, 0, cpus.clone())?;
            Ok((child, addr, (addr, grpc_addr)))
        })
        .and_then(|(mut child, (addr, grpc_addr))| {
            super::process::wait_listening(
                &mut child,
                grpc_addr,
                std::time::Duration::from_secs(10),
            )?;
            Ok((child, addr, grpc_addr))
        });
        let (child, addr, grpc_addr) = started
            .map_err(|e| anyhow::anyhow!("{program} did not start: {}", last_line(&e, &dir)))?;
        Ok(PeerGateway {
            gateway,
            child,
            addr,
            grpc_addr,
            version,
            _dir: dir,
        })
    }

    /// Its process id (the master's, for nginx).
    pub(crate) fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// The program's version line (best effort: "" when it will not say).
fn version(path: &Path, gateway: Gateway) -> String {
    let flag = match gateway {
        Gateway::Caddy | Gateway::Traefik => "version",
        _ => "-v",
    };
    let Ok(out) = std::process::Command::new(path).arg(flag).output() else {
        return String::new();
    };
    let text = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Why a start failed: the error, and the last line of the gateway's log when it wrote one.
fn last_line(e: &anyhow::Error, dir: &TempDir) -> String {
    let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    match log.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!("{e:#}; its log's last line: {}", line.trim()),
        None => format!("{e:#}"),
    }
}

/// Listening addresses (HTTP/1.1, gRPC over h2c), or the mocks' (REST, gRPC).
type Pair = (SocketAddr, SocketAddr);

/// Writes `gateway`'s config for a proxy on `listen` to `mocks` into `dir`; the program's
/// arguments.
fn write_config(
    gateway: Gateway,
    dir: &Path,
    listen: Pair,
    mocks: Pair,
    threads: usize,
) -> anyhow::Result<Vec<String>> {
    let d = dir.display();
    let (file, text, args) = match gateway {
        Gateway::Nginx => (
            "nginx.conf",
            nginx_config(dir, listen, mocks, threads),
            vec![
                "-c".into(),
                format!("{d}/nginx.conf"),
                "-p".into(),
                format!("{d}/"),
            ],
        ),
        Gateway::Haproxy => (
            "haproxy.cfg",
            haproxy_config(listen, mocks, threads),
            vec!["-f".into(), format!("{d}/haproxy.cfg"), "-db".into()],
        ),
        Gateway::Caddy => (
            "caddy.json",
            caddy_config(listen, mocks),
            vec!["run".into(), "--config".into(), format!("{d}/caddy.json")],
        ),
        Gateway::Traefik => (
            "dynamic.yml",
            traefik_routes(mocks),
            traefik_args(dir, listen),
        ),
        Gateway::Gwbench => anyhow::bail!("gwbench's gateway has its own config"),
    };
    let path = dir.join(file);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(args)
}

/// nginx: one worker per core (nginx's tuning guide: `worker_processes` to the cores), no
/// access log (it costs a write per request), HTTP/1.1 and keep-alive to the upstream
/// (`keepalive` with `proxy_http_version 1.1` and an empty `Connection` header, as its
/// upstream-keepalive documentation says), clients' keep-alive without a request limit; gRPC
/// through `grpc_pass` on an h2c listener, with keep-alive to the gRPC mock.
fn nginx_config(dir: &Path, (addr, grpc_addr): Pair, (rest, grpc): Pair, threads: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {threads};\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n  http2_max_requests 1000000;\n\
         \x20 upstream mock {{ server {rest}; keepalive 256; }}\n\
         \x20 upstream grpcmock {{ server {grpc}; keepalive 256; }}\n\
         \x20 server {{\n    listen {addr} reuseport;\n\
         \x20   location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
         \x20 }}\n\
         \x20 server {{\n    listen {grpc_addr} http2;\n\
         \x20   location / {{ grpc_pass grpc://grpcmock; }}\n\
         \x20 }}\n}}\n"
    )
}

/// HAProxy: HTTP mode, one thread per core (`nbthread`), keep-alive on both sides and
/// connections to the server reused by any client (`http-reuse always`, which its
/// configuration manual names the most efficient where the server is the same for everyone),
/// no log lines configured; gRPC as HTTP/2 on both sides (`proto h2`).
fn haproxy_config((addr, grpc_addr): Pair, (rest, grpc): Pair, threads: usize) -> String {
    format!(
        "global\n  maxconn 8192\n  nbthread {threads}\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
         option http-keep-alive\n\
         frontend gw\n  bind {addr}\n  default_backend mock\n\
         backend mock\n  http-reuse always\n  server mock {rest}\n\
         frontend grpc\n  bind {grpc_addr} proto h2\n  default_backend grpcmock\n\
         backend grpcmock\n  http-reuse always\n  server grpcmock {grpc} proto h2\n"
    )
}

/// Caddy (JSON config): no admin endpoint, no automatic HTTPS, no access log (Caddy logs
/// requests only when asked), `reverse_proxy` to the mock with its transport's keep-alive;
/// gRPC on an h2c server, passed on over h2c. Its threads are Go's (`GOMAXPROCS`, set from
/// the layout).
fn caddy_config((addr, grpc_addr): Pair, (rest, grpc): Pair) -> String {
    let keep_alive = serde_json::json!({"max_idle_conns_per_host": 256});
    serde_json::json!({
        "admin": {"disabled": true},
        "logging": {"logs": {"default": {"level": "ERROR", "writer": {"output": "stderr"}}}},
        "apps": {"http": {"servers": {
            "gw": {
                "listen": [addr.to_string()],
                "automatic_https": {"disable": true},
                "routes": [{"handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": rest.to_string()}],
                    "transport": {"protocol": "http", "keep_alive": keep_alive}
                }]}]
            },
            "grpc": {
                "listen": [grpc_addr.to_string()],
                "protocols": ["h1", "h2", "h2c"],
                "automatic_https": {"disable": true},
                "routes": [{"handle": [{
                    "handler": "reverse_proxy",
                    "upstreams": [{"dial": grpc.to_string()}],
                    "transport": {"protocol": "http", "versions": ["h2c", "2"], "keep_alive": keep_alive}
                }]}]
            }
        }}}
    })
    .to_string()
}

/// Traefik's static configuration, as flags: an entry point per listener, the routes from a
/// file (below), its log to `error.log` at ERROR, no access log (off unless asked), no version
/// check or usage report, and room for 256 idle connections to each upstream (Traefik's own
/// old benchmark page raised the idle connections per host and set GOMAXPROCS to the cores:
/// the latter comes from the layout). An entry point without TLS speaks h2c as well as
/// HTTP/1.1, which gRPC needs.
fn traefik_args(dir: &Path, (addr, grpc_addr): Pair) -> Vec<String> {
    let d = dir.display();
    [
        format!("--entryPoints.web.address={addr}"),
        format!("--entryPoints.grpc.address={grpc_addr}"),
        format!("--providers.file.filename={d}/dynamic.yml"),
        "--providers.file.watch=false".into(),
        "--log.level=ERROR".into(),
        format!("--log.filePath={d}/error.log"),
        "--global.checkNewVersion=false".into(),
        "--global.sendAnonymousUsage=false".into(),
        "--serversTransport.maxIdleConnsPerHost=256".into(),
    ]
    .into()
}

/// Traefik's routes (its file provider's YAML): every path of each entry point to its mock,
/// the gRPC one over h2c.
fn traefik_routes((rest, grpc): Pair) -> String {
    format!(
        "http:\n  routers:\n\
         \x20   rest:\n      entryPoints: [web]\n      rule: \"PathPrefix(`/`)\"\n      service: mock\n\
         \x20   grpc:\n      entryPoints: [grpc]\n      rule: \"PathPrefix(`/`)\"\n      service: grpcmock\n\
         \x20 services:\n\
         \x20   mock:\n      loadBalancer:\n        servers:\n          - url: \"http://{rest}\"\n\
         \x20   grpcmock:\n      loadBalancer:\n        servers:\n          - url: \"h2c://{grpc}\"\n"
    )
}
