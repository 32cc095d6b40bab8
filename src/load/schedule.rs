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
use std::sync::{Arc, Mutex};
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
#[derive(Debug, Clone, PartialEq)]
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
    /// A rate that changes in linear pieces (`--stages`, `--step`), the last rate held after.
    Shaped(Arc<Shape>),
    /// `size` requests at once at the start of every `period` (`--burst N/PERIOD`).
    Burst {
        /// Requests per burst.
        size: u32,
        /// Time from one burst to the next.
        period: Duration,
    },
    /// Closed loop: each connection sends as soon as its previous response arrived.
    Max,
}

/// The most pieces a shape may have (`--step` makes one per step).
pub const MAX_PIECES: usize = 100_000;

/// A piecewise-linear rate: k6's ramping-arrival-rate stages, ghz's steps. Requests are
/// scheduled at the integral of the rate (request n at the time the integral reaches n), so the
/// offered rate follows the shape exactly, without drift.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pieces: Vec<Piece>,
    /// The flag as given, for reports.
    spec: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Piece {
    /// Seconds from the start.
    start: f64,
    /// Seconds.
    length: f64,
    /// Rate at its start and end, requests per second.
    from: f64,
    to: f64,
    /// Requests scheduled before it (the integral up to `start`).
    before: f64,
}

impl Piece {
    fn count(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.length
    }

    fn slope(&self) -> f64 {
        if self.length > 0.0 {
            (self.to - self.from) / self.length
        } else {
            0.0
        }
    }

    /// Requests scheduled in its first `t` seconds.
    fn count_in(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.length);
        self.from * t + self.slope() * t * t / 2.0
    }

    /// Seconds into the piece at which the integral reaches `n` (0 <= n < count).
    fn time_of(&self, n: f64) -> f64 {
        let a = self.slope();
        let t = if a.abs() < 1e-12 {
            n / self.from
        } else {
            // from*t + a*t²/2 = n; the root on the rising side of the integral.
            (-self.from + (self.from * self.from + 2.0 * a * n).max(0.0).sqrt()) / a
        };
        t.clamp(0.0, self.length)
    }
}

impl Shape {
    /// From `legs` of (seconds, rate at the start, rate at the end), one after another.
    fn new(spec: String, legs: &[(f64, f64, f64)]) -> Result<Shape, RateError> {
        if legs.len() > MAX_PIECES {
            return Err(RateError(format!(
                "{spec}: {} pieces, more than {MAX_PIECES}",
                legs.len()
            )));
        }
        let (mut start, mut before) = (0.0, 0.0);
        let mut pieces = Vec::with_capacity(legs.len());
        for &(length, from, to) in legs {
            let p = Piece {
                start,
                length,
                from,
                to,
                before,
            };
            start += length;
            before += p.count();
            pieces.push(p);
        }
        if pieces.iter().all(|p| p.count() <= 0.0) && pieces.last().is_none_or(|p| p.to <= 0.0) {
            return Err(RateError(format!("{spec}: schedules no request")));
        }
        Ok(Shape { pieces, spec })
    }

    /// Parses `--stages [START,]LEN:RATE,...`: from START (default 0) a linear ramp to each
    /// RATE over its LEN, e.g. `30s:1000,2m:5000,30s:0`.
    pub fn stages(s: &str) -> Result<Shape, RateError> {
        let spec = format!("--stages {s}");
        let bad = |why: String| RateError(format!("--stages {s:?}: {why}"));
        let mut start_rate = 0.0;
        let mut legs = Vec::new();
        for (k, item) in s.split(',').map(str::trim).enumerate() {
            match item.split_once(':') {
                None if k == 0 && item.parse::<f64>().is_ok() => {
                    start_rate = parse_rate0(item).map_err(|e| bad(e.0))?;
                }
                None => return Err(bad(format!("{item:?} is not LEN:RATE, e.g. 30s:1000"))),
                Some((len, rate)) => {
                    let len = humantime::parse_duration(len.trim())
                        .map_err(|e| bad(format!("{len:?} is not a duration ({e})")))?;
                    let to = parse_rate0(rate).map_err(|e| bad(e.0))?;
                    let from = legs.last().map_or(start_rate, |&(_, _, to)| to);
                    legs.push((len.as_secs_f64(), from, to));
                }
            }
        }
        if legs.is_empty() {
            return Err(bad("no stage; expected e.g. 30s:1000,2m:5000,30s:0".into()));
        }
        Shape::new(spec, &legs)
    }

    /// Parses `--step START:STEP:EVERY:MAX`: START req/s for EVERY, then STEP more every EVERY
    /// until MAX, which is then held (ghz's step load).
    pub fn step(s: &str) -> Result<Shape, RateError> {
        let bad = |why: &str| RateError(format!("--step {s:?}: {why}"));
        let parts: Vec<&str> = s.split(':').map(str::trim).collect();
        let [start, step, every, max] = parts.as_slice() else {
            return Err(bad("expected START:STEP:EVERY:MAX, e.g. 1000:500:10s:5000"));
        };
        let start = parse_rps(start, "the start rate")?;
        let step = parse_rps(step, "the step")?;
        let max = parse_rps(max, "the maximum rate")?;
        let every = humantime::parse_duration(every)
            .map_err(|e| bad(&format!("{every:?} is not a duration ({e})")))?;
        if every.is_zero() {
            return Err(bad("each step must last longer than 0"));
        }
        if max < start {
            return Err(bad("MAX is below START"));
        }
        let steps = ((max - start) / step).ceil() as usize + 1;
        if steps > MAX_PIECES {
            return Err(bad(&format!("{steps} steps, more than {MAX_PIECES}")));
        }
        let legs: Vec<(f64, f64, f64)> = (0..steps)
            .map(|k| {
                let r = (start + step * k as f64).min(max);
                (every.as_secs_f64(), r, r)
            })
            .collect();
        Shape::new(format!("--step {s}"), &legs)
    }

    /// Requests scheduled in the first `t` seconds (the integral of the rate).
    fn integral(&self, t: f64) -> f64 {
        let Some(last) = self.pieces.last() else {
            return 0.0;
        };
        let end = last.start + last.length;
        if t >= end {
            return last.before + last.count() + last.to * (t - end);
        }
        let k = self.pieces.partition_point(|p| p.start + p.length <= t);
        self.pieces
            .get(k)
            .map_or(0.0, |p| p.before + p.count_in(t - p.start))
    }

    /// Seconds from the start at which request `n` is due; None when the rate has fallen to 0
    /// for good before it.
    fn time_of(&self, n: f64) -> Option<f64> {
        let last = self.pieces.last()?;
        let total = last.before + last.count();
        if n >= total {
            return (last.to > 0.0).then(|| last.start + last.length + (n - total) / last.to);
        }
        let k = self.pieces.partition_point(|p| p.before + p.count() <= n);
        let p = self.pieces.get(k)?;
        Some(p.start + p.time_of(n - p.before))
    }

    /// The rate at the start.
    pub fn first_rate(&self) -> f64 {
        self.pieces.first().map_or(0.0, |p| p.from)
    }

    /// How long its pieces last (after which the last rate is held).
    pub fn length(&self) -> Duration {
        self.pieces.last().map_or(Duration::ZERO, |p| {
            Duration::from_secs_f64(p.start + p.length)
        })
    }

    /// The highest rate it reaches.
    pub fn peak(&self) -> f64 {
        self.pieces
            .iter()
            .flat_map(|p| [p.from, p.to])
            .fold(0.0, f64::max)
    }
}

/// A rate that may be 0 (a stage's target).
fn parse_rate0(s: &str) -> Result<f64, RateError> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    parse_rps(s, "a stage's rate")
}

impl FromStr for Burst {
    type Err = RateError;

    /// Parses `N/PERIOD`, e.g. `100/1s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| RateError(format!("--burst {s:?}: {why}"));
        let (n, period) = s
            .split_once('/')
            .ok_or_else(|| bad("expected N/PERIOD, e.g. 100/1s"))?;
        let size: u32 = n
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=10_000_000).contains(n))
            .ok_or_else(|| bad("N must be a whole number from 1 to 10,000,000"))?;
        let period = humantime::parse_duration(period.trim())
            .map_err(|e| bad(&format!("{period:?} is not a duration ({e})")))?;
        if period < Duration::from_micros(100) {
            return Err(bad("the period must be at least 100us"));
        }
        Ok(Burst(Rate::Burst { size, period }))
    }
}

/// A parsed `--burst` (a [`Rate::Burst`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Burst(pub Rate);

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

    /// The mean offered rate, or None for closed loop. For a ramp, the final rate; for a shape,
    /// its peak.
    pub fn offered(&self) -> Option<f64> {
        match self {
            Rate::Constant(r) | Rate::Poisson(r) => Some(*r),
            Rate::Ramp { to, .. } => Some(*to),
            Rate::Shaped(shape) => Some(shape.peak()),
            Rate::Burst { size, period } => Some(f64::from(*size) / period.as_secs_f64()),
            Rate::Max => None,
        }
    }

    /// Requests scheduled with an intended time in `[from, to)` from the start (Poisson: the
    /// expected number); None in closed loop.
    pub fn scheduled_in(&self, from: Duration, to: Duration) -> Option<f64> {
        Some(self.scheduled_before(to)? - self.scheduled_before(from)?)
    }

    /// Requests scheduled before `t`: the number of indices whose time is below it.
    fn scheduled_before(&self, t: Duration) -> Option<f64> {
        let s = t.as_secs_f64();
        let count = match self {
            Rate::Constant(r) => (r * s).ceil(),
            Rate::Poisson(r) => r * s,
            Rate::Ramp { from, to, over } => {
                let ramp = over.as_secs_f64();
                let a = (to - from) / ramp;
                let in_ramp = |t: f64| from * t + a * t * t / 2.0;
                if s <= ramp {
                    in_ramp(s).ceil()
                } else {
                    (in_ramp(ramp) + to * (s - ramp)).ceil()
                }
            }
            Rate::Shaped(shape) => shape.integral(s).ceil(),
            Rate::Burst { size, period } => (s / period.as_secs_f64()).ceil() * f64::from(*size),
            Rate::Max => return None,
        };
        Some(count)
    }

    /// The rate a warm-up before this one runs at (a ramp or a shape warms up at its start,
    /// none when that is 0).
    pub fn warmup(&self) -> Option<Rate> {
        match self {
            Rate::Ramp { from, .. } => Some(Rate::Constant(*from)),
            Rate::Shaped(shape) => {
                (shape.first_rate() > 0.0).then(|| Rate::Constant(shape.first_rate()))
            }
            other => Some(other.clone()),
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
            Rate::Shaped(shape) => f.write_str(&shape.spec),
            Rate::Burst { size, period } => write!(
                f,
                "bursts of {size} every {}",
                humantime::format_duration(*period)
            ),
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
            Rate::Shaped(ref shape) => match shape.time_of(i as f64) {
                Some(t) => t,
                // The rate has fallen to 0 for good: nothing more is due.
                None => return Some(Duration::MAX),
            },
            Rate::Burst { size, period } => {
                return Some(
                    period.saturating_mul(u32::try_from(i / u64::from(size)).unwrap_or(u32::MAX)),
                );
            }
        };
        Some(Duration::from_secs_f64(secs.max(0.0)))
    }

    /// Whether tickets have send times (every rate but `max`, the closed loop).
    pub fn paced(&self) -> bool {
        !matches!(self.rate, Rate::Max)
    }

    /// The next ticket, or None when the phase has scheduled everything.
    pub fn next(&self) -> Option<Ticket> {
        // Ctrl-C: no more tickets; what is not handed out was never due.
        if super::interrupt::interrupted() {
            return None;
        }
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
        if at == Some(Duration::MAX) {
            return None; // never due (a shape that ends at 0, with a request limit)
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
    fn stages_schedule_the_integral_of_their_ramps_and_end_at_zero() {
        let shape = Shape::stages("2s:1000,1s:1000,2s:0").unwrap();
        assert_eq!(shape.length(), Duration::from_secs(5));
        let rate = Rate::Shaped(Arc::new(shape));
        // Long enough that only the shape ends the run: 1000 + 1000 + 1000 requests.
        let t = all(&Dispenser::new(
            rate.clone(),
            Limit::Duration(Duration::from_secs(60)),
        ));
        assert_eq!(t.len(), 3000);
        assert!(t.windows(2).all(|w| w[0].at <= w[1].at));
        let in_second = |k: u64| {
            let (a, b) = (Duration::from_secs(k), Duration::from_secs(k + 1));
            t.iter().filter(|t| (a..b).contains(&t.at.unwrap())).count()
        };
        // 0 → 1000/s over 2 s: 250 then 750; held: 1000; 1000 → 0 over 2 s: 750 then 250.
        assert_eq!(
            (0..5).map(in_second).collect::<Vec<_>>(),
            [250, 750, 1000, 750, 250]
        );
        // The offered rate the reports show is the same count, from the integral.
        for k in 0..5u64 {
            let n = rate
                .scheduled_in(Duration::from_secs(k), Duration::from_secs(k + 1))
                .unwrap();
            assert!((n - in_second(k) as f64).abs() <= 1.0, "{k}: {n}");
        }
        // With a request limit past what the shape holds, the schedule still ends.
        assert_eq!(
            all(&Dispenser::new(rate, Limit::Requests(5000))).len(),
            3000
        );
        // A start rate, and the last rate held after the stages.
        let held = Rate::Shaped(Arc::new(Shape::stages("100,1s:100").unwrap()));
        assert_eq!(held.warmup(), Some(Rate::Constant(100.0)));
        assert_eq!(
            all(&Dispenser::new(
                held,
                Limit::Duration(Duration::from_secs(3))
            ))
            .len(),
            300
        );
    }

    #[test]
    fn steps_hold_each_rate_then_the_maximum_and_bursts_come_at_once() {
        let rate = Rate::Shaped(Arc::new(Shape::step("100:100:1s:250").unwrap()));
        let t = all(&Dispenser::new(
            rate,
            Limit::Duration(Duration::from_secs(5)),
        ));
        // 100, 200, 250 for a second each, then 250 held for two.
        assert_eq!(t.len(), 100 + 200 + 250 + 500);
        assert_eq!(t[100].at, Some(Duration::from_secs(1)));
        assert_eq!(t[300].at, Some(Duration::from_secs(2)));
        let burst: Burst = "3/250ms".parse().unwrap();
        let t = all(&Dispenser::new(
            burst.0,
            Limit::Duration(Duration::from_secs(1)),
        ));
        let at: Vec<u64> = t.iter().map(|t| t.at.unwrap().as_millis() as u64).collect();
        assert_eq!(at, [0, 0, 0, 250, 250, 250, 500, 500, 500, 750, 750, 750]);
    }

    #[test]
    fn bad_shapes_are_refused_with_the_reason() {
        for (bad, needle) in [
            ("", "not LEN:RATE"),
            ("30s", "not LEN:RATE"),
            ("10,5x:100", "not a duration"),
            ("1s:-5", "stage's rate"),
            ("1s:0,2s:0", "schedules no request"),
            ("1s:10,oops", "not LEN:RATE"),
        ] {
            let err = Shape::stages(bad).unwrap_err().0;
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        for (bad, needle) in [
            ("1:2:3s", "START:STEP:EVERY:MAX"),
            ("100:10:0s:200", "longer than 0"),
            ("300:10:1s:200", "below START"),
            ("1:0.0001:1s:1000000", "more than"),
        ] {
            let err = Shape::step(bad).unwrap_err().0;
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        for bad in ["5", "0/1s", "5/0s", "x/1s", "5/1x"] {
            assert!(bad.parse::<Burst>().is_err(), "{bad}");
        }
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
            Rate::Shaped(Arc::new(Shape::stages("300ms:3000,400ms:500").unwrap())),
            Burst::from_str("7/90ms").unwrap().0,
        ] {
            let whole = all(&Dispenser::segment(
                rate.clone(),
                limit,
                Segment::WHOLE,
                Some(7),
            ));
            let mut union: Vec<Ticket> = (0..4)
                .flat_map(|i| {
                    let seg = Segment { index: i, count: 4 };
                    let d = Dispenser::segment(rate.clone(), limit, seg, Some(7));
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
