//! The stack under test as child processes of the same binary: `gwbench backends` and
//! `gwbench gateway`, started for `compare` and `saturate`, laid out on the machine's cores, and
//! stopped (by PID) when dropped.

use anyhow::Context;

use super::process::{ChildProcess, pin_self};
pub(super) use crate::cli::LayoutMode;

pub(super) use super::process::Cpus;

pub(super) use crate::report::compare::Layout;

impl Layout {
    /// The layout for `cores` cores. Pinned: the generator gets its own cores (a quarter of
    /// the machine, at least one), the gateway half of the rest (rounded up) and the mocks the
    /// remainder; on 2 cores the generator has CPU 1 and the gateway and the mocks share CPU 0.
    /// Each server runs one thread per core it has. Shared (and any layout on 1 core): nothing
    /// pinned, one thread per core for each server.
    pub(super) fn choose(mode: LayoutMode, cores: usize) -> Layout {
        let cores = cores.max(1);
        let pinned = match mode {
            LayoutMode::Auto | LayoutMode::Pinned => cores >= 2,
            LayoutMode::Shared => false,
        };
        if !pinned {
            return Layout {
                mode: "shared",
                generator: None,
                gateway: None,
                backends: None,
                gateway_threads: cores,
                backends_threads: cores,
            };
        }
        let (generator, gateway, backends) = if cores == 2 {
            (vec![1], vec![0], vec![0])
        } else {
            let g = (cores / 4).max(1);
            let rest = cores - g;
            let gw = rest.div_ceil(2);
            (
                (0..g).collect(),
                (g..g + gw).collect(),
                (g + gw..cores).collect::<Vec<_>>(),
            )
        };
        Layout {
            mode: "pinned",
            gateway_threads: gateway.len(),
            backends_threads: backends.len(),
            generator: Some(generator),
            gateway: Some(gateway),
            backends: Some(backends),
        }
    }

    /// Cores the generator may use.
    pub(super) fn generator_cores(&self, cores: usize) -> usize {
        self.generator.as_ref().map_or(cores.max(1), Vec::len)
    }

    /// One line per process, for reports: `gateway: CPU [0], 1 thread`.
    fn describe(&self, cores: usize) -> Vec<String> {
        let threads = |n: usize| {
            if n == 1 {
                "1 thread".to_string()
            } else {
                format!("{n} threads")
            }
        };
        [
            ("generator", &self.generator, None),
            ("gateway", &self.gateway, Some(self.gateway_threads)),
            ("backends", &self.backends, Some(self.backends_threads)),
        ]
        .iter()
        .map(|(who, cpus, n)| {
            let n = n.map(|n| format!(", {}", threads(n))).unwrap_or_default();
            match cpus {
                Some(c) => format!("{who}: CPU {c:?}{n}"),
                None => format!("{who}: not pinned (shares all {cores} cores){n}"),
            }
        })
        .collect()
    }
}

/// Generator threads an offered rate needs: one per 20,000 requests per second (a thread
/// keeps that pace with room to spare), at most one per core the generator has, at least one.
pub(super) fn generator_threads(rate: Option<f64>, generator_cores: usize) -> usize {
    let need = rate.map_or(generator_cores, |r| (r / 20_000.0).ceil() as usize);
    need.clamp(1, generator_cores.max(1))
}

/// The mocks and the gateway (or a fleet of them behind HAProxy), running as child processes,
/// and where everything is pinned.
#[derive(Debug)]
pub(super) struct Stack {
    pub(super) backends: ChildProcess,
    /// One gateway; None when a fleet serves instead.
    pub(super) gateway: Option<ChildProcess>,
    /// `--gateway-instances N` > 1: the fleet behind HAProxy and its Redis (if started here).
    pub(super) fleet: Option<(super::fleet::Fleet, Option<super::fleet::Redis>)>,
    /// `--tls`: the gateway's certificate, key and the CA that signed them (ca.pem).
    pub(super) tls: Option<super::process::TempDir>,
    pub(super) rest: std::net::SocketAddr,
    pub(super) grpc: std::net::SocketAddr,
    pub(super) gw: std::net::SocketAddr,
    pub(super) cores: usize,
    pub(super) pinning: Vec<String>,
    pub(super) layout: Layout,
    /// Other gateways in front of the same mocks (`compare --gateway`), stopped with the stack.
    pub(super) peers: Vec<super::peers::PeerGateway>,
}

impl Stack {
    /// Starts `gwbench backends` and `gwbench gateway` laid out as `mode` asks on this
    /// machine's cores, and pins this process (the generator) accordingly.
    pub(super) fn start(mode: LayoutMode) -> anyhow::Result<Stack> {
        Self::start_fleet(mode, 1, None, false)
    }

    /// As [`Stack::start`], with `instances` gateways behind HAProxy when more than one,
    /// sharing limits in the Redis at `redis_url` (default: a redis-server started here).
    /// With `tls`, the (single) gateway terminates TLS with a certificate made for this run.
    pub(super) fn start_fleet(
        mode: LayoutMode,
        instances: usize,
        redis_url: Option<&str>,
        tls: bool,
    ) -> anyhow::Result<Stack> {
        if tls && instances > 1 {
            anyhow::bail!(
                "--tls with --gateway-instances is not supported: HAProxy would have to terminate TLS in front of the fleet"
            );
        }
        let tls = match tls {
            false => None,
            true => {
                let dir = super::process::TempDir::new("tls")
                    .context("a directory for the certificate")?;
                crate::net::tls::local_pki(&dir.0).map_err(anyhow::Error::msg)?;
                Some(dir)
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let layout = Layout::choose(mode, cores);
        let backends = spawn_backends(&layout.backends, layout.backends_threads)?;
        let rest = ready_addr(&backends, "rest")?;
        let grpc = ready_addr(&backends, "grpc")?;
        let (gateway, fleet, gw) = if instances > 1 {
            let redis = match redis_url {
                Some(_) => None,
                None => Some(super::fleet::Redis::start(&layout.gateway)?),
            };
            let url = redis_url.map_or_else(
                || redis.as_ref().map(|r| r.url.clone()).unwrap_or_default(),
                str::to_string,
            );
            let fleet = super::fleet::Fleet::start(
                instances,
                &layout.gateway,
                layout.gateway_threads,
                rest,
                grpc,
                &url,
            )?;
            let addr = fleet.addr;
            (None, Some((fleet, redis)), addr)
        } else {
            let gateway = spawn_gateway(
                &layout.gateway,
                layout.gateway_threads,
                rest,
                grpc,
                tls.as_ref().map(|d| d.0.as_path()),
            )?;
            let gw = ready_addr(&gateway, "http")?;
            (Some(gateway), None, gw)
        };
        if let Some(cpus) = &layout.generator {
            pin_self(cpus)
                .map_err(anyhow::Error::msg)
                .context("pinning the load generator")?;
        }
        Ok(Stack {
            backends,
            gateway,
            fleet,
            tls,
            rest,
            grpc,
            gw,
            cores,
            pinning: layout.describe(cores),
            layout,
            peers: Vec::new(),
        })
    }
}

impl Stack {
    /// CPU seconds so far of the gateway tier: the gateway, or every fleet instance and the
    /// balancer.
    pub(super) fn gateway_cpu(&self) -> Option<f64> {
        match (&self.gateway, &self.fleet) {
            (Some(g), _) => g.cpu_seconds(),
            (None, Some((fleet, _))) => {
                let cpu = fleet.cpu();
                Some(cpu.instances.iter().sum::<f64>() + cpu.balancer)
            }
            (None, None) => None,
        }
    }

    /// Starts `gateway` (another than ours) in front of the REST mock, laid out as our
    /// gateway is; it runs until the stack is dropped.
    pub(super) fn start_peer(
        &mut self,
        gateway: super::peers::Gateway,
    ) -> anyhow::Result<&super::peers::PeerGateway> {
        let peer = super::peers::PeerGateway::start(
            gateway,
            &self.layout.gateway,
            self.layout.gateway_threads,
            (self.rest, self.grpc),
        )?;
        self.peers.push(peer);
        Ok(&self.peers[self.peers.len() - 1])
    }

    /// (name, PID) of every process of the stack, for the summary.
    pub(super) fn processes(&self) -> Vec<(String, u32)> {
        let mut out = vec![("backends".to_string(), self.backends.pid())];
        if let Some(g) = &self.gateway {
            out.push(("gateway".to_string(), g.pid()));
        }
        if let Some((fleet, redis)) = &self.fleet {
            out.extend(fleet.processes());
            out.extend(redis.iter().map(|r| ("redis-server".to_string(), r.pid())));
        }
        for p in &self.peers {
            let name = match p.version.is_empty() {
                true => p.gateway.name().to_string(),
                false => format!("{} ({})", p.gateway.name(), p.version),
            };
            out.push((name, p.pid()));
        }
        out
    }
}

/// `gwbench backends` on ephemeral ports (REST, gRPC and admin ready lines).
fn spawn_backends(cpus: &Cpus, threads: usize) -> anyhow::Result<ChildProcess> {
    let args = [
        "backends",
        "--rest-port",
        "0",
        "--grpc-port",
        "0",
        "--admin-port",
        "0",
        "--threads",
        &threads.to_string(),
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
    threads: usize,
    rest: std::net::SocketAddr,
    grpc: std::net::SocketAddr,
    tls: Option<&std::path::Path>,
) -> anyhow::Result<ChildProcess> {
    let (grpc, rest) = (grpc.to_string(), rest.to_string());
    let mut args: Vec<String> = [
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--threads",
        &threads.to_string(),
        "--upstream-grpc",
        &grpc,
        "--upstream-rest",
        &rest,
    ]
    .map(String::from)
    .to_vec();
    if let Some(dir) = tls {
        for (flag, file) in [("--tls-cert", "server.pem"), ("--tls-key", "server.key")] {
            args.push(flag.to_string());
            args.push(dir.join(file).display().to_string());
        }
    }
    Ok(ChildProcess::spawn(
        "gwbench gateway",
        &args,
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
    fn the_layout_follows_the_core_count() {
        // 2 cores: generator alone on CPU 1; gateway and mocks share CPU 0, one thread each.
        let two = Layout::choose(LayoutMode::Auto, 2);
        assert_eq!(two.mode, "pinned");
        assert_eq!(two.generator, Some(vec![1]));
        assert_eq!(
            (two.gateway.clone(), two.backends.clone()),
            (Some(vec![0]), Some(vec![0]))
        );
        assert_eq!((two.gateway_threads, two.backends_threads), (1, 1));
        // 4 cores: generator 1, gateway 2, mocks 1.
        let four = Layout::choose(LayoutMode::Auto, 4);
        assert_eq!(four.generator, Some(vec![0]));
        assert_eq!(four.gateway, Some(vec![1, 2]));
        assert_eq!(four.backends, Some(vec![3]));
        assert_eq!((four.gateway_threads, four.backends_threads), (2, 1));
        // 16 cores: generator 4, gateway 6, mocks 6.
        let sixteen = Layout::choose(LayoutMode::Pinned, 16);
        assert_eq!(sixteen.generator, Some((0..4).collect()));
        assert_eq!(sixteen.gateway, Some((4..10).collect()));
        assert_eq!(sixteen.backends, Some((10..16).collect()));
        assert_eq!(sixteen.generator_cores(16), 4);
        // 1 core, or asked to share: nothing pinned.
        for (mode, cores) in [
            (LayoutMode::Auto, 1),
            (LayoutMode::Pinned, 1),
            (LayoutMode::Shared, 8),
        ] {
            let l = Layout::choose(mode, cores);
            assert_eq!(
                (l.mode, l.generator.clone(), l.gateway.clone()),
                ("shared", None, None)
            );
            assert_eq!(l.gateway_threads, cores);
        }
        assert!(Layout::choose(LayoutMode::Shared, 8).describe(8)[0].contains("not pinned"));
        assert_eq!(two.describe(2)[1], "gateway: CPU [0], 1 thread");
    }

    #[test]
    fn generator_threads_follow_the_offered_rate() {
        assert_eq!(generator_threads(Some(5_000.0), 1), 1);
        assert_eq!(generator_threads(Some(5_000.0), 4), 1);
        assert_eq!(generator_threads(Some(50_000.0), 4), 3);
        assert_eq!(generator_threads(Some(500_000.0), 4), 4);
        assert_eq!(generator_threads(None, 4), 4);
        assert_eq!(generator_threads(Some(0.0), 0), 1);
    }
}
