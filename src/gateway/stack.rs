//! The middleware stack of a mount, assembled in one place in request order (one comment per
//! layer), around the upstream call. Stack 0 (no middleware) serves the proxy routes.

use std::convert::Infallible;
use std::sync::Arc;

use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use super::middleware::{
    AuthLayer, Breaker, BreakerLayer, CacheLayer, KeyStore, MetricsLayer, RateLimitLayer, Verifier,
};
use super::{Core, GwRequest, RouteService};
use crate::config::Mount;

/// Shared middleware state, built once per gateway.
#[derive(Debug, Clone)]
pub struct Shared {
    /// One breaker per upstream, by index.
    pub breakers: Arc<Vec<Arc<Breaker>>>,
    /// The JWT verifier (when any mount uses auth).
    pub verifier: Option<Arc<Verifier>>,
    /// Every rate-limit store in use (the shared one and mounts' own), for pruning.
    pub stores: Arc<std::sync::Mutex<Vec<Arc<dyn KeyStore>>>>,
    /// The response cache settings.
    pub cache: Arc<crate::config::CacheConfig>,
    /// The rate-limit key store and its settings.
    pub rate_limit: (
        Arc<dyn KeyStore>,
        super::middleware::ratelimit::Overrides,
        Arc<crate::config::RateLimitConfig>,
    ),
}

/// The upstream call of `core` (transcode, proxy or aggregate) as the innermost service.
pub fn upstream(core: Arc<Core>) -> RouteService {
    BoxCloneSyncService::new(tower::service_fn(move |req: GwRequest| {
        let core = core.clone();
        async move { Ok::<_, Infallible>(core.call(req).await) }
    }))
}

/// Builds the stack for `mount` around `upstream` (normally [`upstream`]; benchmarks pass an
/// in-process stub), in request order.
pub fn build(mount: &Mount, upstream: RouteService, shared: &Shared) -> RouteService {
    let auth = mount.auth.then(|| {
        AuthLayer::new(
            shared
                .verifier
                .clone()
                .expect("a verifier is built when a mount uses auth"),
        )
    });
    let rate_limit = mount.rate_limit.then(|| {
        // A mount with its own rate or burst counts against its own store.
        let store: Arc<dyn KeyStore> = match (mount.rate, mount.burst) {
            (None, None) => shared.rate_limit.0.clone(),
            (rate, burst) => {
                let base = &shared.rate_limit.2;
                let nz = |v: u32| std::num::NonZeroU32::new(v.max(1)).expect("at least 1");
                let own: Arc<dyn KeyStore> = Arc::new(super::middleware::GovernorStore::new(
                    nz(rate.unwrap_or(base.rate)),
                    base.per.0,
                    nz(burst.unwrap_or(base.burst)),
                ));
                shared
                    .stores
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(own.clone());
                own
            }
        };
        RateLimitLayer::new(
            store,
            shared.rate_limit.1.clone(),
            shared.rate_limit.2.clone(),
        )
    });
    // Each caching mount has its own cache (its routes' keys cannot collide with another mount's).
    let cache = mount.cache.then(|| CacheLayer::new(shared.cache.clone()));
    let breaker = mount
        .breaker
        .then(|| BreakerLayer::new(shared.breakers.clone()));
    let stack = ServiceBuilder::new()
        // metrics: requests by route, method and status; latency by route; in flight
        .layer(MetricsLayer::default())
        // JWT auth: 401/403 before anything else; verified claims forwarded upstream
        .option_layer(auth)
        // rate limit per key (API key, JWT subject or client address): 429 when spent
        .option_layer(rate_limit)
        // response cache for GET: HIT answers here, concurrent misses make one upstream call
        .option_layer(cache)
        // circuit breaker of the route's upstream: fail fast with 503 while it is open
        .option_layer(breaker)
        // the upstream call: transcode or proxy, within the request's deadline
        .service(upstream);
    BoxCloneSyncService::new(stack)
}
