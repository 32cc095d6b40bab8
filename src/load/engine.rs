//! One generator thread: a current-thread tokio runtime whose senders take tickets from the
//! shared [`Dispenser`], sleep precisely until each intended send time, send, and record the
//! outcome when the response ends.
//!
//! - HTTP/1.1 at a paced rate with kernel arrival stamps: one pacer for all of the thread's
//!   connections, which reads answers at its next send's wake-up (`h1_paced.rs`).
//! - HTTP/1.1 otherwise: one sender task per connection (as wrk), one request at a time each.
//!   When every connection is busy, nobody takes the next ticket: it goes out late, which shows
//!   up as generator lag and in the corrected latency.
//! - HTTP/2 and gRPC: one pacer task takes tickets and spawns each request on a shared
//!   connection, up to `max_in_flight` streams; waiting for a stream is lag likewise.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::grpc::CallKind;
use super::h1::H1Conn;
use super::http::{Pool, StreamTiming};
pub(super) use super::phase::{Phase, PhaseEnd, Shared};
use super::phase::{Run, WAIT_SLACK};
use super::recorder::{Outcome, Sample, StreamHists};
use super::timer::PreciseTimer;

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
            Pool::H1(slots) if run.dispenser.paced() && super::h1_paced::fits(slots) => {
                super::h1_paced::h1_pacer(&run, slots).await
            }
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
    let woken = super::phase::thread_wakeups();
    let mut end: PhaseEnd = tokio::select! {
        end = senders => end?,
        _ = ticker => unreachable!("the ticker never ends"),
    };
    end.wakeups = woken
        .zip(super::phase::thread_wakeups())
        .map(|(a, b)| b.saturating_sub(a));
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
        let arrival = match slot {
            [conn] => conn.arrival(),
            _ => None,
        };
        end.finished = Some(run.record_arrived(intended, sent, outcome, arrival));
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
