//! Configuration → a gateway's parts, as a list of named steps: the descriptor set, the
//! upstream pools, the route table (annotated RPCs, proxy prefixes, aggregations), the upstream
//! call, and one middleware stack per mount.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost_reflect::DescriptorPool;

use super::config::{GatewayConfig, Mount};
use super::middleware::KeyStore;
use super::path::dispatch::{self, Core};
use super::path::router::{ProxyTarget, Router};
use super::path::stack::{self, Shared};
use super::transcode::aggregate::Aggregation;
use super::transcode::method::JsonOptions;
use super::types::{GatewayError, RouteService};
use super::upstream::pool::Upstream;

/// What [`super::Gateway`] is made of.
pub(super) struct Parts {
    pub(super) router: Router,
    pub(super) stacks: Vec<RouteService>,
    pub(super) rate_limit_stores: Vec<Arc<dyn KeyStore>>,
    pub(super) transcode_upstream: usize,
    pub(super) transcode_timeout: Duration,
}

/// What every worker of one gateway shares: its descriptors and its middleware state.
#[derive(Debug, Clone)]
pub struct Common {
    pub(super) pool: DescriptorPool,
    pub(super) shared: Arc<Shared>,
    /// `[access_log]`, when on: one writer for every worker.
    pub(super) access_log: Option<Arc<super::observe::access_log::AccessLog>>,
    /// `[tracing]`, when an OTLP endpoint is set: one tracer for every worker.
    pub(super) tracing: Option<Arc<super::observe::trace::Tracing>>,
}

use super::observe::observer::Observer;

impl Common {
    /// The observer every worker's requests share (access log and tracer).
    pub(super) fn observer(&self) -> Observer {
        Observer::new(self.access_log.clone(), self.tracing.clone())
    }

    /// The descriptors (`reflected`, or as the config says) and the middleware state of `cfg`.
    /// After a reload (`before`: the configuration and observer serving until now), an access
    /// log or tracer whose settings did not change is kept, not opened again: one writer and
    /// one exporter, however many reloads.
    pub(super) fn new(
        cfg: &GatewayConfig,
        reflected: Option<DescriptorPool>,
        before: Option<(&GatewayConfig, &Observer)>,
    ) -> Result<Common, GatewayError> {
        use super::observe::{access_log::AccessLog, trace::Tracing};
        fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
            serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
        }
        let access_log = match before {
            Some((old, obs)) if same(&old.access_log, &cfg.access_log) => obs.access_log(),
            _ => AccessLog::open(&cfg.access_log)?,
        };
        let tracing = match before {
            Some((old, obs)) if same(&old.tracing, &cfg.tracing) => obs.tracing(),
            _ => Tracing::open(&cfg.tracing)?,
        };
        Ok(Common {
            pool: descriptor_pool(cfg, reflected)?,
            shared: Arc::new(Shared::new(cfg)?),
            access_log,
            tracing,
        })
    }
}

/// Builds the parts of a gateway from `cfg` over `common`; `inner` replaces the upstream call
/// when given. The upstream pools are this gateway's own.
pub(super) fn assemble(
    cfg: &GatewayConfig,
    inner: Option<RouteService>,
    common: &Common,
) -> Result<Parts, GatewayError> {
    let pool = &common.pool;
    let upstreams = cfg
        .upstreams
        .iter()
        .map(Upstream::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(GatewayError)?;
    let index_of = |name: &str| {
        upstreams
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| GatewayError(format!("no upstream {name}")))
    };
    let router = routes(cfg, pool, &index_of)?;
    let transcode_upstream = index_of(&cfg.transcode.upstream)?;
    let shared = &common.shared;
    let inner = inner.unwrap_or_else(|| {
        let core = core(cfg, upstreams)
            .tracing(common.tracing.clone())
            .observing(common.access_log.is_some() || common.tracing.is_some());
        dispatch::service(Arc::new(core))
    });
    let rate_limit_stores = shared.stores();
    // Stack 0 (no middleware) serves proxy routes and aggregations; mount i is served by
    // stack i + 1.
    let bare = Mount::default();
    let stacks = std::iter::once(&bare)
        .chain(&cfg.transcode.mounts)
        .enumerate()
        .map(|(i, m)| stack::build(m, i.checked_sub(1), inner.clone(), shared))
        .collect();
    Ok(Parts {
        router,
        stacks,
        rate_limit_stores,
        transcode_upstream,
        transcode_timeout: cfg.transcode.timeout.0,
    })
}

/// The descriptor set routes are read from: the configured file, the upstream's (reflected),
/// or the embedded one.
fn descriptor_pool(
    cfg: &GatewayConfig,
    reflected: Option<DescriptorPool>,
) -> Result<DescriptorPool, GatewayError> {
    let mut pool = match reflected {
        Some(pool) => pool,
        None => user_pool(cfg)?,
    };
    with_rpc_status(&mut pool)?;
    Ok(pool)
}

/// Adds google.rpc.Status and the standard error detail types (with the well-known types they
/// use) to `pool` when it lacks them, so that an error's typed details (grpc-status-details-bin)
/// are decoded and rendered as JSON whatever the user's protos.
fn with_rpc_status(pool: &mut DescriptorPool) -> Result<(), GatewayError> {
    for name in [
        "google/protobuf/any.proto",
        "google/protobuf/duration.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
    ] {
        if pool.get_file_by_name(name).is_some() {
            continue;
        }
        let Some(file) = crate::proto::descriptor_pool().get_file_by_name(name) else {
            continue;
        };
        pool.add_file_descriptor_proto(file.file_descriptor_proto().clone())
            .map_err(|e| GatewayError(format!("cannot add {name} to the descriptor set: {e}")))?;
    }
    Ok(())
}

/// The descriptor set the config names, compiles or embeds.
fn user_pool(cfg: &GatewayConfig) -> Result<DescriptorPool, GatewayError> {
    let t = &cfg.transcode;
    if t.reflect {
        return Err(GatewayError(
            "transcode.reflect asks the upstream at start (Gateway::connect, gateway --reflect)"
                .into(),
        ));
    }
    match (&t.descriptor_set, t.protos.is_empty()) {
        (Some(_), false) => Err(GatewayError(
            "transcode.descriptor_set and transcode.protos (--descriptor-set and --proto) \
             are alternatives: give one"
                .into(),
        )),
        (Some(path), true) => crate::proto::load_descriptor_set(path)
            .map_err(|e| GatewayError(format!("transcode.descriptor_set {e}"))),
        (None, false) => crate::proto::compile_protos(&t.protos, &t.proto_paths)
            .map_err(|e| GatewayError(format!("transcode.protos: {e}"))),
        (None, true) => Ok(crate::proto::descriptor_pool().clone()),
    }
}

/// The route table: every mount's annotated RPCs, then proxy prefixes, then aggregations.
fn routes(
    cfg: &GatewayConfig,
    pool: &DescriptorPool,
    index_of: &dyn Fn(&str) -> Result<usize, GatewayError>,
) -> Result<Router, GatewayError> {
    let mut router = Router::new();
    let mut paths = HashMap::new();
    for (mount, m) in cfg.transcode.mounts.iter().enumerate() {
        let at = super::path::router::Mount {
            prefix: &m.prefix,
            only: m.rpcs.as_deref(),
            strict: cfg.transcode.strict,
        };
        router
            .add_annotated(pool, &at, mount + 1, &mut paths)
            .map_err(|e| GatewayError(format!("transcode: {e}")))?;
    }
    for p in &cfg.proxy {
        let target = ProxyTarget {
            prefix: p.prefix.clone(),
            strip: p.strip_prefix.clone(),
            upstream: index_of(&p.upstream)?,
            timeout: p.timeout.0,
        };
        router
            .add_proxy(target, &p.upstream, 0, &mut paths)
            .map_err(GatewayError)?;
    }
    for a in &cfg.aggregations {
        let agg = Aggregation::new(a, pool).map_err(GatewayError)?;
        router
            .add_aggregate(Arc::new(agg), 0, &mut paths)
            .map_err(GatewayError)?;
    }
    Ok(router)
}

/// The upstream call over `upstreams`, with the transcoder's JSON options.
fn core(cfg: &GatewayConfig, upstreams: Vec<Upstream>) -> Core {
    let t = &cfg.transcode;
    let mut json = JsonOptions::new(
        t.proto_field_names,
        t.emit_defaults,
        t.reject_unknown_fields,
    );
    json.errors = t.error_format;
    json.stream = t.stream_format;
    // Validated as header names by the config.
    let forward = t
        .forward_headers
        .iter()
        .filter_map(|h| http::HeaderName::try_from(h.as_str()).ok())
        .collect();
    let w = &cfg.websocket;
    let gate = crate::gateway::path::upgrade::Gate::new(w.limits(), w.max_connections);
    Core::new(upstreams, json)
        .forwarding(forward)
        .websocket(gate)
}
