//! Rate limits shared by every gateway instance (`[rate_limit] store = "redis"`): one GCRA
//! decision per request is one atomic Lua script in Redis (EVALSHA, loaded once and reloaded
//! when Redis answers NOSCRIPT — redis-rs's `Script` does both), on Redis's own clock, so that
//! instances with skewed clocks agree. It answers allowed / remaining / reset / retry, so the
//! `RateLimit-*` headers stay exact.
//!
//! When Redis is slow (past `timeout`) or down, `on_error` decides: this instance alone at the
//! limits divided by `instances` (`local`, the default), `allow` or `deny`; the outage is counted
//! (`gwbench_rate_limit_store_errors_total`) and logged once when it starts and once when it
//! ends; the connection comes back by itself (at most one connection attempt a second). A key
//! refused by Redis is remembered until its retry time, so a flood from one key costs Redis
//! one call, not one per request (as Envoy's ratelimit service does).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::policy::{self, Policy, PolicyLayer};
use super::ratelimit::{Allowance, Decision, GovernorStore, KeyStore, key_of, outcome};
use crate::gateway::config::{OnStoreError, RateLimitConfig, RedisConfig};
use crate::gateway::{GwRequest, GwResponse};

/// GCRA in one step, on Redis's clock, in microseconds. KEYS[1]: the key; ARGV[1]: the emission
/// interval (µs per request), ARGV[2]: the burst. The stored value is the theoretical arrival
/// time, kept until it is in the past. Returns {allowed, remaining, reset µs, retry µs}.
const GCRA: &str = r"
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if allow_at > now then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / emission), new_tat - now, 0}
";

/// One allowance as Redis sees it, and this instance's share for when Redis cannot answer.
#[derive(Debug)]
pub struct Scope {
    /// Part of the Redis key: `default`, `mount<i>`, or the overridden key.
    name: String,
    emission_us: u64,
    burst: u32,
    window_s: u64,
    fallback: Arc<dyn KeyStore>,
}

impl Scope {
    /// `rate` per `per` with `burst`, shared; the fallback divides both by `instances`.
    pub fn new(
        name: &str,
        rate: NonZeroU32,
        per: Duration,
        burst: NonZeroU32,
        instances: NonZeroU32,
        max_keys: usize,
    ) -> Scope {
        let emission = (per / rate.get()).max(Duration::from_micros(1));
        let share =
            |n: NonZeroU32| NonZeroU32::new(n.get() / instances.get()).unwrap_or(NonZeroU32::MIN);
        Scope {
            name: name.to_string(),
            emission_us: emission.as_micros() as u64,
            burst: burst.get(),
            window_s: emission.saturating_mul(burst.get()).as_secs().max(1),
            fallback: Arc::new(GovernorStore::new(share(rate), per, share(burst), max_keys)),
        }
    }

    /// This scope's local store (pruned with the others).
    pub fn fallback(&self) -> Arc<dyn KeyStore> {
        self.fallback.clone()
    }
}

/// The connection to Redis and what a decision needs.
pub struct RedisLimiter {
    client: redis::Client,
    conn: ArcSwapOption<redis::aio::ConnectionManager>,
    /// Held while connecting; and when the last attempt was.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    script: redis::Script,
    cfg: RedisConfig,
    /// Keys Redis refused, until when (the local fast path).
    denied: Mutex<HashMap<String, Instant>>,
    failing: AtomicBool,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("url", &self.cfg.url)
            .finish()
    }
}

/// Most refused keys remembered at once (beyond it, expired ones are dropped first, then all):
/// with API keys of at most 256 bytes, a few MB at most.
const MAX_DENIED: usize = 10_000;

impl RedisLimiter {
    /// A limiter on `cfg.url` (connected on first use).
    pub fn new(cfg: &RedisConfig) -> Result<RedisLimiter, String> {
        let client = redis::Client::open(cfg.url.as_str())
            .map_err(|e| format!("rate_limit.redis.url {:?}: {e}", cfg.url))?;
        Ok(RedisLimiter {
            client,
            conn: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(None),
            script: redis::Script::new(GCRA),
            cfg: cfg.clone(),
            denied: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
        })
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        let mut last = self.connecting.lock().await;
        if let Some(c) = self.conn.load_full() {
            return Ok((*c).clone());
        }
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return Err("not connected (next attempt within a second)".into());
        }
        *last = Some(Instant::now());
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.cfg.timeout.0.max(Duration::from_millis(100)))
            .set_response_timeout(self.cfg.timeout.0)
            .set_number_of_retries(1);
        let c = redis::aio::ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(|e| e.to_string())?;
        self.conn.store(Some(Arc::new(c.clone())));
        Ok(c)
    }

    /// One decision for `key` in `scope`: Redis's, or the failure policy's.
    pub async fn decide(&self, scope: &Scope, key: &str) -> Decision {
        let full = format!("{}{}:{key}", self.cfg.prefix, scope.name);
        let now = Instant::now();
        if let Some(until) = self.denied_until(&full, now) {
            return Decision::Deny {
                retry_after: until - now,
            };
        }
        let asked = async {
            let mut conn = self.connection().await?;
            self.script
                .key(&full)
                .arg(scope.emission_us)
                .arg(scope.burst)
                .invoke_async::<(i64, i64, i64, i64)>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        let answer = match tokio::time::timeout(self.cfg.timeout.0, asked).await {
            Ok(a) => a,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(self.cfg.timeout.0)
            )),
        };
        let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        match answer {
            Ok((allowed, remaining, reset, retry)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!(url = %self.cfg.url, "rate-limit store answers again: limits are shared again");
                }
                if allowed == 1 {
                    Decision::Allow {
                        remaining: u32::try_from(remaining).unwrap_or(0),
                        reset: us(reset),
                    }
                } else {
                    self.remember_denied(full, now + us(retry));
                    Decision::Deny {
                        retry_after: us(retry),
                    }
                }
            }
            Err(e) => {
                metrics::counter!("gwbench_rate_limit_store_errors_total").increment(1);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(url = %self.cfg.url, error = %e, policy = ?self.cfg.on_error,
                        "rate-limit store unavailable: the failure policy decides until it answers");
                }
                match self.cfg.on_error {
                    OnStoreError::Local => scope.fallback.check(key),
                    OnStoreError::Allow => Decision::Allow {
                        remaining: scope.burst,
                        reset: Duration::ZERO,
                    },
                    OnStoreError::Deny => Decision::Deny {
                        retry_after: Duration::from_secs(1),
                    },
                }
            }
        }
    }

    fn denied_until(&self, key: &str, now: Instant) -> Option<Instant> {
        let denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        denied.get(key).copied().filter(|until| *until > now)
    }

    fn remember_denied(&self, key: String, until: Instant) {
        let mut denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
        if denied.len() >= MAX_DENIED {
            let now = Instant::now();
            denied.retain(|_, t| *t > now);
            if denied.len() >= MAX_DENIED {
                denied.clear();
            }
        }
        denied.insert(key, until);
    }
}

/// The shared rate limit: a [`Policy`] whose decision awaits Redis.
#[derive(Debug)]
pub struct SharedLimit {
    limiter: Arc<RedisLimiter>,
    default: Arc<Scope>,
    overrides: Arc<HashMap<String, Arc<Scope>>>,
    cfg: Arc<RateLimitConfig>,
}

/// The shared rate limit in front of a service.
pub type SharedLimitLayer = PolicyLayer<SharedLimit>;

impl SharedLimit {
    /// Decisions by `limiter` in `default`'s allowance, or an override's for its key.
    pub fn new(
        limiter: Arc<RedisLimiter>,
        default: Arc<Scope>,
        overrides: Arc<HashMap<String, Arc<Scope>>>,
        cfg: Arc<RateLimitConfig>,
    ) -> Self {
        SharedLimit {
            limiter,
            default,
            overrides,
            cfg,
        }
    }
}

impl Policy for SharedLimit {
    type State = Allowance;

    fn on_request(&self, req: &mut GwRequest) -> policy::Decision<Allowance> {
        let key = match key_of(req, &self.cfg) {
            Ok(key) => key,
            Err(refused) => return policy::Decision::Now(Err(refused)),
        };
        let scope = self.overrides.get(&key).unwrap_or(&self.default).clone();
        let limiter = self.limiter.clone();
        policy::Decision::Later(Box::pin(async move {
            let decision = limiter.decide(&scope, &key).await;
            outcome(decision, scope.burst, scope.window_s)
        }))
    }

    fn on_response(&self, allowance: Allowance, resp: &mut GwResponse) {
        allowance.write(resp.headers_mut());
    }
}
