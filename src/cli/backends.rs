//! `gwbench backends`: the mocks' flags.

use std::net::IpAddr;

use super::ServingModel;
use clap::{Args, ValueEnum};

use crate::backend::behavior::{self, Behavior, Latency, Stall};
use crate::backend::{BackendsConfig, DEFAULT_ADMIN_PORT, DEFAULT_GRPC_PORT, DEFAULT_REST_PORT};

pub(super) const BACKENDS_EXAMPLES: &str = "\
Examples:
  gwbench backends
  gwbench backends --instances 2 --latency lognormal:1ms,0.5 --error-rate 0.01
  gwbench backends --rest-port 0 --grpc-port 0 --admin-port 0   # free ports, see the ready lines

When every listener is up, one line per listener is printed on stdout:
  ready rest 127.0.0.1:8081
  ready grpc 127.0.0.1:50051
  ready admin 127.0.0.1:8082

Change behaviour at run time through the admin endpoint (JSON; only named fields change;
changes need Content-Type: application/json and are refused from another Origin):
  curl -X POST localhost:8082/admin/behavior --json '{\"latency\": \"fixed:5ms\"}'
  curl -X POST localhost:8082/admin/behavior/orders --json '{\"error_rate\": 1.0}'
  curl localhost:8082/admin/behavior
  curl -X DELETE localhost:8082/admin/behavior

Services: users, orders, products, inventory (REST paths /api/users/{id}, /api/users,
/api/orders/{id}, /api/orders?user_id=N, /api/products/{id}, /api/products/search?q=kettle,
/api/inventory/{product_id}; gRPC gwbench.v1.UserService etc. and grpc.health.v1).
Ids 1..=1000000 exist; others answer NOT_FOUND / 404. Orders have ids ord-<user>-<1..20>.";

/// Which mocks `gwbench backends` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Serve {
    /// REST and gRPC.
    Both,
    /// Only the REST mock.
    Rest,
    /// Only the gRPC mock.
    Grpc,
}

/// `gwbench backends`.
#[derive(Debug, Args)]
pub struct BackendsArgs {
    /// Address every listener binds to.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub host: IpAddr,
    /// Port of REST instance 0; instance i listens on PORT + i (0 = free ports).
    #[arg(long, default_value_t = DEFAULT_REST_PORT, value_name = "PORT")]
    pub rest_port: u16,
    /// Port of gRPC instance 0; instance i listens on PORT + i (0 = free ports).
    #[arg(long, default_value_t = DEFAULT_GRPC_PORT, value_name = "PORT")]
    pub grpc_port: u16,
    /// Port of the admin endpoint shared by all mocks (0 = a free port). It listens on the
    /// mocks' host, loopback by default: it changes their behaviour, so keep it off networks.
    #[arg(long, default_value_t = DEFAULT_ADMIN_PORT, value_name = "PORT")]
    pub admin_port: u16,
    /// Instances of each mock (for load-balancing tests).
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub instances: u16,
    /// Which mocks to start.
    #[arg(long, value_enum, default_value_t = Serve::Both)]
    pub serve: Serve,
    /// Added latency: none | fixed:5ms | uniform:1ms..10ms | exp:2ms (mean) | lognormal:5ms,0.5
    /// (median, sigma). Applied with a 1 ms timer resolution.
    #[arg(long, default_value = "none", value_name = "SPEC", value_parser = parse_latency)]
    pub latency: Latency,
    /// Fraction of requests (0..=1) answered with gRPC UNAVAILABLE / HTTP 503.
    #[arg(long, default_value = "0", value_name = "RATE", value_parser = parse_error_rate)]
    pub error_rate: f64,
    /// Periodic stalls LENGTH/PERIOD, e.g. 200ms/5s: every 5 s, hold all requests for 200 ms.
    #[arg(long, value_name = "SPEC", value_parser = parse_stall)]
    pub stall: Option<Stall>,
    /// Serving threads (default: one per core this process may run on).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Serving model: per-core = one current-thread runtime per thread, each with its own
    /// listeners (SO_REUSEPORT) serving the same mocks; work-stealing = one multi-threaded
    /// tokio runtime whose threads share every task.
    #[arg(long, value_enum, default_value_t = ServingModel::PerCore)]
    pub runtime: ServingModel,
}

pub(super) fn parse_latency(s: &str) -> Result<Latency, String> {
    s.parse()
        .map_err(|e: behavior::BehaviorError| e.to_string())
}

pub(super) fn parse_error_rate(s: &str) -> Result<f64, String> {
    behavior::parse_error_rate(s).map_err(|e| e.to_string())
}

pub(super) fn parse_stall(s: &str) -> Result<Stall, String> {
    s.parse()
        .map_err(|e: behavior::BehaviorError| e.to_string())
}

impl BackendsArgs {
    /// The typed configuration these flags describe.
    pub fn to_config(&self) -> BackendsConfig {
        BackendsConfig {
            host: self.host,
            rest_port: self.rest_port,
            grpc_port: self.grpc_port,
            admin_port: self.admin_port,
            instances: self.instances as usize,
            rest: self.serve != Serve::Grpc,
            grpc: self.serve != Serve::Rest,
            behavior: Behavior {
                latency: self.latency,
                error_rate: self.error_rate,
                stall: self.stall,
            },
            workers: match self.runtime {
                ServingModel::PerCore => self.threads.map_or_else(
                    || std::thread::available_parallelism().map_or(1, usize::from),
                    usize::from,
                ),
                ServingModel::WorkStealing => 1,
            },
        }
    }
}
