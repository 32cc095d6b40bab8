//! Upstreams: the endpoints of each upstream and how one is chosen ([`pool`]), the lean gRPC
//! client over h2 ([`grpc`]), the HTTP/1.1 keep-alive pools over the lean client core ([`h1`]),
//! and the proxy's forwarding rules ([`forward`]: prefix, hop-by-hop headers, `Forwarded`);
//! a proxy route's WebSocket upgrades and the frame relay ([`ws`]).
//!
//! May use `observe` (latency tallies), `config` and the shared vocabulary; below the request
//! path and transcoding.

pub mod forward;
pub(crate) mod grpc;
pub(crate) mod h1;
pub(crate) mod inflight;
pub mod pool;
pub(crate) mod ws;

pub use pool::Upstream;
