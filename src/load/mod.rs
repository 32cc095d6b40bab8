//! The open-loop load generator (`gwbench load`): when to send ([`schedule`]), how to send
//! ([`http`], [`grpc`], [`target`]), paced by [`timer`] on generator threads ([`engine`]), and
//! what happened ([`recorder`]). It never imports the gateway.

pub mod body;
mod engine;
pub mod grpc;
pub mod h1;
mod h1_paced;
pub mod http;
pub mod interrupt;
pub mod live;
mod phase;
pub mod recorder;
pub mod schedule;
pub mod slo;
pub mod target;
pub mod template;
pub mod timer;
pub mod ws;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;

use engine::{Phase, PhaseEnd, Shared};
use http::Pool;
use recorder::{Collector, HistSet, IntervalRecord, Outcomes};
use schedule::{Dispenser, Limit, Rate};
use target::{Protocol, RequestTemplate};

/// Why a load run could not start. All of these are the user's input: exit code 2.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A flag or value makes no sense.
    #[error("{0}")]
    Config(String),
    /// The target cannot be reached before any load is sent.
    #[error("{0}")]
    Unreachable(String),
    /// The generator itself failed while running (a thread could not start, failed or
    /// panicked): not the user's input.
    #[error("{0}")]
    Failed(String),
}

impl LoadError {
    /// Whether the user's input (flags, target) is to blame, rather than the run.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, LoadError::Config(_) | LoadError::Unreachable(_))
    }
}

/// A run to make.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// What to send, where.
    pub template: RequestTemplate,
    /// Arrival profile.
    pub rate: Rate,
    /// When the measured phase stops scheduling.
    pub limit: Limit,
    /// Warm-up before the measured phase (same rate, results discarded).
    pub warmup: Duration,
    /// TCP connections.
    pub connections: usize,
    /// For HTTP/2 and gRPC: requests in flight at most (all threads together).
    pub max_in_flight: usize,
    /// Generator threads (each with its share of the connections).
    pub threads: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Busy-wait (yielding) this long before each send instead of sleeping: precise pacing for
    /// CPU. Zero sleeps all the way.
    pub spin: Duration,
    /// Show a live progress bar on stderr.
    pub progress: bool,
    /// This generator's share of a schedule split among several (default: all of it).
    pub split: schedule::Split,
    /// Keep every measured request's times, up to this many (`--csv-raw`).
    pub raw_limit: Option<usize>,
    /// Where the run's figures go live (`--prometheus-addr`).
    pub live: Option<Arc<live::Live>>,
    /// Take an answer's arrival from the kernel's receive timestamp (HTTP/1.1 over plain TCP),
    /// so the generator's own late wake-up is not counted as the server's latency.
    pub kernel_timestamps: bool,
    /// Runs that start together (compare's duet): each waits, connections open, for the
    /// others, and all take one start instant.
    pub start_gate: Option<Arc<StartGate>>,
}

/// Where runs in one process meet before they start: when the last of `parties` is ready, each
/// is given the same start instant. A run that fails first calls the gate off, so that the
/// others do not wait for it.
#[derive(Debug)]
pub struct StartGate {
    parties: usize,
    /// Ready so far, the instant once everyone is, and whether the meeting was called off.
    state: std::sync::Mutex<(usize, Option<Instant>, bool)>,
    met: std::sync::Condvar,
}

impl StartGate {
    /// A gate for `parties` runs.
    pub fn new(parties: usize) -> Arc<Self> {
        Arc::new(StartGate {
            parties,
            state: std::sync::Mutex::new((0, None, false)),
            met: std::sync::Condvar::new(),
        })
    }

    /// Ready: waits (at most `patience`) for the others; the common start instant, or None
    /// when the meeting was called off or the others did not come in time.
    fn meet(&self, patience: Duration) -> Option<Instant> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 += 1;
        if s.0 >= self.parties && !s.2 {
            s.1 = Some(Instant::now() + Duration::from_millis(20));
            self.met.notify_all();
        }
        let (s, _) = self
            .met
            .wait_timeout_while(s, patience, |s| s.1.is_none() && !s.2)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.1.filter(|_| !s.2)
    }

    /// This run will not come: the others stop waiting.
    fn call_off(&self) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.2 = true;
        self.met.notify_all();
    }
}

/// CPU time the generator process used during the measured phase.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    /// User-mode seconds.
    pub user_s: f64,
    /// Kernel-mode seconds.
    pub system_s: f64,
}

fn cpu_now() -> CpuTime {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let s = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            CpuTime {
                user_s: s(u.user_time()),
                system_s: s(u.system_time()),
            }
        }
        Err(_) => CpuTime::default(),
    }
}

/// The result of a run: what the report is made from.
#[derive(Debug)]
pub struct LoadRun {
    /// The target, as given.
    pub target: String,
    /// Protocol used.
    pub protocol: Protocol,
    /// Arrival profile.
    pub rate: Rate,
    /// Length of the measured phase (configured duration, or first to last send; up to the
    /// last send when Ctrl-C stopped it).
    pub duration: Duration,
    /// Ctrl-C stopped the measured phase early: the figures are of what ran.
    pub interrupted: bool,
    /// Every scheduled request's outcome (with `not_sent`).
    pub outcomes: Outcomes,
    /// Whole-run histograms.
    pub total: HistSet,
    /// Per-second intervals.
    pub intervals: Vec<IntervalRecord>,
    /// Wall-clock time of the measured phase's start (for the `.hlog`).
    pub start_wall: SystemTime,
    /// CPU the generator used in the measured phase.
    pub cpu: CpuTime,
    /// Connections and threads used.
    pub connections: usize,
    /// Generator threads used.
    pub threads: usize,
    /// Requests taken for sending during the warm-up (for per-request CPU of other processes
    /// measured across warm-up and run).
    pub warmup_requests: u64,
    /// Requests whose send time came while every connection (HTTP/1.1) or stream (h2) was
    /// still busy with an earlier request: their lag is the target's latency, not the
    /// generator's pace (more connections would have sent them on time).
    pub waited_for_connection: u64,
    /// Times the generator's threads slept and were woken during the measured phase (None
    /// where the system does not say).
    pub wakeups: Option<u64>,
    /// The share of the schedule this run sent.
    pub split: schedule::Split,
    /// Identifier of the whole schedule ([`schedule::Split::schedule_id`]).
    pub schedule_id: String,
    /// TLS handshakes of the run (opening connections before the clock included), ns; None
    /// for cleartext.
    pub tls_handshakes: Option<hdrhistogram::Histogram<u64>>,
    /// WebSocket connections opened (TCP, TLS, upgrade), ns; None for other protocols.
    pub ws_connects: Option<hdrhistogram::Histogram<u64>>,
    /// The kind of a gRPC streaming call (its messages are in `total.stream`); None otherwise.
    pub stream_kind: Option<grpc::CallKind>,
    /// `--csv-raw`: every measured request's times in the order they were due, up to the
    /// limit; and how many past it were not kept.
    pub raw: Option<(Vec<recorder::RawRow>, u64)>,
}

impl LoadRun {
    /// Requests the schedule had due in `interval`, per second (this generator's share; None
    /// in closed loop). Nothing is due after the phase: its last interval is the drain.
    pub fn offered_in(&self, interval: &IntervalRecord) -> Option<f64> {
        let end = (interval.start + interval.length).min(self.duration);
        self.rate
            .scheduled_in(interval.start.min(self.duration), end)
            .map(|n| {
                n / interval.length.as_secs_f64().max(1e-9) / f64::from(self.split.segment.count)
            })
    }

    /// Requests scheduled in the measured phase (the sum of every outcome bucket).
    pub fn scheduled(&self) -> u64 {
        self.outcomes.total()
    }

    /// Requests sent per second over the measured phase.
    pub fn achieved_rps(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.outcomes.sent() as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs the load to completion on `threads` generator threads and returns what happened.
/// Blocks the calling thread (call it from a plain thread, not from inside an async task).
///
/// How long a run waits at its start gate for the others (opening connections takes well
/// under a second; a run that needs more has a problem to report).
const GATE_PATIENCE: Duration = Duration::from_secs(30);

/// Every thread opens its connections and says so; the start instant is then fixed, the
/// collectors made, and each thread is sent its start and its recorders; warm-up (discarded)
/// and measured phase follow; this thread collects intervals until every thread is done.
pub fn run_load(cfg: &LoadConfig) -> Result<LoadRun, LoadError> {
    let run = start_and_run(cfg);
    if let (Err(_), Some(gate)) = (&run, &cfg.start_gate) {
        gate.call_off();
    }
    run
}

fn start_and_run(cfg: &LoadConfig) -> Result<LoadRun, LoadError> {
    check(cfg)?;
    let threads = cfg.threads.clamp(1, cfg.connections);
    let plan = Plan::new(cfg);
    let workers = (0..threads)
        .map(|k| Worker::spawn(k, threads, cfg, &plan))
        .collect::<Result<Vec<_>, _>>()?;
    for w in &workers {
        // A thread that ends before it is ready has failed: join it for the reason.
        if w.ready.recv().is_err() {
            return Err(join(workers).err().unwrap_or_else(|| {
                LoadError::Failed("a generator thread stopped before the run".into())
            }));
        }
    }
    // A small margin so that every thread is parked on its first send time, not still waking;
    // or the instant every generator of a split schedule agreed on.
    let start = match (cfg.split.start_at, &cfg.start_gate) {
        (None, Some(gate)) => match gate.meet(GATE_PATIENCE) {
            Some(start) => start,
            None => {
                drop(workers);
                return Err(LoadError::Failed(format!(
                    "the runs meant to start together did not all get ready within {}s",
                    GATE_PATIENCE.as_secs()
                )));
            }
        },
        (None, None) => Instant::now() + Duration::from_millis(20),
        (Some(at), _) => match at.duration_since(SystemTime::now()) {
            Ok(wait) => Instant::now() + wait,
            Err(late) => {
                drop(workers); // called off: each thread ends when its Go sender goes
                return Err(LoadError::Config(format!(
                    "--start-at passed {} ago, before the connections were open; give every \
                     generator a later one",
                    humantime::format_duration(Duration::from_millis(
                        late.duration().as_millis() as u64
                    ))
                )));
            }
        },
    };
    let m_start = start + cfg.warmup;
    let warm_collector = Collector::new(threads, start);
    let mut collector = Collector::new(threads, m_start);
    if let Some(limit) = cfg.raw_limit {
        collector.keep_raw(limit);
    }
    for w in &workers {
        let go = Go {
            start,
            warm: warm_collector.recorder(),
            measured: collector.recorder(),
        };
        // A thread that already ended reports why when it is joined.
        let _ = w.go.send(go);
    }
    drop(warm_collector); // warm-up results are discarded
    let start_wall = SystemTime::now() + (m_start - Instant::now());
    let cpu = collect(cfg, &plan.shared, &mut collector, m_start);
    let ends = join(workers)?;
    Ok(finish(
        cfg, &plan, collector, &ends, m_start, start_wall, cpu,
    ))
}

/// Checks what makes no sense, and that the target accepts connections, before any thread.
fn check(cfg: &LoadConfig) -> Result<(), LoadError> {
    if cfg.connections == 0 {
        return Err(LoadError::Config("--connections must be at least 1".into()));
    }
    if cfg.timeout.is_zero() {
        return Err(LoadError::Config("--timeout must be longer than 0".into()));
    }
    let split = cfg.split;
    if split.segment.count > 1 && cfg.rate == Rate::Max {
        return Err(LoadError::Config(
            "--segment splits an open-loop schedule; closed loop (--rps max) has none".into(),
        ));
    }
    if split.segment.count > 1 && matches!(cfg.rate, Rate::Poisson(_)) && split.seed.is_none() {
        return Err(LoadError::Config(
            "--segment with Poisson arrivals needs --seed N (the same on every generator), so \
             that they all draw the same schedule"
                .into(),
        ));
    }
    if let Some(at) = split.start_at
        && at <= SystemTime::now()
    {
        return Err(LoadError::Config(
            "--start-at is in the past; give a time far enough ahead for every generator to \
             start and connect"
                .into(),
        ));
    }
    if let Some(from) = cfg.template.from
        && let Err(e) = std::net::TcpListener::bind((from, 0))
    {
        return Err(LoadError::Config(format!(
            "--local-addr {from}: cannot open connections from it ({e}); give an address of \
             this machine (any of 127.0.0.0/8 on loopback)"
        )));
    }
    let addr = cfg.template.addr;
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        LoadError::Unreachable(format!(
            "cannot connect to {} ({addr}): {e}",
            cfg.template.describe()
        ))
    })?;
    // One TLS handshake: an untrusted certificate is one clear error, not a run of tls_errors.
    if let Some(tls) = &cfg.template.tls {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::Failed(format!("cannot build a runtime: {e}")))?;
        rt.block_on(tls.check(cfg.template.dial())).map_err(|e| {
            LoadError::Unreachable(format!("{} ({addr}): {e}", cfg.template.describe()))
        })?;
    }
    Ok(())
}

/// What every generator thread shares: the request template and the two schedules.
struct Plan {
    shared: Arc<Shared>,
    warm_dispenser: Arc<Dispenser>,
    dispenser: Arc<Dispenser>,
}

impl Plan {
    fn new(cfg: &LoadConfig) -> Plan {
        // A ramp or a shape warms up at its starting rate (not at all when that is 0).
        let (warm_rate, warm_limit) = match cfg.rate.warmup() {
            Some(rate) => (rate, Limit::Duration(cfg.warmup)),
            None => (Rate::Max, Limit::Requests(0)),
        };
        Plan {
            shared: Arc::new(Shared {
                template: cfg.template.clone(),
                timeout: cfg.timeout,
                spin: cfg.spin,
                in_flight: AtomicI64::new(0),
                kernel_timestamps: cfg.kernel_timestamps,
            }),
            warm_dispenser: Arc::new(Dispenser::segment(
                warm_rate,
                warm_limit,
                cfg.split.segment,
                cfg.split.seed.map(|s| s ^ 0x5741_524d), // its own gaps, as reproducible
            )),
            dispenser: Arc::new(Dispenser::segment(
                cfg.rate.clone(),
                cfg.limit,
                cfg.split.segment,
                cfg.split.seed,
            )),
        }
    }
}

/// What a generator thread is sent once every thread is ready: when to start, and where to
/// record the warm-up and the measured phase.
struct Go {
    start: Instant,
    warm: recorder::ThreadRecorder,
    measured: recorder::ThreadRecorder,
}

/// What a thread returns: how its measured phase ended, and a warning from opening its
/// connections.
type WorkerEnd = (PhaseEnd, Option<&'static str>);

/// A generator thread, as the collecting thread sees it.
struct Worker {
    handle: std::thread::JoinHandle<std::io::Result<WorkerEnd>>,
    /// Says the thread's connections are open (closed unsent if the thread failed first).
    ready: mpsc::Receiver<()>,
    go: mpsc::Sender<Go>,
}

impl Worker {
    /// Thread `k` of `threads`, with its share of the connections and of the in-flight bound.
    fn spawn(k: usize, threads: usize, cfg: &LoadConfig, plan: &Plan) -> Result<Worker, LoadError> {
        let conns = cfg.connections / threads + usize::from(k < cfg.connections % threads);
        let in_flight = (cfg.max_in_flight / threads).max(conns);
        let (ready_tx, ready) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<Go>();
        let (shared, warm, measured) = (
            plan.shared.clone(),
            plan.warm_dispenser.clone(),
            plan.dispenser.clone(),
        );
        let (warmup, limit) = (cfg.warmup, cfg.limit);
        let handle = std::thread::Builder::new()
            .name(format!("gwbench-load-{k}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    let group = match shared.template.group() {
                        true => shared.template.paths_len(),
                        false => 1,
                    };
                    let mut pool = Pool::new(shared.template.protocol, conns, in_flight, group)
                        .stamped(shared.kernel_timestamps);
                    let warm_error = pool.open(&shared.template).await.err();
                    let _ = ready_tx.send(());
                    let Ok(go) = go_rx.recv() else {
                        return Err(std::io::Error::other("the run was called off"));
                    };
                    if !warmup.is_zero() {
                        let end = Some(go.start + warmup);
                        let phase = Phase::new(&warm, go.start, end, go.warm);
                        engine::run_phase(shared.clone(), &mut pool, phase).await?;
                    }
                    let m_start = go.start + warmup;
                    let end = match limit {
                        Limit::Duration(d) => Some(m_start + d),
                        Limit::Requests(_) => None,
                    };
                    let phase = Phase::new(&measured, m_start, end, go.measured);
                    let result = engine::run_phase(shared, &mut pool, phase).await?;
                    pool.close().await;
                    Ok((result, warm_error))
                })
            })
            .map_err(|e| LoadError::Failed(format!("cannot start a generator thread: {e}")))?;
        Ok(Worker { handle, ready, go })
    }
}

/// Merges the threads' intervals as they come, showing progress, until every thread is done.
/// Returns the CPU this process used over the measured phase.
fn collect(
    cfg: &LoadConfig,
    shared: &Arc<Shared>,
    collector: &mut Collector,
    m_start: Instant,
) -> CpuTime {
    let progress = Progress::new(cfg, shared);
    std::thread::sleep(m_start.saturating_duration_since(Instant::now()));
    let cpu_start = cpu_now();
    loop {
        let (new, done) = collector.poll(Duration::from_millis(200));
        progress.update(collector, m_start);
        if let Some(live) = &cfg.live {
            let offered = collector.intervals.last().and_then(|i| {
                let n = cfg.rate.scheduled_in(i.start, i.start + i.length)?;
                Some(n / i.length.as_secs_f64().max(1e-9) / f64::from(cfg.split.segment.count))
            });
            live.update(
                collector,
                new,
                shared.in_flight.load(Ordering::Relaxed),
                offered,
            );
        }
        if done {
            break;
        }
    }
    let cpu_end = cpu_now();
    progress.finish();
    CpuTime {
        user_s: cpu_end.user_s - cpu_start.user_s,
        system_s: cpu_end.system_s - cpu_start.system_s,
    }
}

/// Waits for every thread; the first failure is the run's.
fn join(workers: Vec<Worker>) -> Result<Vec<PhaseEnd>, LoadError> {
    let mut ends = Vec::with_capacity(workers.len());
    let mut failure = None;
    for w in workers {
        drop(w.go); // a thread still waiting for its start gives up
        match w.handle.join() {
            Ok(Ok((end, warm_error))) => {
                if let Some(kind) = warm_error {
                    tracing::warn!(kind, "some connections could not be opened before the run");
                }
                ends.push(end);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(LoadError::Failed(format!("generator thread failed: {e}")));
            }
            Err(_) => {
                failure.get_or_insert(LoadError::Failed("a generator thread panicked".into()));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(ends),
    }
}

/// The run's result from the merged intervals and how each thread ended.
fn finish(
    cfg: &LoadConfig,
    plan: &Plan,
    mut collector: Collector,
    ends: &[PhaseEnd],
    m_start: Instant,
    start_wall: SystemTime,
    cpu: CpuTime,
) -> LoadRun {
    let mut outcomes = collector.outcomes.clone();
    outcomes.not_sent =
        ends.iter().map(|e| e.not_sent).sum::<u64>() + plan.dispenser.drain_not_sent();
    let interrupted = interrupt::interrupted();
    let duration = match cfg.limit {
        Limit::Duration(d) if !interrupted => d,
        Limit::Duration(_) | Limit::Requests(_) => ends
            .iter()
            .filter_map(|e| e.last_send)
            .max()
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(m_start)),
    };
    let finished = ends
        .iter()
        .filter_map(|e| e.finished)
        .max()
        .unwrap_or_else(Instant::now);
    collector.close(finished.saturating_duration_since(m_start));
    let raw = cfg.raw_limit.map(|_| {
        let mut rows = std::mem::take(&mut collector.raw);
        rows.sort_by_key(|r| r.intended);
        (rows, collector.raw_dropped)
    });
    LoadRun {
        raw,
        target: cfg.template.describe(),
        protocol: cfg.template.protocol,
        rate: cfg.rate.clone(),
        duration,
        outcomes,
        total: collector.total,
        intervals: collector.intervals,
        start_wall,
        cpu,
        connections: cfg.connections,
        threads: ends.len(),
        warmup_requests: plan.warm_dispenser.taken(),
        interrupted,
        waited_for_connection: ends.iter().map(|e| e.waited_for_connection).sum(),
        wakeups: ends.iter().try_fold(0, |n, e| Some(n + e.wakeups?)),
        tls_handshakes: cfg.template.tls.as_ref().map(|t| t.handshakes()),
        ws_connects: cfg
            .template
            .ws_connects
            .as_ref()
            .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).clone()),
        stream_kind: cfg
            .template
            .grpc
            .as_ref()
            .map(|g| g.kind)
            .filter(|k| *k != grpc::CallKind::Unary),
        split: cfg.split,
        schedule_id: cfg.split.schedule_id(
            &cfg.rate,
            cfg.limit,
            cfg.warmup,
            &cfg.template.describe(),
        ),
    }
}

// ===== progress =====

/// The live progress bar (stderr), hidden when disabled.
struct Progress {
    bar: indicatif::ProgressBar,
    shared: Arc<Shared>,
    by_requests: bool,
}

impl Progress {
    fn new(cfg: &LoadConfig, shared: &Arc<Shared>) -> Self {
        let bar = if cfg.progress {
            let (len, template) = match cfg.limit {
                Limit::Duration(d) => (
                    d.as_secs().max(1),
                    "{elapsed_precise} [{bar:30}] {pos}/{len}s  {msg}",
                ),
                Limit::Requests(n) => (n, "{elapsed_precise} [{bar:30}] {pos}/{len}  {msg}"),
            };
            let bar = indicatif::ProgressBar::new(len);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Progress {
            bar,
            shared: shared.clone(),
            by_requests: matches!(cfg.limit, Limit::Requests(_)),
        }
    }

    fn update(&self, collector: &Collector, m_start: Instant) {
        if self.bar.is_hidden() {
            return;
        }
        let Some(last) = collector.intervals.last() else {
            return;
        };
        if self.by_requests {
            self.bar.set_position(collector.outcomes.total());
        } else {
            self.bar
                .set_position(Instant::now().saturating_duration_since(m_start).as_secs());
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        self.bar.set_message(format!(
            "{:.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  in flight {}",
            last.outcomes.sent() as f64 / last.length.as_secs_f64().max(1e-3),
            ms(last.corrected.p50),
            ms(last.corrected.p99),
            collector.outcomes.failed(),
            self.shared.in_flight.load(Ordering::Relaxed),
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_at_a_gate_start_at_one_instant_and_a_failed_one_calls_it_off() {
        let gate = StartGate::new(2);
        let other = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.meet(Duration::from_secs(30)))
        };
        let mine = gate.meet(Duration::from_secs(30));
        let theirs = other.join().unwrap();
        assert!(mine.is_some());
        assert_eq!(mine, theirs);
        // One party fails before it is ready: the other stops waiting at once, with None.
        let gate = StartGate::new(2);
        let waiting = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.meet(Duration::from_secs(3600)))
        };
        gate.call_off();
        assert_eq!(waiting.join().unwrap(), None);
    }
}
