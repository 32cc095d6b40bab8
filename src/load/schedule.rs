//! When to send: the intended send time of every request, kept apart from how requests are sent.
//!
//! Times are computed arithmetically from the request's index (start + i/rate, wrk2-style), or for
//! Poisson arrivals as a running sum of exponential gaps, so they never drift with timer jitter.
//! A [`Dispenser`] hands out tickets (index, intended offset) to the senders of every thread, and
//! afterwards says how many scheduled requests were never taken (`not_sent`).

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Exp};
use thiserror::Error;

/// An arrival-rate profile that does not parse or makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct RateError(pub String);

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Constant rate, requests per second, evenly spaced.
    Constant(f64),
    /// Poisson arrivals with the given mean rate.
    Poisson(f64),
    /// Rate rising linearly from `from` to `to` over `over`, then staying at `to`.
    Ramp {
        /// Rate at the start, requests per second.
        from: f64,
        /// Rate at the end of the ramp and after.
        to: f64,
        /// Length of the ramp.
        over: Duration,
    },
    /// Closed loop: each connection sends as soon as its previous response arrived.
    Max,
}

fn parse_rps(s: &str, what: &str) -> Result<f64, RateError> {
    let v: f64 = s.trim().parse().map_err(|_| {
        RateError(format!(
            "{what} {s:?} is not a number of requests per second"
        ))
    })?;
    if !(v.is_finite() && v > 0.0 && v <= 10_000_000.0) {
        return Err(RateError(format!(
            "{what} must be above 0 and at most 10,000,000 req/s, got {s}"
        )));
    }
    Ok(v)
}

impl Rate {
    /// Parses `--rps` (`N` or `max`).
    pub fn parse_rps(s: &str) -> Result<Rate, RateError> {
        if s.trim() == "max" {
            return Ok(Rate::Max);
        }
        Ok(Rate::Constant(parse_rps(s, "--rps")?))
    }

    /// The mean offered rate, or None for closed loop. For a ramp, the final rate.
    pub fn offered(&self) -> Option<f64> {
        match *self {
            Rate::Constant(r) | Rate::Poisson(r) => Some(r),
            Rate::Ramp { to, .. } => Some(to),
            Rate::Max => None,
        }
    }
}

impl FromStr for Rate {
    type Err = RateError;

    /// Parses a ramp `FROM:TO:OVER`, e.g. `1000:10000:5s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        let [from, to, over] = parts.as_slice() else {
            return Err(RateError(format!(
                "--ramp {s:?}: expected FROM:TO:OVER, e.g. 1000:10000:5s"
            )));
        };
        let over = humantime::parse_duration(over.trim())
            .map_err(|e| RateError(format!("--ramp {s:?}: {over:?} is not a duration ({e})")))?;
        if over.is_zero() {
            return Err(RateError(format!(
                "--ramp {s:?}: the ramp must last longer than 0"
            )));
        }
        Ok(Rate::Ramp {
            from: parse_rps(from, "ramp start")?,
            to: parse_rps(to, "ramp end")?,
            over,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Constant(r) => write!(f, "{r} req/s"),
            Rate::Poisson(r) => write!(f, "{r} req/s (Poisson)"),
            Rate::Ramp { from, to, over } => {
                write!(
                    f,
                    "{from} → {to} req/s over {}",
                    humantime::format_duration(*over)
                )
            }
            Rate::Max => f.write_str("max (closed loop)"),
        }
    }
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// 0-based index within the phase.
    pub index: u64,
    /// Intended send time, from the phase start. None in closed loop: send now.
    pub at: Option<Duration>,
}

/// When a phase stops scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Requests intended before this offset from the start.
    Duration(Duration),
    /// This many requests.
    Requests(u64),
}

#[derive(Debug)]
struct State {
    next: u64,
    poisson_at: f64,
    rng: SmallRng,
}

/// Hands out tickets in order to every sender (all threads share one dispenser).
#[derive(Debug)]
pub struct Dispenser {
    rate: Rate,
    limit: Limit,
    state: Mutex<State>,
}

impl Dispenser {
    /// A dispenser for one phase.
    pub fn new(rate: Rate, limit: Limit) -> Self {
        Dispenser {
            rate,
            limit,
            state: Mutex::new(State {
                next: 0,
                poisson_at: 0.0,
                rng: SmallRng::from_os_rng(),
            }),
        }
    }

    /// Intended offset of request `i` (for Poisson, the running sum kept in `state`).
    fn offset(&self, i: u64, state: &mut State) -> Option<Duration> {
        let secs = match self.rate {
            Rate::Max => return None,
            // Computed from the index, never accumulated: no drift over long runs.
            Rate::Constant(r) => return Some(Duration::from_nanos((i as f64 * 1e9 / r) as u64)),
            Rate::Poisson(r) => {
                let at = state.poisson_at;
                state.poisson_at += Exp::new(r).map_or(1.0 / r, |e| e.sample(&mut state.rng));
                at
            }
            Rate::Ramp { from, to, over } => {
                let ramp = over.as_secs_f64();
                let a = (to - from) / ramp;
                let in_ramp = from * ramp + a * ramp * ramp / 2.0;
                let n = i as f64;
                if n < in_ramp {
                    // Solve from*t + a*t²/2 = n for t.
                    if a.abs() < 1e-12 {
                        n / from
                    } else {
                        (-from + (from * from + 2.0 * a * n).sqrt()) / a
                    }
                } else {
                    ramp + (n - in_ramp) / to
                }
            }
        };
        Some(Duration::from_secs_f64(secs.max(0.0)))
    }

    /// The next ticket, or None when the phase has scheduled everything.
    pub fn next(&self) -> Option<Ticket> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let index = state.next;
        if let Limit::Requests(n) = self.limit
            && index >= n
        {
            return None;
        }
        let at = self.offset(index, &mut state);
        if let (Limit::Duration(d), Some(at)) = (self.limit, at)
            && at >= d
        {
            return None;
        }
        state.next += 1;
        Some(Ticket { index, at })
    }

    /// Tickets handed out so far.
    pub fn taken(&self) -> u64 {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).next
    }

    /// Counts (and consumes) the tickets nobody took: scheduled requests that were never sent.
    /// Zero in closed loop with a duration limit (nothing is scheduled ahead).
    pub fn drain_not_sent(&self) -> u64 {
        if self.rate == Rate::Max && matches!(self.limit, Limit::Duration(_)) {
            return 0;
        }
        let mut n = 0;
        while self.next().is_some() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(d: &Dispenser) -> Vec<Ticket> {
        std::iter::from_fn(|| d.next()).collect()
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_counted_exactly() {
        let d = Dispenser::new(
            Rate::Constant(50_000.0),
            Limit::Duration(Duration::from_secs(1)),
        );
        let t = all(&d);
        assert_eq!(t.len(), 50_000);
        assert_eq!(t[1].at, Some(Duration::from_micros(20)));
        assert_eq!(t[49_999].at, Some(Duration::from_micros(999_980)));
        assert_eq!(d.drain_not_sent(), 0);
    }

    #[test]
    fn untaken_tickets_are_not_sent() {
        let d = Dispenser::new(
            Rate::Constant(1000.0),
            Limit::Duration(Duration::from_secs(2)),
        );
        for _ in 0..500 {
            d.next().unwrap();
        }
        assert_eq!(d.drain_not_sent(), 1500);
    }

    #[test]
    fn poisson_has_the_mean_rate() {
        let d = Dispenser::new(
            Rate::Poisson(10_000.0),
            Limit::Duration(Duration::from_secs(10)),
        );
        let n = all(&d).len() as f64;
        assert!((n - 100_000.0).abs() < 2_000.0, "{n}");
    }

    #[test]
    fn ramp_schedules_the_integral_of_the_rate() {
        let rate: Rate = "1000:3000:2s".parse().unwrap();
        let d = Dispenser::new(rate, Limit::Duration(Duration::from_secs(3)));
        let t = all(&d);
        // 2 s ramp averaging 2000/s, then 1 s at 3000/s.
        assert_eq!(t.len(), 7000);
        let first_second = t
            .iter()
            .filter(|t| t.at.unwrap() < Duration::from_secs(1))
            .count();
        assert_eq!(first_second, 1500);
        assert!(t.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn request_limit_and_closed_loop() {
        let d = Dispenser::new(Rate::Max, Limit::Requests(3));
        assert_eq!(
            all(&d).iter().map(|t| t.at).collect::<Vec<_>>(),
            [None, None, None]
        );
        let d = Dispenser::new(Rate::Max, Limit::Duration(Duration::from_secs(1)));
        assert!(d.next().is_some());
        assert_eq!(d.drain_not_sent(), 0);
    }

    #[test]
    fn bad_rates_are_rejected() {
        for bad in ["0", "-5", "abc", "nan", "inf"] {
            assert!(Rate::parse_rps(bad).is_err(), "{bad}");
        }
        for bad in [
            "1000:10000",
            "1000:x:5s",
            "1000:10000:0s",
            "0:10:1s",
            "1:2:3x",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        assert_eq!(Rate::parse_rps("max").unwrap(), Rate::Max);
    }
}
