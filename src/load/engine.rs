//! One generator thread: a current-thread tokio runtime whose senders take tickets from the
//! shared [`Dispenser`], sleep precisely until each intended send time, send, and record the
//! outcome when the response ends.
//!
//! - HTTP/1.1: one sender task per connection (as wrk), one request at a time each. When every
//!   connection is busy, nobody takes the next ticket: it goes out late, which shows up as
//!   generator lag and in the corrected latency.
//! - HTTP/2 and gRPC: one pacer task takes tickets and spawns each request on a shared
//!   connection, up to `max_in_flight` streams; waiting for a stream is lag likewise.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::grpc::CallKind;
use super::h1::H1Conn;
use super::http::{Pool, StreamTiming};
use super::recorder::{Outcome, Sample, StreamHists, ThreadRecorder};
use super::schedule::{Dispenser, Ticket};
use super::target::RequestTemplate;
use super::timer::PreciseTimer;

/// How long after the end of the phase a request that was due inside it may still go out (as
/// lag); after that it counts as not sent. Keeps a late wake-up at the very end from turning
/// into a `not_sent`, while a generator that is hopelessly behind still stops.
pub(super) const SEND_GRACE: Duration = Duration::from_secs(1);

/// A ticket taken this much after its time still counts as taken on time (the sender's own
/// bookkeeping between two requests).
pub(super) const WAIT_SLACK: Duration = Duration::from_micros(50);

/// What every thread shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) template: RequestTemplate,
    pub(super) timeout: Duration,
    /// Busy-wait this long before a send instead of sleeping through it.
    pub(super) spin: Duration,
    /// Requests in flight across threads, for the progress display.
    pub(super) in_flight: AtomicI64,
}

/// One phase (warm-up or measurement) as one thread sees it.
pub(super) struct Phase<'a> {
    pub(super) dispenser: &'a Dispenser,
    pub(super) start: Instant,
    /// Stop sending at this instant (None: when the dispenser runs out).
    pub(super) end: Option<Instant>,
    pub(super) recorder: ThreadRecorder,
}

impl<'a> Phase<'a> {
    /// A phase taking tickets from `dispenser`, timed from `start`, sending until `end`.
    pub(super) fn new(
        dispenser: &'a Dispenser,
        start: Instant,
        end: Option<Instant>,
        recorder: ThreadRecorder,
    ) -> Self {
        Phase {
            dispenser,
            start,
            end,
            recorder,
        }
    }
}

/// What a thread reports at the end of a phase.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PhaseEnd {
    /// Tickets taken but never sent because the run ended while waiting for a connection.
    pub(super) not_sent: u64,
    /// When the last request was sent.
    pub(super) last_send: Option<Instant>,
    /// When the last response ended.
    pub(super) finished: Option<Instant>,
    /// Requests whose turn came while every connection (or stream) was still busy: they went
    /// out late because of the target's latency, not the generator's pace.
    pub(super) waited_for_connection: u64,
}

impl PhaseEnd {
    fn merge(&mut self, other: PhaseEnd) {
        self.not_sent += other.not_sent;
        self.last_send = self.last_send.max(other.last_send);
        self.finished = self.finished.max(other.finished);
        self.waited_for_connection += other.waited_for_connection;
    }
}

/// The per-thread state of a running phase, shared by its sender tasks.
pub(super) struct Run<'a> {
    pub(super) shared: Arc<Shared>,
    dispenser: &'a Dispenser,
    start: Instant,
    end: Option<Instant>,
    recorder: RefCell<ThreadRecorder>,
}

impl Run<'_> {
    /// Takes the next ticket and waits for its send time; None when the phase is over. A
    /// ticket taken only after it was due counts in `end` as one that waited for a connection
    /// (the sender was busy with the previous request until then).
    async fn next(
        &self,
        timer: &mut PreciseTimer,
        end: &mut PhaseEnd,
    ) -> std::io::Result<Option<(Ticket, Option<Instant>)>> {
        let now = Instant::now();
        if self.end.is_some_and(|e| now >= e) {
            return Ok(None);
        }
        let Some(ticket) = self.dispenser.next() else {
            return Ok(None);
        };
        let intended = ticket.at.map(|at| self.start + at);
        if let Some(t) = intended {
            if now > t + WAIT_SLACK {
                end.waited_for_connection += 1;
            }
            timer.sleep_until(t, self.shared.spin).await?;
        }
        Ok(Some((ticket, intended)))
    }

    /// Takes the next ticket without waiting for its time (the WebSocket sender reads answers
    /// meanwhile); None when the phase is over.
    pub(super) fn take(&self) -> Option<(Ticket, Option<Instant>)> {
        if self.end.is_some_and(|e| Instant::now() >= e) {
            return None;
        }
        let ticket = self.dispenser.next()?;
        let intended = ticket.at.map(|at| self.start + at);
        Some((ticket, intended))
    }

    /// Whether a ticket that could only go out now must count as not sent instead.
    pub(super) fn too_late(&self, ticket: &Ticket, now: Instant) -> bool {
        match (self.end, ticket.at) {
            (Some(e), Some(_)) => now >= e + SEND_GRACE,
            (Some(e), None) => now >= e,
            (None, _) => false,
        }
    }

    pub(super) fn record(
        &self,
        intended: Option<Instant>,
        sent: Instant,
        outcome: Outcome,
    ) -> Instant {
        let done = Instant::now();
        self.record_sample(Sample {
            intended: intended.unwrap_or(sent),
            sent,
            done,
            outcome,
        })
    }

    fn record_sample(&self, sample: Sample) -> Instant {
        self.recorder.borrow_mut().record(sample);
        sample.done
    }
}

/// Runs one phase on this thread's runtime: sends until the phase ends, waits for the requests
/// in flight, and signs the recorder off.
pub(super) async fn run_phase(
    shared: Arc<Shared>,
    pool: &mut Pool,
    phase: Phase<'_>,
) -> std::io::Result<PhaseEnd> {
    let run = Rc::new(Run {
        shared,
        dispenser: phase.dispenser,
        start: phase.start,
        end: phase.end,
        recorder: RefCell::new(phase.recorder),
    });
    // Close intervals even when no response arrives (a stalled target).
    let ticker = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            run.recorder.borrow_mut().advance(Instant::now());
        }
    };
    let senders = async {
        match pool {
            Pool::H1(slots) => {
                let mut end = PhaseEnd::default();
                let workers = slots.iter_mut().map(|slot| h1_sender(&run, slot));
                for result in futures_util::future::join_all(workers).await {
                    end.merge(result?);
                }
                Ok(end)
            }
            Pool::H2 { conns, streams } => h2_pacer(&run, conns, streams).await,
            Pool::Ws { conns, messages } => {
                let mut end = PhaseEnd::default();
                let workers = conns
                    .iter_mut()
                    .map(|c| super::ws::ws_sender(&run, c, messages));
                for result in futures_util::future::join_all(workers).await {
                    end.merge(result?);
                }
                Ok(end)
            }
        }
    };
    let end = tokio::select! {
        end = senders => end?,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    run.recorder.borrow_mut().finish(Instant::now());
    Ok(end)
}

/// One HTTP/1.1 connection's sender: take a ticket, wait for its time, send, record, repeat.
async fn h1_sender(run: &Run<'_>, slot: &mut [H1Conn]) -> std::io::Result<PhaseEnd> {
    let mut timer = PreciseTimer::new()?;
    let mut end = PhaseEnd::default();
    let template = &run.shared.template;
    let fixed = template.h1_fixed();
    while let Some((ticket, intended)) = run.next(&mut timer, &mut end).await? {
        let sent = Instant::now();
        if run.too_late(&ticket, sent) {
            end.not_sent += u64::from(ticket.at.is_some());
            break;
        }
        end.last_send = Some(sent);
        run.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let outcome = if let [conn] = slot {
            let exchange = conn.execute(template, fixed.as_ref(), ticket.index);
            match tokio::time::timeout(run.shared.timeout, exchange).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    conn.discard();
                    Outcome::Timeout
                }
            }
        } else {
            // Every URL of the template at once, timed as one: the last answer ends it, and the
            // first failure is the outcome.
            let k = slot.len() as u64;
            let all = slot
                .iter_mut()
                .enumerate()
                .map(|(i, c)| c.execute(template, None, ticket.index * k + i as u64));
            match tokio::time::timeout(run.shared.timeout, futures_util::future::join_all(all))
                .await
            {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .find(|o| *o != Outcome::Ok)
                    .unwrap_or(Outcome::Ok),
                Err(_) => {
                    slot.iter_mut().for_each(H1Conn::discard);
                    Outcome::Timeout
                }
            }
        };
        run.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        end.finished = Some(run.record(intended, sent, outcome));
    }
    Ok(end)
}

/// The HTTP/2 pacer: take a ticket, wait for its time and for a free stream, spawn the request.
async fn h2_pacer(
    run: &Rc<Run<'_>>,
    conns: &[Rc<super::http::H2Conn>],
    streams: &Arc<tokio::sync::Semaphore>,
) -> std::io::Result<PhaseEnd> {
    let mut timer = PreciseTimer::new()?;
    let mut end = PhaseEnd::default();
    let mut next_conn = 0usize;
    // The spawned requests borrow nothing from the phase: they time themselves and hand the
    // sample back through a channel, which the pacer records between tickets.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let mut outstanding = 0usize;
    // The pacer takes one ticket at a time: a late take is its own lateness, not a wait for a
    // stream, which is counted below instead.
    let mut pacer_late = PhaseEnd::default();
    // A streaming call's messages, recorded by the calls themselves as they arrive.
    let stream = run
        .shared
        .template
        .streaming()
        .then(|| Rc::new(RefCell::new(StreamHists::default())));
    while let Some((ticket, intended)) = run.next(&mut timer, &mut pacer_late).await? {
        while let Ok(sample) = rx.try_recv() {
            outstanding -= 1;
            end.finished = Some(run.record_sample(sample));
        }
        let permit = stream_permit(streams, intended, &mut end).await;
        let sent = Instant::now();
        if run.too_late(&ticket, sent) {
            end.not_sent += u64::from(ticket.at.is_some());
            break;
        }
        let req = match run.shared.template.build(ticket.index) {
            Ok(req) => req,
            Err(kind) => {
                // The request could not be made (a templated message that does not encode).
                end.finished = Some(run.record(intended, sent, Outcome::Transport(kind)));
                continue;
            }
        };
        end.last_send = Some(sent);
        let conn = conns[next_conn % conns.len()].clone();
        next_conn = next_conn.wrapping_add(1);
        let (shared, tx, stream) = (run.shared.clone(), tx.clone(), stream.clone());
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        outstanding += 1;
        tokio::task::spawn_local(h2_request(
            shared,
            conn,
            req,
            (intended, sent),
            stream,
            permit,
            tx,
        ));
    }
    // Wait for every request in flight (each is bounded by the timeout).
    drop(tx);
    while outstanding > 0 {
        let Some(sample) = rx.recv().await else { break };
        outstanding -= 1;
        end.finished = Some(run.record_sample(sample));
    }
    if let Some(stream) = stream {
        run.recorder.borrow_mut().add_stream(&stream.borrow());
    }
    Ok(end)
}

/// A stream slot for the next request; a wait for one past the slack is counted.
async fn stream_permit(
    streams: &Arc<tokio::sync::Semaphore>,
    intended: Option<Instant>,
    end: &mut PhaseEnd,
) -> tokio::sync::OwnedSemaphorePermit {
    if let Ok(permit) = streams.clone().try_acquire_owned() {
        return permit;
    }
    let permit = streams
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    if intended.is_some_and(|t| Instant::now() > t + WAIT_SLACK) {
        end.waited_for_connection += 1;
    }
    permit
}

/// One h2 (or gRPC) request of the pacer's, spawned: sent over `conn` within the timeout (a
/// streaming call's messages timed as they arrive), its sample handed back through `tx`.
async fn h2_request(
    shared: Arc<Shared>,
    conn: Rc<super::http::H2Conn>,
    req: http::Request<super::body::ReqBody>,
    (intended, sent): (Option<Instant>, Instant),
    stream: Option<Rc<RefCell<StreamHists>>>,
    permit: tokio::sync::OwnedSemaphorePermit,
    tx: tokio::sync::mpsc::UnboundedSender<Sample>,
) {
    let template = &shared.template;
    let (limit, expired) = template.limit(shared.timeout);
    let outcome = match &stream {
        None => tokio::time::timeout(limit, conn.execute(template, req))
            .await
            .unwrap_or(expired),
        Some(stats) => {
            let timing = StreamTiming {
                intended: intended.unwrap_or(sent),
                sent,
                requests: req.body().sent_times(),
                paired: template
                    .grpc
                    .as_ref()
                    .is_some_and(|g| g.kind == CallKind::Bidi),
            };
            let call = conn.execute_stream(template, req, &timing, stats);
            let outcome = tokio::time::timeout(limit, call).await.unwrap_or(expired);
            let planned = template.grpc.as_ref().map_or(1, |g| g.messages_per_call());
            let sent_messages = match &timing.requests {
                Some(times) => times.lock().map_or(0, |t| t.len() as u64),
                None => planned,
            };
            let mut stats = stats.borrow_mut();
            stats.calls += 1;
            stats.messages_sent += sent_messages;
            outcome
        }
    };
    let done = Instant::now();
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
    let _ = tx.send(Sample {
        intended: intended.unwrap_or(sent),
        sent,
        done,
        outcome,
    });
}
