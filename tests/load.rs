//! The load generator against real servers on 127.0.0.1 (the mocks and small purpose-built
//! servers): coordinated omission, accounting under failures, protocols, and output formats.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use gwbench::backend::behavior::{Behavior, Latency};
use gwbench::backend::{Backends, BackendsConfig};
use gwbench::load::schedule::{Limit, Rate};
use gwbench::load::target::{Protocol, RequestTemplate};
use gwbench::load::{LoadConfig, LoadRun, grpc, run_load};
use gwbench::report::json::LoadReport;
use gwbench::report::{hgrm, hlog};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use http::Method;
use tokio_util::sync::CancellationToken;

fn config(protocol: Protocol, url: &str, rps: f64, duration: Duration) -> LoadConfig {
    LoadConfig {
        template: RequestTemplate::new(
            protocol,
            &[url.to_string()],
            Method::GET,
            &[],
            Bytes::new(),
        )
        .unwrap(),
        rate: Rate::Constant(rps),
        limit: Limit::Duration(duration),
        warmup: Duration::ZERO,
        connections: 8,
        max_in_flight: 256,
        threads: 1,
        timeout: Duration::from_secs(5),
        spin: Duration::from_micros(20),
        progress: false,
        split: Default::default(),
        raw_limit: None,
        live: None,
        kernel_timestamps: true,
        start_gate: None,
    }
}

/// `GetUser` with `data` against the gRPC mock at `addr`, for one second.
fn grpc_config(addr: std::net::SocketAddr, data: &str, rps: f64) -> LoadConfig {
    let pool = gwbench::proto::descriptor_pool();
    let call = grpc::prepare(pool, "gwbench.v1.UserService/GetUser", data).unwrap();
    let url = format!("http://{addr}{}", call.path);
    let mut cfg = config(Protocol::Grpc, &url, rps, Duration::from_secs(1));
    cfg.template =
        RequestTemplate::new(Protocol::Grpc, &[url], Method::POST, &[], call.body).unwrap();
    cfg
}

async fn load(cfg: LoadConfig) -> LoadRun {
    tokio::task::spawn_blocking(move || run_load(&cfg))
        .await
        .unwrap()
        .expect("the run starts")
}

/// Every scheduled request is in exactly one bucket, and the schedule scheduled `expected`.
fn assert_accounted(run: &LoadRun, expected: u64) {
    let o = &run.outcomes;
    let sum = o.ok
        + o.timeouts
        + o.not_sent
        + o.http.values().sum::<u64>()
        + o.grpc.values().sum::<u64>()
        + o.transport.values().sum::<u64>();
    assert_eq!(
        sum, expected,
        "outcomes {o:?} do not add up to the {expected} scheduled"
    );
    let report = LoadReport::from_run(run);
    assert_eq!(report.requests.scheduled, expected);
}

/// No request failed (a generator slowed by a busy machine may leave some not sent).
fn assert_no_errors(run: &LoadRun) {
    let o = &run.outcomes;
    assert!(o.ok > 0, "{o:?}");
    assert_eq!(o.ok + o.not_sent, o.total(), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_latency_survives_a_stall_that_closed_loop_would_hide() {
    // A server that, once, holds every request arriving between 1.0 s and 1.5 s after its first
    // request until 1.5 s.
    let first: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    gwbench::net::serve_http(
        listener,
        move |_req| {
            let first = first.clone();
            async move {
                let t0 = *first.get_or_init(Instant::now);
                let since = t0.elapsed();
                if since >= Duration::from_millis(1000) && since < Duration::from_millis(1500) {
                    tokio::time::sleep_until((t0 + Duration::from_millis(1500)).into()).await;
                }
                gwbench::net::json(http::StatusCode::OK, "{}")
            }
        },
        shutdown,
        gwbench::net::ServeLimits {
            drain: Duration::from_secs(1),
            ..Default::default()
        },
    );
    let mut cfg = config(
        Protocol::Http1,
        &format!("http://{addr}/"),
        1000.0,
        Duration::from_secs(3),
    );
    cfg.connections = 32;
    let run = load(cfg).await;
    assert_accounted(&run, 3000);
    assert_no_errors(&run);
    let corrected_p90 = run.total.corrected.value_at_quantile(0.9);
    let service_p90 = run.total.service.value_at_quantile(0.9);
    assert!(
        corrected_p90 >= 100_000_000,
        "corrected p90 {corrected_p90} ns should include the stall"
    );
    assert!(
        service_p90 < 50_000_000,
        "service p90 {service_p90} ns should not"
    );
    // The stall shows up as generator lag too: requests waited for a connection.
    assert!(
        run.total.lag.max() >= 100_000_000,
        "lag max {}",
        run.total.lag.max()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ok_over_http1_h2c_and_grpc() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let rest = format!("http://{}/api/users/{{rand:1-1000}}", b.rest[0]);
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let run = load(config(protocol, &rest, 400.0, Duration::from_secs(1))).await;
        assert_accounted(&run, 400);
        assert_no_errors(&run);
        assert_eq!(run.total.corrected.len(), run.outcomes.ok);
    }
    let run = load(grpc_config(b.grpc[0], r#"{"id": 7}"#, 400.0)).await;
    assert_accounted(&run, 400);
    assert_no_errors(&run);

    // A gRPC error is counted by code: user 0 does not exist.
    let run = load(grpc_config(b.grpc[0], r#"{"id": 0}"#, 200.0)).await;
    assert_accounted(&run, 200);
    let not_found = run.outcomes.grpc.get(&5).copied().unwrap_or(0);
    assert!(not_found > 0, "{:?}", run.outcomes);
    assert_eq!(
        not_found + run.outcomes.not_sent,
        200,
        "only NOT_FOUND: {:?}",
        run.outcomes
    );

    // Closed loop sends as fast as responses come back, and schedules nothing ahead.
    let mut cfg = config(Protocol::Http1, &rest, 1.0, Duration::from_millis(500));
    cfg.rate = Rate::Max;
    let run = load(cfg).await;
    assert!(run.outcomes.ok > 0);
    assert_eq!(run.outcomes.not_sent, 0);
    assert_eq!(run.outcomes.ok, run.outcomes.total());
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounting_adds_up_with_errors_timeouts_and_a_dying_target() {
    // A fraction of 503s.
    let cfg = BackendsConfig {
        behavior: Behavior {
            error_rate: 0.3,
            ..Default::default()
        },
        ..BackendsConfig::ephemeral()
    };
    let b = Backends::start(&cfg).await.unwrap();
    let run1 = load(config(
        Protocol::Http1,
        &format!("http://{}/api/users/1", b.rest[0]),
        500.0,
        Duration::from_secs(1),
    ))
    .await;
    assert_accounted(&run1, 500);
    let failed = run1.outcomes.http.get(&503).copied().unwrap_or(0);
    assert!(failed > 0 && run1.outcomes.ok > 0, "{:?}", run1.outcomes);
    assert_eq!(
        failed + run1.outcomes.ok + run1.outcomes.not_sent,
        500,
        "{:?}",
        run1.outcomes
    );
    b.shutdown().await;

    // Timeouts: the target answers after 400 ms, the timeout is 100 ms.
    let cfg = BackendsConfig {
        behavior: Behavior {
            latency: Latency::Fixed(Duration::from_millis(400)),
            ..Default::default()
        },
        ..BackendsConfig::ephemeral()
    };
    let b = Backends::start(&cfg).await.unwrap();
    let mut cfg = config(
        Protocol::Http1,
        &format!("http://{}/api/users/1", b.rest[0]),
        100.0,
        Duration::from_secs(1),
    );
    cfg.timeout = Duration::from_millis(100);
    let run2 = load(cfg).await;
    assert_accounted(&run2, 100);
    assert!(run2.outcomes.timeouts > 0, "{:?}", run2.outcomes);
    assert_eq!(run2.outcomes.ok, 0);
    assert!(
        run2.total.service.min() >= 100_000_000,
        "a timeout is recorded at its deadline"
    );
    b.shutdown().await;

    // The target is killed mid-run: connections fail, the run goes on and counts them.
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let url = format!("http://{}/api/users/1", b.rest[0]);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        b.shutdown().await;
    });
    let run3 = load(config(
        Protocol::Http1,
        &url,
        500.0,
        Duration::from_millis(2000),
    ))
    .await;
    killer.await.unwrap();
    assert_accounted(&run3, 1000);
    assert!(run3.outcomes.ok > 0, "{:?}", run3.outcomes);
    assert!(
        run3.outcomes
            .transport
            .get("connect_refused")
            .copied()
            .unwrap_or(0)
            > 0,
        "{:?}",
        run3.outcomes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_closes_every_connection_is_counted_as_transport_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                // Drop without answering.
            });
        }
    });
    let run = load(config(
        Protocol::Http1,
        &format!("http://{addr}/x"),
        200.0,
        Duration::from_secs(1),
    ))
    .await;
    acceptor.abort();
    assert_accounted(&run, 200);
    assert_eq!(run.outcomes.ok, 0);
    let transport = run.outcomes.transport.values().sum::<u64>();
    assert!(transport > 0, "{:?}", run.outcomes);
    assert_eq!(transport + run.outcomes.not_sent, 200, "{:?}", run.outcomes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_parse_back() {
    let b = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let run = load(config(
        Protocol::Http1,
        &format!("http://{}/api/users/1", b.rest[0]),
        500.0,
        Duration::from_millis(2500),
    ))
    .await;
    b.shutdown().await;
    assert_accounted(&run, 1250);

    // .hgrm: monotonic rows, footer total = recorded count.
    let text = hgrm::render(&run.total.corrected);
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace()
                .take(3)
                .map(|f| f.parse().unwrap())
                .collect()
        })
        .collect();
    assert!(rows.len() > 10);
    assert!(
        rows.windows(2)
            .all(|w| w[0][0] <= w[1][0] && w[0][1] <= w[1][1] && w[0][2] <= w[1][2])
    );
    let footer = text.lines().find(|l| l.starts_with("#[Max")).unwrap();
    let total: u64 = footer
        .trim_end_matches(']')
        .rsplit('=')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, run.total.corrected.len());
    assert_eq!(rows.last().unwrap()[2] as u64, total);

    // .hlog: read back with the crate's iterator; the merged intervals equal the total.
    let log = hlog::render(run.start_wall, &run.intervals);
    let mut merged = Histogram::<u64>::new(3).unwrap();
    let mut intervals = 0;
    let mut saw_base_time = false;
    for entry in IntervalLogIterator::new(log.as_bytes()) {
        match entry.expect("the log parses") {
            LogEntry::BaseTime(_) => saw_base_time = true,
            LogEntry::Interval(i) if i.tag().map(|t| t.as_str()) == Some("corrected") => {
                intervals += 1;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .unwrap();
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .unwrap();
                merged.add(&h).unwrap();
            }
            _ => {}
        }
    }
    assert!(saw_base_time);
    assert_eq!(intervals, run.intervals.len());
    assert_eq!(merged.len(), run.total.corrected.len());
    assert_eq!(merged.max(), run.total.corrected.max());
    assert_eq!(
        merged.value_at_quantile(0.99),
        run.total.corrected.value_at_quantile(0.99)
    );

    // JSON: valid against the published schema.
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../reports/schema/load.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let json = serde_json::to_value(LoadReport::from_run(&run)).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{json:#}");
    // The schema does reject a report that breaks the contract.
    let mut broken = json.clone();
    broken["latency_ns"]["corrected"]["p99"] = serde_json::json!(1.5);
    assert!(!validator.is_valid(&broken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_delayed_by_busy_connections_are_counted_apart() {
    // One connection, a request due every 5 ms, an answer after 20 ms: nearly every request's
    // turn comes while the connection still waits for the previous answer.
    let mut cfg = BackendsConfig::ephemeral();
    cfg.grpc = false;
    cfg.behavior.latency = Latency::Fixed(Duration::from_millis(20));
    let b = Backends::start(&cfg).await.unwrap();
    let mut lc = config(
        Protocol::Http1,
        &format!("http://{}/api/users/1", b.rest[0]),
        200.0,
        Duration::from_millis(600),
    );
    lc.connections = 1;
    let run = load(lc).await;
    let sent = run.outcomes.sent();
    assert!(sent >= 10, "{:?}", run.outcomes);
    assert!(
        run.waited_for_connection * 2 >= sent,
        "{} of {sent} waited for the busy connection",
        run.waited_for_connection
    );
    let report = LoadReport::from_run(&run);
    assert_eq!(
        report.generator.waited_for_connection,
        run.waited_for_connection
    );
    assert!(gwbench::report::text::render(&report).contains("raise --connections"));
    b.shutdown().await;
}

/// `--segment I/4` of one 2,000 req/s schedule on four generators (started together with
/// `start_at`): each sends its quarter, and `report --merge` of their outputs schedules what
/// one generator does, with percentiles from the sum of their histograms. Outputs that are not
/// the four parts of one schedule are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_segments_merge_into_the_single_generator_schedule() {
    use gwbench::load::schedule::{Segment, Split};
    use gwbench::report::json::Histograms;
    let backends = Backends::start(&BackendsConfig::ephemeral()).await.unwrap();
    let url = format!("http://{}/api/users/1", backends.rest[0]);
    let base = config(Protocol::Http1, &url, 2000.0, Duration::from_secs(1));
    let whole = load(base.clone()).await;
    assert_accounted(&whole, 2000);
    let start_at = std::time::SystemTime::now() + Duration::from_secs(2);
    let runs = futures_util::future::join_all((0..4).map(|index| {
        let mut cfg = base.clone();
        cfg.connections = 2;
        // Each from its own loopback address, as deploy/local-fleet.sh runs them.
        cfg.template.from = Some(std::net::IpAddr::from([127, 0, 0, 2 + index as u8]));
        cfg.split = Split {
            segment: Segment { index, count: 4 },
            seed: None,
            start_at: Some(start_at),
        };
        load(cfg)
    }))
    .await;
    let mut reports = Vec::new();
    let mut union = Histogram::<u64>::new(3).unwrap();
    let mut receive_union = Histogram::<u64>::new(3).unwrap();
    for (i, run) in runs.iter().enumerate() {
        assert_accounted(run, 500);
        assert_eq!(run.schedule_id, runs[0].schedule_id);
        union.add(&run.total.corrected).unwrap();
        receive_union.add(&run.total.receive_lag).unwrap();
        let mut r = LoadReport::from_run(run);
        assert_eq!(r.segment.as_deref(), Some(format!("{i}/4").as_str()));
        assert_eq!(r.offered_rps, Some(500.0), "a quarter of the rate");
        r.histograms = Some(Histograms::of(&run.total));
        reports.push((format!("seg{i}.json"), r));
    }
    let merged = gwbench::report::merge::merge(&reports).unwrap();
    assert_eq!(merged.requests.scheduled, whole.scheduled());
    assert_eq!(merged.offered_rps, Some(2000.0));
    let sum = |f: fn(&LoadReport) -> u64| reports.iter().map(|(_, r)| f(r)).sum::<u64>();
    assert_eq!(merged.requests.ok, sum(|r| r.requests.ok));
    assert_eq!(merged.requests.not_sent, sum(|r| r.requests.not_sent));
    assert_eq!(
        merged.latency_ns.corrected,
        gwbench::report::json::Percentiles::of(&union),
        "percentiles of the union of the samples"
    );
    // Receive lag too, when every part has it (kernel arrival stamps), and not otherwise.
    if runs.iter().all(|r| !r.total.receive_lag.is_empty()) {
        assert_eq!(
            merged.latency_ns.receive_lag,
            Some(gwbench::report::json::Percentiles::of(&receive_union))
        );
        let mut unstamped = reports.clone();
        if let Some(h) = unstamped[1].1.histograms.as_mut() {
            h.receive_lag = None;
        }
        let merged = gwbench::report::merge::merge(&unstamped).unwrap();
        assert_eq!(merged.latency_ns.receive_lag, None);
    }
    // Not one schedule's four parts: refused, saying why.
    let err = gwbench::report::merge::merge(&reports[..3]).unwrap_err();
    assert!(err.contains("3/4") && err.contains("missing"), "{err}");
    let mut twice = reports.clone();
    twice[3] = twice[2].clone();
    let err = gwbench::report::merge::merge(&twice).unwrap_err();
    assert!(err.contains("both segment 2/4"), "{err}");
    let mut other = reports.clone();
    other[1].1.schedule_id = Some("0123456789abcdef".into());
    let err = gwbench::report::merge::merge(&other).unwrap_err();
    assert!(err.contains("not parts of one schedule"), "{err}");
    let mut old = reports.clone();
    old[0].1.histograms = None;
    assert!(gwbench::report::merge::merge(&old).is_err());
    backends.shutdown().await;
}

/// Against an h2c server that accepts connections and never answers, every request is a
/// timeout, and when sends were late the warning says the server did not answer — not that
/// the generator's own thread was late.
#[tokio::test]
async fn a_server_that_never_answers_is_blamed_not_the_generator() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let mut cfg = config(
        Protocol::Http2,
        &format!("http://{addr}/x"),
        100.0,
        Duration::from_secs(2),
    );
    cfg.timeout = Duration::from_millis(500);
    let run = load(cfg).await;
    assert_eq!(run.outcomes.ok, 0);
    let mut report = gwbench::report::json::LoadReport::from_run(&run);
    // Sends held back behind the silent server's connections (as `gwbench load` sees them
    // when the h2 handshake never completes): late by up to the timeout.
    report.latency_ns.lag.p99 = report.latency_ns.lag.p99.max(400_000_000);
    let text = gwbench::report::text::render(&report);
    assert!(text.contains("the server did not answer"), "{text}");
    assert!(!text.contains("generator's own thread was late"), "{text}");
    silent.abort();
}

/// A server whose answers take every shape in turn (by a count over all connections):
/// Content-Length, chunked, 204, 503, and `connection: close`; and it closes each connection,
/// without a word, after its third answer (the next request on it finds it closed and goes
/// again on a new one). Returns its address and the task to abort.
async fn every_kind_of_answer() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const ANSWERS: [&[u8]; 5] = [
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
    ];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for _ in 0..3 {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 1024];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let kind = count.fetch_add(1, Ordering::Relaxed) % 5;
                    if s.write_all(ANSWERS[kind as usize]).await.is_err() || kind == 4 {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// The pacer (answers read at the next send's wake-up, with kernel arrival stamps) and the
/// per-connection senders (without stamps) count the same outcomes for every kind of answer,
/// connections closed by the server included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pacer_and_the_senders_count_every_kind_of_answer_alike() {
    let (addr, server) = every_kind_of_answer().await;
    let mut runs = Vec::new();
    for stamps in [true, false] {
        let mut cfg = config(
            Protocol::Http1,
            &format!("http://{addr}/x"),
            2000.0,
            Duration::ZERO,
        );
        cfg.limit = Limit::Requests(300);
        cfg.connections = 4;
        cfg.kernel_timestamps = stamps;
        let run = load(cfg).await;
        assert_accounted(&run, 300);
        runs.push(run.outcomes);
    }
    server.abort();
    for o in &runs {
        // 300 answers were given: a fifth of them 503s, none lost.
        assert_eq!((o.ok, o.http.get(&503).copied()), (240, Some(60)), "{o:?}");
        assert!(o.transport.is_empty() && o.timeouts == 0, "{o:?}");
    }
}

/// With kernel arrival stamps, the generator's thread sleeps about once per request (to send),
/// not twice (to send, and again when the answer arrives): it reads answers at its next send's
/// wake-up. The count is the thread's voluntary context switches, reported in the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_wakes_about_once_per_request_when_answers_are_stamped() {
    let mut bc = BackendsConfig::ephemeral();
    bc.grpc = false;
    let b = Backends::start(&bc).await.unwrap();
    let cfg = config(
        Protocol::Http1,
        &format!("http://{}/api/users/1", b.rest[0]),
        2000.0,
        Duration::from_secs(1),
    );
    let run = load(cfg).await;
    b.shutdown().await;
    let sent = run.outcomes.sent();
    assert!(run.outcomes.ok > 1000, "{:?}", run.outcomes);
    let wakeups = run
        .wakeups
        .expect("Linux counts a thread's context switches");
    assert!(
        (wakeups as f64) < 1.5 * sent as f64,
        "{wakeups} wake-ups for {sent} requests"
    );
    let report = LoadReport::from_run(&run);
    assert_eq!(report.generator.wakeups, Some(wakeups));
    assert!(gwbench::report::text::render(&report).contains("wake-ups per request"));
}
