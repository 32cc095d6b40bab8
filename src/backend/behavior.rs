//! Behaviour knobs shared by the REST and gRPC mocks: added latency (fixed or from a
//! distribution), an error rate (answered with UNAVAILABLE / 503) and periodic stalls. Set at
//! start from the CLI and changed at run time through the admin endpoint, for all services at
//! once or for one service.
//!
//! Latency is applied with tokio's timer, whose resolution is 1 ms: a sampled delay is rounded
//! up to the next millisecond (a delay of zero adds nothing).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use rand::Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::time::Instant;

/// A behaviour spec that does not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct BehaviorError(String);

fn parse_duration(s: &str, what: &str) -> Result<Duration, BehaviorError> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        BehaviorError(format!(
            "{what}: {s:?} is not a duration ({e}); use e.g. 500us, 5ms, 1s"
        ))
    })
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

// ===== Latency =====

/// Added latency before a mock answers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Latency {
    /// No added latency.
    #[default]
    None,
    /// Always the same delay.
    Fixed(Duration),
    /// Uniform between `min` and `max`.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Exponential with the given mean.
    Exponential {
        /// Mean delay.
        mean: Duration,
    },
    /// Log-normal with the given median and shape `sigma` (the standard deviation of ln X).
    LogNormal {
        /// Median delay.
        median: Duration,
        /// Shape; 0.5 gives a moderate tail, 1.0 a heavy one.
        sigma: f64,
    },
}

/// Syntax accepted by [`Latency::from_str`], for help texts and error messages.
pub const LATENCY_SYNTAX: &str =
    "none | fixed:5ms | uniform:1ms..10ms | exp:2ms (mean) | lognormal:5ms,0.5 (median, sigma)";

impl FromStr for Latency {
    type Err = BehaviorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s == "none" || s == "0" {
            return Ok(Latency::None);
        }
        let (kind, args) = s.split_once(':').unwrap_or(("fixed", s));
        let latency = match kind {
            "fixed" => Latency::Fixed(parse_duration(args, "fixed latency")?),
            "uniform" => {
                let (lo, hi) = args.split_once("..").ok_or_else(|| {
                    BehaviorError(format!(
                        "uniform latency {args:?}: expected MIN..MAX, e.g. uniform:1ms..10ms"
                    ))
                })?;
                let (min, max) = (
                    parse_duration(lo, "uniform min")?,
                    parse_duration(hi, "uniform max")?,
                );
                if min > max {
                    return Err(BehaviorError(format!(
                        "uniform latency: min {lo} is above max {hi}"
                    )));
                }
                Latency::Uniform { min, max }
            }
            "exp" | "exponential" => Latency::Exponential {
                mean: parse_duration(args, "exponential mean")?,
            },
            "lognormal" | "log-normal" => {
                let (median, sigma) = args.split_once(',').ok_or_else(|| {
                    BehaviorError(format!(
                        "lognormal latency {args:?}: expected MEDIAN,SIGMA, e.g. lognormal:5ms,0.5"
                    ))
                })?;
                let sigma: f64 = sigma.trim().parse().map_err(|_| {
                    BehaviorError(format!("lognormal sigma {sigma:?} is not a number"))
                })?;
                if !(0.0..=4.0).contains(&sigma) {
                    return Err(BehaviorError(format!(
                        "lognormal sigma must be between 0 and 4, got {sigma}"
                    )));
                }
                Latency::LogNormal {
                    median: parse_duration(median, "lognormal median")?,
                    sigma,
                }
            }
            other => {
                return Err(BehaviorError(format!(
                    "unknown latency distribution {other:?}; expected {LATENCY_SYNTAX}"
                )));
            }
        };
        Ok(latency)
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::None => f.write_str("none"),
            Latency::Fixed(d) => write!(f, "fixed:{}", fmt_duration(*d)),
            Latency::Uniform { min, max } => {
                write!(f, "uniform:{}..{}", fmt_duration(*min), fmt_duration(*max))
            }
            Latency::Exponential { mean } => write!(f, "exp:{}", fmt_duration(*mean)),
            Latency::LogNormal { median, sigma } => {
                write!(f, "lognormal:{},{sigma}", fmt_duration(*median))
            }
        }
    }
}

impl Latency {
    /// Draws one delay.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        let secs = match *self {
            Latency::None => return Duration::ZERO,
            Latency::Fixed(d) => return d,
            Latency::Uniform { min, max } => {
                return if min == max {
                    min
                } else {
                    rng.random_range(min..=max)
                };
            }
            Latency::Exponential { mean } => {
                if mean.is_zero() {
                    return Duration::ZERO;
                }
                Exp::new(1.0 / mean.as_secs_f64()).map_or(0.0, |d| d.sample(rng))
            }
            Latency::LogNormal { median, sigma } => {
                if median.is_zero() {
                    return Duration::ZERO;
                }
                LogNormal::new(median.as_secs_f64().ln(), sigma).map_or(0.0, |d| d.sample(rng))
            }
        };
        // Cap at an hour so that a heavy tail cannot overflow a Duration.
        Duration::from_secs_f64(secs.clamp(0.0, 3600.0))
    }
}

// ===== Stall =====

/// A periodic freeze: every `every`, the service holds all requests for `length`, then answers
/// them at once (as a garbage-collection pause or a blocked event loop would).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// How long each stall lasts.
    pub length: Duration,
    /// Period from the start of one stall to the next.
    pub every: Duration,
}

impl FromStr for Stall {
    type Err = BehaviorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (length, every) = s.split_once('/').ok_or_else(|| {
            BehaviorError(format!(
                "stall {s:?}: expected LENGTH/PERIOD, e.g. 200ms/5s"
            ))
        })?;
        let stall = Stall {
            length: parse_duration(length, "stall length")?,
            every: parse_duration(every, "stall period")?,
        };
        if stall.every.is_zero() || stall.length >= stall.every {
            return Err(BehaviorError(format!(
                "stall {s:?}: the length must be shorter than the (non-zero) period"
            )));
        }
        Ok(stall)
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            fmt_duration(self.length),
            fmt_duration(self.every)
        )
    }
}

// ===== Behavior =====

/// What a mock does to each request before answering it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Behavior {
    /// Added latency.
    pub latency: Latency,
    /// Fraction (0..=1) of requests answered with UNAVAILABLE / 503.
    pub error_rate: f64,
    /// Periodic stalls, if any.
    pub stall: Option<Stall>,
}

/// Checks an error rate from the CLI or the admin endpoint.
pub fn parse_error_rate(s: &str) -> Result<f64, BehaviorError> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| BehaviorError(format!("error rate {s:?} is not a number")))?;
    check_error_rate(rate)
}

fn check_error_rate(rate: f64) -> Result<f64, BehaviorError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(BehaviorError(format!(
            "error rate must be between 0 and 1, got {rate}"
        )))
    }
}

/// The wire form of a behaviour (admin endpoint, JSON): every field optional, so a POST changes
/// only what it names. `"none"` clears a latency or a stall.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorPatch {
    /// Latency spec, see [`LATENCY_SYNTAX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<String>,
    /// Error rate, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Stall spec `LENGTH/PERIOD`, or `"none"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<String>,
}

impl Behavior {
    /// Returns this behaviour with `patch` applied, or an error naming the bad field (in which
    /// case nothing changes).
    pub fn patched(&self, patch: &BehaviorPatch) -> Result<Behavior, BehaviorError> {
        let mut next = *self;
        if let Some(l) = &patch.latency {
            next.latency = l
                .parse()
                .map_err(|e: BehaviorError| BehaviorError(format!("latency: {e}")))?;
        }
        if let Some(r) = patch.error_rate {
            next.error_rate =
                check_error_rate(r).map_err(|e| BehaviorError(format!("error_rate: {e}")))?;
        }
        if let Some(s) = &patch.stall {
            next.stall = match s.trim() {
                "" | "none" => None,
                spec => Some(
                    spec.parse()
                        .map_err(|e: BehaviorError| BehaviorError(format!("stall: {e}")))?,
                ),
            };
        }
        Ok(next)
    }

    /// The full wire form of this behaviour.
    pub fn to_patch(&self) -> BehaviorPatch {
        BehaviorPatch {
            latency: Some(self.latency.to_string()),
            error_rate: Some(self.error_rate),
            stall: Some(
                self.stall
                    .map_or_else(|| "none".to_string(), |s| s.to_string()),
            ),
        }
    }
}

// ===== Service =====

/// The mock services, each of which can be given its own behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `UserService`, `/api/users`.
    Users,
    /// `OrderService`, `/api/orders`.
    Orders,
    /// `ProductService`, `/api/products`.
    Products,
    /// `InventoryService`, `/api/inventory`.
    Inventory,
}

impl Service {
    /// All services, in index order.
    pub const ALL: [Service; 4] = [
        Service::Users,
        Service::Orders,
        Service::Products,
        Service::Inventory,
    ];

    /// Short name used by the admin endpoint (`users`, `orders`, …).
    pub fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Orders => "orders",
            Service::Products => "products",
            Service::Inventory => "inventory",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Service {
    type Err = BehaviorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.name() == s)
            .ok_or_else(|| {
                BehaviorError(format!(
                    "unknown service {s:?}; expected users, orders, products or inventory"
                ))
            })
    }
}

// ===== Behaviors =====

/// An injected failure: the mock must answer UNAVAILABLE / 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("injected failure (error_rate)")]
pub struct Injected;

/// The live behaviour table: a default for every service plus optional per-service overrides.
/// Reads on the request path are lock-free.
#[derive(Debug)]
pub struct Behaviors {
    default: ArcSwap<Behavior>,
    overrides: [ArcSwapOption<Behavior>; 4],
    epoch: Instant,
}

impl Behaviors {
    /// A table with `default` for every service.
    pub fn new(default: Behavior) -> Self {
        Behaviors {
            default: ArcSwap::from_pointee(default),
            overrides: Default::default(),
            epoch: Instant::now(),
        }
    }

    /// The behaviour in force for `service`.
    pub fn get(&self, service: Service) -> Behavior {
        match &*self.overrides[service.index()].load() {
            Some(b) => **b,
            None => **self.default.load(),
        }
    }

    /// The default behaviour.
    pub fn default_behavior(&self) -> Behavior {
        **self.default.load()
    }

    /// The per-service overrides in force.
    pub fn overrides(&self) -> Vec<(Service, Behavior)> {
        Service::ALL
            .into_iter()
            .filter_map(|s| self.overrides[s.index()].load().as_deref().map(|b| (s, *b)))
            .collect()
    }

    /// Applies `patch` to the default (`service` = None) or to one service's behaviour (starting
    /// from what is in force for it). On error nothing changes.
    pub fn patch(
        &self,
        service: Option<Service>,
        patch: &BehaviorPatch,
    ) -> Result<(), BehaviorError> {
        match service {
            None => self
                .default
                .store(Arc::new(self.default_behavior().patched(patch)?)),
            Some(s) => self.overrides[s.index()].store(Some(Arc::new(self.get(s).patched(patch)?))),
        }
        Ok(())
    }

    /// Removes one service's override, or (None) every override and the default.
    pub fn reset(&self, service: Option<Service>) {
        match service {
            Some(s) => self.overrides[s.index()].store(None),
            None => {
                self.default.store(Arc::new(Behavior::default()));
                for o in &self.overrides {
                    o.store(None);
                }
            }
        }
    }

    /// Waits out any stall and the added latency for one request to `service`, then decides
    /// whether it fails.
    pub async fn apply(&self, service: Service) -> Result<(), Injected> {
        let behavior = self.get(service);
        if let Some(stall) = behavior.stall {
            let phase = self.epoch.elapsed().as_nanos() % stall.every.as_nanos();
            let length = stall.length.as_nanos();
            if phase < length {
                tokio::time::sleep(Duration::from_nanos((length - phase) as u64)).await;
            }
        }
        let (delay, fail) = {
            let mut rng = rand::rng();
            let delay = behavior.latency.sample(&mut rng);
            let fail = behavior.error_rate > 0.0 && rng.random::<f64>() < behavior.error_rate;
            (delay, fail)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail { Err(Injected) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_specs_parse_and_print_back() {
        for spec in [
            "none",
            "fixed:5ms",
            "uniform:1ms..10ms",
            "exp:2ms",
            "lognormal:5ms,0.5",
        ] {
            let l: Latency = spec.parse().unwrap();
            assert_eq!(l.to_string(), spec);
        }
        assert_eq!(
            "5ms".parse::<Latency>().unwrap(),
            Latency::Fixed(Duration::from_millis(5))
        );
        for bad in [
            "fixed:10x",
            "uniform:5ms",
            "uniform:9ms..1ms",
            "gamma:1ms",
            "lognormal:5ms,abc",
            "lognormal:5ms",
        ] {
            let err = bad.parse::<Latency>().unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            "fixed:10x"
                .parse::<Latency>()
                .unwrap_err()
                .to_string()
                .contains("10x")
        );
    }

    #[test]
    fn samples_stay_in_range() {
        let mut rng = rand::rng();
        let u: Latency = "uniform:1ms..2ms".parse().unwrap();
        for _ in 0..1000 {
            let d = u.sample(&mut rng);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(2));
        }
        let e: Latency = "exp:1ms".parse().unwrap();
        let mean = (0..20_000)
            .map(|_| e.sample(&mut rng).as_secs_f64())
            .sum::<f64>()
            / 20_000.0;
        assert!((0.0008..0.0012).contains(&mean), "exponential mean {mean}");
        let ln: Latency = "lognormal:1ms,0.5".parse().unwrap();
        let mut v: Vec<f64> = (0..20_001)
            .map(|_| ln.sample(&mut rng).as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        assert!(
            (0.0009..0.0011).contains(&v[10_000]),
            "lognormal median {}",
            v[10_000]
        );
    }

    #[test]
    fn stall_and_error_rate_are_validated() {
        assert_eq!(
            "200ms/5s".parse::<Stall>().unwrap(),
            Stall {
                length: Duration::from_millis(200),
                every: Duration::from_secs(5)
            }
        );
        assert!("5s/1s".parse::<Stall>().is_err());
        assert!("5s".parse::<Stall>().is_err());
        assert!(parse_error_rate("1.5").is_err());
        assert!(parse_error_rate("abc").is_err());
        assert_eq!(parse_error_rate("0.25").unwrap(), 0.25);
    }

    #[test]
    fn bad_patch_keeps_previous_behavior() {
        let table = Behaviors::new(Behavior::default());
        let ok = BehaviorPatch {
            error_rate: Some(0.5),
            ..Default::default()
        };
        table.patch(Some(Service::Orders), &ok).unwrap();
        let bad = BehaviorPatch {
            latency: Some("fixed:1ms".into()),
            error_rate: Some(2.0),
            ..Default::default()
        };
        assert!(table.patch(Some(Service::Orders), &bad).is_err());
        assert_eq!(table.get(Service::Orders).error_rate, 0.5);
        assert_eq!(table.get(Service::Orders).latency, Latency::None);
        assert_eq!(table.get(Service::Users).error_rate, 0.0);
        table.reset(Some(Service::Orders));
        assert_eq!(table.get(Service::Orders).error_rate, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_waits_for_latency_and_stalls_and_fails_at_rate_one() {
        let table = Behaviors::new(Behavior {
            latency: Latency::Fixed(Duration::from_millis(30)),
            error_rate: 1.0,
            stall: None,
        });
        let start = Instant::now();
        assert_eq!(table.apply(Service::Users).await, Err(Injected));
        assert_eq!(start.elapsed(), Duration::from_millis(30));

        let stalled = Behaviors::new(Behavior {
            stall: Some("100ms/1s".parse().unwrap()),
            ..Default::default()
        });
        let start = Instant::now();
        assert_eq!(stalled.apply(Service::Users).await, Ok(()));
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "held until the stall ends"
        );
        let start = Instant::now();
        assert_eq!(stalled.apply(Service::Users).await, Ok(()));
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "outside the stall: no wait"
        );
    }
}
