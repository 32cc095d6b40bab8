//! Gateway middleware: one tower layer per file. This module only re-exports.

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod metrics;
pub mod ratelimit;

pub use auth::{AuthLayer, Verifier};
pub use breaker::{Breaker, BreakerLayer};
pub use cache::CacheLayer;
pub use metrics::MetricsLayer;
pub use ratelimit::{GovernorStore, KeyStore, RateLimitLayer};

/// The future every middleware service returns: errors are already responses.
pub type MwFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<crate::gateway::GwResponse, std::convert::Infallible>,
            > + Send,
    >,
>;

/// Takes the inner service that `poll_ready` made ready, leaving a clone in its place (tower's
/// idiom for calling a cloned service from a boxed future).
pub(crate) fn take_ready<S: Clone>(slot: &mut S) -> S {
    let clone = slot.clone();
    std::mem::replace(slot, clone)
}
