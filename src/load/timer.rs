//! A sub-millisecond sleep for pacing. tokio's timer wheel has 1 ms granularity, which would add
//! up to 1 ms of generator lag to every request; a Linux `timerfd` registered with the runtime's
//! epoll wakes the task at the requested nanosecond instead, without spinning.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Instant;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A one-shot precise timer, reused for every wait of one sender.
pub struct PreciseTimer {
    fd: AsyncFd<Fd>,
    /// How late this timer usually wakes (learnt from its wake-ups): it is armed that much
    /// early, and the rest of the wait is spun.
    lateness: std::time::Duration,
}

/// Wake-ups later than this are stalls (the thread was descheduled), not the timer's
/// lateness: they are learnt as this much.
const LATENESS_CAP: std::time::Duration = std::time::Duration::from_millis(1);

impl std::fmt::Debug for PreciseTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PreciseTimer")
    }
}

impl PreciseTimer {
    /// A timer on CLOCK_MONOTONIC (the clock behind `Instant`). Must be called inside a tokio
    /// runtime with I/O enabled.
    pub fn new() -> io::Result<Self> {
        let tfd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // SAFETY: `Fd` owns the timerfd (an OwnedFd inside TimerFd) for as long as the AsyncFd
        // lives, and always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(tfd), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(PreciseTimer {
            fd,
            lateness: std::time::Duration::ZERO,
        })
    }

    /// Learns from one wake-up `late` after the time asked for: quickly upwards, slowly
    /// downwards, so the estimate sits near the upper part of the timer's lateness.
    fn learn(&mut self, late: std::time::Duration) {
        let late = late.min(LATENESS_CAP);
        self.lateness = if late > self.lateness {
            self.lateness + (late - self.lateness) / 8
        } else {
            self.lateness - (self.lateness - late) / 64
        };
    }

    /// Waits until `deadline`; returns at once if it has passed. The timer is armed early by
    /// its learnt lateness, at most `max_spin`, and the rest of the wait is spent yielding in a
    /// loop: a sleeping thread wakes tens of µs late (more on a VM), a spinning one on time.
    /// Spinning only what the timer would be late by keeps sends on time at the least CPU;
    /// `max_spin` 0 always sleeps.
    pub async fn sleep_until(
        &mut self,
        deadline: Instant,
        max_spin: std::time::Duration,
    ) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        let wake_at = deadline - self.lateness.min(max_spin);
        if wake_at > now {
            self.sleep_until_inner(wake_at).await?;
            self.learn(Instant::now().saturating_duration_since(wake_at));
        }
        while Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    async fn sleep_until_inner(&mut self, deadline: Instant) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        let wait = deadline - now;
        self.fd
            .get_ref()
            .0
            .set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )
            .map_err(io::Error::from)?;
        // The expiration is not read: the runtime's epoll is edge-triggered, so the next
        // expiration is reported anyway, and the read would be one more system call per wait.
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn waits_at_least_until_the_deadline() {
        let mut timer = PreciseTimer::new().unwrap();
        for micros in [0u64, 50, 300, 2_000] {
            for spin in [Duration::ZERO, Duration::from_micros(100)] {
                let deadline = Instant::now() + Duration::from_micros(micros);
                timer.sleep_until(deadline, spin).await.unwrap();
                assert!(Instant::now() >= deadline);
            }
        }
        // A deadline in the past returns at once.
        let past = Instant::now() - Duration::from_millis(1);
        timer.sleep_until(past, Duration::ZERO).await.unwrap();
    }
}
