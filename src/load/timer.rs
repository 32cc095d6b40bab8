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
}

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
        Ok(PreciseTimer { fd })
    }

    /// Waits until `deadline`; returns at once if it has passed. The last `spin` of the wait is
    /// spent yielding in a loop instead of sleeping: a sleeping thread wakes tens of µs late
    /// (more on a VM), a spinning one on time, at the price of CPU.
    pub async fn sleep_until(
        &mut self,
        deadline: Instant,
        spin: std::time::Duration,
    ) -> io::Result<()> {
        let now = Instant::now();
        if deadline <= now {
            return Ok(());
        }
        if deadline - now > spin {
            self.sleep_until_inner(deadline - spin).await?;
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
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut buf = [0u8; 8];
                nix::unistd::read(fd.get_ref().0.as_fd(), &mut buf).map_err(io::Error::from)
            });
            match read {
                Ok(Ok(_)) => {
                    // The expiration was consumed: the fd is not readable until the next one.
                    // Saying so saves a read that would only return EAGAIN on the next wait.
                    guard.clear_ready();
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
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
