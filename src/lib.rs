//! gwbench: measure what an API gateway costs.
//!
//! The library holds everything; `src/main.rs` only parses the command line and maps errors to
//! exit codes. See `ARCHITECTURE.md` for the module map and data flow.

pub mod backend;
pub mod cli;
pub mod gateway;
pub mod grpc;
pub mod http1;
pub mod load;
pub mod net;
pub mod proto;
pub mod reflect;
pub mod report;
mod run;
pub mod stats;
pub mod ws;

pub use run::process;

pub use run::{exit_code, run};
