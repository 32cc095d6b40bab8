//! Puts the gateway on its ports: the REST/JSON listener (HTTP/1.1 and h2c) and the admin
//! listener (`GET /healthz`, `GET /routes`, `GET /metrics`), with graceful shutdown that stops accepting and lets
//! in-flight requests finish (bounded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::reload::{Reload, Slot};
use crate::gateway::config::{GatewayConfig, Http1Server};
use crate::gateway::{Gateway, GatewayError};
use crate::net::{self, BindError};

/// A gateway that could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Routes or upstreams are wrong.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// A running gateway. Dropping it stops it without waiting; [`GatewayServer::shutdown`] drains.
#[derive(Debug)]
pub struct GatewayServer {
    /// The REST/JSON listener.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The gateway's reload (and through it, the gateway serving now).
    pub reload: Arc<Reload>,
    drain: Duration,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

/// The admin endpoint: `/healthz`, `/metrics` (Prometheus text), `/routes`, `POST /reload`.
async fn admin_page<B>(reload: &Reload, req: &http::Request<B>) -> http::Response<net::Body> {
    if (req.method(), req.uri().path()) == (&Method::POST, "/reload") {
        // The only admin request that changes state: never on behalf of another origin's page.
        if let Some(refused) = net::cross_origin_refusal(req.headers()) {
            return refused;
        }
        return match reload.reload().await {
            Ok(done) => {
                tracing::info!(
                    routes = done.routes,
                    "configuration reloaded (POST /reload)"
                );
                net::json(
                    StatusCode::OK,
                    serde_json::json!({ "reloaded": done }).to_string(),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused (POST /reload); the old configuration stays");
                net::json_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("reload refused, the old configuration stays: {e}"),
                )
            }
        };
    }
    let gw = reload.current();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => net::json(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, "/metrics") => {
            let mut resp = net::json(StatusCode::OK, crate::gateway::observe::exporter::render());
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        (&Method::GET, "/routes") => net::json(
            StatusCode::OK,
            serde_json::json!({ "routes": gw.routes(), "skipped": gw.skipped_rules() }).to_string(),
        ),
        (_, path) => net::json_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("no admin route for {path}"),
        ),
    }
}

/// What runs beside the request listeners, once per gateway (whatever the serving model): the
/// admin endpoint on `listener`, key pruning and the metrics upkeep, until `shutdown`.
pub(super) fn serve_admin_and_upkeep(
    cfg: &GatewayConfig,
    listener: tokio::net::TcpListener,
    reload: &Arc<Reload>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let r = reload.clone();
    let admin = net::serve_http(
        listener,
        move |req| {
            let r = r.clone();
            async move { admin_page(&r, &req).await }
        },
        shutdown.clone(),
        cfg.limits.serve_limits(),
    );
    // Forget idle rate-limit keys, so memory follows the active keys only (the stores of the
    // gateway serving now: a reload brings its own).
    let r = reload.clone();
    let pruner = every(cfg.rate_limit.prune_every.0, shutdown.clone(), move || {
        r.current()
            .rate_limit_stores()
            .iter()
            .for_each(|s| s.prune())
    });
    // The Prometheus recorder keeps every histogram sample until they are drained into the
    // summaries (a scrape drains them too): unscraped, memory grew ~45 bytes per request.
    let upkeep = every(Duration::from_secs(1), shutdown.clone(), || {
        if let Some(h) = crate::gateway::observe::exporter::handle() {
            h.run_upkeep();
        }
    });
    vec![admin, pruner, upkeep]
}

/// Serves the gateway's requests on `listener` until `shutdown`: over TLS by hyper, else
/// HTTP/1.1 by the server `[listen] http1` names (h2c by hyper either way).
pub(super) fn serve_requests<H, F>(
    cfg: &GatewayConfig,
    (listener, limits): (tokio::net::TcpListener, net::ServeLimits),
    handler: H,
    shutdown: &CancellationToken,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> JoinHandle<()>
where
    H: Fn(http::Request<net::ReqBody>, Option<SocketAddr>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = crate::gateway::GwResponse> + Send + 'static,
{
    let shutdown = shutdown.clone();
    if let (None, Http1Server::Lean) = (&tls, cfg.listen.http1) {
        let lean = move |req, peer| handler(req, Some(peer));
        return net::serve_lean(listener, lean, shutdown, limits);
    }
    // hyper's requests carry the peer in their extensions.
    let by_hyper = move |req: http::Request<hyper::body::Incoming>| {
        handler(req.map(http_body_util::Either::Left), None)
    };
    match tls {
        Some(tls) => net::serve_https(listener, by_hyper, shutdown, limits, tls),
        None => net::serve_http(listener, by_hyper, shutdown, limits),
    }
}

/// `ready http ADDR` and `ready admin ADDR`.
pub(super) fn ready_lines(http: SocketAddr, admin: SocketAddr) -> Vec<String> {
    vec![format!("ready http {http}"), format!("ready admin {admin}")]
}

/// Runs `task` every `period` (the first time after one period) until `stop`.
fn every(
    period: Duration,
    stop: CancellationToken,
    mut task: impl FnMut() + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => task(),
            }
        }
    })
}

impl GatewayServer {
    /// Builds the gateway, binds both listeners (failing before serving anything), and serves.
    pub async fn start(cfg: &GatewayConfig) -> Result<GatewayServer, StartError> {
        let slot: Slot = Arc::new(arc_swap::ArcSwap::from_pointee(
            Gateway::connect(cfg).await?,
        ));
        let reload = Arc::new(Reload::new(vec![slot.clone()], cfg.clone()));
        let http_listener = net::bind(cfg.listen.http, "the gateway").await?;
        let admin_listener = net::bind(cfg.listen.admin, "the gateway's admin endpoint").await?;
        let local = |l: &tokio::net::TcpListener, addr| l.local_addr().unwrap_or(addr);
        let (http, admin) = (
            local(&http_listener, cfg.listen.http),
            local(&admin_listener, cfg.listen.admin),
        );
        let tls = listener_tls(cfg)?;
        let shutdown = CancellationToken::new();
        // Each request takes the gateway current when it arrives, and finishes on it.
        let handler = move |req: http::Request<net::ReqBody>, peer| {
            let gw = slot.load_full();
            async move { gw.handle_from(req, peer).await }
        };
        let limits = cfg.limits.serve_limits();
        let main = serve_requests(cfg, (http_listener, limits), handler, &shutdown, tls);
        let mut tasks = vec![main];
        tasks.extend(serve_admin_and_upkeep(
            cfg,
            admin_listener,
            &reload,
            &shutdown,
        ));
        // Request deadlines then register without waking the I/O driver (see the function).
        tasks.push(net::keep_timer_armed(
            Duration::from_millis(50),
            shutdown.clone(),
        ));
        Ok(GatewayServer {
            http,
            admin,
            reload,
            drain: cfg.limits.drain_timeout.0,
            shutdown,
            tasks,
        })
    }

    /// `ready http ADDR` and `ready admin ADDR`.
    pub fn ready_lines(&self) -> Vec<String> {
        ready_lines(self.http, self.admin)
    }

    /// The gateway serving now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.reload.current()
    }

    /// Stops accepting, lets in-flight requests finish (bounded), returns when stopped.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        let _ = tokio::time::timeout(self.drain + Duration::from_secs(1), all).await;
    }
}

impl Drop for GatewayServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The REST/JSON listener's TLS from `[listen.tls]`, if any; a certificate or key that does not
/// load fails the start, naming the file.
pub(super) fn listener_tls(
    cfg: &GatewayConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    cfg.listen
        .tls
        .as_ref()
        .map(|t| net::tls::server_config(&t.cert, &t.key, t.client_ca.as_deref()))
        .transpose()
        .map_err(|e| StartError::Gateway(GatewayError(format!("[listen.tls]: {e}"))))
}
