//! Gateway middleware: one tower layer per file. This module only re-exports.

pub mod auth;
pub mod breaker;
pub mod ratelimit;

pub use auth::{AuthLayer, Verifier};
pub use breaker::{Breaker, BreakerLayer};
pub use ratelimit::{GovernorStore, KeyStore, RateLimitLayer};
