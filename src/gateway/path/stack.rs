//! The middleware stack of a mount, assembled in one place in request order (one comment per
//! layer), around the upstream call. Stack 0 (no middleware) serves the proxy routes.

use std::sync::Arc;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use tower::util::Either;

use crate::gateway::config::{GatewayConfig, Mount, RateLimitConfig, RateLimitStore};
use crate::gateway::middleware::ratelimit::{Overrides, overrides};
use crate::gateway::middleware::shared_limit::{
    RedisLimiter, Scope, SharedLimit, SharedLimitLayer,
};
use crate::gateway::middleware::{
    Auth, Breaker, Breakers, CacheLayer, GovernorStore, KeyStore, Metrics, PolicyLayer, RateLimit,
    Verifier,
};
use crate::gateway::types::{GatewayError, RouteService};

/// Middleware state shared by every mount's stack, built once per gateway and shared by its
/// workers: limits, breakers and caches are the gateway's, whichever worker serves a request.
#[derive(Debug)]
pub(crate) struct Shared {
    /// One breaker per upstream, by index.
    breakers: Arc<Vec<Arc<Breaker>>>,
    /// The JWT verifier (when any mount uses auth).
    verifier: Option<Arc<Verifier>>,
    /// The default rate-limit key store, shared by mounts without their own allowance.
    store: Arc<dyn KeyStore>,
    /// Per-key allowances that differ from the default.
    overrides: Overrides,
    /// Rate-limit settings (key, period).
    rate_limit: Arc<RateLimitConfig>,
    /// Per mount (`[[transcode.mounts]]`, by index): its own key store when it sets a rate or
    /// a burst.
    mount_stores: Vec<Option<Arc<dyn KeyStore>>>,
    /// Per mount: its response cache when it caches (a mount's keys cannot collide with
    /// another's).
    caches: Vec<Option<CacheLayer>>,
    /// With `store = "redis"`: the shared store and its allowances (default, per mount,
    /// overrides), used instead of the local stores above.
    shared_limits: Option<SharedLimits>,
}

/// The Redis-backed allowances.
#[derive(Debug)]
struct SharedLimits {
    limiter: Arc<RedisLimiter>,
    default: Arc<Scope>,
    mounts: Vec<Option<Arc<Scope>>>,
    overrides: Arc<std::collections::HashMap<String, Arc<Scope>>>,
}

impl SharedLimits {
    fn new(cfg: &GatewayConfig) -> Result<SharedLimits, GatewayError> {
        let rl = &cfg.rate_limit;
        let n = rl.redis.instances;
        let limiter = Arc::new(RedisLimiter::new(&rl.redis).map_err(GatewayError)?);
        let mounts = cfg
            .transcode
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                (m.rate.is_some() || m.burst.is_some()).then(|| {
                    Arc::new(Scope::new(
                        &format!("mount{i}"),
                        m.rate.unwrap_or(rl.rate),
                        rl.per.0,
                        m.burst.unwrap_or(rl.burst),
                        n,
                        rl.max_keys,
                    ))
                })
            })
            .collect();
        let overrides = rl
            .overrides
            .iter()
            .map(|o| {
                let scope = Scope::new(
                    &format!("override:{}", o.key),
                    o.rate,
                    o.per.0,
                    o.burst,
                    n,
                    1,
                );
                (o.key.clone(), Arc::new(scope))
            })
            .collect();
        Ok(SharedLimits {
            limiter,
            default: Arc::new(Scope::new(
                "default",
                rl.rate,
                rl.per.0,
                rl.burst,
                n,
                rl.max_keys,
            )),
            mounts,
            overrides: Arc::new(overrides),
        })
    }

    fn stores(&self) -> impl Iterator<Item = Arc<dyn KeyStore>> + '_ {
        std::iter::once(self.default.fallback())
            .chain(self.mounts.iter().flatten().map(|s| s.fallback()))
            .chain(self.overrides.values().map(|s| s.fallback()))
    }
}

impl Shared {
    /// The shared state for `cfg`, with a breaker for each of its upstreams (by name).
    pub(crate) fn new(cfg: &GatewayConfig) -> Result<Shared, GatewayError> {
        let upstreams = cfg.upstreams.iter().map(|u| u.name.as_str());
        let rl = &cfg.rate_limit;
        let cache = Arc::new(cfg.cache.clone());
        let mount_stores = cfg
            .transcode
            .mounts
            .iter()
            .map(|m| {
                (m.rate.is_some() || m.burst.is_some()).then(|| {
                    Arc::new(GovernorStore::new(
                        m.rate.unwrap_or(rl.rate),
                        rl.per.0,
                        m.burst.unwrap_or(rl.burst),
                        rl.max_keys,
                    )) as Arc<dyn KeyStore>
                })
            })
            .collect();
        let caches = cfg
            .transcode
            .mounts
            .iter()
            .map(|m| m.cache.then(|| CacheLayer::new(cache.clone())))
            .collect();
        let verifier = match cfg.transcode.mounts.iter().any(|m| m.auth) {
            true => Some(Arc::new(Verifier::new(&cfg.auth).map_err(GatewayError)?)),
            false => None,
        };
        Ok(Shared {
            breakers: Arc::new(
                upstreams
                    .map(|name| Arc::new(Breaker::new(name, cfg.breaker.clone())))
                    .collect(),
            ),
            verifier,
            store: Arc::new(GovernorStore::new(rl.rate, rl.per.0, rl.burst, rl.max_keys)),
            overrides: overrides(rl),
            rate_limit: Arc::new(rl.clone()),
            mount_stores,
            caches,
            shared_limits: match rl.store {
                RateLimitStore::Redis => Some(SharedLimits::new(cfg)?),
                RateLimitStore::Local => None,
            },
        })
    }

    /// Every key store (the default one, the overrides' and the mounts' own), for pruning.
    pub(crate) fn stores(&self) -> Vec<Arc<dyn KeyStore>> {
        let local = std::iter::once(self.store.clone())
            .chain(self.overrides.values().cloned())
            .chain(self.mount_stores.iter().flatten().cloned());
        match &self.shared_limits {
            Some(s) => local.chain(s.stores()).collect(),
            None => local.collect(),
        }
    }

    /// The key store of mount `i`: its own when it sets a rate or a burst, else the shared one.
    fn store_of(&self, i: Option<usize>) -> Arc<dyn KeyStore> {
        i.and_then(|i| self.mount_stores.get(i).cloned().flatten())
            .unwrap_or_else(|| self.store.clone())
    }
}

/// Builds the stack for `mount` (`[[transcode.mounts]]` number `index`; None for the bare
/// stack of proxy routes) around `upstream` (normally the upstream call; benchmarks pass an
/// in-process stub), in request order.
pub(crate) fn build(
    mount: &Mount,
    index: Option<usize>,
    upstream: RouteService,
    shared: &Shared,
) -> RouteService {
    let auth = mount.auth.then(|| {
        let verifier = shared.verifier.clone();
        PolicyLayer::new(Auth::new(
            verifier.expect("a verifier is built when a mount uses auth"),
        ))
    });
    let rate_limit = mount.rate_limit.then(|| match &shared.shared_limits {
        // Shared through Redis: the mount's own allowance, or the default one.
        Some(s) => Either::Right(SharedLimitLayer::new(SharedLimit::new(
            s.limiter.clone(),
            index
                .and_then(|i| s.mounts.get(i).cloned().flatten())
                .unwrap_or_else(|| s.default.clone()),
            s.overrides.clone(),
            shared.rate_limit.clone(),
        ))),
        None => {
            let store = shared.store_of(index);
            let overrides = shared.overrides.clone();
            Either::Left(PolicyLayer::new(RateLimit::new(
                store,
                overrides,
                shared.rate_limit.clone(),
            )))
        }
    });
    let cache = index.and_then(|i| shared.caches.get(i).cloned().flatten());
    let breaker = mount
        .breaker
        .then(|| PolicyLayer::new(Breakers::new(shared.breakers.clone())));
    let stack = ServiceBuilder::new()
        // metrics: requests by route, method and status; latency by route; in flight
        .layer(PolicyLayer::new(Metrics::new()))
        // JWT auth: 401/403 before anything else; verified claims forwarded upstream
        .option_layer(auth)
        // rate limit per key (API key, JWT subject or client address): 429 when spent
        .option_layer(rate_limit)
        // response cache for GET: HIT answers here, concurrent misses make one upstream call
        .option_layer(cache)
        // circuit breaker of the route's upstream: fail fast with 503 while it is open
        .option_layer(breaker)
        // the upstream call: transcode, aggregate or proxy, within the request's deadline
        .service(upstream);
    BoxCloneSyncService::new(stack)
}
