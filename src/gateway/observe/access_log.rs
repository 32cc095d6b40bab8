//! `[access_log]`: one JSON line per request — time, request id, method, route, status,
//! upstream and its latency, total latency, subject, bytes in and out — written off the request
//! path. A request formats its line and offers it to a bounded queue; a thread of its own
//! drains the queue every 10 ms (never waiting on it, so a request never pays to wake it) and
//! writes it out (to stderr or a file, appended), flushing whenever it runs dry. A line
//! that finds the queue full is dropped and counted (`gwbench_access_log_dropped_total`): a slow
//! disk never holds a request.
//!
//! The line is written by the [`super::observer`] from what the steps learnt on the way.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use serde::Serialize;

use crate::gateway::GatewayError;
use crate::gateway::config::AccessLogConfig;

/// The log's writing end.
#[derive(Debug)]
pub(crate) struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    /// Lines queued and not yet written out (the writer counts them down after each flush).
    pending: Arc<AtomicU64>,
    dropped: AtomicU64,
    dropped_metric: metrics::Counter,
}

/// Opens `path` to append, without ever blocking the caller (the admin thread, on a reload):
/// a FIFO with no reader would block `open` for good, so it is opened non-blocking — where it
/// fails at once, ENXIO, named below — and switched back to blocking writes for the writer
/// thread once open.
fn open_without_blocking(path: &str) -> Result<std::fs::File, GatewayError> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == nix::errno::Errno::ENXIO as i32 => GatewayError(format!(
                "access_log.path {path}: a FIFO with no reader (start its reader first)"
            )),
            _ => GatewayError(format!("access_log.path {path}: {e}")),
        })?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::O_APPEND))
        .map_err(|e| GatewayError(format!("access_log.path {path}: {e}")))?;
    Ok(file)
}

impl AccessLog {
    /// Opens the destination and starts the writer thread; None when the log is off.
    pub(crate) fn open(cfg: &AccessLogConfig) -> Result<Option<Arc<AccessLog>>, GatewayError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let out: Box<dyn Write + Send> = match cfg.path.as_str() {
            "-" => Box::new(std::io::stderr()),
            path => Box::new(open_without_blocking(path)?),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(cfg.queue);
        let pending = Arc::new(AtomicU64::new(0));
        let written = pending.clone();
        std::thread::Builder::new()
            .name("gwbench-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
                let mut unflushed = 0;
                // It drains the queue every 10 ms instead of waiting on it: a request that
                // finds the writer waiting would pay a futex wake (a syscall) to hand it a
                // line. Ends when every sender (every gateway that logs) is gone, having
                // written all.
                loop {
                    match rx.try_recv() {
                        Ok(line) => {
                            let _ = out.write_all(&line);
                            unflushed += 1;
                        }
                        Err(std::sync::mpsc::TryRecvError::Empty) => {
                            let _ = out.flush();
                            written.fetch_sub(std::mem::take(&mut unflushed), Ordering::AcqRel);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                            let _ = out.flush();
                            written.fetch_sub(unflushed, Ordering::AcqRel);
                            break;
                        }
                    }
                }
            })
            .map_err(|e| GatewayError(format!("cannot start the access log's thread: {e}")))?;
        Ok(Some(Arc::new(AccessLog {
            tx,
            pending,
            dropped: AtomicU64::new(0),
            dropped_metric: metrics::counter!("gwbench_access_log_dropped_total"),
        })))
    }

    /// Offers one request's line; never waits.
    pub(crate) fn record(&self, entry: &Entry<'_>) {
        // One allocation, sized for a typical line: no regrowth while serde_json writes.
        let mut line = Vec::with_capacity(384);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped_metric.increment(1);
            }
        }
    }

    /// Waits (at most `within`) until every line queued so far is written and flushed: at the
    /// gateway's stop, before the process ends.
    pub(crate) fn flush(&self, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        while self.pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Lines dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One request's line.
#[derive(Debug, Serialize)]
pub(crate) struct Entry<'a> {
    /// When the request arrived, written as RFC 3339 UTC with milliseconds.
    #[serde(serialize_with = "rfc3339_millis")]
    pub time: std::time::SystemTime,
    /// Its `X-Request-Id`.
    pub request_id: &'a str,
    /// Method.
    pub method: &'a str,
    /// The matched route's template; null when none matched.
    pub route: Option<&'a str>,
    /// Status answered.
    pub status: u16,
    /// The upstream called, if one was.
    pub upstream: Option<&'a str>,
    /// How long the upstream call took, ms.
    pub upstream_ms: Option<f64>,
    /// From arrival to the response head, ms.
    pub total_ms: f64,
    /// The verified JWT subject, when authenticated.
    pub subject: Option<&'a str>,
    /// Request body bytes.
    pub bytes_in: usize,
    /// Response body bytes when known before it is sent (null for a stream).
    pub bytes_out: Option<u64>,
}

/// Writes `t` straight into the line (no string of its own).
fn rfc3339_millis<S: serde::Serializer>(
    t: &std::time::SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_in_order_and_a_full_queue_drops_instead_of_waiting() {
        let dir = std::env::temp_dir().join(format!("gwbench-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let cfg = AccessLogConfig {
            enabled: true,
            path: path.display().to_string(),
            queue: 4,
        };
        let log = AccessLog::open(&cfg).unwrap().unwrap();
        let entry = |id: &'static str| Entry {
            time: std::time::UNIX_EPOCH + Duration::from_millis(1_764_669_600_123),
            request_id: id,
            method: "GET",
            route: Some("/api/users/{id}"),
            status: 200,
            upstream: Some("grpc"),
            upstream_ms: Some(1.5),
            total_ms: 2.0,
            subject: None,
            bytes_in: 0,
            bytes_out: Some(42),
        };
        // Far more lines than the queue holds, offered at once: none waits, and every line is
        // either written or counted as dropped.
        let started = std::time::Instant::now();
        for _ in 0..10_000 {
            log.record(&entry("r"));
        }
        let offering = started.elapsed();
        let dropped = log.dropped();
        // Everything queued is on disk once flush returns.
        log.flush(Duration::from_secs(10));
        let on_disk = std::fs::read_to_string(&path).unwrap().lines().count() as u64;
        assert_eq!(on_disk + dropped, 10_000, "flushed");
        drop(log); // the writer ends
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let count = || {
            std::fs::read_to_string(&path)
                .map(|t| t.lines().count() as u64)
                .unwrap_or(0)
        };
        while count() + dropped < 10_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(count() + dropped, 10_000, "offered in {offering:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["route"], "/api/users/{id}");
        assert_eq!(first["time"], "2025-12-02T10:00:00.123Z");
        assert_eq!(first["subject"], serde_json::Value::Null);
        assert_eq!(first["bytes_out"], 42);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
