//! When to send: the intended send time of every request, kept apart from how requests are sent.
//!
//! Times are computed arithmetically from the request's index (start + i/rate, wrk2-style), or for
//! Poisson arrivals as a running sum of exponential gaps, so they never drift with timer jitter.
//! A [`Dispenser`] hands out tickets (index, intended offset) to the senders of every thread, and
//! afterwards says how many scheduled requests were never taken (`not_sent`).
//!
//! A [`Segment`] `i/N` (`load --segment`, one of N generators) takes every N-th request of the
//! one schedule, starting at i, with its index and time in the whole: the N segments together
//! are exactly the schedule one generator would have sent (k6's execution segments, split by
//! index rather than by fraction). Poisson arrivals split this way need a seed, so that every
//! instance draws the same gaps.

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

/// One generator's share of a schedule split among `count`: the requests whose index is
/// `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// 0-based, below `count`.
    pub index: u32,
    /// Generators sharing the schedule, at least 1.
    pub count: u32,
}

/// The most generators one schedule is split among.
pub const MAX_SEGMENTS: u32 = 10_000;

impl Segment {
    /// The whole schedule.
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };
}

impl Default for Segment {
    fn default() -> Self {
        Segment::WHOLE
    }
}

/// How one run's schedule is shared with other generators' runs (`load --segment`,
/// `--seed`, `--start-at`). The default: the whole schedule, started when ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Split {
    /// This generator's share.
    pub segment: Segment,
    /// Seed of the Poisson gaps (required to split Poisson arrivals).
    pub seed: Option<u64>,
    /// The wall-clock instant the schedule starts (warm-up included) on every generator.
    pub start_at: Option<std::time::SystemTime>,
}

impl Split {
    /// An identifier of the whole schedule (rate, length, warm-up, seed, segment count,
    /// start instant, target), the same on every generator given the same flags: merging
    /// refuses outputs whose identifiers differ. FNV-1a, stable across builds and machines.
    pub fn schedule_id(&self, rate: &Rate, limit: Limit, warmup: Duration, target: &str) -> String {
        let start_ms = self.start_at.map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        });
        let text = format!(
            "gwbench-schedule-v1|{rate}|{limit:?}|{}|{:?}|{}|{start_ms:?}|{target}",
            warmup.as_nanos(),
            self.seed,
            self.segment.count,
        );
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

impl FromStr for Segment {
    type Err = RateError;

    /// Parses `I/N`, e.g. `0/4` (the first of four).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| RateError(format!("--segment {s:?}: {why}"));
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 0/4 for the first of four generators"))?;
        let index: u32 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let count: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if count == 0 || count > MAX_SEGMENTS {
            return Err(bad(&format!("N must be 1 to {MAX_SEGMENTS}")));
        }
        if index >= count {
            return Err(bad("I counts from 0 and must be below N"));
        }
        Ok(Segment { index, count })
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// One scheduled request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// 0-based index within the phase (in the whole schedule, when it is a segment's).
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
    /// The next index in the whole schedule this dispenser hands out.
    next: u64,
    poisson_at: f64,
    /// The index in the whole schedule `poisson_at` belongs to.
    poisson_next: u64,
    rng: SmallRng,
}

/// Hands out tickets in order to every sender (all threads share one dispenser).
#[derive(Debug)]
pub struct Dispenser {
    rate: Rate,
    limit: Limit,
    segment: Segment,
    state: Mutex<State>,
}

impl Dispenser {
    /// A dispenser for one phase (the whole schedule; Poisson gaps from the OS's entropy).
    pub fn new(rate: Rate, limit: Limit) -> Self {
        Self::segment(rate, limit, Segment::WHOLE, None)
    }

    /// A dispenser for `segment` of the schedule; Poisson gaps drawn from `seed` when given
    /// (the same seed, the same schedule).
    pub fn segment(rate: Rate, limit: Limit, segment: Segment, seed: Option<u64>) -> Self {
        Dispenser {
            rate,
            limit,
            segment,
            state: Mutex::new(State {
                next: u64::from(segment.index),
                poisson_at: 0.0,
                poisson_next: 0,
                rng: seed.map_or_else(SmallRng::from_os_rng, SmallRng::seed_from_u64),
            }),
        }
    }

    /// Intended offset of request `i` of the whole schedule (for Poisson, the running sum kept
    /// in `state`, drawn through the other segments' requests too).
    fn offset(&self, i: u64, state: &mut State) -> Option<Duration> {
        let secs = match self.rate {
            Rate::Max => return None,
            // Computed from the index, never accumulated: no drift over long runs.
            Rate::Constant(r) => return Some(Duration::from_nanos((i as f64 * 1e9 / r) as u64)),
            Rate::Poisson(r) => {
                let exp = Exp::new(r);
                let mut gap = || exp.map_or(1.0 / r, |e| e.sample(&mut state.rng));
                while state.poisson_next < i {
                    state.poisson_at += gap();
                    state.poisson_next += 1;
                }
                let at = state.poisson_at;
                state.poisson_at += gap();
                state.poisson_next += 1;
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
        state.next += u64::from(self.segment.count);
        Some(Ticket { index, at })
    }

    /// Tickets handed out so far.
    pub fn taken(&self) -> u64 {
        let next = self.state.lock().unwrap_or_else(|e| e.into_inner()).next;
        (next - u64::from(self.segment.index)) / u64::from(self.segment.count)
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

    #[test]
    fn segments_split_the_schedule_without_gaps_or_duplicates() {
        let limit = Limit::Duration(Duration::from_secs(1));
        for rate in [
            Rate::Constant(2000.0),
            "500:3000:700ms".parse().unwrap(),
            Rate::Poisson(2000.0),
        ] {
            let whole = all(&Dispenser::segment(rate, limit, Segment::WHOLE, Some(7)));
            let mut union: Vec<Ticket> = (0..4)
                .flat_map(|i| {
                    let seg = Segment { index: i, count: 4 };
                    let d = Dispenser::segment(rate, limit, seg, Some(7));
                    let t = all(&d);
                    assert!(t.iter().all(|t| t.index % 4 == u64::from(i)), "{rate}");
                    assert_eq!(d.taken(), t.len() as u64);
                    t
                })
                .collect();
            union.sort_by_key(|t| t.index);
            assert_eq!(
                union, whole,
                "{rate}: the four segments are the whole schedule"
            );
        }
        // A request limit counts the whole schedule's requests.
        let seg = Segment { index: 2, count: 3 };
        let t = all(&Dispenser::segment(
            Rate::Constant(100.0),
            Limit::Requests(10),
            seg,
            None,
        ));
        assert_eq!(
            t.iter().map(|t| t.index).collect::<Vec<_>>(),
            [2, 5, 8],
            "indices 2, 5 and 8 of 0..10"
        );
    }

    #[test]
    fn segments_parse_and_refuse_what_cannot_be() {
        assert_eq!(
            "1/4".parse::<Segment>().unwrap(),
            Segment { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/4", "0/0", "-1/4", "0/10001", "1/x"] {
            assert!(bad.parse::<Segment>().is_err(), "{bad}");
        }
    }
}
