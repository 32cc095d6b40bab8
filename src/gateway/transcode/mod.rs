//! Transcoding: a `google.api.http` rule's REST/JSON request → gRPC message and back
//! ([`method`], over the proto3 JSON mapping of `crate::proto`), server streams answered
//! message by message ([`stream`]), streaming RPCs over WebSocket ([`ws`]), fan-out
//! aggregation ([`aggregate`]), and the OpenAPI document of the same rules ([`openapi`]).
//!
//! May use `upstream`, `config` and the shared vocabulary; the request path uses it.

pub mod aggregate;
pub(crate) mod metadata;
pub mod method;
pub mod openapi;
pub(crate) mod stream;
pub(crate) mod ws;

pub use method::{JsonOptions, MethodRoute};
