//! Gateway middleware, one file each. Auth, the rate limits (local, and shared through Redis,
//! whose decision awaits), circuit breaker and metrics are [`Policy`]s run by one service
//! ([`policy::Apply`]) that gives back what a dropped request took; the cache, which answers by
//! itself and coalesces misses around the inner call, is its own service. This module only
//! re-exports.

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod metrics;
pub mod policy;
pub mod ratelimit;
pub mod shared_limit;

pub use auth::{Auth, AuthLayer, Verifier};
pub use breaker::{Breaker, BreakerLayer, Breakers};
pub use cache::CacheLayer;
pub use metrics::{Metrics, MetricsLayer};
pub use policy::{Apply, Decision, MwFuture, Policy, PolicyLayer, Refusal};
pub use ratelimit::{GovernorStore, KeyStore, RateLimit, RateLimitLayer};
