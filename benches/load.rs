//! What the load generator spends per request on its own bookkeeping (criterion): recording one
//! sample (corrected + service + lag histograms), computing the next intended send time, and
//! turning a 1-second interval into its `.hlog` lines.
//!
//!   cargo bench --bench load
//!
//! Medians: BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};

use gwbench::load::recorder::{Collector, HistSet, IntervalRecord, Outcome, Outcomes, Sample};
use gwbench::load::schedule::{Dispenser, Limit, Rate};

/// Latencies spread like a real run's: mostly 50-500 µs, a tail to 50 ms.
fn latencies(n: usize) -> Vec<Duration> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            let us = if rng.random_bool(0.99) {
                rng.random_range(50..500)
            } else {
                rng.random_range(500..50_000)
            };
            Duration::from_micros(us)
        })
        .collect()
}

fn record(c: &mut Criterion) {
    let start = Instant::now();
    let collector = Collector::new(1, start);
    let mut rec = collector.recorder();
    let lat = latencies(4096);
    let mut i = 0;
    c.bench_function("load/record one sample", |b| {
        b.iter(|| {
            i = (i + 1) % lat.len();
            // Inside the first interval, so no interval is closed here (that is the .hlog bench).
            let intended = start + Duration::from_micros(100);
            let sent = intended + Duration::from_micros(i as u64 % 50);
            rec.record(black_box(Sample {
                intended,
                sent,
                done: sent + lat[i],
                outcome: Outcome::Ok,
            }))
        })
    });
    drop(collector);
}

fn schedule(c: &mut Criterion) {
    let mut g = c.benchmark_group("load/next send time");
    for (name, rate) in [
        ("constant", Rate::Constant(5000.0)),
        ("poisson", Rate::Poisson(5000.0)),
    ] {
        let d = Dispenser::new(rate, Limit::Requests(u64::MAX));
        g.bench_function(name, |b| b.iter(|| black_box(d.next())));
    }
    g.finish();
}

fn hlog(c: &mut Criterion) {
    // One second at 5,000 req/s.
    let mut hist = HistSet::default();
    for (i, l) in latencies(5000).into_iter().enumerate() {
        let ns = l.as_nanos() as u64;
        hist.corrected.record(ns + (i as u64 % 50) * 1000).unwrap();
        hist.service.record(ns).unwrap();
        hist.lag.record((i as u64 % 50) * 1000).unwrap();
    }
    let outcomes = Outcomes {
        ok: 5000,
        ..Outcomes::default()
    };
    let at = SystemTime::now();
    c.bench_function("load/serialise a 1 s interval to .hlog", |b| {
        b.iter(|| {
            let rec = IntervalRecord::new(
                Duration::from_secs(3),
                Duration::from_secs(1),
                black_box(&hist),
                outcomes.clone(),
            );
            gwbench::report::hlog::render(at, std::slice::from_ref(&rec))
        })
    });
}

criterion_group!(benches, record, schedule, hlog);
criterion_main!(benches);
