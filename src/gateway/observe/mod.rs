//! Observability: per-worker tallies of the per-request metrics ([`tally`]) and the Prometheus
//! exporter that sums them ([`exporter`]), OpenTelemetry tracing ([`trace`]) and the access log
//! ([`access_log`]), both written once per request by the [`observer`] from one per-request
//! context that the steps fill in.
//!
//! May use `config` only; every other room may use it.

pub(crate) mod access_log;
pub mod exporter;
pub(crate) mod observer;
pub mod tally;
pub(crate) mod trace;
