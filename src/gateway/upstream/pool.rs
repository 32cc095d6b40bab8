//! Upstream pools and load balancing: per upstream, several endpoints; `round_robin` or
//! `least_request` (power of two choices over in-flight counts). gRPC endpoints each have one
//! multiplexed HTTP/2 connection of the lean client (`grpc.rs`, connected lazily); HTTP
//! endpoints each have a pool of keep-alive connections of the lean HTTP/1.1 client (`h1.rs`). An endpoint that refuses connections is skipped for a
//! while, and the refused request is retried once on another endpoint (it never reached one).

use super::inflight::{Held, InFlight};
use crate::gateway::status::GwError;
use crate::http1::client::ClientError;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http::uri::PathAndQuery;
use rand::Rng;
use tonic::{Code, Status};

use crate::gateway::config::{self, LbPolicy, UpstreamProtocol};

/// How long an endpoint that refused a connection is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(1);

// ===== endpoints =====

fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Whether an error chain says the TCP connection could not be made.
fn is_connect_error(mut err: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(e) = err {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        err = e.source();
    }
    false
}

#[derive(Debug)]
struct Endpoint {
    addr: String,
    /// Idle keep-alive connections (HTTP upstreams).
    h1: Option<std::sync::Arc<super::h1::Pool>>,
    /// The HTTP/2 connection (gRPC upstreams).
    grpc: Option<super::grpc::GrpcConn>,
    in_flight: std::sync::Arc<AtomicUsize>,
    down_until: AtomicU64,
}

/// One upstream: its endpoints and how to choose among them.
pub struct Upstream {
    /// Configured name.
    pub name: String,
    /// gRPC or HTTP.
    pub protocol: UpstreamProtocol,
    policy: LbPolicy,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    /// `gwbench_upstream_duration_seconds{upstream}`, in this upstream's own tally (this
    /// worker's: no label lookup and no shared counter per request).
    pub latency: std::sync::Arc<crate::gateway::observe::tally::Histogram>,
    _tally: std::sync::Arc<crate::gateway::observe::tally::Tally>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Upstream {
    /// Builds the pools (connections open lazily). Must run inside a tokio runtime.
    pub fn new(cfg: &config::Upstream) -> Result<Upstream, String> {
        let connect_timeout = cfg.connect_timeout.0;
        let mut endpoints = Vec::new();
        for addr in &cfg.endpoints {
            let tls = endpoint_tls(cfg, addr)?;
            let grpc = match cfg.protocol {
                UpstreamProtocol::Grpc => Some(
                    super::grpc::GrpcConn::new(addr, connect_timeout, tls.clone())
                        .map_err(|e| format!("upstream {}: {e}", cfg.name))?,
                ),
                UpstreamProtocol::Http => None,
            };
            endpoints.push(Endpoint {
                addr: addr.clone(),
                h1: (cfg.protocol == UpstreamProtocol::Http).then(|| {
                    std::sync::Arc::new(super::h1::Pool::new(addr, connect_timeout, tls.clone()))
                }),
                grpc,
                in_flight: std::sync::Arc::new(AtomicUsize::new(0)),
                down_until: AtomicU64::new(0),
            });
        }
        // The process-wide recorder, for the breakers' and the pools' event counters.
        let _ = crate::gateway::observe::exporter::handle();
        let tally = crate::gateway::observe::tally::Tally::new();
        let latency = tally.histogram(
            crate::gateway::observe::tally::Family::Upstream,
            &std::sync::Arc::from(cfg.name.as_str()),
        );
        Ok(Upstream {
            latency,
            _tally: tally,
            name: cfg.name.clone(),
            protocol: cfg.protocol,
            policy: cfg.lb,
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    fn is_up(&self, i: usize, now: u64) -> bool {
        self.endpoints[i].down_until.load(Ordering::Relaxed) <= now
    }

    /// Chooses an endpoint (not `exclude` when there is another): healthy ones first.
    fn pick(&self, exclude: Option<usize>) -> usize {
        let n = self.endpoints.len();
        if n == 1 {
            return 0;
        }
        let now = now_ns();
        let usable = |i: usize| Some(i) != exclude && self.is_up(i, now);
        match self.policy {
            LbPolicy::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| usable(i))
                    .unwrap_or_else(|| {
                        // Everything is down: try the next one that is not excluded anyway.
                        (0..n)
                            .map(|k| (start + k) % n)
                            .find(|&i| Some(i) != exclude)
                            .unwrap_or(start % n)
                    })
            }
            LbPolicy::LeastRequest => {
                let candidates: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
                let pool: Vec<usize> = if candidates.is_empty() {
                    (0..n).filter(|&i| Some(i) != exclude).collect()
                } else {
                    candidates
                };
                if pool.len() == 1 {
                    return pool[0];
                }
                // Two distinct random candidates; the less busy one wins.
                let mut rng = rand::rng();
                let i = rng.random_range(0..pool.len());
                let j = (i + rng.random_range(1..pool.len())) % pool.len();
                let (a, b) = (pool[i], pool[j]);
                let load = |i: usize| self.endpoints[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        }
    }

    fn mark_down(&self, i: usize) {
        self.endpoints[i]
            .down_until
            .store(now_ns() + DOWN_FOR.as_nanos() as u64, Ordering::Relaxed);
        tracing::warn!(upstream = %self.name, endpoint = %self.endpoints[i].addr, "connection refused; skipping the endpoint for 1 s");
    }

    /// A unary gRPC call with an encoded message; `timeout` is sent as `grpc-timeout`.
    pub async fn grpc_unary(
        &self,
        path: &PathAndQuery,
        body: Bytes,
        metadata: &http::HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<super::grpc::Reply, Status> {
        self.grpc_call(|conn| conn.unary(path, &body, metadata.clone(), timeout))
            .await
            .map(|(reply, _)| reply)
    }

    /// A server-streaming gRPC call, as [`Upstream::grpc_unary`]: returns at the response's
    /// head; the endpoint counts it in flight until the messages are dropped (for
    /// `least_request`, a long stream is load).
    pub async fn grpc_server_stream(
        &self,
        path: &PathAndQuery,
        body: Bytes,
        metadata: &http::HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<super::grpc::Messages, Status> {
        let (mut messages, i) = self
            .grpc_call(|conn| conn.server_stream(path, &body, metadata.clone(), timeout))
            .await?;
        messages.hold(Held::new(&self.endpoints[i].in_flight));
        Ok(messages)
    }

    /// A call whose request messages follow one by one (client-streaming and bidi, or a
    /// server stream read over WebSocket), as [`Upstream::grpc_unary`]; the endpoint counts it
    /// in flight while the returned guard lives.
    pub(crate) async fn grpc_open(
        &self,
        path: &PathAndQuery,
        metadata: &http::HeaderMap,
        timeout: Option<Duration>,
    ) -> Result<(super::grpc::Call, Held), Status> {
        let (call, i) = self
            .grpc_call(|conn| conn.open(path, metadata.clone(), timeout))
            .await?;
        Ok((call, Held::new(&self.endpoints[i].in_flight)))
    }

    /// Each endpoint's calls in flight, in endpoint order.
    pub fn in_flight(&self) -> Vec<usize> {
        self.endpoints
            .iter()
            .map(|e| e.in_flight.load(Ordering::Relaxed))
            .collect()
    }

    /// `call` on a chosen endpoint's connection; a refused connection marks the endpoint down
    /// and the call goes to another one (it never reached the first). With the answer, the
    /// endpoint that gave it.
    async fn grpc_call<'a, T, F, Fut>(&'a self, call: F) -> Result<(T, usize), Status>
    where
        F: Fn(&'a super::grpc::GrpcConn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let first = self.pick(None);
        match self.grpc_on(first, &call).await.map(|t| (t, first)) {
            Err(status) if is_connect_error(Some(&status)) => {
                self.mark_down(first);
                if self.endpoints.len() == 1 {
                    return Err(Status::unavailable(format!(
                        "upstream {}: {} refused the connection",
                        self.name, self.endpoints[first].addr
                    )));
                }
                let second = self.pick(Some(first));
                self.grpc_on(second, &call)
                    .await
                    .map(|t| (t, second))
                    .map_err(|s| {
                        if is_connect_error(Some(&s)) {
                            self.mark_down(second);
                            Status::unavailable(format!(
                                "upstream {}: no endpoint accepts connections",
                                self.name
                            ))
                        } else {
                            s
                        }
                    })
            }
            other => other,
        }
    }

    async fn grpc_on<'a, T, F, Fut>(&'a self, i: usize, call: &F) -> Result<T, Status>
    where
        F: Fn(&'a super::grpc::GrpcConn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let ep = &self.endpoints[i];
        let conn = ep
            .grpc
            .as_ref()
            .ok_or_else(|| Status::internal("not a gRPC upstream"))?;
        ep.in_flight.fetch_add(1, Ordering::Relaxed);
        let _guard = InFlight(&ep.in_flight);
        call(conn).await
    }

    /// A WebSocket upgrade to a chosen endpoint on a new connection (see `ws.rs`): the
    /// endpoint's answer, and the endpoint's in-flight count held for the connection's life.
    pub(crate) async fn ws_upgrade(
        &self,
        pq: &PathAndQuery,
        headers: &http::HeaderMap,
    ) -> Result<(super::ws::Answer<crate::net::tls::Stream>, Held), GwError> {
        let i = self.pick(None);
        let ep = &self.endpoints[i];
        let pool = ep
            .h1
            .as_ref()
            .ok_or_else(|| GwError::grpc(Code::Internal, "not an HTTP upstream"))?;
        let held = Held::new(&ep.in_flight);
        let io = pool.dial().await.map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
            ) {
                self.mark_down(i);
            }
            GwError::grpc(
                Code::Unavailable,
                format!("upstream {} ({}): {e}", self.name, ep.addr),
            )
        })?;
        let answer = super::ws::handshake(io, &ep.addr, pq.as_str(), headers).await?;
        Ok((answer, held))
    }

    /// Forwards an HTTP request (method, path and query, headers without hop-by-hop ones, body)
    /// to an endpoint; its address is the Host. A refused connection marks the endpoint down
    /// and the request goes to another one. An answer that is not valid HTTP/1.1 (or none) is
    /// a 502; a connection that fails, a 503.
    pub async fn http_forward(
        &self,
        method: &http::Method,
        pq: &PathAndQuery,
        headers: &http::HeaderMap,
        body: Bytes,
        deadline: tokio::time::Instant,
    ) -> Result<Response<crate::gateway::GwBody>, GwError> {
        let mut tried = None;
        for _ in 0..self.endpoints.len().min(2) {
            let i = self.pick(tried);
            let ep = &self.endpoints[i];
            let pool = ep
                .h1
                .as_ref()
                .ok_or_else(|| GwError::grpc(Code::Internal, "not an HTTP upstream"))?;
            ep.in_flight.fetch_add(1, Ordering::Relaxed);
            let _guard = InFlight(&ep.in_flight);
            let sent = pool
                .send(method, pq.as_str(), headers, &body, deadline)
                .await;
            match sent {
                Ok(resp) => return Ok(resp),
                Err(ClientError::Connect(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.mark_down(i);
                    tried = Some(i);
                }
                Err(e @ ClientError::Protocol(_)) => {
                    return Err(GwError::http(
                        http::StatusCode::BAD_GATEWAY,
                        Code::Unavailable,
                        format!("upstream {} ({}): {e}", self.name, ep.addr),
                    ));
                }
                Err(e) => {
                    return Err(GwError::grpc(
                        Code::Unavailable,
                        format!("upstream {} ({}): {e}", self.name, ep.addr),
                    ));
                }
            }
        }
        Err(GwError::grpc(
            Code::Unavailable,
            format!("upstream {}: no endpoint accepts connections", self.name),
        ))
    }
}

/// The TLS of one endpoint (`host:port`) of `cfg`, if the upstream has `tls`: ALPN h2 for gRPC,
/// http/1.1 for HTTP; the name checked is `server_name` or the endpoint's host. A CA or key that
/// does not load fails the start, naming the upstream.
fn endpoint_tls(
    cfg: &config::Upstream,
    addr: &str,
) -> Result<Option<std::sync::Arc<crate::net::tls::ClientTls>>, String> {
    use crate::net::tls::{ALPN_H2, ALPN_HTTP1, ClientOptions, ClientTls};
    let Some(t) = &cfg.tls else {
        return Ok(None);
    };
    let host = match &t.server_name {
        Some(name) => name.clone(),
        None => addr
            .rsplit_once(':')
            .map_or(addr, |(host, _)| host)
            .to_string(),
    };
    let alpn: &[&[u8]] = match cfg.protocol {
        UpstreamProtocol::Grpc => &[ALPN_H2],
        UpstreamProtocol::Http => &[ALPN_HTTP1],
    };
    let opts = ClientOptions {
        insecure: t.insecure,
        cacert: t.ca.clone(),
        identity: t.cert.clone().zip(t.key.clone()),
    };
    ClientTls::new(&host, alpn, &opts)
        .map(|c| Some(std::sync::Arc::new(c)))
        .map_err(|e| format!("upstream {}: tls: {e}", cfg.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(policy: LbPolicy, n: usize) -> Upstream {
        let cfg = config::Upstream {
            name: "t".into(),
            protocol: UpstreamProtocol::Http,
            endpoints: (0..n)
                .map(|i| format!("127.0.0.1:{}", 10_000 + i))
                .collect(),
            lb: policy,
            connect_timeout: config::TextDuration(Duration::from_secs(1)),
            tls: None,
        };
        Upstream::new(&cfg).unwrap()
    }

    #[tokio::test]
    async fn round_robin_cycles_and_skips_endpoints_that_are_down() {
        let u = upstream(LbPolicy::RoundRobin, 3);
        let picks: Vec<usize> = (0..6).map(|_| u.pick(None)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        u.mark_down(1);
        assert!((0..6).map(|_| u.pick(None)).all(|i| i != 1));
        assert_ne!(u.pick(Some(0)), 0);
    }

    #[tokio::test]
    async fn least_request_prefers_the_less_busy() {
        let u = upstream(LbPolicy::LeastRequest, 2);
        u.endpoints[0].in_flight.store(10, Ordering::Relaxed);
        assert!((0..100).all(|_| u.pick(None) == 1));
        u.endpoints[1].in_flight.store(20, Ordering::Relaxed);
        assert!((0..100).all(|_| u.pick(None) == 0));
    }
}
