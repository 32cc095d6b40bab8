//! One phase as each generator thread runs it: what the threads share ([`Shared`]), the
//! phase's schedule and recorder ([`Phase`]), the per-thread state its senders share ([`Run`]:
//! take a ticket, wait for its time, record), and what a thread reports at the end
//! ([`PhaseEnd`]). The senders themselves are in `engine.rs` (HTTP) and `ws.rs` (WebSocket).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

use super::recorder::{Outcome, Sample, ThreadRecorder};
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
    /// HTTP/1.1 connections ask for the kernel's receive timestamps.
    pub(super) kernel_timestamps: bool,
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
    /// Times the thread slept and was woken during the phase (its voluntary context
    /// switches), when the system says.
    pub(super) wakeups: Option<u64>,
}

impl PhaseEnd {
    pub(super) fn merge(&mut self, other: PhaseEnd) {
        self.not_sent += other.not_sent;
        self.last_send = self.last_send.max(other.last_send);
        self.finished = self.finished.max(other.finished);
        self.waited_for_connection += other.waited_for_connection;
        self.wakeups = match (self.wakeups, other.wakeups) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }
}

/// This thread's voluntary context switches so far: each is a sleep it was woken from.
pub(super) fn thread_wakeups() -> Option<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_THREAD).ok()?;
    u64::try_from(u.voluntary_context_switches()).ok()
}

/// The per-thread state of a running phase, shared by its sender tasks.
pub(super) struct Run<'a> {
    pub(super) shared: Arc<Shared>,
    pub(super) dispenser: &'a Dispenser,
    pub(super) start: Instant,
    pub(super) end: Option<Instant>,
    pub(super) recorder: RefCell<ThreadRecorder>,
}

impl Run<'_> {
    /// Takes the next ticket and waits for its send time; None when the phase is over. A
    /// ticket taken only after it was due counts in `end` as one that waited for a connection
    /// (the sender was busy with the previous request until then).
    pub(super) async fn next(
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
        self.record_arrived(intended, sent, outcome, None)
    }

    /// As [`record`](Self::record), the answer ending at `arrival` (the kernel's stamp of its
    /// last bytes) when there is one: the time between it and this read is the generator's own
    /// delay, recorded apart as receive lag. A stamp outside sent..now is not believed.
    pub(super) fn record_arrived(
        &self,
        intended: Option<Instant>,
        sent: Instant,
        outcome: Outcome,
        arrival: Option<Instant>,
    ) -> Instant {
        let read = Instant::now();
        let arrived = arrival.filter(|a| (sent..=read).contains(a));
        let done = self.record_sample(Sample {
            intended: intended.unwrap_or(sent),
            sent,
            done: arrived.unwrap_or(read),
            outcome,
        });
        if let Some(a) = arrived {
            self.recorder.borrow_mut().record_receive_lag(read - a);
        }
        done
    }

    pub(super) fn record_sample(&self, sample: Sample) -> Instant {
        self.recorder.borrow_mut().record(sample);
        sample.done
    }
}
