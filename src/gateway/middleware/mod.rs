//! Gateway middleware: one tower layer per file. This module only re-exports.

pub mod breaker;

pub use breaker::{Breaker, BreakerLayer};
