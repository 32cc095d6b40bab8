//! The middleware stack of a mount, assembled in one place in request order (one comment per
//! layer), around the upstream call. Stack 0 (no middleware) serves the proxy routes.

use std::sync::Arc;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::config::{CacheConfig, GatewayConfig, Mount, RateLimitConfig};
use super::middleware::ratelimit::{Overrides, overrides};
use super::middleware::{
    Auth, Breaker, Breakers, CacheLayer, GovernorStore, KeyStore, Metrics, PolicyLayer, RateLimit,
    Verifier,
};
use super::types::{GatewayError, RouteService};

/// Middleware state shared by every mount's stack, built once per gateway.
#[derive(Debug)]
pub struct Shared {
    /// One breaker per upstream, by index.
    breakers: Arc<Vec<Arc<Breaker>>>,
    /// The JWT verifier (when any mount uses auth).
    verifier: Option<Arc<Verifier>>,
    /// The response cache settings.
    cache: Arc<CacheConfig>,
    /// The default rate-limit key store, shared by mounts without their own allowance.
    store: Arc<dyn KeyStore>,
    /// Per-key allowances that differ from the default.
    overrides: Overrides,
    /// Rate-limit settings (key, period).
    rate_limit: Arc<RateLimitConfig>,
}

impl Shared {
    /// The shared state for `cfg`, with a breaker for each of `upstreams` (by name).
    pub fn new<'a>(
        cfg: &GatewayConfig,
        upstreams: impl Iterator<Item = &'a str>,
    ) -> Result<Shared, GatewayError> {
        let rl = &cfg.rate_limit;
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
            cache: Arc::new(cfg.cache.clone()),
            store: Arc::new(GovernorStore::new(rl.rate, rl.per.0, rl.burst)),
            overrides: overrides(rl),
            rate_limit: Arc::new(rl.clone()),
        })
    }

    /// The key stores in use so far (the default one and the overrides'), for pruning.
    pub fn stores(&self) -> Vec<Arc<dyn KeyStore>> {
        std::iter::once(self.store.clone())
            .chain(self.overrides.values().cloned())
            .collect()
    }

    /// The key store of `mount`: its own when it sets a rate or a burst, else the shared one.
    /// A new store is added to `stores`.
    fn store_of(&self, mount: &Mount, stores: &mut Vec<Arc<dyn KeyStore>>) -> Arc<dyn KeyStore> {
        if mount.rate.is_none() && mount.burst.is_none() {
            return self.store.clone();
        }
        let base = &self.rate_limit;
        let own: Arc<dyn KeyStore> = Arc::new(GovernorStore::new(
            mount.rate.unwrap_or(base.rate),
            base.per.0,
            mount.burst.unwrap_or(base.burst),
        ));
        stores.push(own.clone());
        own
    }
}

/// Builds the stack for `mount` around `upstream` (normally the upstream call; benchmarks pass
/// an in-process stub), in request order. A store the mount creates is added to `stores`.
pub fn build(
    mount: &Mount,
    upstream: RouteService,
    shared: &Shared,
    stores: &mut Vec<Arc<dyn KeyStore>>,
) -> RouteService {
    let auth = mount.auth.then(|| {
        let verifier = shared.verifier.clone();
        PolicyLayer::new(Auth::new(
            verifier.expect("a verifier is built when a mount uses auth"),
        ))
    });
    let rate_limit = mount.rate_limit.then(|| {
        let store = shared.store_of(mount, stores);
        let overrides = shared.overrides.clone();
        PolicyLayer::new(RateLimit::new(store, overrides, shared.rate_limit.clone()))
    });
    // Each caching mount has its own cache (its routes' keys cannot collide with another mount's).
    let cache = mount.cache.then(|| CacheLayer::new(shared.cache.clone()));
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
