//! `load --prometheus-addr`: the run's counters and latency histograms on `/metrics` in the
//! Prometheus text format while it runs (as vegeta and Nighthawk expose theirs), for a Grafana
//! board that watches a long test. The figures are the measured phase's, cumulative, updated
//! each time the collector merges a second (in flight: every 200 ms); the warm-up is not in
//! them. The endpoint is served by its own thread and closes when the run's outputs are written.
//!
//! PromQL for the headline figures (README "Live metrics"):
//! - achieved rate: `sum(rate(gwbench_load_requests_total[30s]))`
//! - error ratio: `sum(rate(gwbench_load_requests_total{outcome!="ok"}[30s])) / sum(rate(gwbench_load_requests_total[30s]))`
//! - corrected p99: `histogram_quantile(0.99, sum by (le) (rate(gwbench_load_latency_seconds_bucket[30s])))`

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::recorder::{Collector, Outcomes};

/// Upper bounds of the exported histogram buckets, seconds.
const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
struct Snapshot {
    outcomes: Outcomes,
    corrected: Option<Histogram<u64>>,
    service: Option<Histogram<u64>>,
    in_flight: i64,
    offered_rps: Option<f64>,
    achieved_rps: f64,
}

/// What `/metrics` shows, updated by the collecting thread.
#[derive(Debug, Default)]
pub struct Live {
    snapshot: Mutex<Snapshot>,
}

impl Live {
    /// Takes the collector's totals (histograms only when `new_intervals` > 0: they change
    /// only then) and the requests in flight.
    pub(super) fn update(
        &self,
        collector: &Collector,
        new_intervals: usize,
        in_flight: i64,
        offered_rps: Option<f64>,
    ) {
        let Ok(mut s) = self.snapshot.lock() else {
            return;
        };
        s.in_flight = in_flight;
        if new_intervals == 0 {
            return;
        }
        s.outcomes = collector.outcomes.clone();
        s.corrected = Some(collector.total.corrected.clone());
        s.service = Some(collector.total.service.clone());
        s.offered_rps = offered_rps;
        if let Some(last) = collector.intervals.last() {
            s.achieved_rps = last.outcomes.total() as f64 / last.length.as_secs_f64().max(1e-9);
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let s = match self.snapshot.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = String::with_capacity(4096);
        let o = &s.outcomes;
        let _ = writeln!(
            out,
            "# HELP gwbench_load_requests_total Requests of the measured phase that ended, by outcome.\n\
             # TYPE gwbench_load_requests_total counter"
        );
        for (outcome, n) in [
            ("ok", o.ok),
            ("http_error", o.http.values().sum()),
            ("grpc_error", o.grpc.values().sum()),
            ("transport_error", o.transport.values().sum()),
            ("timeout", o.timeouts),
        ] {
            let _ = writeln!(
                out,
                "gwbench_load_requests_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        for (name, help, h) in [
            (
                "gwbench_load_latency_seconds",
                "Latency from the intended send time (coordinated omission corrected).",
                &s.corrected,
            ),
            (
                "gwbench_load_service_seconds",
                "Latency from the actual send time.",
                &s.service,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            let (count, sum) = h
                .as_ref()
                .map_or((0, 0.0), |h| (h.len(), h.mean() * h.len() as f64 / 1e9));
            for le in BUCKETS {
                let below = h.as_ref().map_or(0, |h| {
                    h.count_between(0, h.highest_equivalent((le * 1e9) as u64))
                });
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {below}");
            }
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        }
        let _ = writeln!(
            out,
            "# HELP gwbench_load_in_flight Requests sent and not yet answered.\n\
             # TYPE gwbench_load_in_flight gauge\ngwbench_load_in_flight {}",
            s.in_flight
        );
        let _ = writeln!(
            out,
            "# HELP gwbench_load_achieved_rps Requests that ended in the last whole second.\n\
             # TYPE gwbench_load_achieved_rps gauge\ngwbench_load_achieved_rps {}",
            s.achieved_rps
        );
        if let Some(offered) = s.offered_rps {
            let _ = writeln!(
                out,
                "# HELP gwbench_load_offered_rps Requests the schedule had due in the last whole second.\n\
                 # TYPE gwbench_load_offered_rps gauge\ngwbench_load_offered_rps {offered}"
            );
        }
        out
    }
}

/// The endpoint's thread; dropping it closes the endpoint and joins the thread.
#[derive(Debug)]
pub struct Exporter {
    /// What it serves.
    pub live: Arc<Live>,
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter {
    /// Binds `addr` now (an address in use is an error before the run) and serves `/metrics`
    /// on a thread of its own.
    pub fn start(addr: SocketAddr) -> std::io::Result<Exporter> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let live = Arc::new(Live::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shown = live.clone();
        let thread = std::thread::Builder::new()
            .name("gwbench-prometheus".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        let socket = tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => match accepted {
                                Ok((socket, _)) => socket,
                                Err(_) => continue,
                            },
                        };
                        let live = shown.clone();
                        tokio::spawn(async move {
                            let service = service_fn(move |req: http::Request<_>| {
                                let resp = answer(&live, req.uri().path());
                                async move { Ok::<_, Infallible>(resp) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(socket), service)
                                .await;
                        });
                    }
                });
            })?;
        Ok(Exporter {
            live,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn answer(live: &Live, path: &str) -> http::Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            http::StatusCode::OK,
            "text/plain; version=0.0.4",
            live.render(),
        ),
        _ => (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "gwbench load serves /metrics only\n".to_string(),
        ),
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    resp
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_run_renders_zeros_and_histograms_add_up() {
        let live = Live::default();
        let text = live.render();
        assert!(text.contains("gwbench_load_requests_total{outcome=\"ok\"} 0"));
        assert!(text.contains("gwbench_load_latency_seconds_bucket{le=\"+Inf\"} 0"));
        let mut h = Histogram::<u64>::new(3).unwrap();
        for ms in [1u64, 2, 3, 40] {
            h.record(ms * 1_000_000).unwrap();
        }
        {
            let mut s = live.snapshot.lock().unwrap();
            s.corrected = Some(h);
            s.outcomes.ok = 4;
        }
        let text = live.render();
        assert!(text.contains("gwbench_load_requests_total{outcome=\"ok\"} 4"));
        // 1 ms is in le=0.001; 1, 2 in le=0.0025; all but 40 ms in le=0.025; all in le=0.05.
        for (le, n) in [
            ("0.001", 1),
            ("0.0025", 2),
            ("0.025", 3),
            ("0.05", 4),
            ("+Inf", 4),
        ] {
            let line = format!("gwbench_load_latency_seconds_bucket{{le=\"{le}\"}} {n}");
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("gwbench_load_latency_seconds_count 4"));
    }
}
