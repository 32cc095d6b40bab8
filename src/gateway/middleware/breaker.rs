//! Circuit breakers, one per upstream: closed → open after N consecutive failures, or a failure
//! ratio over a rolling window with a minimum request count; open → half-open after a cooldown;
//! half-open admits a bounded number of probes; a probe's success closes, its failure re-opens
//! with the cooldown doubled (capped). Failures are 5xx answers (including the gateway's own 503
//! for a refused connection and 504 for a deadline), not 4xx. While closed, admission and
//! recording are atomics only.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tonic::Code;

use crate::gateway::config::BreakerConfig;
use crate::gateway::status::GwError;
use crate::gateway::{ClientDeadline, GwRequest, GwResponse};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const BUCKETS: usize = 10;

/// Breaker state, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests pass.
    Closed,
    /// Requests are refused until the cooldown ends.
    Open,
    /// A few probes pass.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Bucket {
    slot: AtomicU64,
    total: AtomicU32,
    failures: AtomicU32,
}

/// One upstream's breaker.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    cfg: BreakerConfig,
    epoch: Instant,
    state: AtomicU8,
    consecutive: AtomicU32,
    opened_at_ns: AtomicU64,
    cooldown_ns: AtomicU64,
    probes: AtomicU32,
    /// Counts half-open episodes, so a slot is given back only to the episode it came from.
    episode: AtomicU64,
    window: [Bucket; BUCKETS],
}

/// A half-open probe slot, taken in one half-open episode; [`Breaker::abandon`] gives it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    episode: u64,
}

/// The verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it (as a probe when half-open).
    Pass {
        /// The probe slot this request holds, when half-open.
        probe: Option<Probe>,
    },
    /// Refuse it; retry after this long.
    Reject(Duration),
}

impl Breaker {
    /// A closed breaker for upstream `name`.
    pub fn new(name: &str, cfg: BreakerConfig) -> Self {
        let breaker = Breaker {
            name: name.to_string(),
            cooldown_ns: AtomicU64::new(cfg.cooldown.0.as_nanos() as u64),
            cfg,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            consecutive: AtomicU32::new(0),
            opened_at_ns: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            episode: AtomicU64::new(0),
            window: Default::default(),
        };
        breaker.export(CLOSED);
        breaker
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The current state.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            CLOSED => State::Closed,
            OPEN => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Decides whether a request may go to the upstream.
    pub fn admit(&self) -> Admission {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admission::Pass { probe: None },
            OPEN => {
                let now = self.now_ns();
                let until = self.opened_at_ns.load(Ordering::Acquire)
                    + self.cooldown_ns.load(Ordering::Relaxed);
                if now < until {
                    return Admission::Reject(Duration::from_nanos(until - now));
                }
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.episode.fetch_add(1, Ordering::AcqRel);
                    self.probes.store(0, Ordering::Release);
                    tracing::info!(upstream = %self.name, "circuit half-open: probing");
                    self.export(HALF_OPEN);
                }
                self.admit_probe()
            }
            _ => self.admit_probe(),
        }
    }

    fn admit_probe(&self) -> Admission {
        let max = self.cfg.half_open_probes;
        let taken = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < max).then_some(p + 1)
            });
        match taken {
            Ok(_) => Admission::Pass {
                probe: Some(Probe {
                    episode: self.episode.load(Ordering::Acquire),
                }),
            },
            Err(_) => Admission::Reject(self.cfg.cooldown.0),
        }
    }

    /// Gives back the slot of a probe whose request was abandoned before an answer came (the
    /// client hung up): without this, a few abandoned probes would keep the breaker half-open
    /// and refusing for good. Nothing is recorded: the upstream neither failed nor succeeded.
    pub fn abandon(&self, probe: Probe) {
        if self.state.load(Ordering::Acquire) == HALF_OPEN
            && self.episode.load(Ordering::Acquire) == probe.episode
        {
            let _ = self
                .probes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| p.checked_sub(1));
        }
    }

    /// Records the outcome of an admitted request.
    pub fn record(&self, probe: bool, failure: bool) {
        if probe || self.state.load(Ordering::Acquire) == HALF_OPEN {
            if failure {
                let next = (self.cooldown_ns.load(Ordering::Relaxed).saturating_mul(2))
                    .min(self.cfg.max_cooldown.0.as_nanos() as u64);
                self.cooldown_ns.store(next, Ordering::Relaxed);
                self.trip(HALF_OPEN);
            } else if self
                .state
                .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.consecutive.store(0, Ordering::Relaxed);
                self.cooldown_ns
                    .store(self.cfg.cooldown.0.as_nanos() as u64, Ordering::Relaxed);
                for b in &self.window {
                    b.total.store(0, Ordering::Relaxed);
                    b.failures.store(0, Ordering::Relaxed);
                }
                tracing::info!(upstream = %self.name, "circuit closed");
                self.export(CLOSED);
            }
            return;
        }
        let (total, failures) = self.count(failure);
        if !failure {
            self.consecutive.store(0, Ordering::Relaxed);
            return;
        }
        let consecutive = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        let ratio_tripped = total >= self.cfg.min_requests
            && f64::from(failures) / f64::from(total) >= self.cfg.failure_ratio;
        if consecutive >= self.cfg.consecutive_failures || ratio_tripped {
            self.trip(CLOSED);
        }
    }

    /// Counts a request in the rolling window; returns the window's (total, failures).
    fn count(&self, failure: bool) -> (u32, u32) {
        let bucket_ns = (self.cfg.window.0.as_nanos() as u64 / BUCKETS as u64).max(1);
        let slot = self.now_ns() / bucket_ns + 1; // 0 marks an unused bucket
        let b = &self.window[(slot % BUCKETS as u64) as usize];
        let seen = b.slot.load(Ordering::Acquire);
        if seen != slot
            && b.slot
                .compare_exchange(seen, slot, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.total.store(0, Ordering::Relaxed);
            b.failures.store(0, Ordering::Relaxed);
        }
        b.total.fetch_add(1, Ordering::Relaxed);
        if failure {
            b.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.window
            .iter()
            .filter(|b| {
                let s = b.slot.load(Ordering::Acquire);
                s != 0 && s + BUCKETS as u64 > slot
            })
            .fold((0, 0), |(t, f), b| {
                (
                    t + b.total.load(Ordering::Relaxed),
                    f + b.failures.load(Ordering::Relaxed),
                )
            })
    }

    fn trip(&self, from: u8) {
        if self
            .state
            .compare_exchange(from, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.opened_at_ns.store(self.now_ns(), Ordering::Release);
            tracing::warn!(
                upstream = %self.name,
                cooldown_ms = self.cooldown_ns.load(Ordering::Relaxed) / 1_000_000,
                "circuit open"
            );
            self.export(OPEN);
        }
    }
}

impl Breaker {
    /// Exports the state as the gauge `gwbench_breaker_state{upstream}` (0 closed, 1 open,
    /// 2 half-open).
    fn export(&self, state: u8) {
        // The recorder must exist before the first state is set (a breaker is built, closed,
        // before anything else records): a gauge set into no recorder is lost until it moves.
        crate::gateway::observe::exporter::handle();
        metrics::gauge!("gwbench_breaker_state", "upstream" => self.name.clone())
            .set(f64::from(state));
    }
}

/// Whether a response counts as a failure of the upstream.
fn is_failure(status: StatusCode) -> bool {
    status.is_server_error()
}

// ===== Breakers =====

/// A breaker per upstream in front of the inner service: 503 with `Retry-After` while the
/// route's upstream is open; each answer recorded; an abandoned probe gives its slot back.
#[derive(Debug, Clone)]
pub struct Breakers {
    breakers: Arc<Vec<Arc<Breaker>>>,
}

impl Breakers {
    /// One breaker per upstream, by upstream index.
    pub fn new(breakers: Arc<Vec<Arc<Breaker>>>) -> Self {
        Breakers { breakers }
    }
}

/// The circuit-breaker middleware: [`Breakers`] run by the policy service.
pub type BreakerLayer = super::PolicyLayer<Breakers>;

impl super::Policy for Breakers {
    type State = (Arc<Breaker>, Option<Probe>);

    fn on_request(&self, req: &mut GwRequest) -> super::Decision<Self::State> {
        let breaker = &self.breakers[req.upstream];
        super::Decision::Now(match breaker.admit() {
            Admission::Pass { probe } => Ok((breaker.clone(), probe)),
            Admission::Reject(wait) => {
                let mut resp = GwError::grpc(
                    Code::Unavailable,
                    format!(
                        "circuit open for upstream {}: failing fast; retry later",
                        breaker.name
                    ),
                )
                .into_response();
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                Err(Box::new(resp))
            }
        })
    }

    fn on_response(&self, (breaker, probe): Self::State, resp: &mut GwResponse) {
        // A deadline the client shortened says nothing about the upstream: like a client that
        // hung up, it is not counted (a probe's slot goes back).
        if resp.extensions().get::<ClientDeadline>().is_some() {
            if let Some(probe) = probe {
                breaker.abandon(probe);
            }
            return;
        }
        breaker.record(probe.is_some(), is_failure(resp.status()));
    }

    fn on_drop(&self, (breaker, probe): Self::State) {
        // No outcome to record (the client left, not the upstream); a probe's slot goes back.
        if let Some(probe) = probe {
            breaker.abandon(probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::TextDuration;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            window: TextDuration(Duration::from_secs(10)),
            min_requests: 10,
            cooldown: TextDuration(Duration::from_secs(2)),
            max_cooldown: TextDuration(Duration::from_secs(5)),
            half_open_probes: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_consecutive_failures_and_recovers_through_a_probe() {
        let b = Breaker::new("u", cfg());
        for _ in 0..2 {
            b.record(false, true);
        }
        b.record(false, false); // a success resets the run
        for _ in 0..2 {
            b.record(false, true);
        }
        assert_eq!(b.state(), State::Closed);
        b.record(false, true);
        assert_eq!(b.state(), State::Open);
        assert!(matches!(b.admit(), Admission::Reject(d) if d <= Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(matches!(b.admit(), Admission::Pass { probe: Some(_) }));
        assert!(
            matches!(b.admit(), Admission::Reject(_)),
            "one probe at a time"
        );
        b.record(true, true); // the probe fails: open again, cooldown doubled
        assert_eq!(b.state(), State::Open);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(
            matches!(b.admit(), Admission::Reject(_)),
            "cooldown is now 4 s"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(matches!(b.admit(), Admission::Pass { probe: Some(_) }));
        b.record(true, false);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(), Admission::Pass { probe: None });
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_a_failure_ratio_with_enough_requests() {
        let b = Breaker::new("u", cfg());
        // Alternating outcomes never make 3 consecutive failures, but half of them fail.
        for i in 0..9 {
            b.record(false, i % 2 == 0);
        }
        assert_eq!(b.state(), State::Closed, "below the minimum request count");
        b.record(false, false);
        b.record(false, true);
        assert_eq!(b.state(), State::Open);
        // Old failures leave the window.
        let b = Breaker::new("u", cfg());
        for i in 0..9 {
            b.record(false, i % 2 == 0);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        b.record(false, true);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn only_server_errors_are_failures() {
        assert!(is_failure(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_failure(StatusCode::GATEWAY_TIMEOUT));
        assert!(!is_failure(StatusCode::NOT_FOUND));
        assert!(!is_failure(StatusCode::TOO_MANY_REQUESTS));
    }

    // ===== model-based test: the breaker through its policy service =====

    /// What a test does next.
    #[derive(Debug, Clone)]
    enum Op {
        /// Send a request; it waits at the upstream until finished or dropped.
        Start,
        /// The upstream answers request `i` (modulo those waiting): 500 or 200.
        Finish(usize, bool),
        /// The client abandons request `i`: its future is dropped.
        Drop(usize),
        /// Time passes.
        Advance(Duration),
    }

    /// The breaker's rules as a plain sequential state machine (the rolling-window ratio is
    /// switched off in the config, so consecutive failures alone open it).
    #[derive(Debug)]
    struct Model {
        cfg: BreakerConfig,
        now: Duration,
        state: State,
        consecutive: u32,
        cooldown: Duration,
        opened_at: Duration,
        probes: u32,
        episode: u64,
    }

    impl Model {
        fn new(cfg: BreakerConfig) -> Self {
            Model {
                cooldown: cfg.cooldown.0,
                cfg,
                now: Duration::ZERO,
                state: State::Closed,
                consecutive: 0,
                opened_at: Duration::ZERO,
                probes: 0,
                episode: 0,
            }
        }

        /// None: refused; Some(probe episode, if a probe).
        fn admit(&mut self) -> Option<Option<u64>> {
            match self.state {
                State::Closed => return Some(None),
                State::Open if self.now < self.opened_at + self.cooldown => return None,
                State::Open => {
                    self.state = State::HalfOpen;
                    self.episode += 1;
                    self.probes = 0;
                }
                State::HalfOpen => {}
            }
            (self.probes < self.cfg.half_open_probes).then(|| {
                self.probes += 1;
                Some(self.episode)
            })
        }

        fn record(&mut self, probe: bool, failure: bool) {
            if probe || self.state == State::HalfOpen {
                if failure {
                    self.cooldown = (self.cooldown * 2).min(self.cfg.max_cooldown.0);
                    if self.state == State::HalfOpen {
                        self.open();
                    }
                } else if self.state == State::HalfOpen {
                    self.state = State::Closed;
                    self.consecutive = 0;
                    self.cooldown = self.cfg.cooldown.0;
                }
                return;
            }
            if !failure {
                self.consecutive = 0;
                return;
            }
            self.consecutive += 1;
            if self.consecutive >= self.cfg.consecutive_failures && self.state == State::Closed {
                self.open();
            }
        }

        fn open(&mut self) {
            self.state = State::Open;
            self.opened_at = self.now;
        }

        fn abandon(&mut self, episode: u64) {
            if self.state == State::HalfOpen && self.episode == episode {
                self.probes = self.probes.saturating_sub(1);
            }
        }
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => Just(Op::Start),
            3 => (any::<usize>(), any::<bool>()).prop_map(|(i, fail)| Op::Finish(i, fail)),
            2 => any::<usize>().prop_map(Op::Drop),
            2 => (0u64..3_000).prop_map(|ms| Op::Advance(Duration::from_millis(ms))),
        ]
    }

    /// A request waiting at the upstream: its future, its answer's sender, its probe episode.
    type Waiting = (
        super::super::MwFuture,
        tokio::sync::oneshot::Sender<StatusCode>,
        Option<u64>,
    );

    /// Runs `ops` against the real breaker (through `BreakerLayer` and a held upstream) and the
    /// model side by side; every admission verdict must agree. Then, with nothing in flight
    /// and the longest cooldown passed, a request must get through: no sequence of answers
    /// and abandoned requests leaves the breaker refusing for good.
    fn run_model(ops: Vec<Op>) {
        use std::task::{Context, Poll, Waker};
        use tower::{Layer, Service};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = BreakerConfig {
                consecutive_failures: 2,
                failure_ratio: 1.0,
                window: TextDuration(Duration::from_secs(10)),
                min_requests: u32::MAX,
                cooldown: TextDuration(Duration::from_secs(1)),
                max_cooldown: TextDuration(Duration::from_secs(4)),
                half_open_probes: 2,
            };
            let mut model = Model::new(cfg.clone());
            let breaker = Arc::new(Breaker::new("model", cfg.clone()));
            type Answer = Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<StatusCode>>>>;
            let upstream = tower::service_fn(|req: GwRequest| async move {
                let rx = req
                    .parts
                    .extensions
                    .get::<Answer>()
                    .unwrap()
                    .lock()
                    .unwrap()
                    .take();
                let status = rx.unwrap().await.unwrap_or(StatusCode::OK);
                Ok::<_, std::convert::Infallible>(
                    crate::net::json(status, String::from("{}")).map(http_body_util::Either::Left),
                )
            });
            let mut svc = BreakerLayer::new(Breakers::new(Arc::new(vec![breaker]))).layer(upstream);
            let mut cx = Context::from_waker(Waker::noop());
            let mut waiting: Vec<Waiting> = Vec::new();
            let start = |svc: &mut _,
                         model: &mut Model,
                         waiting: &mut Vec<Waiting>,
                         cx: &mut Context<'_>| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let mut req = crate::gateway::test_request(http::Method::GET, "/x", &[]);
                req.parts
                    .extensions
                    .insert::<Answer>(Arc::new(std::sync::Mutex::new(Some(rx))));
                let mut fut: super::super::MwFuture = Service::call(svc, req);
                let expected = model.admit();
                match fut.as_mut().poll(cx) {
                    Poll::Ready(Ok(resp)) => {
                        assert_eq!(expected, None, "the model admits what the breaker refused");
                        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
                        false
                    }
                    Poll::Pending => {
                        let probe = expected.expect("the breaker admits what the model refused");
                        waiting.push((fut, tx, probe));
                        true
                    }
                }
            };
            for op in ops {
                match op {
                    Op::Start => {
                        start(&mut svc, &mut model, &mut waiting, &mut cx);
                    }
                    Op::Finish(i, fail) if !waiting.is_empty() => {
                        let (mut fut, tx, probe) = waiting.remove(i % waiting.len());
                        let status = if fail {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        tx.send(status).unwrap();
                        let Poll::Ready(Ok(resp)) = fut.as_mut().poll(&mut cx) else {
                            panic!("an answered request completes");
                        };
                        assert_eq!(resp.status(), status);
                        model.record(probe.is_some(), fail);
                    }
                    Op::Drop(i) if !waiting.is_empty() => {
                        let (fut, _tx, probe) = waiting.remove(i % waiting.len());
                        drop(fut);
                        if let Some(episode) = probe {
                            model.abandon(episode);
                        }
                    }
                    Op::Advance(d) => {
                        tokio::time::advance(d).await;
                        model.now += d;
                    }
                    Op::Finish(..) | Op::Drop(_) => {}
                }
            }
            for (fut, _tx, probe) in waiting.drain(..) {
                drop(fut);
                if let Some(episode) = probe {
                    model.abandon(episode);
                }
            }
            tokio::time::advance(cfg.max_cooldown.0).await;
            model.now += cfg.max_cooldown.0;
            assert!(
                start(&mut svc, &mut model, &mut waiting, &mut cx),
                "the breaker still refuses with nothing in flight after the longest cooldown"
            );
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn the_breaker_follows_its_model_even_when_requests_are_dropped(
            ops in proptest::collection::vec(op(), 1..80)
        ) {
            run_model(ops);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probes_give_their_slots_back() {
        let b = Breaker::new("u", cfg());
        for _ in 0..3 {
            b.record(false, true);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let Admission::Pass { probe: Some(p) } = b.admit() else {
            panic!("half-open admits a probe");
        };
        assert!(matches!(b.admit(), Admission::Reject(_)));
        b.abandon(p);
        assert!(
            matches!(b.admit(), Admission::Pass { probe: Some(_) }),
            "the abandoned probe's slot is free again"
        );
    }
}
