//! The per-request metrics, kept per worker and summed when `/metrics` is scraped:
//! requests by route, method and status, request duration by route, upstream call duration by
//! upstream, and requests in flight. Each [`Tally`] belongs to one stack of one worker (or one
//! upstream of one worker), so a request writes only counters its own worker writes: no cache
//! line moves between cores per request, and no shared histogram buffer grows between scrapes.
//! The rest of the metrics (breakers, rate-limit refusals, cache results, store errors) are
//! events, not per request, and stay in the `metrics` facade's recorder ([`super::exporter`]).
//!
//! A tally that is dropped (its gateway replaced by a reload) adds its counts to the retired
//! sums first, so counters never go backwards.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};
use std::time::Duration;

/// Latency buckets, seconds: 100 µs to 5 s (the upper bounds; `+Inf` is the count).
pub const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The same bounds in nanoseconds, compared against a duration without a float conversion.
const BUCKETS_NS: [u64; 15] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// A Prometheus histogram over [`BUCKETS`]: a count per bucket (not cumulative), the count and
/// the sum in nanoseconds.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_NS.iter().position(|&b| ns <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn add_to(&self, sums: &mut Sums) {
        for (s, b) in sums.buckets.iter_mut().zip(&self.buckets) {
            *s = s.wrapping_add(b.load(Relaxed));
        }
        sums.count = sums.count.wrapping_add(self.count.load(Relaxed));
        sums.sum_ns = sums.sum_ns.wrapping_add(self.sum_ns.load(Relaxed));
    }
}

/// A histogram's values, summed over tallies.
#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_ns: u64,
}

/// Route, method and status of `gwbench_requests_total`.
pub type RequestKey = (Arc<str>, &'static str, u16);

/// A duration histogram's family and label value.
type DurationKey = (Family, Arc<str>);

/// Which duration histogram: per route, or per upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `gwbench_request_duration_seconds{route}`
    Request,
    /// `gwbench_upstream_duration_seconds{upstream}`
    Upstream,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Request => "gwbench_request_duration_seconds",
            Family::Upstream => "gwbench_upstream_duration_seconds",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Family::Request => "route",
            Family::Upstream => "upstream",
        }
    }
}

/// One worker's (one stack's, one upstream's) series. Handles are found by a read-locked
/// lookup in maps only this tally's requests use.
#[derive(Debug, Default)]
pub struct Tally {
    in_flight: AtomicI64,
    requests: RwLock<HashMap<RequestKey, Arc<AtomicU64>>>,
    durations: RwLock<HashMap<DurationKey, Arc<Histogram>>>,
}

/// Every live tally, and the sums of those dropped.
#[derive(Default)]
struct Registry {
    live: Vec<Weak<Tally>>,
    retired: Totals,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Mutex::default);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tally {
    /// A new tally, counted at every scrape from now on.
    pub fn new() -> Arc<Tally> {
        let tally = Arc::new(Tally::default());
        let mut reg = registry();
        reg.live.retain(|w| w.strong_count() > 0);
        reg.live.push(Arc::downgrade(&tally));
        tally
    }

    /// A request started (+1) or ended (-1).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.fetch_add(delta, Relaxed);
    }

    /// Counts one answered request.
    pub fn request(&self, route: &Arc<str>, method: &'static str, status: u16) {
        let key = (route.clone(), method, status);
        if let Some(c) = read(&self.requests).get(&key) {
            c.fetch_add(1, Relaxed);
            return;
        }
        write(&self.requests)
            .entry(key)
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// The histogram of `family` for `label` (made on first use).
    pub fn histogram(&self, family: Family, label: &Arc<str>) -> Arc<Histogram> {
        let key = (family, label.clone());
        if let Some(h) = read(&self.durations).get(&key) {
            return h.clone();
        }
        write(&self.durations).entry(key).or_default().clone()
    }

    /// Records one duration of `family` for `label`.
    pub fn record(&self, family: Family, label: &Arc<str>, d: Duration) {
        let key = (family, label.clone());
        if let Some(h) = read(&self.durations).get(&key) {
            h.record(d);
            return;
        }
        write(&self.durations).entry(key).or_default().record(d);
    }

    fn add_to(&self, totals: &mut Totals) {
        totals.in_flight = totals.in_flight.wrapping_add(self.in_flight.load(Relaxed));
        for (key, c) in read(&self.requests).iter() {
            let n = totals.requests.entry(key.clone()).or_default();
            *n = n.wrapping_add(c.load(Relaxed));
        }
        for (key, h) in read(&self.durations).iter() {
            h.add_to(totals.durations.entry(key.clone()).or_default());
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let mut reg = registry();
        let mut retired = std::mem::take(&mut reg.retired);
        self.add_to(&mut retired);
        reg.retired = retired;
        reg.live.retain(|w| w.strong_count() > 0);
    }
}

/// Every series summed, in the order they are rendered.
#[derive(Debug, Default, Clone)]
struct Totals {
    in_flight: i64,
    requests: BTreeMap<RequestKey, u64>,
    durations: BTreeMap<DurationKey, Sums>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Appends the per-request series, summed over every tally (live and retired), to `out` in
/// the Prometheus text format. `gwbench_in_flight` and `gwbench_requests_total` are always
/// there (the gauge at 0, the counter's family without series until a request is counted).
pub fn render(out: &mut String) {
    // The live tallies are summed after the registry is unlocked: the last owner of one may
    // drop it meanwhile, and its `Drop` (here, when `live` goes) takes the registry's lock.
    let (mut totals, live) = {
        let reg = registry();
        let live: Vec<Arc<Tally>> = reg.live.iter().filter_map(Weak::upgrade).collect();
        (reg.retired.clone(), live)
    };
    for tally in &live {
        tally.add_to(&mut totals);
    }
    drop(live);
    let _ = writeln!(out, "# TYPE gwbench_in_flight gauge");
    let _ = writeln!(out, "gwbench_in_flight {}", totals.in_flight.max(0));
    let _ = writeln!(out, "# TYPE gwbench_requests_total counter");
    for ((route, method, status), n) in &totals.requests {
        let _ = writeln!(
            out,
            "gwbench_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
            Escaped(route)
        );
    }
    // Each family's type line even before its first series, so the family is there from
    // the start.
    let mut written = None;
    let types = |out: &mut String, upto: Option<Family>, written: &mut Option<Family>| {
        for f in [Family::Request, Family::Upstream] {
            if Some(f) > *written && upto.is_none_or(|u| f <= u) {
                let _ = writeln!(out, "# TYPE {} histogram", f.name());
                *written = Some(f);
            }
        }
    };
    for ((f, label), sums) in &totals.durations {
        let (name, key) = (f.name(), f.label());
        types(out, Some(*f), &mut written);
        let label = Escaped(label);
        let mut cumulative = 0u64;
        for (le, n) in BUCKETS.iter().zip(sums.buckets) {
            cumulative = cumulative.wrapping_add(n);
            let _ = writeln!(
                out,
                "{name}_bucket{{{key}=\"{label}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{key}=\"{label}\",le=\"+Inf\"}} {}",
            sums.count
        );
        let _ = writeln!(
            out,
            "{name}_sum{{{key}=\"{label}\"}} {}",
            sums.sum_ns as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{{key}=\"{label}\"}} {}", sums.count);
    }
    types(out, None, &mut written);
}

/// A label value with `\`, `"` and line feeds escaped (the text format's rule).
struct Escaped<'a>(&'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(page: &'a str, prefix: &str) -> Option<&'a str> {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn tallies_of_several_workers_add_up_and_a_dropped_one_still_counts() {
        // Labels of this test only: other tests in the process may count their own.
        let route: Arc<str> = Arc::from("/tally-test/{id}\"\\");
        let (a, b) = (Tally::new(), Tally::new());
        for _ in 0..3 {
            a.request(&route, "GET", 200);
        }
        b.request(&route, "GET", 200);
        b.request(&route, "POST", 503);
        a.record(Family::Request, &route, Duration::from_micros(50));
        a.record(Family::Request, &route, Duration::from_millis(3));
        b.histogram(Family::Request, &route)
            .record(Duration::from_secs(60));
        let render_now = || {
            let mut page = String::new();
            render(&mut page);
            page
        };
        let page = render_now();
        let series = "gwbench_requests_total{route=\"/tally-test/{id}\\\"\\\\\",method=\"GET\",status=\"200\"}";
        assert_eq!(line(&page, series), Some("4"), "{page}");
        let h = "gwbench_request_duration_seconds_bucket{route=\"/tally-test/{id}\\\"\\\\\"";
        assert_eq!(line(&page, &format!("{h},le=\"0.0001\"}}")), Some("1"));
        assert_eq!(line(&page, &format!("{h},le=\"0.0025\"}}")), Some("1"));
        assert_eq!(line(&page, &format!("{h},le=\"0.005\"}}")), Some("2"));
        assert_eq!(line(&page, &format!("{h},le=\"5\"}}")), Some("2"));
        assert_eq!(line(&page, &format!("{h},le=\"+Inf\"}}")), Some("3"));
        assert_eq!(page.matches("# TYPE gwbench_requests_total").count(), 1);
        // A reload drops a worker's tally: its counts stay.
        drop(b);
        let page = render_now();
        assert_eq!(line(&page, series), Some("4"), "{page}");
        assert_eq!(line(&page, &format!("{h},le=\"+Inf\"}}")), Some("3"));
        a.request(&route, "GET", 200);
        assert_eq!(line(&render_now(), series), Some("5"));
    }

    #[test]
    fn sums_are_in_seconds() {
        let up: Arc<str> = Arc::from("tally-test-upstream");
        let t = Tally::new();
        t.record(Family::Upstream, &up, Duration::from_millis(1500));
        t.record(Family::Upstream, &up, Duration::from_millis(500));
        let mut page = String::new();
        render(&mut page);
        let sum = "gwbench_upstream_duration_seconds_sum{upstream=\"tally-test-upstream\"}";
        assert_eq!(line(&page, sum), Some("2"), "{page}");
    }
}
