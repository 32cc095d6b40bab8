//! Circuit breakers, one per upstream: closed → open after N consecutive failures, or a failure
//! ratio over a rolling window with a minimum request count; open → half-open after a cooldown;
//! half-open admits a bounded number of probes; a probe's success closes, its failure re-opens
//! with the cooldown doubled (capped). Failures are 5xx answers (including the gateway's own 503
//! for a refused connection and 504 for a deadline), not 4xx. While closed, admission and
//! recording are atomics only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

use crate::config::BreakerConfig;
use crate::gateway::status::GwError;
use crate::gateway::{GwRequest, GwResponse};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const BUCKETS: usize = 10;

/// Breaker state, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests pass.
    Closed,
    /// Requests are refused until the cooldown ends.
    Open,
    /// A few probes pass.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Bucket {
    slot: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
    epoch: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    opened_at_ns: AtomicU64,
    cooldown_ns: AtomicU64,
    probes: AtomicU32,
    window: [Bucket; BUCKETS],
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it (as a probe when half-open).
    Pass {
        /// Whether this request is a half-open probe.
        probe: bool,
    },
    /// Refuse it; retry after this long.
    Reject(Duration),
}

impl Breaker {
    /// A closed breaker for upstream `name`.
    pub fn new(name: &str, cfg: BreakerConfig) -> Self {
        let breaker = Breaker {
            name: name.to_string(),
            cooldown_ns: AtomicU64::new(cfg.cooldown.0.as_nanos() as u64),
            cfg,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            consecutive: AtomicU32::new(0),
            opened_at_ns: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            window: Default::default(),
        };
        breaker.export(CLOSED);
        breaker
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            CLOSED => State::Closed,
            OPEN => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Decides whether a request may go to the upstream.
    pub fn admit(&self) -> Admission {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admission::Pass { probe: false },
            OPEN => {
                let now = self.now_ns();
                let until = self.opened_at_ns.load(Ordering::Acquire)
                    + self.cooldown_ns.load(Ordering::Relaxed);
                if now < until {
                    return Admission::Reject(Duration::from_nanos(until - now));
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.probes.store(0, Ordering::Release);
                    tracing::info!(upstream = %self.name, "circuit half-open: probing");
                    self.export(HALF_OPEN);
                }
                self.admit_probe()
            }
            _ => self.admit_probe(),
        }
    }

    fn admit_probe(&self) -> Admission {
        let max = self.cfg.half_open_probes;
        let taken = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < max).then_some(p + 1)
            });
        match taken {
            Ok(_) => Admission::Pass { probe: true },
            Err(_) => Admission::Reject(self.cfg.cooldown.0),
        }
    }

    /// Records the outcome of an admitted request.
    pub fn record(&self, probe: bool, failure: bool) {
        if probe || self.state.load(Ordering::Acquire) == HALF_OPEN {
            if failure {
                let next = (self.cooldown_ns.load(Ordering::Relaxed) * 2)
                    .min(self.cfg.max_cooldown.0.as_nanos() as u64);
                self.cooldown_ns.store(next, Ordering::Relaxed);
                self.trip(HALF_OPEN);
            } else if self
                .state
                .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.consecutive.store(0, Ordering::Relaxed);
                self.cooldown_ns
                    .store(self.cfg.cooldown.0.as_nanos() as u64, Ordering::Relaxed);
                for b in &self.window {
                    b.total.store(0, Ordering::Relaxed);
                    b.failures.store(0, Ordering::Relaxed);
                }
                tracing::info!(upstream = %self.name, "circuit closed");
                self.export(CLOSED);
            }
            return;
        }
        let (total, failures) = self.count(failure);
        if !failure {
            self.consecutive.store(0, Ordering::Relaxed);
            return;
        }
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let ratio_tripped = total >= self.cfg.min_requests
            && f64::from(failures) / f64::from(total) >= self.cfg.failure_ratio;
        if consecutive >= self.cfg.consecutive_failures || ratio_tripped {
            self.trip(CLOSED);
        }
    }

    /// Counts a request in the rolling window; returns the window's (total, failures).
    fn count(&self, failure: bool) -> (u32, u32) {
        let bucket_ns = (self.cfg.window.0.as_nanos() as u64 / BUCKETS as u64).max(1);
        let slot = self.now_ns() / bucket_ns + 1; // 0 marks an unused bucket
        let b = &self.window[(slot % BUCKETS as u64) as usize];
        let seen = b.slot.load(Ordering::Acquire);
        if seen != slot
            && b.slot
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.total.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
        }
        b.total.fetch_add(1, Ordering::Relaxed);
        if failure {
            b.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.window
            .iter()
            .filter(|b| {
                let s = b.slot.load(Ordering::Acquire);
                s != 0 && s + BUCKETS as u64 > slot
            })
            .fold((0, 0), |(t, f), b| {
                (
                    t + b.total.load(Ordering::Relaxed),
                    f + b.failures.load(Ordering::Relaxed),
                )
            })
    }

    fn trip(&self, from: u8) {
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.opened_at_ns.store(self.now_ns(), Ordering::Release);
            tracing::warn!(
                upstream = %self.name,
                cooldown_ms = self.cooldown_ns.load(Ordering::Relaxed) / 1_000_000,
                "circuit open"
            );
            self.export(OPEN);
        }
    }
}

impl Breaker {
    /// Exports the state as the gauge `gwbench_breaker_state{upstream}` (0 closed, 1 open,
    /// 2 half-open).
    fn export(&self, state: u8) {
        metrics::gauge!("gwbench_breaker_state", "upstream" => self.name.clone())
            .set(f64::from(state));
    }
}

/// Whether a response counts as a failure of the upstream.
fn is_failure(status: StatusCode) -> bool {
    status.is_server_error()
}

// ===== BreakerLayer =====

/// Puts a breaker per upstream in front of the inner service.
#[derive(Debug, Clone)]
pub struct BreakerLayer {
    breakers: Arc<Vec<Arc<Breaker>>>,
}

impl BreakerLayer {
    /// One breaker per upstream, by upstream index.
    pub fn new(breakers: Arc<Vec<Arc<Breaker>>>) -> Self {
        BreakerLayer { breakers }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breakers: self.breakers.clone(),
        }
    }
}

/// The service of [`BreakerLayer`].
#[derive(Debug, Clone)]
pub struct BreakerService<S> {
    inner: S,
    breakers: Arc<Vec<Arc<Breaker>>>,
}

impl<S> Service<GwRequest> for BreakerService<S>
where
    S: Service<GwRequest, Response = GwResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = GwResponse;
    type Error = std::convert::Infallible;
    type Future = super::MwFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GwRequest) -> Self::Future {
        let breaker = self.breakers[req.upstream].clone();
        let mut inner = super::take_ready(&mut self.inner);
        Box::pin(async move {
            match breaker.admit() {
                Admission::Reject(wait) => {
                    let mut resp = GwError::grpc(
                        Code::Unavailable,
                        format!(
                            "circuit open for upstream {}: failing fast; retry later",
                            breaker.name
                        ),
                    )
                    .into_response();
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    resp.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                    Ok(resp)
                }
                Admission::Pass { probe } => {
                    let resp = inner.call(req).await?;
                    breaker.record(probe, is_failure(resp.status()));
                    Ok(resp)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TextDuration;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            window: TextDuration(Duration::from_secs(10)),
            min_requests: 10,
            cooldown: TextDuration(Duration::from_secs(2)),
            max_cooldown: TextDuration(Duration::from_secs(5)),
            half_open_probes: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures_and_recovers_through_a_probe() {
        let b = Breaker::new("u", cfg());
        for _ in 0..2 {
            b.record(false, true);
        }
        b.record(false, false); // a success resets the run
        for _ in 0..2 {
            b.record(false, true);
        }
        assert_eq!(b.state(), State::Closed);
        b.record(false, true);
        assert_eq!(b.state(), State::Open);
        assert!(matches!(b.admit(), Admission::Reject(d) if d <= Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(), Admission::Pass { probe: true });
        assert!(
            matches!(b.admit(), Admission::Reject(_)),
            "one probe at a time"
        );
        b.record(true, true); // the probe fails: open again, cooldown doubled
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            matches!(b.admit(), Admission::Reject(_)),
            "cooldown is now 4 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Admission::Pass { probe: true });
        b.record(true, false);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(), Admission::Pass { probe: false });
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_a_failure_ratio_with_enough_requests() {
        let b = Breaker::new("u", cfg());
        // Alternating outcomes never make 3 consecutive failures, but half of them fail.
        for i in 0..9 {
            b.record(false, i % 2 == 0);
        }
        assert_eq!(b.state(), State::Closed, "below the minimum request count");
        b.record(false, false);
        b.record(false, true);
        assert_eq!(b.state(), State::Open);
        // Old failures leave the window.
        let b = Breaker::new("u", cfg());
        for i in 0..9 {
            b.record(false, i % 2 == 0);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        b.record(false, true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn only_server_errors_are_failures() {
        assert!(is_failure(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_failure(StatusCode::GATEWAY_TIMEOUT));
        assert!(!is_failure(StatusCode::NOT_FOUND));
        assert!(!is_failure(StatusCode::TOO_MANY_REQUESTS));
    }
}
