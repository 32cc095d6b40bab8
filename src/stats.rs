//! Uncertainty of latency percentiles: a bootstrap over measurement intervals.
//!
//! A run is a sequence of 1-second intervals, each with its own histogram. A percentile's
//! 95 % confidence interval comes from resampling those intervals with replacement (whole
//! intervals, so that the correlation between requests close in time stays inside a resample)
//! and reading the percentile of each resample's merged distribution. An overhead (B - A) is
//! resampled on both sides independently. Intervals rather than rounds: a compare has 3 to a
//! few rounds per side, too few to resample, but 15 or more intervals.
//!
//! A resample's percentile is computed without merging histograms: each interval is kept as its
//! sorted distinct values with cumulative counts, and the percentile of a weighted mixture is
//! found by binary search over the values (each step sums the intervals' counts below it).

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How estimates are resampled: how many resamples, from which seed (fixed, so that a report
/// reproduces from its data).
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    /// Resamples per estimate.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: 1000,
            seed: 0x5eed,
        }
    }
}

/// One interval's distribution: distinct values, ascending, and how many samples are at most
/// each.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    values: Vec<u64>,
    cumulative: Vec<u64>,
}

impl Sampled {
    /// From a histogram (values are the histogram's highest equivalent values, as in `.hgrm`).
    pub fn from_histogram(h: &Histogram<u64>) -> Sampled {
        let mut s = Sampled::default();
        let mut total = 0u64;
        for v in h.iter_recorded() {
            total = total.saturating_add(v.count_at_value());
            s.values.push(v.value_iterated_to());
            s.cumulative.push(total);
        }
        s
    }

    /// From raw values (tests, and anything measured outside a histogram).
    pub fn from_values(values: &[u64]) -> Sampled {
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let mut s = Sampled::default();
        for (i, v) in sorted.iter().enumerate() {
            if s.values.last() == Some(v) {
                if let Some(c) = s.cumulative.last_mut() {
                    *c = i as u64 + 1;
                }
            } else {
                s.values.push(*v);
                s.cumulative.push(i as u64 + 1);
            }
        }
        s
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Samples at most `v`.
    fn at_most(&self, v: u64) -> u64 {
        match self.values.partition_point(|&x| x <= v) {
            0 => 0,
            n => self.cumulative[n - 1],
        }
    }
}

/// The `q` quantile (0..=1) of the mixture of `parts`, part i counted `weights[i]` times; the
/// smallest value with at least ceil(q * total) samples at or below it, as HdrHistogram reads
/// percentiles. None when the mixture is empty.
pub fn quantile(parts: &[Sampled], weights: &[u32], q: f64) -> Option<u64> {
    let total: u64 = parts
        .iter()
        .zip(weights)
        .map(|(p, &w)| p.total().saturating_mul(u64::from(w)))
        .sum();
    if total == 0 {
        return None;
    }
    let target = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).clamp(1, total);
    let below = |v: u64| -> u64 {
        parts
            .iter()
            .zip(weights)
            .filter(|(_, w)| **w > 0)
            .map(|(p, &w)| p.at_most(v).saturating_mul(u64::from(w)))
            .sum()
    };
    // The answer is one of the parts' values: search the smallest candidate that reaches it.
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for (p, &w) in parts.iter().zip(weights) {
        if w > 0 && p.total() > 0 {
            lo = lo.min(p.values[0]);
            hi = hi.max(p.values[p.values.len() - 1]);
        }
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) >= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
}

/// The fewest 1-second intervals per side a percentile or an overhead gets an interval from;
/// below it, a figure is reported without one ("too short to judge") and never judged. From the
/// coverage test below (`short_runs_cover_too_rarely_to_judge`): with 3 intervals per side the
/// 95 % interval of a difference covers the true value in about 83 % of trials (2: 68 %),
/// from about 8 on in 91–94 %, and 10 is the usual floor of a bootstrap.
pub const MIN_INTERVALS: usize = 10;

/// A point estimate with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// From all the data.
    pub value: f64,
    /// Lower end of the 95 % interval.
    pub lo: f64,
    /// Upper end of the 95 % interval.
    pub hi: f64,
}

impl Estimate {
    /// Whether the interval includes `x`.
    pub fn includes(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }

    /// The interval's width.
    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }
}

/// Resampling weights: `n` draws with replacement among `n` parts.
fn resample(rng: &mut StdRng, n: usize, weights: &mut Vec<u32>) {
    weights.clear();
    weights.resize(n, 0);
    for _ in 0..n {
        weights[rng.random_range(0..n)] += 1;
    }
}

/// The 2.5 % and 97.5 % points of `draws` (sorted in place); `value` itself when there are
/// none (no resamples asked for).
fn central_95(draws: &mut [f64], value: f64) -> (f64, f64) {
    if draws.is_empty() {
        return (value, value);
    }
    draws.sort_by(f64::total_cmp);
    let at = |p: f64| draws[((p * (draws.len() - 1) as f64).round() as usize).min(draws.len() - 1)];
    (at(0.025), at(0.975))
}

impl Bootstrap {
    /// The `q` quantile of all of `parts` with its 95 % interval; None when empty.
    pub fn percentile(&self, parts: &[Sampled], q: f64) -> Option<Estimate> {
        let value = quantile(parts, &vec![1; parts.len()], q)? as f64;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut weights = Vec::new();
        let mut draws = Vec::with_capacity(self.resamples);
        for _ in 0..self.resamples {
            resample(&mut rng, parts.len(), &mut weights);
            if let Some(v) = quantile(parts, &weights, q) {
                draws.push(v as f64);
            }
        }
        let (lo, hi) = central_95(&mut draws, value);
        Some(Estimate { value, lo, hi })
    }

    /// The difference of the `q` quantiles, `b` minus `a`, with its 95 % interval (both sides
    /// resampled independently); None when either side is empty.
    pub fn difference(&self, a: &[Sampled], b: &[Sampled], q: f64) -> Option<Estimate> {
        let value =
            quantile(b, &vec![1; b.len()], q)? as f64 - quantile(a, &vec![1; a.len()], q)? as f64;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let (mut wa, mut wb) = (Vec::new(), Vec::new());
        let mut draws = Vec::with_capacity(self.resamples);
        for _ in 0..self.resamples {
            resample(&mut rng, a.len(), &mut wa);
            resample(&mut rng, b.len(), &mut wb);
            if let (Some(x), Some(y)) = (quantile(a, &wa, q), quantile(b, &wb, q)) {
                draws.push(y as f64 - x as f64);
            }
        }
        let (lo, hi) = central_95(&mut draws, value);
        Some(Estimate { value, lo, hi })
    }

    /// The difference of the `q` quantiles, `b` minus `a`, where `a[i]` and `b[i]` were measured
    /// over the same second (a duet): the pairs are resampled together, so that what moved both
    /// sides in one second (a stall, a neighbour's burst) moves both quantiles of a resample
    /// alike and cancels in their difference. Pairs past the shorter side are left out; None
    /// when there is no pair.
    pub fn paired_difference(&self, a: &[Sampled], b: &[Sampled], q: f64) -> Option<Estimate> {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let ones = vec![1; n];
        let value = quantile(b, &ones, q)? as f64 - quantile(a, &ones, q)? as f64;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut w = Vec::new();
        let mut draws = Vec::with_capacity(self.resamples);
        for _ in 0..self.resamples {
            resample(&mut rng, n, &mut w);
            if let (Some(x), Some(y)) = (quantile(a, &w, q), quantile(b, &w, q)) {
                draws.push(y as f64 - x as f64);
            }
        }
        let (lo, hi) = central_95(&mut draws, value);
        Some(Estimate { value, lo, hi })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Exp};

    #[test]
    fn quantile_of_a_mixture_reads_like_a_merged_histogram() {
        let mut a = Histogram::<u64>::new(3).unwrap();
        let mut b = Histogram::<u64>::new(3).unwrap();
        for v in 1..=1000u64 {
            a.record(v * 7).unwrap();
            b.record(v * 13 + 5).unwrap();
        }
        let parts = [Sampled::from_histogram(&a), Sampled::from_histogram(&b)];
        let mut merged = a.clone();
        merged.add(&b).unwrap();
        merged.add(&b).unwrap();
        for q in [0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(
                quantile(&parts, &[1, 2], q),
                Some(merged.value_at_quantile(q)),
                "q {q}"
            );
        }
        assert_eq!(quantile(&parts, &[0, 0], 0.5), None);
    }

    /// `intervals` intervals of `n` draws each from an exponential with mean `mean`, shifted.
    fn sample(rng: &mut StdRng, intervals: usize, n: usize, mean: f64, shift: f64) -> Vec<Sampled> {
        let exp = Exp::new(1.0 / mean).unwrap();
        (0..intervals)
            .map(|_| {
                let v: Vec<u64> = (0..n).map(|_| (shift + exp.sample(rng)) as u64).collect();
                Sampled::from_values(&v)
            })
            .collect()
    }

    #[test]
    fn the_interval_covers_the_true_value_at_about_the_stated_rate() {
        // Exponential, mean 100 µs: the true median is 100 ln 2 µs; a fixed 2 ms added on one
        // side is the true difference of any percentile.
        let mean = 100_000.0;
        let true_median = mean * std::f64::consts::LN_2;
        let mut rng = StdRng::seed_from_u64(7);
        let trials = 120;
        let boot = |seed| Bootstrap {
            resamples: 300,
            seed,
        };
        let (mut median_hits, mut diff_hits) = (0, 0);
        for t in 0..trials {
            let a = sample(&mut rng, 15, 300, mean, 0.0);
            let b = sample(&mut rng, 15, 300, mean, 2_000_000.0);
            if boot(t).percentile(&a, 0.5).unwrap().includes(true_median) {
                median_hits += 1;
            }
            if boot(t)
                .difference(&a, &b, 0.5)
                .unwrap()
                .includes(2_000_000.0)
            {
                diff_hits += 1;
            }
        }
        // 95 % nominal; 120 trials give a standard error of about 2 %.
        for (what, hits) in [("median", median_hits), ("difference", diff_hits)] {
            let rate = hits as f64 / trials as f64;
            assert!((0.87..=1.0).contains(&rate), "{what}: coverage {rate}");
        }
    }

    #[test]
    fn identical_sides_give_an_interval_around_zero() {
        let mut rng = StdRng::seed_from_u64(11);
        let a = sample(&mut rng, 15, 300, 100_000.0, 0.0);
        let d = Bootstrap::default().difference(&a, &a, 0.99).unwrap();
        assert_eq!(d.value, 0.0);
        assert!(d.includes(0.0), "{d:?}");
    }

    /// Per trial, `n` intervals of 300 requests per side, each interval shifted by its own
    /// drift (normal, σ 10 µs: what makes neighbouring seconds differ), the second side 15 µs
    /// slower; how often the 95 % interval of the difference covers 15 µs, at p50 and p99.
    fn coverage(n: usize, paired: bool, trials: u64) -> [f64; 2] {
        use rand_distr::Normal;
        let mut rng = StdRng::seed_from_u64(7);
        let drift = Normal::new(0.0, 10_000.0).unwrap();
        let exp = Exp::new(1.0 / 100_000.0).unwrap();
        let mut hits = [0u32; 2];
        for t in 0..trials {
            let shifts: Vec<f64> = (0..n).map(|_| drift.sample(&mut rng)).collect();
            let side = |rng: &mut StdRng, extra: f64| -> Vec<Sampled> {
                (0..n)
                    .map(|i| {
                        // A duet's two sides share each second's drift; rounds' do not.
                        let d = if paired { shifts[i] } else { drift.sample(rng) };
                        let v: Vec<u64> = (0..300)
                            .map(|_| (50_000.0 + d + extra + exp.sample(rng)).max(0.0) as u64)
                            .collect();
                        Sampled::from_values(&v)
                    })
                    .collect()
            };
            let a = side(&mut rng, 0.0);
            let b = side(&mut rng, 15_000.0);
            let boot = Bootstrap {
                resamples: 200,
                seed: t,
            };
            for (k, q) in [0.5, 0.99].into_iter().enumerate() {
                let e = match paired {
                    true => boot.paired_difference(&a, &b, q),
                    false => boot.difference(&a, &b, q),
                };
                hits[k] += u32::from(e.unwrap().includes(15_000.0));
            }
        }
        hits.map(|h| f64::from(h) / trials as f64)
    }

    #[test]
    fn short_runs_cover_too_rarely_to_judge() {
        // Where MIN_INTERVALS comes from: at 3 intervals the nominal 95 % interval misses
        // the truth about twice as often as at MIN_INTERVALS.
        let short = coverage(3, false, 150);
        let enough = coverage(MIN_INTERVALS, false, 150);
        assert!(short.iter().all(|c| *c < 0.88), "3 intervals: {short:?}");
        assert!(
            enough.iter().all(|c| *c >= 0.88),
            "{MIN_INTERVALS}: {enough:?}"
        );
    }

    #[test]
    fn a_paired_interval_covers_and_is_narrower_when_seconds_drift_alike() {
        let paired = coverage(MIN_INTERVALS, true, 150);
        assert!(paired.iter().all(|c| *c >= 0.88), "{paired:?}");
        // The same drift on both sides of each second: pairing removes it, independence
        // does not.
        let mut rng = StdRng::seed_from_u64(3);
        let exp = Exp::new(1.0 / 100_000.0).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..12u64 {
            let stall = if i % 4 == 0 { 400_000.0 } else { 0.0 };
            for (side, extra) in [(&mut a, 0.0), (&mut b, 15_000.0)] {
                let v: Vec<u64> = (0..300)
                    .map(|_| (stall + extra + exp.sample(&mut rng)) as u64)
                    .collect();
                side.push(Sampled::from_values(&v));
            }
        }
        let boot = Bootstrap::default();
        let p = boot.paired_difference(&a, &b, 0.5).unwrap();
        let u = boot.difference(&a, &b, 0.5).unwrap();
        assert!(p.includes(15_000.0), "{p:?}");
        assert!(p.width() * 3.0 < u.width(), "paired {p:?}, unpaired {u:?}");
    }
}
