//! Ctrl-C during a measurement: the first SIGINT asks the run to stop and keep what it has —
//! the schedule hands out no more tickets, so the phase ends, its requests in flight finish
//! and the report is made of what ran, marked interrupted — and a second one exits at once
//! (130, as a shell reports a SIGINT). Only the commands that measure install the handler;
//! nothing else sets the flag.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C asked the measurement to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The exit code of a run that Ctrl-C stopped (128 + SIGINT, what a shell reports).
pub const EXIT_CODE: u8 = 130;

extern "C" fn on_sigint(_: nix::libc::c_int) {
    // Only async-signal-safe work here: an atomic swap, and _exit on the second signal.
    if INTERRUPTED.swap(true, Ordering::Relaxed) {
        // SAFETY: _exit is async-signal-safe and ends the process without running anything.
        unsafe { nix::libc::_exit(i32::from(EXIT_CODE)) };
    }
}

/// Installs the Ctrl-C handler (once per process). Children spawned afterwards (mocks,
/// gateways) are stopped by their guards when the interrupted run ends.
pub fn catch_ctrl_c() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
        let action = SigAction::new(
            SigHandler::Handler(on_sigint),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        // SAFETY: the handler only touches an atomic and calls _exit.
        if let Err(e) = unsafe { sigaction(Signal::SIGINT, &action) } {
            tracing::warn!(%e, "cannot catch Ctrl-C: it will stop the run without a report");
        }
    });
}
