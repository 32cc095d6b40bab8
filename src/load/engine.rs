//! One generator thread: a current-thread tokio runtime that paces tickets from the shared
//! [`Dispenser`] (sleeping precisely until each intended send time), leases a connection or
//! stream, and spawns the request; the response is recorded when it ends. Waiting for a
//! connection when all are busy shows up as generator lag, and in the corrected latency.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::http::Pool;
use super::recorder::{Outcome, Sample, ThreadRecorder};
use super::schedule::Dispenser;
use super::target::RequestTemplate;
use super::timer::PreciseTimer;

/// What every thread shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) template: RequestTemplate,
    pub(super) timeout: Duration,
    /// Requests in flight across threads, for the progress display.
    pub(super) in_flight: AtomicI64,
}

/// How long after the end of the phase a request that was due inside it may still go out (as
/// lag); after that it counts as not sent. Keeps a late wake-up at the very end from turning
/// into a `not_sent`, while a generator that is hopelessly behind still stops.
pub(super) const SEND_GRACE: Duration = Duration::from_secs(1);

/// One phase (warm-up or measurement) as one thread sees it.
pub(super) struct Phase<'a> {
    pub(super) dispenser: &'a Dispenser,
    pub(super) start: Instant,
    /// Stop sending at this instant (None: when the dispenser runs out).
    pub(super) end: Option<Instant>,
    pub(super) recorder: ThreadRecorder,
    /// Wait for the requests in flight before returning (the last phase does).
    pub(super) drain: bool,
}

/// What a thread reports at the end of a phase.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PhaseEnd {
    /// Tickets taken but never sent because the run ended while waiting for a connection.
    pub(super) not_sent: u64,
    /// When the last request was sent.
    pub(super) last_send: Option<Instant>,
    /// When the last response ended (or now, if none).
    pub(super) finished: Option<Instant>,
}

/// Runs one phase on this thread's runtime.
pub(super) async fn run_phase(
    shared: Arc<Shared>,
    pool: &mut Pool,
    phase: Phase<'_>,
) -> std::io::Result<PhaseEnd> {
    let mut timer = PreciseTimer::new()?;
    let recorder = Rc::new(RefCell::new(phase.recorder));
    let in_flight = Rc::new(Cell::new(0usize));
    let idle = Rc::new(Notify::new());
    let last_done: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));

    // Close intervals even when no response arrives (a stalled target).
    let ticker = {
        let recorder = Rc::downgrade(&recorder);
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                match recorder.upgrade() {
                    Some(r) => r.borrow_mut().advance(Instant::now()),
                    None => break,
                }
            }
        })
    };

    let mut end = PhaseEnd::default();
    // Closed loop stops taking tickets at the end; open loop sends what was due, within grace.
    let past_end = |now: Instant| phase.end.is_some_and(|e| now >= e);
    let past_grace = |now: Instant| phase.end.is_some_and(|e| now >= e + SEND_GRACE);
    loop {
        if past_end(Instant::now()) {
            break;
        }
        let Some(ticket) = phase.dispenser.next() else {
            break;
        };
        let intended = ticket.at.map(|at| phase.start + at);
        if let Some(t) = intended {
            timer.sleep_until(t).await?;
        }
        let mut lease = pool.acquire().await;
        let now = Instant::now();
        if if ticket.at.is_some() {
            past_grace(now)
        } else {
            past_end(now)
        } {
            if ticket.at.is_some() {
                end.not_sent += 1;
            }
            break;
        }
        let req = shared.template.build(ticket.index);
        let sent = Instant::now();
        end.last_send = Some(sent);
        in_flight.set(in_flight.get() + 1);
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let (shared, recorder, in_flight, idle, last_done) = (
            shared.clone(),
            recorder.clone(),
            in_flight.clone(),
            idle.clone(),
            last_done.clone(),
        );
        tokio::task::spawn_local(async move {
            let (addr, protocol) = (shared.template.addr, shared.template.protocol);
            let outcome = match tokio::time::timeout(
                shared.timeout,
                lease.execute(addr, protocol, req),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => {
                    lease.discard_connection();
                    Outcome::Timeout
                }
            };
            drop(lease);
            let done = Instant::now();
            recorder.borrow_mut().record(Sample {
                intended: intended.unwrap_or(sent),
                sent,
                done,
                outcome,
            });
            last_done.set(Some(done));
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            in_flight.set(in_flight.get() - 1);
            if in_flight.get() == 0 {
                idle.notify_one();
            }
        });
    }
    if phase.drain {
        while in_flight.get() > 0 {
            idle.notified().await;
        }
    }
    ticker.abort();
    end.finished = last_done.get();
    // Sign off; responses of an undrained phase that arrive later are ignored.
    recorder.borrow_mut().finish(Instant::now());
    Ok(end)
}
