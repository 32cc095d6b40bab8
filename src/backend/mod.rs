//! Mock backends: a REST mock (hyper) and a gRPC mock (tonic) serving the same deterministic
//! data, N instances each, with behaviour knobs (latency, errors, stalls) that an admin endpoint
//! changes at run time. `gwbench backends` runs them; tests start them in-process on port 0.

pub mod admin;
pub mod behavior;
pub mod data;
pub mod grpc;
pub mod rest;
mod ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::HeaderValue;
use thiserror::Error;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::metadata::{Ascii, MetadataValue};

use crate::net::{self, BindError};
use behavior::{Behavior, Behaviors};

/// Default port of the (first) REST mock.
pub const DEFAULT_REST_PORT: u16 = 8081;
/// Default port of the (first) gRPC mock.
pub const DEFAULT_GRPC_PORT: u16 = 50051;
/// Default port of the mocks' shared admin endpoint.
pub const DEFAULT_ADMIN_PORT: u16 = 8082;

/// The wire protocol of a mock listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// REST/JSON over HTTP/1.1 or h2c.
    Rest,
    /// gRPC over h2c.
    Grpc,
}

impl Protocol {
    /// `rest` or `grpc`, as in the ready lines.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
        }
    }
}

/// One running mock instance: what it shares with its siblings and what is its own.
#[derive(Debug)]
pub struct Instance {
    /// REST or gRPC.
    pub protocol: Protocol,
    /// 0-based instance number within its protocol.
    pub index: usize,
    /// The behaviour table (shared by every instance).
    pub behaviors: Arc<Behaviors>,
    /// Requests this instance has received (including injected failures).
    pub requests: AtomicU64,
    index_header: HeaderValue,
    index_metadata: MetadataValue<Ascii>,
}

impl Instance {
    /// A fresh instance with no requests counted.
    pub fn new(protocol: Protocol, index: usize, behaviors: Arc<Behaviors>) -> Self {
        Instance {
            protocol,
            index,
            behaviors,
            requests: AtomicU64::new(0),
            index_header: HeaderValue::from(index),
            index_metadata: MetadataValue::from(index),
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct BackendsConfig {
    /// Address every listener binds to.
    pub host: IpAddr,
    /// Port of REST instance 0; instance i listens on `rest_port + i` (0 = free ports).
    pub rest_port: u16,
    /// Port of gRPC instance 0; likewise.
    pub grpc_port: u16,
    /// Port of the admin endpoint (0 = a free port).
    pub admin_port: u16,
    /// Instances of each mock.
    pub instances: usize,
    /// Start the REST mock.
    pub rest: bool,
    /// Start the gRPC mock.
    pub grpc: bool,
    /// Behaviour of every service at start.
    pub behavior: Behavior,
    /// Serving threads: 1 serves on the caller's runtime; N > 1 adds N - 1 threads, each a
    /// current-thread runtime with its own listeners on the same addresses (`SO_REUSEPORT`),
    /// serving the same instances (per-core serving, as the gateway's).
    pub workers: usize,
}

impl Default for BackendsConfig {
    fn default() -> Self {
        BackendsConfig {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            rest_port: DEFAULT_REST_PORT,
            grpc_port: DEFAULT_GRPC_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            instances: 1,
            rest: true,
            grpc: true,
            behavior: Behavior::default(),
            workers: 1,
        }
    }
}

impl BackendsConfig {
    /// The defaults, but every listener on a free port of 127.0.0.1 (for tests).
    pub fn ephemeral() -> Self {
        BackendsConfig {
            rest_port: 0,
            grpc_port: 0,
            admin_port: 0,
            ..Default::default()
        }
    }

    fn addrs(&self, base: u16, what: &str) -> Result<Vec<SocketAddr>, BackendError> {
        (0..self.instances)
            .map(|i| {
                let port = if base == 0 {
                    Some(0)
                } else {
                    u16::try_from(base as usize + i).ok()
                };
                port.map(|p| SocketAddr::new(self.host, p)).ok_or_else(|| {
                    BackendError::Config(format!(
                        "{what} instance {i} would need port {} (base {base} + {i}), above 65535",
                        base as usize + i
                    ))
                })
            })
            .collect()
    }
}

/// The mocks could not be started.
#[derive(Debug, Error)]
pub enum BackendError {
    /// The configuration is inconsistent.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// Running mock backends. Dropping this stops them (without waiting); [`Backends::shutdown`]
/// stops them and waits for in-flight requests.
#[derive(Debug)]
pub struct Backends {
    /// REST mock addresses, by instance.
    pub rest: Vec<SocketAddr>,
    /// gRPC mock addresses, by instance.
    pub grpc: Vec<SocketAddr>,
    /// The admin endpoint.
    pub admin: SocketAddr,
    /// The live behaviour table (the admin endpoint changes the same one).
    pub behaviors: Arc<Behaviors>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// One per extra worker thread: resolves when it has stopped.
    stopped: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Backends {
    /// Binds every listener (so that a port in use fails before anything is served), then starts
    /// serving.
    pub async fn start(cfg: &BackendsConfig) -> Result<Backends, BackendError> {
        check_plan(cfg)?;
        let listeners = Listeners::bind(cfg).await?;
        let behaviors = Arc::new(Behaviors::new(cfg.behavior));
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let mut instances = Vec::new();
        let mut rest = Vec::new();
        for (i, listener) in listeners.rest.into_iter().enumerate() {
            let addr = local_addr(&listener, "the REST mock")?;
            let inst = Arc::new(Instance::new(Protocol::Rest, i, behaviors.clone()));
            instances.push((addr, inst.clone()));
            let handler = move |req| rest::handle(inst.clone(), req);
            let limits = net::ServeLimits::default();
            tasks.push(net::serve_http(listener, handler, shutdown.clone(), limits));
            rest.push(addr);
        }
        let mut grpc = Vec::new();
        for (i, listener) in listeners.grpc.into_iter().enumerate() {
            let addr = local_addr(&listener, "the gRPC mock")?;
            let inst = Arc::new(Instance::new(Protocol::Grpc, i, behaviors.clone()));
            instances.push((addr, inst.clone()));
            let server = grpc::serve(listener, inst, shutdown.clone()).await;
            tasks.push(tokio::spawn(async move {
                if let Ok(Err(err)) = server.await {
                    tracing::error!(%err, "gRPC mock stopped with an error");
                }
            }));
            grpc.push(addr);
        }
        let stopped = match start_workers(cfg.workers, &instances, &shutdown).await {
            Ok(stopped) => stopped,
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        };
        let admin = local_addr(&listeners.admin, "the mocks' admin endpoint")?;
        let state = Arc::new(admin::AdminState {
            behaviors: behaviors.clone(),
            instances,
        });
        tasks.push(net::serve_http(
            listeners.admin,
            move |req| admin::handle(state.clone(), req),
            shutdown.clone(),
            net::ServeLimits::default(),
        ));
        Ok(Backends {
            rest,
            grpc,
            admin,
            behaviors,
            shutdown,
            tasks,
            stopped,
        })
    }

    /// One `ready <kind> <addr>` line per listener, in the order: REST instances, gRPC
    /// instances, admin.
    pub fn ready_lines(&self) -> Vec<String> {
        let rest = self.rest.iter().map(|a| format!("ready rest {a}"));
        let grpc = self.grpc.iter().map(|a| format!("ready grpc {a}"));
        rest.chain(grpc)
            .chain([format!("ready admin {}", self.admin)])
            .collect()
    }

    /// Stops accepting, lets in-flight requests finish (bounded by [`net::DRAIN_TIMEOUT`]), and
    /// returns when every server has stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let stopped = std::mem::take(&mut self.stopped);
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
            for s in stopped {
                let _ = s.await;
            }
        };
        // The HTTP servers bound their own drain; tonic's does not, so bound it here.
        let _ =
            tokio::time::timeout(net::DRAIN_TIMEOUT + std::time::Duration::from_secs(1), all).await;
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn local_addr(listener: &tokio::net::TcpListener, what: &str) -> Result<SocketAddr, BackendError> {
    listener.local_addr().map_err(|io| {
        BackendError::Bind(BindError {
            what: what.into(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            io,
        })
    })
}
/// Refuses what cannot be served: no instance, nothing enabled, or two listeners on one port
/// (instance i listens on base + i, so ranges can run into each other: with the defaults, REST
/// instance 1 would take the admin port 8082). Checked before anything is bound.
fn check_plan(cfg: &BackendsConfig) -> Result<(), BackendError> {
    if cfg.instances == 0 {
        return Err(BackendError::Config(
            "--instances must be at least 1".into(),
        ));
    }
    if !cfg.rest && !cfg.grpc {
        return Err(BackendError::Config(
            "nothing to serve: neither REST nor gRPC is enabled".into(),
        ));
    }
    let mut planned: Vec<(u16, String)> = Vec::new();
    for (on, base, what) in [
        (cfg.rest, cfg.rest_port, "REST mock"),
        (cfg.grpc, cfg.grpc_port, "gRPC mock"),
    ] {
        if on && base != 0 {
            for (i, a) in cfg.addrs(base, what)?.iter().enumerate() {
                planned.push((a.port(), format!("{what} instance {i}")));
            }
        }
    }
    if cfg.admin_port != 0 {
        planned.push((cfg.admin_port, "the admin endpoint".into()));
    }
    for (k, (port, who)) in planned.iter().enumerate() {
        if let Some((_, other)) = planned[..k].iter().find(|(p, _)| p == port) {
            return Err(BackendError::Config(format!(
                "port {port} would be used by both {other} and {who}; move one (--rest-port, --grpc-port, --admin-port, or 0 for free ports)"
            )));
        }
    }
    Ok(())
}

/// Every listener of the mocks, bound before any is served.
struct Listeners {
    rest: Vec<tokio::net::TcpListener>,
    grpc: Vec<tokio::net::TcpListener>,
    admin: tokio::net::TcpListener,
}

impl Listeners {
    async fn bind(cfg: &BackendsConfig) -> Result<Listeners, BackendError> {
        // Shared with the other workers' listeners only when there are other workers (and
        // never with another process's: checked first).
        let bind = |addr, what| async move {
            if cfg.workers > 1 {
                net::bind_shared_first(addr, what)
            } else {
                net::bind(addr, what).await
            }
        };
        let mut rest = Vec::new();
        if cfg.rest {
            for addr in cfg.addrs(cfg.rest_port, "REST mock")? {
                rest.push(bind(addr, "the REST mock").await?);
            }
        }
        let mut grpc = Vec::new();
        if cfg.grpc {
            for addr in cfg.addrs(cfg.grpc_port, "gRPC mock")? {
                grpc.push(bind(addr, "the gRPC mock").await?);
            }
        }
        let admin = net::bind(
            SocketAddr::new(cfg.host, cfg.admin_port),
            "the mocks' admin endpoint",
        )
        .await?;
        Ok(Listeners { rest, grpc, admin })
    }
}

// ===== per-core workers =====

/// Starts `workers - 1` more serving threads for `instances` (worker 0 is the caller's
/// runtime), one after another; each binds its listeners before the next starts. Fails with
/// the error of the first that cannot (the caller cancels `shutdown`, which stops the rest).
async fn start_workers(
    workers: usize,
    instances: &[(SocketAddr, Arc<Instance>)],
    shutdown: &CancellationToken,
) -> Result<Vec<tokio::sync::oneshot::Receiver<()>>, BackendError> {
    let mut stopped = Vec::new();
    for w in 1..workers {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (instances, stop) = (instances.to_vec(), shutdown.clone());
        std::thread::Builder::new()
            .name(format!("mock-worker-{w}"))
            .spawn(move || {
                worker(instances, stop, ready_tx);
                let _ = done_tx.send(());
            })
            .map_err(|e| BackendError::Config(format!("cannot start worker thread {w}: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => stopped.push(done_rx),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(BackendError::Config(format!(
                    "worker {w} stopped while starting"
                )));
            }
        }
    }
    Ok(stopped)
}

/// One extra worker's life on its own thread: a current-thread runtime, a listener beside each
/// of worker 0's, the same instances served until `shutdown`.
fn worker(
    instances: Vec<(SocketAddr, Arc<Instance>)>,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Result<(), BackendError>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(BackendError::Config(format!(
                "cannot build a worker's runtime: {e}"
            ))));
            return;
        }
    };
    rt.block_on(async move {
        let mut listeners = Vec::new();
        for (addr, inst) in instances {
            let what = match inst.protocol {
                Protocol::Rest => "the REST mock",
                Protocol::Grpc => "the gRPC mock",
            };
            match net::bind_shared(addr, what) {
                Ok(l) => listeners.push((l, inst)),
                Err(e) => {
                    let _ = ready.send(Err(e.into()));
                    return;
                }
            }
        }
        if ready.send(Ok(())).is_err() {
            return;
        }
        let mut tasks = Vec::new();
        for (listener, inst) in listeners {
            match inst.protocol {
                Protocol::Rest => {
                    let handler = move |req| rest::handle(inst.clone(), req);
                    let limits = net::ServeLimits::default();
                    tasks.push(net::serve_http(listener, handler, shutdown.clone(), limits));
                }
                Protocol::Grpc => {
                    let server = grpc::serve(listener, inst, shutdown.clone()).await;
                    tasks.push(tokio::spawn(async move {
                        if let Ok(Err(err)) = server.await {
                            tracing::error!(%err, "gRPC mock stopped with an error");
                        }
                    }));
                }
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}
