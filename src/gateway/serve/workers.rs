//! Thread-per-core serving (`gateway --runtime per-core`, the default): N workers, each one OS
//! thread running a current-thread tokio runtime with its own `SO_REUSEPORT` listener on the
//! same address (one accept queue per worker, balanced by the kernel), its own route table and
//! its own upstream pools and connections, as Envoy's workers and pingora without work stealing
//! do. What must be the gateway's as a whole is shared ([`Common`]): descriptors, rate-limit
//! stores, breakers, caches, and the metrics recorder. A request never leaves the thread that
//! accepted its connection, so no task is woken across threads.
//!
//! The admin listener and the periodic upkeep (key pruning, metrics) run on the caller's runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reload::{Reload, Slot};
use super::server::{StartError, ready_lines, serve_admin_and_upkeep, serve_requests};
use crate::gateway::assemble::Common;
use crate::gateway::config::GatewayConfig;
use crate::gateway::{Gateway, GatewayError};
use crate::net;

/// A running gateway on N worker threads. Dropping it stops it without waiting;
/// [`Workers::shutdown`] drains.
#[derive(Debug)]
pub struct Workers {
    /// The REST/JSON address every worker listens on.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The workers' reload (and through it, the gateway serving now).
    pub reload: Arc<Reload>,
    /// How many workers serve.
    pub workers: usize,
    drain: Duration,
    shutdown: CancellationToken,
    stopped: Vec<tokio::sync::oneshot::Receiver<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Builds the shared state, starts `n` workers one after another (each binds before the
    /// next starts, so port 0 becomes one port for all), then the admin listener. Fails, with
    /// every started worker stopped, if any worker cannot build or bind.
    pub async fn start(cfg: &GatewayConfig, n: usize) -> Result<Workers, StartError> {
        let n = n.max(1);
        let common = Gateway::common(cfg).await?;
        let shutdown = CancellationToken::new();
        let mut limits = cfg.limits.serve_limits();
        // The connection cap is the gateway's: each worker takes its share.
        limits.max_connections = (limits.max_connections / n).max(16);
        let tls = super::server::listener_tls(cfg)?;
        let mut addr = cfg.listen.http;
        let (mut stopped, mut slots) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let (cfg, common, stop, tls) =
                (cfg.clone(), common.clone(), shutdown.clone(), tls.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("gw-worker-{i}"))
                .spawn(move || {
                    let bind = match i {
                        0 => net::bind_shared_first,
                        _ => net::bind_shared,
                    };
                    worker(&cfg, &common, (addr, bind), limits, tls, stop, ready_tx);
                    let _ = done_tx.send(());
                });
            let failed = match spawned {
                Err(e) => Some(StartError::Gateway(GatewayError(format!(
                    "cannot start worker thread {i}: {e}"
                )))),
                Ok(_) => match ready_rx.await {
                    Ok(Ok((bound, slot))) => {
                        addr = bound;
                        slots.push(slot);
                        stopped.push(done_rx);
                        None
                    }
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(StartError::Gateway(GatewayError(format!(
                        "worker {i} stopped while starting"
                    )))),
                },
            };
            if let Some(e) = failed {
                shutdown.cancel();
                for s in stopped {
                    let _ = s.await;
                }
                return Err(e);
            }
        }
        if slots.is_empty() {
            return Err(GatewayError("no worker started".into()).into());
        }
        let reload = Arc::new(Reload::new(slots, cfg.clone()));
        let admin_listener = net::bind(cfg.listen.admin, "the gateway's admin endpoint").await?;
        let admin = admin_listener.local_addr().unwrap_or(cfg.listen.admin);
        // Worker 0's gateway holds the shared stores, so its pruning covers every worker.
        let tasks = serve_admin_and_upkeep(cfg, admin_listener, &reload, &shutdown);
        Ok(Workers {
            http: addr,
            admin,
            reload,
            workers: n,
            drain: cfg.limits.drain_timeout.0,
            shutdown,
            stopped,
            tasks,
        })
    }

    /// The gateway worker 0 serves now (every worker's route table is the same).
    pub fn gateway(&self) -> Arc<Gateway> {
        self.reload.current()
    }

    /// `ready http ADDR` and `ready admin ADDR`.
    pub fn ready_lines(&self) -> Vec<String> {
        ready_lines(self.http, self.admin)
    }

    /// Stops accepting on every worker, lets in-flight requests finish (bounded), returns when
    /// the workers have stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let stopped = std::mem::take(&mut self.stopped);
        let tasks = std::mem::take(&mut self.tasks);
        let all = async {
            for s in stopped {
                let _ = s.await;
            }
            for t in tasks {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(self.drain + Duration::from_secs(1), all).await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

type Ready = Result<(SocketAddr, Slot), StartError>;

/// How a worker binds: the first checks that no other process holds the port.
type Bind = fn(SocketAddr, &str) -> Result<tokio::net::TcpListener, net::BindError>;

/// One worker's life on its own thread: its runtime, gateway and listener; says when it is
/// listening (or why it cannot), serves until `shutdown`, drains.
fn worker(
    cfg: &GatewayConfig,
    common: &Common,
    (addr, bind): (SocketAddr, Bind),
    limits: net::ServeLimits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Ready>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StartError::Gateway(GatewayError(format!(
                "cannot build a worker's runtime: {e}"
            )))));
            return;
        }
    };
    rt.block_on(async move {
        let started = Gateway::worker(cfg, common)
            .map_err(StartError::from)
            .and_then(|gw| Ok((gw, bind(addr, "the gateway")?)));
        let (gateway, listener) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let slot: Slot = Arc::new(arc_swap::ArcSwap::from_pointee(gateway));
        let bound = listener.local_addr().unwrap_or(addr);
        if ready.send(Ok((bound, slot.clone()))).is_err() {
            return;
        }
        // Each request takes the gateway current when it arrives (a reload swaps it), and
        // finishes on it.
        let handler = move |req: http::Request<net::ReqBody>, peer| {
            let gw = slot.load_full();
            async move { gw.handle_from(req, peer).await }
        };
        let main = serve_requests(cfg, (listener, limits), handler, &shutdown, tls);
        let armed = net::keep_timer_armed(Duration::from_millis(50), shutdown);
        let _ = main.await;
        let _ = armed.await;
    });
}
