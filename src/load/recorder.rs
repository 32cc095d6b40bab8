//! What happened to each request: HDR histograms (nanoseconds, 3 significant figures) of
//! corrected latency (from the intended send time), service time (from the actual send) and
//! generator lag (actual − intended send), per 1-second interval and for the whole run, plus the
//! outcome of every scheduled request.
//!
//! Each generator thread records into its own [`ThreadRecorder`] (no locks on the request path)
//! and hands each finished interval to the [`Collector`], which merges threads, keeps a small
//! summary and the compressed histograms of each interval (for the `.hlog`), and the totals.
//! Memory is bounded by histogram size, not by request count.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};

/// Length of one interval of the time series and of the `.hlog`.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The three histograms recorded for every request.
#[derive(Debug, Clone)]
pub struct HistSet {
    /// Latency from the intended send time (coordinated omission corrected): the headline figure.
    pub corrected: Histogram<u64>,
    /// Latency from the actual send time.
    pub service: Histogram<u64>,
    /// Actual send time minus intended send time.
    pub lag: Histogram<u64>,
    /// Read time minus the kernel's arrival stamp of the answer's last bytes (empty without
    /// kernel receive timestamps): the generator's own delay, kept out of the latencies.
    pub receive_lag: Histogram<u64>,
    /// gRPC streaming calls' messages (empty for every other call).
    pub stream: StreamHists,
}

fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures is a valid histogram")
}

impl Default for HistSet {
    fn default() -> Self {
        HistSet {
            corrected: histogram(),
            service: histogram(),
            lag: histogram(),
            receive_lag: histogram(),
            stream: StreamHists::default(),
        }
    }
}

impl HistSet {
    /// Adds every count of `other` into `self`.
    pub fn add(&mut self, other: &HistSet) {
        // Auto-resizing histograms cannot fail to add.
        let _ = self.corrected.add(&other.corrected);
        let _ = self.service.add(&other.service);
        let _ = self.lag.add(&other.lag);
        let _ = self.receive_lag.add(&other.receive_lag);
        self.stream.add(&other.stream);
    }
}

/// The messages of gRPC streaming calls, timed apart from the whole call (whose latency is in
/// the corrected and service histograms as for any request). Whole-run figures: a generator
/// thread adds its own at the end of a phase.
#[derive(Debug, Clone)]
pub struct StreamHists {
    /// Time to the first answer message, from the call's intended send time (as the corrected
    /// latency is), ns.
    pub first_message: Histogram<u64>,
    /// Per answer message: from the later of the previous answer and the request message it
    /// answers (bidi; the call's send for the others) to its last byte, ns.
    pub message: Histogram<u64>,
    /// Calls that returned at least their head.
    pub calls: u64,
    /// Request messages sent.
    pub messages_sent: u64,
    /// Answer messages received whole.
    pub messages_received: u64,
}

impl Default for StreamHists {
    fn default() -> Self {
        StreamHists {
            first_message: histogram(),
            message: histogram(),
            calls: 0,
            messages_sent: 0,
            messages_received: 0,
        }
    }
}

impl StreamHists {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &StreamHists) {
        let _ = self.first_message.add(&other.first_message);
        let _ = self.message.add(&other.message);
        self.calls += other.calls;
        self.messages_sent += other.messages_sent;
        self.messages_received += other.messages_received;
    }

    /// Records one answer message that ended at `at`, the `n`-th (0-based) of a call intended
    /// at `intended`, `since` being the later of the previous answer and its request message.
    pub fn message_ended(&mut self, n: u64, intended: Instant, since: Instant, at: Instant) {
        if n == 0 {
            record(
                &mut self.first_message,
                at.saturating_duration_since(intended),
            );
        }
        record(&mut self.message, at.saturating_duration_since(since));
        self.messages_received += 1;
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx, or gRPC OK.
    Ok,
    /// An HTTP status outside 2xx.
    Http(u16),
    /// A gRPC status other than OK (code number).
    Grpc(i32),
    /// The request failed below HTTP (kind, e.g. "connect_refused").
    Transport(&'static str),
    /// No answer within the timeout.
    Timeout,
}

/// Counts of outcomes; every scheduled request is in exactly one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Successful requests.
    pub ok: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Scheduled requests that were never sent.
    pub not_sent: u64,
    /// HTTP errors by status.
    pub http: BTreeMap<u16, u64>,
    /// gRPC errors by code.
    pub grpc: BTreeMap<i32, u64>,
    /// Transport errors by kind.
    pub transport: BTreeMap<&'static str, u64>,
}

impl Outcomes {
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Timeout => self.timeouts += 1,
            Outcome::Http(s) => *self.http.entry(s).or_default() += 1,
            Outcome::Grpc(c) => *self.grpc.entry(c).or_default() += 1,
            Outcome::Transport(k) => *self.transport.entry(k).or_default() += 1,
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Outcomes) {
        self.ok += other.ok;
        self.timeouts += other.timeouts;
        self.not_sent += other.not_sent;
        for (k, v) in &other.http {
            *self.http.entry(*k).or_default() += v;
        }
        for (k, v) in &other.grpc {
            *self.grpc.entry(*k).or_default() += v;
        }
        for (k, v) in &other.transport {
            *self.transport.entry(*k).or_default() += v;
        }
    }

    /// Requests that did not succeed (errors, timeouts, not sent).
    pub fn failed(&self) -> u64 {
        self.total() - self.ok
    }

    /// Every request counted, in any bucket.
    pub fn total(&self) -> u64 {
        self.ok
            + self.timeouts
            + self.not_sent
            + self.http.values().sum::<u64>()
            + self.grpc.values().sum::<u64>()
            + self.transport.values().sum::<u64>()
    }

    /// Requests that were sent (everything but `not_sent`).
    pub fn sent(&self) -> u64 {
        self.total() - self.not_sent
    }
}

/// The timing of one finished request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it should have been sent (equal to `sent` in closed loop).
    pub intended: Instant,
    /// When it was sent.
    pub sent: Instant,
    /// When the response ended, or the timeout fired, or the transport failed.
    pub done: Instant,
    /// How it ended.
    pub outcome: Outcome,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Records `d` in ns, growing the (auto-resizing) histogram as needed. `saturating_record` would
/// clamp to the current range instead of growing, so it is only the fallback.
fn record(h: &mut Histogram<u64>, d: Duration) {
    let v = nanos(d);
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

enum Msg {
    Interval {
        index: u64,
        hist: Box<HistSet>,
        outcomes: Outcomes,
    },
    Done(Option<Box<RawBuf>>),
}

/// One request as `--csv-raw` writes it: times from the phase start, ns (48 bytes a row).
#[derive(Debug, Clone, Copy)]
pub struct RawRow {
    /// When it was due.
    pub intended: u64,
    /// When it went out.
    pub sent: u64,
    /// When it ended.
    pub done: u64,
    /// How.
    pub outcome: Outcome,
}

/// A thread's raw rows, up to its share of the limit; the rest counted.
#[derive(Debug, Default)]
struct RawBuf {
    rows: Vec<RawRow>,
    cap: usize,
    dropped: u64,
}

// ===== ThreadRecorder =====

/// One generator thread's recorder.
#[derive(Debug)]
pub struct ThreadRecorder {
    start: Instant,
    index: u64,
    hist: Box<HistSet>,
    outcomes: Outcomes,
    tx: mpsc::Sender<Msg>,
    finished: bool,
    /// `--csv-raw`: every request, up to a bound.
    raw: Option<Box<RawBuf>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Interval { index, .. } => write!(f, "Interval({index})"),
            Msg::Done(_) => f.write_str("Done"),
        }
    }
}

impl ThreadRecorder {
    /// Records how late the answer just recorded was read after the kernel's stamp said it
    /// arrived (into the same interval).
    pub fn record_receive_lag(&mut self, lag: Duration) {
        if !self.finished {
            record(&mut self.hist.receive_lag, lag);
        }
    }

    /// Records one request (into the interval in which it ended).
    pub fn record(&mut self, s: Sample) {
        if self.finished {
            return;
        }
        self.advance(s.done);
        record(
            &mut self.hist.lag,
            s.sent.saturating_duration_since(s.intended),
        );
        if !matches!(s.outcome, Outcome::Transport(_)) {
            record(
                &mut self.hist.corrected,
                s.done.saturating_duration_since(s.intended),
            );
            record(
                &mut self.hist.service,
                s.done.saturating_duration_since(s.sent),
            );
        }
        self.outcomes.count(s.outcome);
        if let Some(raw) = &mut self.raw {
            if raw.rows.len() < raw.cap {
                let since = |t: Instant| nanos(t.saturating_duration_since(self.start));
                raw.rows.push(RawRow {
                    intended: since(s.intended),
                    sent: since(s.sent),
                    done: since(s.done),
                    outcome: s.outcome,
                });
            } else {
                raw.dropped += 1;
            }
        }
    }

    /// Closes the intervals that ended before `now` (called by a ticker so that an idle thread
    /// does not hold the others' intervals back).
    pub fn advance(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        let index =
            (now.saturating_duration_since(self.start).as_nanos() / INTERVAL.as_nanos()) as u64;
        while self.index < index {
            self.flush();
            self.index += 1;
        }
    }

    fn flush(&mut self) {
        let hist = std::mem::take(&mut self.hist);
        let outcomes = std::mem::take(&mut self.outcomes);
        // The collector outlives the threads; if it is gone the run is being torn down anyway.
        let _ = self.tx.send(Msg::Interval {
            index: self.index,
            hist,
            outcomes,
        });
    }

    /// Adds a phase's streaming figures (into the current interval; they are whole-run figures).
    pub fn add_stream(&mut self, stream: &StreamHists) {
        if !self.finished {
            self.hist.stream.add(stream);
        }
    }

    /// Sends the last (partial) interval and signs off; later samples are ignored.
    pub fn finish(&mut self, now: Instant) {
        if self.finished {
            return;
        }
        self.advance(now);
        self.flush();
        self.finished = true;
        let _ = self.tx.send(Msg::Done(self.raw.take()));
    }
}

// ===== Collector =====

/// Summary and compressed histograms of one interval of the whole run (all threads).
#[derive(Debug, Clone)]
pub struct IntervalRecord {
    /// Offset of the interval's start from the phase start.
    pub start: Duration,
    /// Its length (the last one may be shorter).
    pub length: Duration,
    /// Outcomes of requests that ended in it.
    pub outcomes: Outcomes,
    /// Corrected latency percentiles, ns.
    pub corrected: Quantiles,
    /// Service time percentiles, ns.
    pub service: Quantiles,
    /// The corrected histogram, V2 + deflate.
    pub corrected_v2: Vec<u8>,
    /// The service-time histogram, V2 + deflate.
    pub service_v2: Vec<u8>,
}

impl IntervalRecord {
    /// Summarises and compresses one interval's histograms (what goes into the `.hlog`).
    pub fn new(start: Duration, length: Duration, hist: &HistSet, outcomes: Outcomes) -> Self {
        IntervalRecord {
            start,
            length,
            outcomes,
            corrected: Quantiles::of(&hist.corrected),
            service: Quantiles::of(&hist.service),
            corrected_v2: compress(&hist.corrected),
            service_v2: compress(&hist.service),
        }
    }
}

/// Merges the threads' intervals as they arrive.
#[derive(Debug)]
pub struct Collector {
    threads: usize,
    start: Instant,
    rx: mpsc::Receiver<Msg>,
    tx: Option<mpsc::Sender<Msg>>,
    pending: BTreeMap<u64, (usize, HistSet, Outcomes)>,
    done: usize,
    /// Whole-run histograms.
    pub total: HistSet,
    /// Whole-run outcomes (without `not_sent`, which the schedule knows).
    pub outcomes: Outcomes,
    /// Finished intervals, in order.
    pub intervals: Vec<IntervalRecord>,
    /// `--csv-raw`: each recorder keeps at most this many rows (None: none kept).
    raw_cap: Option<usize>,
    /// The rows the recorders kept, in the order threads finished.
    pub raw: Vec<RawRow>,
    /// Requests past the bound, not kept.
    pub raw_dropped: u64,
}

/// An interval's percentiles, ns (0 when it holds nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quantiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Quantiles {
    /// Read off `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Quantiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// A histogram as V2 + deflate bytes (as in `.hlog` lines and the load JSON's `histograms`).
pub fn compress(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing into a Vec cannot fail for a valid histogram.
    let _ = V2DeflateSerializer::new().serialize(h, &mut out);
    out
}

impl Collector {
    /// A collector for `threads` recorders of a phase that starts at `start`.
    pub fn new(threads: usize, start: Instant) -> Self {
        let (tx, rx) = mpsc::channel();
        Collector {
            threads,
            start,
            rx,
            tx: Some(tx),
            pending: BTreeMap::new(),
            done: 0,
            total: HistSet::default(),
            outcomes: Outcomes::default(),
            intervals: Vec::new(),
            raw_cap: None,
            raw: Vec::new(),
            raw_dropped: 0,
        }
    }

    /// Keeps every request's times, up to `limit` rows in all (each thread its share); call
    /// before making the recorders.
    pub fn keep_raw(&mut self, limit: usize) {
        self.raw_cap = Some(limit.div_ceil(self.threads.max(1)));
    }

    /// A recorder for one thread. Call exactly `threads` times.
    pub fn recorder(&self) -> ThreadRecorder {
        ThreadRecorder {
            start: self.start,
            index: 0,
            hist: Box::default(),
            outcomes: Outcomes::default(),
            tx: self
                .tx
                .clone()
                .expect("recorders are made before the collector runs"),
            finished: false,
            raw: self.raw_cap.map(|cap| {
                Box::new(RawBuf {
                    rows: Vec::with_capacity(cap.min(1 << 16)),
                    cap,
                    dropped: 0,
                })
            }),
        }
    }

    /// Waits up to `timeout` for recorder messages; returns the intervals finished meanwhile
    /// (for progress display) and whether every recorder has finished.
    pub fn poll(&mut self, timeout: Duration) -> (usize, bool) {
        self.tx = None; // from now on, only recorders hold senders
        let before = self.intervals.len();
        let deadline = Instant::now() + timeout;
        while self.done < self.threads {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(wait) {
                Ok(Msg::Interval {
                    index,
                    hist,
                    outcomes,
                }) => {
                    let entry = self
                        .pending
                        .entry(index)
                        .or_insert_with(|| (0, HistSet::default(), Outcomes::default()));
                    entry.0 += 1;
                    entry.1.add(&hist);
                    entry.2.add(&outcomes);
                    self.finalize_ready(false);
                }
                Ok(Msg::Done(raw)) => {
                    self.done += 1;
                    if let Some(raw) = raw {
                        self.raw.extend_from_slice(&raw.rows);
                        self.raw_dropped += raw.dropped;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                // Every recorder is gone (a thread panicked): finish with what arrived.
                Err(mpsc::RecvTimeoutError::Disconnected) => self.done = self.threads,
            }
        }
        let all_done = self.done >= self.threads;
        if all_done {
            self.finalize_ready(true);
        }
        (self.intervals.len() - before, all_done)
    }

    fn finalize_ready(&mut self, all: bool) {
        while let Some(entry) = self.pending.first_entry() {
            if !all && entry.get().0 < self.threads {
                break;
            }
            let index = *entry.key();
            let (_, hist, outcomes) = entry.remove();
            self.finalize(index, hist, outcomes);
        }
    }

    fn finalize(&mut self, index: u64, hist: HistSet, outcomes: Outcomes) {
        let start = INTERVAL * index as u32;
        self.total.add(&hist);
        self.outcomes.add(&outcomes);
        self.intervals
            .push(IntervalRecord::new(start, INTERVAL, &hist, outcomes));
    }

    /// Marks the end of the phase (offset from its start): the last interval is cut there.
    pub fn close(&mut self, end: Duration) {
        if let Some(last) = self.intervals.last_mut() {
            last.length = end
                .saturating_sub(last.start)
                .clamp(Duration::from_millis(1), INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_rows_are_kept_up_to_each_threads_share_and_the_rest_counted() {
        assert_eq!(std::mem::size_of::<RawRow>(), 48, "the size --help states");
        let start = Instant::now();
        let mut collector = Collector::new(2, start);
        collector.keep_raw(3); // two threads: two rows each
        let mut recs = [collector.recorder(), collector.recorder()];
        for k in 0..3u64 {
            for r in &mut recs {
                let at = start + Duration::from_millis(10 * (k + 1));
                r.record(Sample {
                    intended: at,
                    sent: at + Duration::from_millis(1),
                    done: at + Duration::from_millis(3),
                    outcome: Outcome::Ok,
                });
            }
        }
        for r in &mut recs {
            r.finish(start + Duration::from_millis(100));
        }
        assert!(collector.poll(Duration::from_secs(5)).1);
        assert_eq!((collector.raw.len(), collector.raw_dropped), (4, 2));
        let row = collector.raw[0];
        assert_eq!(
            (row.intended, row.sent, row.done),
            (10_000_000, 11_000_000, 13_000_000)
        );
    }

    #[test]
    fn intervals_merge_across_threads_and_sum_to_the_total() {
        let start = Instant::now();
        let mut collector = Collector::new(2, start);
        let mut recs = [collector.recorder(), collector.recorder()];
        let at = |ms: u64| start + Duration::from_millis(ms);
        for (r, ms, outcome) in [
            (0, 100, Outcome::Ok),
            (1, 200, Outcome::Http(503)),
            (0, 1_500, Outcome::Ok),
            (1, 2_500, Outcome::Transport("connect_refused")),
            (0, 2_600, Outcome::Timeout),
        ] {
            recs[r].record(Sample {
                intended: at(ms - 10),
                sent: at(ms - 5),
                done: at(ms),
                outcome,
            });
        }
        for r in &mut recs {
            r.finish(at(2_700));
        }
        let (_, done) = collector.poll(Duration::from_secs(5));
        assert!(done);
        assert_eq!(collector.intervals.len(), 3);
        assert_eq!(collector.intervals[0].outcomes.total(), 2);
        assert_eq!(collector.intervals[1].outcomes.ok, 1);
        assert_eq!(collector.outcomes.total(), 5);
        assert_eq!(collector.outcomes.transport["connect_refused"], 1);
        // A transport error has no latency, only lag.
        assert_eq!(collector.total.corrected.len(), 4);
        assert_eq!(collector.total.lag.len(), 5);
        assert_eq!(
            collector.total.corrected.max(),
            collector.total.corrected.highest_equivalent(10_000_000)
        );
        assert_eq!(
            collector.total.service.value_at_quantile(0.5),
            collector.total.service.highest_equivalent(5_000_000)
        );
    }
}
