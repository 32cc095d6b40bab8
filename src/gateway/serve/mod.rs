//! Serving: the gateway on its ports. Listeners and the admin endpoint ([`server`]), the
//! per-core workers that each run a [`crate::gateway::Gateway`] of their own ([`workers`]),
//! configuration reload ([`reload`]) and drain at stop.
//!
//! May use every other room of the gateway (it is the top); nothing in the gateway uses it.

pub mod reload;
pub mod server;
pub mod workers;
