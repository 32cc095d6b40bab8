//! `gwbench load`: turns the flags into a [`LoadConfig`], runs it, prints and writes the reports,
//! and checks the SLO.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use thiserror::Error;

use crate::cli::{Arrival, LoadArgs};
use crate::load::schedule::{Burst, Limit, Rate, RateError, Shape};
use crate::load::slo::Slo;
use crate::load::target::{Protocol, RequestTemplate};
use crate::load::{LoadConfig, LoadError, grpc, run_load};
use crate::report::json::{Histograms, LoadReport};
use crate::report::{hgrm, hlog, text};

/// Objectives of `--slo` were missed (exit code 1).
#[derive(Debug, Error)]
#[error("SLO missed: {0}")]
pub(super) struct SloMissed(pub String);

fn config(args: &LoadArgs) -> Result<(LoadConfig, Option<Slo>), LoadError> {
    let rate = rate_of(args)?;
    // Stages end on their own: the run lasts as long as they do unless told otherwise.
    let duration = match (&rate, args.duration) {
        (_, Some(d)) => d,
        (Rate::Shaped(shape), None) if args.stages.is_some() => shape.length(),
        _ => Duration::from_secs(10),
    };
    let template = template_of(args)?;
    let mut template = template;
    template.from = args.local_addr;
    if template.tls.is_some() {
        let opts = crate::net::tls::ClientOptions {
            insecure: args.insecure,
            cacert: args.cacert.clone(),
            identity: args.cert.clone().zip(args.key.clone()),
        };
        let protocol = match template.protocol {
            Protocol::Http1 if !args.http2 => negotiate(&template, &opts),
            p => p,
        };
        template = template.with_tls(protocol, &opts)?;
    }
    let slo = args.slo.as_deref().map(str::parse).transpose()?;
    let cfg = LoadConfig {
        template,
        rate,
        limit: match args.requests {
            Some(n) => Limit::Requests(n),
            None => Limit::Duration(duration),
        },
        warmup: args.warmup,
        connections: args.connections as usize,
        max_in_flight: args.max_in_flight as usize,
        threads: args.threads as usize,
        timeout: args.timeout,
        spin: args.spin,
        progress: !args.quiet && !args.json && std::io::stdout().is_terminal(),
        live: None,
        kernel_timestamps: !args.no_kernel_timestamps,
        start_gate: None,
        raw_limit: args
            .csv_raw
            .as_ref()
            .map(|_| usize::try_from(args.csv_raw_limit).unwrap_or(usize::MAX)),
        split: crate::load::schedule::Split {
            segment: args.segment.unwrap_or_default(),
            seed: args.seed,
            start_at: args.start_at,
        },
    };
    if cfg.duration_is_zero() {
        return Err(LoadError::Config("--duration must be longer than 0".into()));
    }
    Ok((cfg, slo))
}

/// The offered rate: stages, steps, a burst, a ramp or a constant (Poisson if asked).
fn rate_of(args: &LoadArgs) -> Result<Rate, LoadError> {
    Ok(if let Some(stages) = &args.stages {
        Rate::Shaped(std::sync::Arc::new(
            Shape::stages(stages).map_err(|e| LoadError::Config(e.0))?,
        ))
    } else if let Some(step) = &args.step {
        Rate::Shaped(std::sync::Arc::new(
            Shape::step(step).map_err(|e| LoadError::Config(e.0))?,
        ))
    } else if let Some(burst) = &args.burst {
        let Burst(rate) = burst
            .parse()
            .map_err(|e: RateError| LoadError::Config(e.0))?;
        rate
    } else {
        match (&args.ramp, args.arrival) {
            (Some(ramp), _) => ramp
                .parse()
                .map_err(|e: RateError| LoadError::Config(e.0))?,
            (None, arrival) => {
                match Rate::parse_rps(&args.rps).map_err(|e| LoadError::Config(e.0))? {
                    Rate::Constant(r) if arrival == Arrival::Poisson => Rate::Poisson(r),
                    r => r,
                }
            }
        }
    })
}

/// A gRPC call's template: the method from the descriptors the flags name, its data, the
/// deadline as `grpc-timeout`, the stream's pacing.
fn grpc_template(
    args: &LoadArgs,
    method_name: &str,
    mut headers: Vec<(String, String)>,
) -> Result<RequestTemplate, LoadError> {
    let pool = match &args.descriptor_set {
        Some(path) => grpc::load_descriptor_set(path)?,
        None if args.reflect => reflected(&args.urls)?,
        None if !args.protos.is_empty() => {
            crate::proto::compile_protos(&args.protos, &args.proto_paths)
                .map_err(|e| LoadError::Config(format!("--proto: {e}")))?
        }
        None => crate::proto::descriptor_pool().clone(),
    };
    let call = grpc::prepare(&pool, method_name, args.data.as_deref().unwrap_or("{}"))?;
    if let Some(d) = args.deadline {
        if d.is_zero() {
            return Err(LoadError::Config("--deadline must be longer than 0".into()));
        }
        let value = crate::grpc::encode_timeout(d);
        let value = value.to_str().unwrap_or_default().to_string();
        headers.push((crate::grpc::TIMEOUT.to_string(), value));
    }
    let [base] = args.urls.as_slice() else {
        return Err(LoadError::Config(
            "--grpc takes exactly one server URL, e.g. http://127.0.0.1:50051".into(),
        ));
    };
    let url = format!("{}{}", base.trim_end_matches('/'), call.path);
    let mut template = RequestTemplate::new(
        Protocol::Grpc,
        &[url],
        http::Method::POST,
        &headers,
        call.body,
    )?;
    template.grpc = Some(std::sync::Arc::new(grpc::GrpcPlan {
        kind: call.kind,
        data: call.data,
        messages: args.stream_messages,
        interval: args.stream_interval,
        deadline: args.deadline,
    }));
    Ok(template)
}

/// What to send: a gRPC call's, a WebSocket message's or an HTTP request's template, by the
/// target's scheme and `--grpc`.
fn template_of(args: &LoadArgs) -> Result<RequestTemplate, LoadError> {
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| {
            LoadError::Config(format!("--header {h:?}: expected \"Name: value\""))
        })?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let method: http::Method = args.method.parse().map_err(|_| {
        LoadError::Config(format!("--method {:?} is not an HTTP method", args.method))
    })?;
    let websocket = args
        .urls
        .first()
        .is_some_and(|u| u.starts_with("ws://") || u.starts_with("wss://"));
    let template = match &args.grpc {
        Some(_) if websocket => {
            return Err(LoadError::Config(
                "--grpc calls a gRPC server (http://); a ws:// target takes --data messages".into(),
            ));
        }
        Some(method_name) => grpc_template(args, method_name, headers)?,
        None if websocket => ws_template(args, &headers)?,
        None if args.data.is_some() => {
            return Err(LoadError::Config(
                "--data is a gRPC (--grpc) or WebSocket (ws://) message; an HTTP body is --body"
                    .into(),
            ));
        }
        None => http_template(args, method, &headers)?,
    };
    Ok(template)
}

/// A WebSocket target's template: the upgrade's headers and the message (`--data`, else
/// `--body`), checked as a template now.
fn ws_template(
    args: &LoadArgs,
    headers: &[(String, String)],
) -> Result<RequestTemplate, LoadError> {
    if args.http2 {
        return Err(LoadError::Config(
            "--http2: WebSocket targets are served over HTTP/1.1 upgrades".into(),
        ));
    }
    let message = match (&args.data, &args.body) {
        (Some(d), _) => d.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => "{}".to_string(),
    };
    let template = RequestTemplate::new(
        Protocol::WebSocket,
        &args.urls,
        http::Method::GET,
        headers,
        Bytes::from(message),
    )?;
    crate::load::ws::Messages::new(&template)?;
    Ok(template)
}

/// An HTTP request's template: method, headers and body (inline or from a file).
fn http_template(
    args: &LoadArgs,
    method: http::Method,
    headers: &[(String, String)],
) -> Result<RequestTemplate, LoadError> {
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path)
                .map_err(|e| LoadError::Config(format!("--body-file {}: {e}", path.display())))?,
        ),
        (None, None) => Bytes::new(),
    };
    let protocol = if args.http2 {
        Protocol::Http2
    } else {
        Protocol::Http1
    };
    RequestTemplate::new(protocol, &args.urls, method, headers, body)
}

impl LoadConfig {
    fn duration_is_zero(&self) -> bool {
        matches!(self.limit, Limit::Duration(d) if d.is_zero())
    }
}

/// What an https:// target's ALPN picks of h2 and http/1.1 (one handshake before the run);
/// HTTP/1.1 when it picks neither or cannot be reached (the run then says why).
fn negotiate(template: &RequestTemplate, opts: &crate::net::tls::ClientOptions) -> Protocol {
    use crate::net::tls::{ALPN_H2, ALPN_HTTP1, ClientTls};
    let Some(tls) = &template.tls else {
        return template.protocol;
    };
    let Ok(probe) = ClientTls::new(tls.server_name(), &[ALPN_H2, ALPN_HTTP1], opts) else {
        return Protocol::Http1;
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Protocol::Http1;
    };
    let dial = template.dial();
    let chosen = rt.block_on(async {
        let stream = crate::net::tls::connect(dial, Some(&probe), Some(Duration::from_secs(3)))
            .await
            .ok()?;
        stream.alpn().map(<[u8]>::to_vec)
    });
    match chosen.as_deref() {
        Some(ALPN_H2) => Protocol::Http2,
        _ => Protocol::Http1,
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Runs `gwbench load`.
/// The descriptors of the gRPC server at the one URL, asked over server reflection.
fn reflected(urls: &[String]) -> Result<prost_reflect::DescriptorPool, LoadError> {
    let [url] = urls else {
        return Err(LoadError::Config(
            "--grpc takes exactly one server URL, e.g. http://127.0.0.1:50051".into(),
        ));
    };
    let authority = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
        .ok_or_else(|| LoadError::Config(format!("{url:?} is not a server URL")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Config(format!("--reflect: {e}")))?;
    rt.block_on(crate::reflect::fetch(
        &authority,
        std::time::Duration::from_secs(5),
    ))
    .map_err(|e| LoadError::Config(format!("--reflect: {e}")))
}

/// Creates an output file before the run, so that a path that cannot be written fails at once
/// (exit 2) instead of after the load.
fn create(flag: &str, path: &Path) -> Result<std::io::BufWriter<std::fs::File>, LoadError> {
    std::fs::File::create(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| LoadError::Config(format!("{flag} {}: {e}", path.display())))
}

pub(super) fn load(args: &LoadArgs) -> anyhow::Result<()> {
    let (cfg, slo) = config(args)?;
    let csv = args
        .csv
        .as_deref()
        .map(|p| create("--csv", p).map(|w| (p, w)))
        .transpose()?;
    let csv_raw = args
        .csv_raw
        .as_deref()
        .map(|p| create("--csv-raw", p).map(|w| (p, w)))
        .transpose()?;
    // Bound before the run: an address in use is exit 2, not a run without its metrics.
    let exporter = args
        .prometheus_addr
        .map(|addr| {
            crate::load::live::Exporter::start(addr).map_err(|e| {
                LoadError::Config(format!("--prometheus-addr {addr}: cannot listen ({e})"))
            })
        })
        .transpose()?;
    let mut cfg = cfg;
    if let Some(exporter) = &exporter {
        eprintln!("prometheus metrics on http://{}/metrics", exporter.addr);
        cfg.live = Some(exporter.live.clone());
    }
    crate::load::interrupt::catch_ctrl_c();
    let run = run_load(&cfg)?;
    let failed =
        |path: &Path, e: std::io::Error| anyhow::anyhow!("cannot write {}: {e}", path.display());
    if let Some((path, mut out)) = csv {
        crate::report::csv::intervals(&run, &mut out)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(|e| failed(path, e))?;
    }
    if let (Some((path, mut out)), Some((rows, dropped))) = (csv_raw, &run.raw) {
        crate::report::csv::raw(rows, &mut out)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(|e| failed(path, e))?;
        if *dropped > 0 {
            eprintln!(
                "--csv-raw: {} rows written (each generator thread its share of \
                 --csv-raw-limit); {dropped} more requests were not kept",
                rows.len()
            );
        }
    }
    let mut report = LoadReport::from_run(&run);
    // What `report --merge` needs to add generators' results up.
    report.histograms = Some(Histograms::of(&run.total));
    if args.json {
        super::print_out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        super::print_out(&text::render(&report))?;
    }
    if let Some(path) = &args.hgrm {
        write(path, &hgrm::render(&run.total.corrected))?;
        let service = path.with_extension("service.hgrm");
        write(&service, &hgrm::render(&run.total.service))?;
    }
    if let Some(path) = &args.hlog {
        write(path, &hlog::render(run.start_wall, &run.intervals))?;
    }
    if run.interrupted {
        return Err(super::Interrupted(String::new()).into());
    }
    if let Some(slo) = slo {
        let missed = slo.check(&run);
        if !missed.is_empty() {
            let list: Vec<String> = missed
                .iter()
                .map(|v| format!("{} (measured {})", v.objective, v.measured))
                .collect();
            return Err(SloMissed(list.join(", ")).into());
        }
    }
    Ok(())
}
