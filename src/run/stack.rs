//! The stack under test as child processes of the same binary: `gwbench backends` and
//! `gwbench gateway`, started for `compare` and `saturate`, laid out on the machine's cores, and
//! stopped (by PID) when dropped.

use anyhow::Context;

use super::process::{ChildProcess, pin_self};

/// CPUs a process is pinned to; None leaves it to the scheduler.
type Cpus = Option<Vec<usize>>;

/// Where the generator (this process), the gateway and the backends run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    generator: Cpus,
    gateway: Cpus,
    backends: Cpus,
}

impl Layout {
    /// With `pin`, separate cores where the machine has them (on 2 cores: generator on CPU 1,
    /// gateway and backends on CPU 0); without, nothing is pinned.
    fn choose(pin: bool, cores: usize) -> Layout {
        let (generator, gateway, backends) = match (pin, cores) {
            (true, 3..) => (Some(vec![0]), Some(vec![1]), Some((2..cores).collect())),
            (true, 2) => (Some(vec![1]), Some(vec![0]), Some(vec![0])),
            _ => (None, None, None),
        };
        Layout {
            generator,
            gateway,
            backends,
        }
    }

    /// One line per process, for reports: `gateway: CPU [0]`.
    fn describe(&self, cores: usize) -> Vec<String> {
        [
            ("generator", &self.generator),
            ("gateway", &self.gateway),
            ("backends", &self.backends),
        ]
        .iter()
        .map(|(who, cpus)| match cpus {
            Some(c) => format!("{who}: CPU {c:?}"),
            None => format!("{who}: not pinned (shares all {cores} cores)"),
        })
        .collect()
    }
}

/// Runtime threads of a process: one per CPU it is pinned to, else one.
fn threads(cpus: &Cpus) -> String {
    cpus.as_ref().map_or(1, Vec::len).to_string()
}

/// The mocks and the gateway, running as child processes, and where everything is pinned.
#[derive(Debug)]
pub(super) struct Stack {
    pub(super) backends: ChildProcess,
    pub(super) gateway: ChildProcess,
    pub(super) rest: std::net::SocketAddr,
    pub(super) grpc: std::net::SocketAddr,
    pub(super) gw: std::net::SocketAddr,
    pub(super) cores: usize,
    pub(super) pinning: Vec<String>,
}

impl Stack {
    /// Starts `gwbench backends` and `gwbench gateway`; with `pin`, places generator (this
    /// process), gateway and backends on separate cores where the machine has them.
    pub(super) fn start(pin: bool) -> anyhow::Result<Stack> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let layout = Layout::choose(pin, cores);
        let backends = spawn_backends(&layout.backends)?;
        let rest = ready_addr(&backends, "rest")?;
        let grpc = ready_addr(&backends, "grpc")?;
        let gateway = spawn_gateway(&layout.gateway, rest, grpc)?;
        let gw = ready_addr(&gateway, "http")?;
        if let Some(cpus) = &layout.generator {
            pin_self(cpus)
                .map_err(anyhow::Error::msg)
                .context("pinning the load generator")?;
        }
        Ok(Stack {
            backends,
            gateway,
            rest,
            grpc,
            gw,
            cores,
            pinning: layout.describe(cores),
        })
    }
}

/// `gwbench backends` on ephemeral ports (REST, gRPC and admin ready lines).
fn spawn_backends(cpus: &Cpus) -> anyhow::Result<ChildProcess> {
    let args = [
        "backends",
        "--rest-port",
        "0",
        "--grpc-port",
        "0",
        "--admin-port",
        "0",
        "--threads",
        &threads(cpus),
    ];
    Ok(ChildProcess::spawn(
        "gwbench backends",
        &args.map(String::from),
        3,
        cpus.clone(),
    )?)
}

/// `gwbench gateway` on ephemeral ports in front of the mocks at `rest` and `grpc`.
fn spawn_gateway(
    cpus: &Cpus,
    rest: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
) -> anyhow::Result<ChildProcess> {
    let (grpc, rest) = (grpc.to_string(), rest.to_string());
    let args = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        &threads(cpus),
        "--upstream-grpc",
        &grpc,
        "--upstream-rest",
        &rest,
    ];
    Ok(ChildProcess::spawn(
        "gwbench gateway",
        &args.map(String::from),
        2,
        cpus.clone(),
    )?)
}

/// The address of a child's `ready <kind>` line.
fn ready_addr(child: &ChildProcess, kind: &str) -> anyhow::Result<std::net::SocketAddr> {
    child
        .addr(kind)
        .with_context(|| format!("the child process printed no `ready {kind}` line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_separates_the_generator_where_cores_allow() {
        let two = Layout::choose(true, 2);
        assert_eq!(two.generator, Some(vec![1]));
        assert_eq!(two.gateway, Some(vec![0]));
        let four = Layout::choose(true, 4);
        assert_eq!(four.backends, Some(vec![2, 3]));
        assert_eq!(threads(&four.backends), "2");
        assert_eq!(Layout::choose(true, 1).generator, None);
        assert!(Layout::choose(false, 8).describe(8)[0].contains("not pinned"));
    }
}
