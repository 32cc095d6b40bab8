//! The request path, in order: [`intake`] (request id, path check, route match by [`router`]
//! and [`template`], deadline, body), the mount's middleware [`stack`], and [`dispatch`], the
//! innermost service that calls the upstream; WebSocket upgrades leave it at [`upgrade`]. The
//! routes' OpenAPI document is [`openapi`]'s.
//!
//! May use `transcode`, `upstream`, `observe`, `middleware`, `config` and the shared
//! vocabulary (`types`, `status`).

pub(crate) mod dispatch;
pub(crate) mod intake;
pub mod openapi;
pub mod router;
pub(crate) mod stack;
pub(crate) mod template;
pub(crate) mod upgrade;
