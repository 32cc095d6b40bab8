//! Per-key rate limits (GCRA, governor): the key is the API key header, the JWT subject, or the
//! client address, as configured; `rate` per second with `burst`. Allowed responses carry
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and the newer `RateLimit-Policy` /
//! `RateLimit` pair; refused ones get 429 with `Retry-After` and a JSON error. The key store sits
//! behind [`KeyStore`] so that a shared store (Redis, for several gateways) can replace the local
//! one without touching the layer. Idle keys are pruned, so memory follows active keys only.

use std::fmt::Debug;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderValue};
use tonic::Code;

use super::auth::Subject;
use crate::gateway::config::{RateLimitConfig, RateLimitKey};
use crate::gateway::status::GwError;
use crate::gateway::{GwRequest, GwResponse};
use crate::net::PeerAddr;

/// What the store says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more fit in the burst, which is full again after `reset`.
    Allow {
        /// Requests left in the burst.
        remaining: u32,
        /// Time until the burst is full again.
        reset: Duration,
    },
    /// Refused; the next one fits after `retry_after`.
    Deny {
        /// Time until a request fits.
        retry_after: Duration,
    },
}

/// Where per-key allowances live.
pub trait KeyStore: Send + Sync + Debug {
    /// Takes one request's worth of allowance for `key`.
    fn check(&self, key: &str) -> Decision;
    /// Forgets keys whose allowance is full again (idle).
    fn prune(&self);
    /// Keys held.
    fn len(&self) -> usize;
    /// Whether no key is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The burst size (`RateLimit-Limit`).
    fn limit(&self) -> u32;
    /// The policy window in seconds (time to refill the whole burst).
    fn window_s(&self) -> u64;
}

type Limiter<C> = RateLimiter<String, DashMapStateStore<String>, C, StateInformationMiddleware>;

/// The local store: a keyed GCRA limiter.
#[derive(Debug)]
pub struct GovernorStore<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
    clock: C,
    burst: u32,
    per_request: Duration,
}

impl GovernorStore<DefaultClock> {
    /// `rate` requests per `per` per key, with `burst`.
    pub fn new(rate: NonZeroU32, per: Duration, burst: NonZeroU32) -> Self {
        GovernorStore::with_clock(rate, per, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone + Send + Sync + Debug> GovernorStore<C>
where
    C::Instant: Send + Sync,
{
    /// The same on a given clock (tests use a fake one).
    pub fn with_clock(rate: NonZeroU32, per: Duration, burst: NonZeroU32, clock: C) -> Self {
        let interval = (per / rate.get()).max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .expect("a non-zero period")
            .allow_burst(burst);
        let limiter: Limiter<C> =
            RateLimiter::new(quota, DashMapStateStore::default(), clock.clone());
        GovernorStore {
            limiter,
            clock,
            burst: burst.get(),
            per_request: quota.replenish_interval(),
        }
    }
}

impl<C> KeyStore for GovernorStore<C>
where
    C: Clock + Clone + Send + Sync + Debug,
    C::Instant: Send + Sync,
{
    fn check(&self, key: &str) -> Decision {
        match self.limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision::Allow {
                    remaining,
                    reset: self
                        .per_request
                        .saturating_mul(self.burst.saturating_sub(remaining)),
                }
            }
            Err(not_until) => Decision::Deny {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }

    fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.limiter.len()
    }

    fn limit(&self) -> u32 {
        self.burst
    }

    fn window_s(&self) -> u64 {
        self.per_request.saturating_mul(self.burst).as_secs().max(1)
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The key of a request: API key, JWT subject or client address, falling back to the address.
pub fn key_of(req: &GwRequest, cfg: &RateLimitConfig) -> String {
    let headers = &req.parts.headers;
    let subject = req.parts.extensions.get::<Subject>();
    match (cfg.key, subject) {
        // A verified subject is who asks, whatever API key the request also carries: an
        // unverified key would let one client multiply its allowance by rotating keys.
        (RateLimitKey::ApiKey | RateLimitKey::Sub, Some(Subject(s))) => {
            return format!("sub:{s}");
        }
        (RateLimitKey::ApiKey, None) => {
            if let Some(k) = headers
                .get(cfg.api_key_header.as_str())
                .and_then(|v| v.to_str().ok())
            {
                return format!("key:{k}");
            }
        }
        (RateLimitKey::Sub | RateLimitKey::Ip, _) => {}
    }
    format!(
        "ip:{}",
        client_ip(
            headers,
            req.parts.extensions.get::<PeerAddr>(),
            cfg.trust_forwarded_for
        )
    )
}

/// The client's address: the socket peer, or the first `X-Forwarded-For` entry when trusted.
fn client_ip(headers: &HeaderMap, peer: Option<&PeerAddr>, trust_forwarded: bool) -> String {
    if trust_forwarded
        && let Some(first) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
    {
        return first.trim().to_string();
    }
    peer.map_or_else(|| "unknown".to_string(), |p| p.0.ip().to_string())
}

// ===== RateLimitLayer =====

/// Per-key allowances that differ from the default, by key (`key:…`, `sub:…`, `ip:…`).
pub type Overrides = Arc<std::collections::HashMap<String, Arc<dyn KeyStore>>>;

/// Builds the override stores of `cfg`.
pub fn overrides(cfg: &RateLimitConfig) -> Overrides {
    Arc::new(
        cfg.overrides
            .iter()
            .map(|o| {
                let store: Arc<dyn KeyStore> =
                    Arc::new(GovernorStore::new(o.rate, o.per.0, o.burst));
                (o.key.clone(), store)
            })
            .collect(),
    )
}

/// Applies per-key rate limits: 429 when a key's allowance is spent, `RateLimit-*` headers on
/// every answer.
#[derive(Debug, Clone)]
pub struct RateLimit {
    store: Arc<dyn KeyStore>,
    overrides: Overrides,
    cfg: Arc<RateLimitConfig>,
}

impl RateLimit {
    /// A policy over `store` (and the per-key `overrides`), keyed as `cfg` says.
    pub fn new(store: Arc<dyn KeyStore>, overrides: Overrides, cfg: Arc<RateLimitConfig>) -> Self {
        RateLimit {
            store,
            overrides,
            cfg,
        }
    }
}

/// The rate-limit middleware: [`RateLimit`] run by the policy service.
pub type RateLimitLayer = super::PolicyLayer<RateLimit>;

/// The allowance a passed request left, for its response's headers.
#[derive(Debug)]
pub struct Allowance {
    limit: u32,
    window_s: u64,
    remaining: u32,
    reset_s: u64,
}

impl Allowance {
    /// Writes the `RateLimit-*` headers (both the draft-6 trio and the newer pair).
    pub(super) fn write(&self, h: &mut HeaderMap) {
        let Allowance {
            limit,
            window_s,
            remaining,
            reset_s,
        } = *self;
        h.insert("ratelimit-limit", HeaderValue::from(limit));
        h.insert("ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("ratelimit-reset", HeaderValue::from(reset_s));
        if let Ok(v) = HeaderValue::from_str(&format!("\"default\";q={limit};w={window_s}")) {
            h.insert("ratelimit-policy", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("\"default\";r={remaining};t={reset_s}")) {
            h.insert("ratelimit", v);
        }
    }
}

/// What a decision means for the request: the allowance it leaves, or the 429 that refuses it
/// (with `Retry-After` and the `RateLimit-*` headers of a spent allowance).
pub(super) fn outcome(
    decision: Decision,
    limit: u32,
    window_s: u64,
) -> Result<Allowance, Box<GwResponse>> {
    match decision {
        Decision::Deny { retry_after } => {
            metrics::counter!("gwbench_rate_limited_total").increment(1);
            let secs = ceil_secs(retry_after).max(1);
            let mut resp = GwError::http(
                http::StatusCode::TOO_MANY_REQUESTS,
                Code::ResourceExhausted,
                format!(
                    "rate limit exceeded ({limit} requests per {window_s} s); retry in {secs} s"
                ),
            )
            .into_response();
            let h = resp.headers_mut();
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
            let spent = Allowance {
                limit,
                window_s,
                remaining: 0,
                reset_s: secs,
            };
            spent.write(h);
            Err(Box::new(resp))
        }
        Decision::Allow { remaining, reset } => Ok(Allowance {
            limit,
            window_s,
            remaining,
            reset_s: ceil_secs(reset),
        }),
    }
}

impl super::Policy for RateLimit {
    type State = Allowance;

    fn on_request(&self, req: &mut GwRequest) -> super::Decision<Allowance> {
        let key = key_of(req, &self.cfg);
        let store = self.overrides.get(&key).unwrap_or(&self.store);
        let (limit, window_s) = (store.limit(), store.window_s());
        super::Decision::Now(outcome(store.check(&key), limit, window_s))
    }

    fn on_response(&self, allowance: Allowance, resp: &mut GwResponse) {
        allowance.write(resp.headers_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn store(rate: u32, burst: u32) -> (GovernorStore<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let s = GovernorStore::with_clock(
            NonZeroU32::new(rate).unwrap(),
            Duration::from_secs(1),
            NonZeroU32::new(burst).unwrap(),
            clock.clone(),
        );
        (s, clock)
    }

    #[test]
    fn burst_then_refill_per_key() {
        let (s, clock) = store(10, 3);
        for left in [2, 1, 0] {
            assert!(matches!(s.check("a"), Decision::Allow { remaining, .. } if remaining == left));
        }
        let Decision::Deny { retry_after } = s.check("a") else {
            panic!("the burst is spent")
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        // Another key is not affected by a's flood.
        assert!(matches!(s.check("b"), Decision::Allow { remaining: 2, .. }));
        clock.advance(Duration::from_millis(100));
        assert!(matches!(s.check("a"), Decision::Allow { remaining: 0, .. }));
    }

    #[test]
    fn a_million_keys_are_pruned_once_idle() {
        let (s, clock) = store(100, 10);
        for i in 0..1_000_000u32 {
            assert!(matches!(s.check(&format!("k{i}")), Decision::Allow { .. }));
        }
        assert_eq!(s.len(), 1_000_000);
        clock.advance(Duration::from_secs(1)); // every key's burst has refilled: all idle
        s.prune();
        assert!(s.is_empty(), "{} keys left", s.len());
    }
}
