//! Transcoding: a `google.api.http` rule's REST/JSON request → gRPC message and back
//! ([`method`], over the proto3 JSON mapping of `crate::proto`), server streams answered
//! message by message ([`stream`]), streaming RPCs over WebSocket ([`ws`]), and fan-out
//! aggregation ([`aggregate`]). The OpenAPI document of the same rules is `path::openapi`'s.
//!
//! May use `upstream`, `config` and the shared vocabulary; the request path uses it.

pub mod aggregate;
pub(crate) mod metadata;
pub mod method;
pub(crate) mod stream;
pub(crate) mod ws;

pub use method::{JsonOptions, MethodRoute};
