//! Per-key rate limits (GCRA, governor): the key is the API key header, the JWT subject, or the
//! client address, as configured; `rate` per second with `burst`. Allowed responses carry
//! `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and the newer `RateLimit-Policy` /
//! `RateLimit` pair; refused ones get 429 with `Retry-After` and a JSON error. The key store sits
//! behind [`KeyStore`] so that a shared store (Redis, for several gateways) can replace the local
//! one without touching the layer. Idle keys are pruned, so memory follows active keys only,
//! and bounded: an API key is at most [`MAX_API_KEY_BYTES`] (a longer one is a 400: a real key
//! is far shorter, and a hash would only hide a client's mistake), and a store holds at most
//! `max_keys` keys ([`BoundedStore`]).

use std::fmt::Debug;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
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

/// The longest API key taken as a rate-limit key; a longer one is refused with 400.
pub const MAX_API_KEY_BYTES: usize = 256;

type Limiter<C> = RateLimiter<String, BoundedStore, C, StateInformationMiddleware>;

/// governor's keyed state, bounded: at most `max` keys. A new key that finds the store full
/// shares one overflow state (every such key together gets one key's allowance) and is counted
/// (`gwbench_rate_limit_overflow_total`): memory stays bounded under a flood of new keys, and
/// the flood is limited as one client. Keys already held are not evicted while active (that
/// would hand their owners a fresh burst); idle ones go with the prune.
#[derive(Debug)]
pub struct BoundedStore {
    keys: DashMapStateStore<String>,
    max: usize,
    overflow: InMemoryState,
    /// Set when a new key found the store full (the owner then prunes; a held key's check
    /// reads nothing more than it did).
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl BoundedStore {
    /// An empty store of at most `max` keys, raising `full` when a new key finds it full.
    pub fn new(max: usize, full: Arc<std::sync::atomic::AtomicBool>) -> Self {
        BoundedStore {
            keys: DashMapStateStore::default(),
            max: max.max(1),
            overflow: InMemoryState::default(),
            full,
        }
    }
}

impl StateStore for BoundedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &String, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.keys.get(key) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if self.keys.len() >= self.max {
            self.full.store(true, Ordering::Relaxed);
            metrics::counter!("gwbench_rate_limit_overflow_total").increment(1);
            return self.overflow.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let state = self.keys.entry(key.clone()).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<String> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.keys.retain_recent(drop_below);
    }

    fn shrink_to_fit(&self) {
        self.keys.shrink_to_fit();
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.keys)
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The local store: a keyed GCRA limiter.
#[derive(Debug)]
pub struct GovernorStore<C: Clock = DefaultClock> {
    limiter: Limiter<C>,
    clock: C,
    burst: u32,
    per_request: Duration,
    /// The clock's reading when the store was made.
    start: C::Instant,
    /// When the store, full, was last pruned (ns since `start`), so that a flood of new keys
    /// costs one prune a second, not one per request.
    full_pruned_ns: AtomicU64,
    /// Raised by the store when a new key found it full.
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl GovernorStore<DefaultClock> {
    /// `rate` requests per `per` per key, with `burst`, at most `max_keys` keys.
    pub fn new(rate: NonZeroU32, per: Duration, burst: NonZeroU32, max_keys: usize) -> Self {
        GovernorStore::with_clock(rate, per, burst, DefaultClock::default()).max_keys(max_keys)
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
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        GovernorStore {
            limiter: RateLimiter::new(
                quota,
                BoundedStore::new(usize::MAX, full.clone()),
                clock.clone(),
            ),
            full,
            start: clock.now(),
            clock,
            burst: burst.get(),
            per_request: quota.replenish_interval(),
            full_pruned_ns: AtomicU64::new(0),
        }
    }

    /// The same with at most `max` keys ([`BoundedStore`]).
    pub fn max_keys(self, max: usize) -> Self {
        let quota = Quota::with_period(self.per_request)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN));
        GovernorStore {
            limiter: RateLimiter::new(
                quota,
                BoundedStore::new(max, self.full.clone()),
                self.clock.clone(),
            ),
            ..self
        }
    }

    /// A full store first forgets its idle keys (lossless: an idle key's state is a new key's),
    /// at most once a second; what went is counted (`gwbench_rate_limit_keys_pruned_total`).
    fn prune_if_full(&self) {
        if !self.full.load(Ordering::Relaxed) {
            return;
        }
        let now = self.clock.now().duration_since(self.start).as_u64();
        let last = self.full_pruned_ns.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 1_000_000_000
            || self
                .full_pruned_ns
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.full.store(false, Ordering::Relaxed);
        self.prune();
    }
}

impl<C> KeyStore for GovernorStore<C>
where
    C: Clock + Clone + Send + Sync + Debug,
    C::Instant: Send + Sync,
{
    fn check(&self, key: &str) -> Decision {
        self.prune_if_full();
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
        let before = self.limiter.len();
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let pruned = before.saturating_sub(self.limiter.len());
        metrics::counter!("gwbench_rate_limit_keys_pruned_total").increment(pruned as u64);
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
/// An API key longer than [`MAX_API_KEY_BYTES`] is refused (400): it would be kept whole.
pub fn key_of(req: &GwRequest, cfg: &RateLimitConfig) -> Result<String, super::Refusal> {
    let headers = &req.parts.headers;
    let subject = req.parts.extensions.get::<Subject>();
    match (cfg.key, subject) {
        // A verified subject is who asks, whatever API key the request also carries: an
        // unverified key would let one client multiply its allowance by rotating keys.
        (RateLimitKey::ApiKey | RateLimitKey::Sub, Some(Subject(s))) => {
            return Ok(format!("sub:{s}"));
        }
        (RateLimitKey::ApiKey, None) => {
            if let Some(k) = headers.get(cfg.api_key_header.as_str()) {
                if k.len() > MAX_API_KEY_BYTES {
                    return Err(Box::new(
                        GwError::http(
                            http::StatusCode::BAD_REQUEST,
                            Code::InvalidArgument,
                            format!(
                                "{} is longer than {MAX_API_KEY_BYTES} bytes",
                                cfg.api_key_header
                            ),
                        )
                        .into_response(),
                    ));
                }
                if let Ok(k) = k.to_str() {
                    return Ok(format!("key:{k}"));
                }
            }
        }
        (RateLimitKey::Sub | RateLimitKey::Ip, _) => {}
    }
    Ok(format!(
        "ip:{}",
        client_ip(
            headers,
            req.peer.map(PeerAddr).as_ref(),
            cfg.trust_forwarded_for
        )
    ))
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
                    Arc::new(GovernorStore::new(o.rate, o.per.0, o.burst, cfg.max_keys));
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
        let key = match key_of(req, &self.cfg) {
            Ok(key) => key,
            Err(refused) => return super::Decision::Now(Err(refused)),
        };
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

    #[test]
    fn a_full_store_limits_new_keys_together_and_prunes_idle_ones_at_most_once_a_second() {
        let (s, clock) = store(1, 1);
        let s = s.max_keys(3);
        for k in ["a", "b", "c"] {
            assert!(matches!(s.check(k), Decision::Allow { .. }));
        }
        // Full of active keys: new keys share one overflow allowance (burst 1).
        assert!(matches!(s.check("new-1"), Decision::Allow { .. }));
        for k in ["new-2", "new-3", "new-4"] {
            assert!(matches!(s.check(k), Decision::Deny { .. }), "{k}");
        }
        assert_eq!(s.len(), 3, "no new key was stored");
        // Held keys keep their own state meanwhile.
        assert!(matches!(s.check("a"), Decision::Deny { .. }));
        // Once they are idle (refilled), the next new key finds them pruned and gets its own.
        clock.advance(Duration::from_secs(2));
        assert!(matches!(s.check("new-5"), Decision::Allow { .. }));
        assert_eq!(s.len(), 1, "the idle keys went, the new one stayed");
        // A burst of new keys within the same second does not prune again (one scan a second).
        for k in ["x", "y"] {
            assert!(matches!(s.check(k), Decision::Allow { .. }));
        }
        assert_eq!(s.len(), 3);
        assert!(
            matches!(s.check("z"), Decision::Allow { .. }),
            "the overflow refilled"
        );
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn an_api_key_over_the_bound_is_a_400_and_never_a_key() {
        let cfg = RateLimitConfig::default();
        let mut req = crate::gateway::test_request(http::Method::GET, "/x", &[]);
        let long = "k".repeat(MAX_API_KEY_BYTES + 1);
        req.parts
            .headers
            .insert("x-api-key", HeaderValue::from_str(&long).unwrap());
        let Err(refused) = key_of(&req, &cfg) else {
            panic!("an over-long key was taken")
        };
        assert_eq!(refused.status(), http::StatusCode::BAD_REQUEST);
        let fits = "k".repeat(MAX_API_KEY_BYTES);
        req.parts
            .headers
            .insert("x-api-key", HeaderValue::from_str(&fits).unwrap());
        assert_eq!(key_of(&req, &cfg).ok(), Some(format!("key:{fits}")));
    }
}
