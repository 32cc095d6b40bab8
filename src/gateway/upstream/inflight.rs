//! An endpoint's in-flight count, given back however a call or a stream ends (the least-loaded
//! choice reads it).

use std::sync::atomic::{AtomicUsize, Ordering};

/// An endpoint's in-flight count held by a server stream for as long as the stream lives (it
/// is dropped with the stream, however the stream ends).
#[derive(Debug)]
pub struct Held(std::sync::Arc<AtomicUsize>);

impl Held {
    pub(super) fn new(count: &std::sync::Arc<AtomicUsize>) -> Held {
        count.fetch_add(1, Ordering::Relaxed);
        Held(count.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements an endpoint's in-flight count when the call ends, however it ends.
pub(super) struct InFlight<'a>(pub(super) &'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
