//! A gateway fleet for `saturate --gateway-instances N`: N `gwbench gateway`
//! processes behind a real HAProxy (least connections, keep-alive to the instances), sharing
//! their rate limits through one Redis (`[rate_limit] store = "redis"`; a `redis-server` this
//! module starts, or `--redis-url`). On one machine this simulates a fleet — every process
//! shares the cores the layout gives the gateway — but every part is the real one.
//!
//! What the report needs from it: each instance's CPU, the balancer's CPU, and each instance's
//! share of the requests (from HAProxy's own statistics, responses by class per server).

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::process::Cpus;
use super::process::{ChildProcess, TempDir, cpu_seconds, with_free_ports};

/// The path of `program` on PATH, or the one-line error naming its Debian package.
fn find(program: &'static str, package: &'static str) -> anyhow::Result<PathBuf> {
    Ok(super::process::find(
        program,
        package,
        "--gateway-instances",
    )?)
}

/// A Redis of the fleet's own on a free port, no persistence; stopped when dropped.
#[derive(Debug)]
pub(super) struct Redis {
    child: ChildProcess,
    /// `redis://127.0.0.1:PORT`.
    pub(super) url: String,
}

impl Redis {
    /// Starts `redis-server` pinned to `cpus`.
    pub(super) fn start(cpus: &Cpus) -> anyhow::Result<Redis> {
        let program = find("redis-server", "redis-server")?;
        let (child, port) = with_free_ports(1, |ports| {
            let port = ports[0];
            let args = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            .map(String::from);
            let child =
                ChildProcess::spawn_program("redis-server", &program, &args, 0, cpus.clone())?;
            Ok((child, SocketAddr::from(([127, 0, 0, 1], port)), port))
        })?;
        Ok(Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

impl Redis {
    /// Its process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// N gateways behind HAProxy.
#[derive(Debug)]
pub(super) struct Fleet {
    /// The instances, in HAProxy's order (servers g0, g1, …).
    pub(super) gateways: Vec<ChildProcess>,
    balancer: ChildProcess,
    /// HAProxy's frontend: the fleet's address.
    pub(super) addr: SocketAddr,
    stats: SocketAddr,
    _dir: TempDir,
}

/// CPU seconds so far of each instance and of the balancer.
#[derive(Debug, Clone)]
pub(super) struct FleetCpu {
    pub(super) instances: Vec<f64>,
    pub(super) balancer: f64,
}

impl Fleet {
    /// Starts `n` gateways (each `threads` threads, pinned to `cpus`) in front of the mocks,
    /// sharing limits in the Redis at `redis_url`, and HAProxy in front of them.
    pub(super) fn start(
        n: usize,
        cpus: &Cpus,
        threads: usize,
        rest: SocketAddr,
        grpc: SocketAddr,
        redis_url: &str,
    ) -> anyhow::Result<Fleet> {
        let haproxy = find("haproxy", "haproxy")?;
        let dir = TempDir::new("fleet")?;
        let config = dir.0.join("gateway.toml");
        std::fs::write(&config, gateway_config(redis_url, n)?)
            .with_context(|| format!("writing {}", config.display()))?;
        let mut gateways = Vec::with_capacity(n);
        for i in 0..n {
            let args = [
                "gateway",
                "--config",
                &config.display().to_string(),
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--threads",
                &threads.to_string(),
                "--upstream-grpc",
                &grpc.to_string(),
                "--upstream-rest",
                &rest.to_string(),
            ]
            .map(String::from);
            gateways.push(ChildProcess::spawn(
                &format!("gwbench gateway (fleet instance {i})"),
                &args,
                2,
                cpus.clone(),
            )?);
        }
        let servers = gateways
            .iter()
            .map(|g| {
                g.addr("http")
                    .context("a fleet instance printed no `ready http` line")
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let cfg = dir.0.join("haproxy.cfg");
        // A stats port someone took makes HAProxy exit, which the wait sees.
        let (balancer, (addr, stats)) = with_free_ports(2, |ports| {
            let (port, stats_port) = (ports[0], ports[1]);
            std::fs::write(&cfg, haproxy_config(port, stats_port, &servers))
                .with_context(|| format!("writing {}", cfg.display()))?;
            let args = ["-f", &cfg.display().to_string(), "-db"].map(String::from);
            let child = ChildProcess::spawn_program("haproxy", &haproxy, &args, 0, cpus.clone())?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let stats = SocketAddr::from(([127, 0, 0, 1], stats_port));
            Ok((child, addr, (addr, stats)))
        })?;
        Ok(Fleet {
            gateways,
            balancer,
            addr,
            stats,
            _dir: dir,
        })
    }

    /// CPU seconds so far.
    pub(super) fn cpu(&self) -> FleetCpu {
        FleetCpu {
            instances: self
                .gateways
                .iter()
                .map(|g| g.cpu_seconds().unwrap_or(0.0))
                .collect(),
            balancer: cpu_seconds(self.balancer.pid()).unwrap_or(0.0),
        }
    }

    /// (name, PID) of the instances and the balancer.
    pub(super) fn processes(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("gateway {i}"), g.pid()))
            .collect();
        out.push(("haproxy".to_string(), self.balancer.pid()));
        out
    }

    /// Responses each instance has sent through HAProxy so far (its statistics, by server).
    pub(super) fn responses(&self) -> anyhow::Result<Vec<u64>> {
        let csv = http_get(self.stats, "/stats;csv").context("reading HAProxy's statistics")?;
        Ok(responses_by_server(&csv, self.gateways.len()))
    }
}

pub(super) use crate::report::compare::FleetShare;

impl FleetShare {
    /// The fleet's figures now.
    pub(super) fn of(fleet: &Fleet) -> anyhow::Result<FleetShare> {
        let cpu = fleet.cpu();
        Ok(FleetShare {
            instances: fleet.gateways.len(),
            balancer: "haproxy, balance leastconn",
            simulated: true,
            instance_cpu_s: cpu.instances,
            instance_responses: fleet.responses()?,
            balancer_cpu_s: cpu.balancer,
        })
    }

    /// One line per instance and one for the balancer, after a line that says what it is.
    pub(super) fn describe(&self, cores: usize) -> String {
        let total = self.instance_responses.iter().sum::<u64>().max(1) as f64;
        let cpu = self.instance_cpu_s.iter().sum::<f64>() + self.balancer_cpu_s;
        let mut out = format!(
            "gateway fleet: {} instances behind HAProxy (least connections), limits shared in \
             Redis; a simulation on this {cores}-core machine (the instances and the balancer \
             share the gateway's cores)\n",
            self.instances
        );
        for (i, (c, n)) in self
            .instance_cpu_s
            .iter()
            .zip(&self.instance_responses)
            .enumerate()
        {
            out.push_str(&format!(
                "  instance {i}: {:.1} % of the requests, {c:.2} s CPU ({:.0} % of the fleet's)\n",
                *n as f64 / total * 100.0,
                c / cpu.max(1e-9) * 100.0
            ));
        }
        out.push_str(&format!(
            "  balancer (haproxy): {:.2} s CPU ({:.0} % of the fleet's)\n",
            self.balancer_cpu_s,
            self.balancer_cpu_s / cpu.max(1e-9) * 100.0
        ));
        out
    }
}

/// The default gateway configuration with its limits kept in Redis.
fn gateway_config(redis_url: &str, instances: usize) -> anyhow::Result<String> {
    let mut cfg: toml::Table = crate::gateway::config::DEFAULT_CONFIG
        .parse()
        .context("the default gateway configuration")?;
    let limits = cfg
        .entry("rate_limit")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let Some(limits) = limits.as_table_mut() else {
        anyhow::bail!("the default configuration's [rate_limit] is not a table");
    };
    limits.insert("store".into(), "redis".into());
    let mut redis = toml::Table::new();
    redis.insert("url".into(), redis_url.into());
    redis.insert("instances".into(), toml::Value::Integer(instances as i64));
    limits.insert("redis".into(), toml::Value::Table(redis));
    Ok(toml::to_string(&cfg)?)
}

/// HAProxy in front of `servers`: least connections, keep-alive and connection reuse to them,
/// statistics on their own port.
fn haproxy_config(port: u16, stats_port: u16, servers: &[SocketAddr]) -> String {
    let mut out = format!(
        "global\n  maxconn 8192\n  nbthread 1\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
         option http-keep-alive\n\
         frontend fleet\n  bind 127.0.0.1:{port}\n  default_backend gateways\n\
         backend gateways\n  balance leastconn\n  http-reuse always\n"
    );
    for (i, s) in servers.iter().enumerate() {
        out.push_str(&format!("  server g{i} {s}\n"));
    }
    out.push_str(&format!(
        "listen stats\n  bind 127.0.0.1:{stats_port}\n  stats enable\n  stats uri /stats\n"
    ));
    out
}

/// A GET over HTTP/1.0 (the statistics page), the body as text.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: stats\r\n\r\n")?;
    let mut text = String::new();
    s.take(4 << 20).read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// A chunked body's data (HAProxy answers even HTTP/1.0 with chunks); what does not parse
/// ends it.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n || !rest.is_char_boundary(n) {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Per server g0..g(n-1) of backend `gateways`: the sum of its responses by class
/// (`hrsp_1xx` .. `hrsp_5xx`, `hrsp_other`) in HAProxy's CSV statistics.
fn responses_by_server(csv: &str, n: usize) -> Vec<u64> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let classes: Vec<usize> = [
        "hrsp_1xx",
        "hrsp_2xx",
        "hrsp_3xx",
        "hrsp_4xx",
        "hrsp_5xx",
        "hrsp_other",
    ]
    .iter()
    .filter_map(|c| col(c))
    .collect();
    let mut out = vec![0; n];
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        if f.first() != Some(&"gateways") {
            continue;
        }
        let Some(i) = f
            .get(1)
            .and_then(|s| s.strip_prefix('g'))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(slot) = out.get_mut(i) {
            *slot = classes
                .iter()
                .filter_map(|&c| f.get(c).and_then(|v| v.parse::<u64>().ok()))
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_statistics_give_each_instance_its_responses() {
        let csv = "# pxname,svname,qcur,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,\n\
                   fleet,FRONTEND,,0,300,0,0,0,0,\n\
                   gateways,g0,0,0,120,0,3,0,0,\n\
                   gateways,g1,0,0,170,0,0,7,0,\n\
                   gateways,BACKEND,0,0,290,0,3,7,0,\n\
                   stats,FRONTEND,,0,1,0,0,0,0,\n";
        assert_eq!(responses_by_server(csv, 2), [123, 177]);
        // As HAProxy sends it: in chunks, split anywhere.
        let chunked = format!(
            "{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
            40,
            &csv[..40],
            csv.len() - 40,
            &csv[40..]
        );
        assert_eq!(dechunk(&chunked), csv);
        assert_eq!(responses_by_server("", 2), [0, 0]);
    }

    #[test]
    fn the_fleet_config_keeps_limits_in_redis_and_balances_by_connections() {
        let cfg = gateway_config("redis://127.0.0.1:7000", 3).unwrap();
        let parsed = crate::gateway::config::GatewayConfig::parse(&cfg, "fleet").unwrap();
        assert_eq!(
            parsed.rate_limit.store,
            crate::gateway::config::RateLimitStore::Redis
        );
        assert_eq!(parsed.rate_limit.redis.instances.get(), 3);
        let ha = haproxy_config(
            8000,
            8001,
            &[
                "127.0.0.1:9000".parse().unwrap(),
                "127.0.0.1:9001".parse().unwrap(),
            ],
        );
        assert!(ha.contains("balance leastconn") && ha.contains("server g1 127.0.0.1:9001"));
    }
}
