//! The HTTP/1.1 pacer: one wake-up per request at a paced rate.
//!
//! The per-connection senders (`engine.rs`) wake twice a request: once to send, once when the
//! answer arrives (tokio's reactor wakes the thread for every readable socket it holds). When
//! the kernel stamps each answer's arrival, reading it late costs no accuracy, so this pacer
//! drives all of a thread's connections from one loop and reads answers at the next send's
//! wake-up instead: take a ticket; read whatever has arrived on the busy connections (without
//! waiting: the sockets are kept out of the reactor, see `http1::parked`); sleep until the
//! ticket's time; send on a free connection, round robin. It waits on the sockets themselves
//! only when it must: every connection busy at a send's time, the next send more than
//! [`READ_WITHIN`] away while answers are due (low rates), and the end of the phase.
//!
//! It runs when every connection of the thread is plain TCP with kernel receive stamps, one
//! URL at a time, at a paced rate; otherwise the senders do.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::h1::{H1Conn, outcome};
use super::phase::{PhaseEnd, Run, WAIT_SLACK};
use super::recorder::Outcome;
use super::timer::PreciseTimer;
use crate::http1::client::{idempotent, may_resend};
use crate::http1::parked::{Parked, Reading};

/// Answers are read at the next send's wake-up when it comes within this; past it (rates below
/// about 1,000/s a thread) the pacer waits for them on their sockets as well, so an answer is
/// recorded within about this long of its arrival (its time is the kernel's stamp either way).
pub(super) const READ_WITHIN: Duration = Duration::from_millis(1);

/// Whether the pacer can run a phase over `slots`: every slot one open, parkable connection.
pub(super) fn fits(slots: &[Vec<H1Conn>]) -> bool {
    !slots.is_empty()
        && slots
            .iter()
            .all(|s| matches!(s.as_slice(), [c] if c.parkable()))
}

/// A request on a connection, waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    index: u64,
    intended: Option<Instant>,
    sent: Instant,
    /// It counts as a timeout past this.
    deadline: Instant,
    reading: Reading,
    /// It went out on a connection that had carried requests before.
    reused: bool,
}

/// One connection of the pacer's.
#[derive(Debug, Default)]
struct Lane {
    conn: Option<Parked>,
    busy: Option<InFlight>,
}

struct Pacer<'r, 'a> {
    run: &'r Run<'a>,
    lanes: Vec<Lane>,
    /// A connection slot of the phase's, to reconnect with (its settings; its own connection is
    /// parked in a lane).
    dialer: H1Conn,
    fixed: Option<bytes::Bytes>,
    scratch: Vec<u8>,
    /// The lane after the last one used.
    next: usize,
    end: PhaseEnd,
}

/// Runs one phase over `slots` (see [`fits`]): sends until the phase ends, waits for the
/// answers in flight, and gives the connections back to their slots.
pub(super) async fn h1_pacer(
    run: &Run<'_>,
    slots: &mut [Vec<H1Conn>],
) -> std::io::Result<PhaseEnd> {
    let mut timer = PreciseTimer::new()?;
    let mut pacer = Pacer {
        run,
        lanes: slots
            .iter_mut()
            .map(|s| Lane {
                conn: s.first_mut().and_then(H1Conn::park),
                busy: None,
            })
            .collect(),
        dialer: H1Conn::new(true),
        fixed: run.shared.template.h1_fixed(),
        scratch: Vec::new(),
        next: 0,
        end: PhaseEnd::default(),
    };
    let result = pacer.phase(&mut timer).await;
    for (slot, lane) in slots.iter_mut().zip(pacer.lanes) {
        if let Some(s) = slot.first_mut() {
            // A connection still waiting for an answer (the phase failed) is not reused.
            s.unpark(lane.conn.filter(|_| lane.busy.is_none()));
        }
    }
    result.map(|()| pacer.end)
}

impl Pacer<'_, '_> {
    async fn phase(&mut self, timer: &mut PreciseTimer) -> std::io::Result<()> {
        while let Some((ticket, intended)) = self.run.take() {
            self.harvest().await;
            let lane = self.free_lane(intended).await;
            if let Some(t) = intended {
                self.sleep_until(t, timer).await?;
            }
            let sent = Instant::now();
            if self.run.too_late(&ticket, sent) {
                self.end.not_sent += u64::from(ticket.at.is_some());
                break;
            }
            self.end.last_send = Some(sent);
            self.run.shared.in_flight.fetch_add(1, Ordering::Relaxed);
            let request = InFlight {
                index: ticket.index,
                intended,
                sent,
                deadline: sent + self.run.shared.timeout,
                reading: Reading::START,
                reused: self.lanes[lane].conn.is_some(),
            };
            self.send(lane, request).await;
        }
        while self.lanes.iter().any(|l| l.busy.is_some()) {
            self.wait(None).await;
            self.harvest().await;
        }
        Ok(())
    }

    /// The next free lane after the last one used, waiting for one when every lane is busy (a
    /// wait past the slack is counted: the request goes out late because of the target).
    async fn free_lane(&mut self, intended: Option<Instant>) -> usize {
        loop {
            let n = self.lanes.len();
            if let Some(i) = (0..n)
                .map(|k| (self.next + k) % n)
                .find(|&i| self.lanes[i].busy.is_none())
            {
                self.next = (i + 1) % n;
                if intended.is_some_and(|t| Instant::now() > t + WAIT_SLACK) {
                    self.end.waited_for_connection += 1;
                }
                return i;
            }
            self.wait(None).await;
            self.harvest().await;
        }
    }

    /// Sleeps until `t`, reading answers on the way when `t` is further than [`READ_WITHIN`].
    async fn sleep_until(&mut self, t: Instant, timer: &mut PreciseTimer) -> std::io::Result<()> {
        while let Some(until) = t.checked_sub(READ_WITHIN)
            && until > Instant::now()
            && self.lanes.iter().any(|l| l.busy.is_some())
        {
            self.wait(Some(until)).await;
            self.harvest().await;
        }
        timer.sleep_until(t, self.run.shared.spin).await
    }

    /// Waits until a busy lane has something to read, a request's deadline passes, or `until`.
    async fn wait(&self, until: Option<Instant>) {
        let busy = self
            .lanes
            .iter()
            .filter_map(|l| Some((l.conn.as_ref()?, l.busy?)));
        let deadline = busy.clone().map(|(_, b)| b.deadline).min();
        let Some(wake) = deadline.into_iter().chain(until).min() else {
            return;
        };
        let readable = busy.map(|(c, _)| Box::pin(c.wait_readable()));
        let readable: Vec<_> = readable.collect();
        let sleep = tokio::time::sleep_until(wake.into());
        if readable.is_empty() {
            sleep.await;
        } else {
            tokio::select! {
                _ = futures_util::future::select_all(readable) => {}
                () = sleep => {}
            }
        }
    }

    /// Reads what has arrived on every busy lane; records the answers that are complete and
    /// the requests past their deadline.
    async fn harvest(&mut self) {
        let head_request = self.run.shared.template.is_head();
        for i in 0..self.lanes.len() {
            let lane = &mut self.lanes[i];
            let (Some(conn), Some(busy)) = (lane.conn.as_mut(), lane.busy.as_mut()) else {
                continue;
            };
            let read = conn.advance(&mut busy.reading, head_request);
            let (arrival, request) = (conn.arrival(), *busy);
            match read {
                Ok(None) if Instant::now() < request.deadline => {}
                Ok(None) => {
                    // The late answer would arrive on this connection: it goes.
                    lane.conn = None;
                    self.finish(i, Outcome::Timeout, None);
                }
                Ok(Some(answer)) => {
                    if !answer.keep_alive {
                        lane.conn = None;
                    }
                    self.finish(i, outcome(answer.code), arrival);
                }
                Err(e) => {
                    lane.conn = None;
                    let method = self.run.shared.template.method();
                    if may_resend(&e, request.reused, idempotent(method)) {
                        // Once more on a new connection, timed from the first send.
                        self.send(i, request).await;
                    } else {
                        self.finish(i, Outcome::Transport(e.kind()), None);
                    }
                }
            }
        }
    }

    /// Sends `request` on lane `i` (connecting first when it has no connection). A failure is
    /// the request's outcome, except the one case [`may_resend`] names.
    async fn send(&mut self, i: usize, request: InFlight) {
        let template = &self.run.shared.template;
        let bytes: &[u8] = match &self.fixed {
            Some(b) => b,
            None => {
                template.write_h1(request.index, &mut self.scratch);
                &self.scratch
            }
        };
        let mut reused = request.reused;
        loop {
            let conn = match self.lanes[i].conn.as_mut() {
                Some(c) => c,
                None => match self.dialer.connect_parked(template).await {
                    Ok(c) => {
                        reused = false;
                        self.lanes[i].conn.insert(c)
                    }
                    Err(e) => {
                        self.lanes[i].busy = Some(request);
                        return self.finish(i, Outcome::Transport(e.kind()), None);
                    }
                },
            };
            let result = conn.send(bytes).await;
            self.lanes[i].busy = Some(InFlight { reused, ..request });
            match result {
                Ok(()) => return,
                Err(e) => {
                    self.lanes[i].conn = None;
                    if may_resend(&e, reused, idempotent(template.method())) {
                        reused = false;
                        continue;
                    }
                    return self.finish(i, Outcome::Transport(e.kind()), None);
                }
            }
        }
    }

    /// Records lane `i`'s request as ended with `outcome` (at `arrival` by the kernel's stamp,
    /// or now) and frees the lane.
    fn finish(&mut self, i: usize, outcome: Outcome, arrival: Option<Instant>) {
        let Some(request) = self.lanes[i].busy.take() else {
            return;
        };
        self.run.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        let done = self
            .run
            .record_arrived(request.intended, request.sent, outcome, arrival);
        self.end.finished = Some(done);
    }
}
