//! `gwbench gateway`: configuration from the file or the embedded default, flag overrides,
//! validation before any port is bound, then serve until SIGINT/SIGTERM.

use anyhow::Context;

use crate::cli::{GatewayArgs, ServingModel};
use crate::gateway::config::{ConfigError, GatewayConfig, UpstreamProtocol};
use crate::gateway::serve::server::GatewayServer;
use crate::gateway::serve::workers::Workers;

/// The configuration the flags describe, validated.
pub(super) fn config(args: &GatewayArgs) -> Result<GatewayConfig, ConfigError> {
    let (mut cfg, source) = match &args.config {
        Some(path) => (GatewayConfig::load(path)?, path.display().to_string()),
        None => (
            GatewayConfig::default_config(),
            "embedded default config".to_string(),
        ),
    };
    let flag_error = |message: String| ConfigError {
        source_name: source.clone(),
        message,
    };
    if let Some(a) = args.listen {
        cfg.listen.http = a;
    }
    if let Some(a) = args.admin {
        cfg.listen.admin = a;
    }
    if let Some(server) = args.http1 {
        use crate::gateway::config::Http1Server;
        cfg.listen.http1 = match server {
            crate::cli::Http1Choice::Lean => Http1Server::Lean,
            crate::cli::Http1Choice::Hyper => Http1Server::Hyper,
        };
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let client_ca = cfg.listen.tls.as_ref().and_then(|t| t.client_ca.clone());
        cfg.listen.tls = Some(crate::gateway::config::ListenTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca,
        });
    }
    if args.strict {
        cfg.transcode.strict = true;
    }
    if let Some(path) = &args.access_log {
        cfg.access_log.enabled = true;
        cfg.access_log.path = path.clone();
    }
    descriptors(args, &mut cfg);
    if !args.upstream_grpc.is_empty() {
        let name = cfg.transcode.upstream.clone();
        if let Some(u) = cfg.upstreams.iter_mut().find(|u| u.name == name) {
            u.endpoints = args.upstream_grpc.clone();
        }
    }
    if !args.upstream_rest.is_empty() {
        let names: Vec<String> = cfg.proxy.iter().map(|p| p.upstream.clone()).collect();
        if names.is_empty() {
            return Err(flag_error(
                "--upstream-rest: the configuration has no proxy route".into(),
            ));
        }
        for u in cfg
            .upstreams
            .iter_mut()
            .filter(|u| names.contains(&u.name) && u.protocol == UpstreamProtocol::Http)
        {
            u.endpoints = args.upstream_rest.clone();
        }
    }
    cfg.validate()
        .map_err(|m| flag_error(format!("after the command-line overrides: {m}")))?;
    Ok(cfg)
}
/// Where the transcoder's descriptors come from, as the flags say (`--proto`, `--reflect`,
/// `--descriptor-set`); with the default config, the default dashboard (which calls gwbench's
/// own services) is left out.
fn descriptors(args: &GatewayArgs, cfg: &mut GatewayConfig) {
    if !args.protos.is_empty() {
        cfg.transcode.protos = args.protos.clone();
        cfg.transcode.proto_paths = args.proto_paths.clone();
        cfg.transcode.descriptor_set = None;
        if args.config.is_none() {
            cfg.aggregations.clear(); // the default dashboard calls gwbench's own services
        }
    }
    if args.reflect {
        cfg.transcode.reflect = true;
        cfg.transcode.descriptor_set = None;
        cfg.transcode.protos.clear();
        if args.config.is_none() {
            cfg.aggregations.clear(); // the default dashboard calls gwbench's own services
        }
    }
    if let Some(d) = &args.descriptor_set {
        cfg.transcode.descriptor_set = Some(d.clone());
        if args.config.is_none() && !cfg.aggregations.is_empty() {
            // The default dashboard calls gwbench's own services, which this set may not have.
            tracing::debug!(
                "--descriptor-set with the default config: the default aggregations are left out"
            );
            cfg.aggregations.clear();
        }
    }
}

/// Runs `gwbench gateway`.
pub(super) fn gateway(args: &GatewayArgs) -> anyhow::Result<()> {
    if args.print_default_config {
        return super::print_out(crate::gateway::config::DEFAULT_CONFIG);
    }
    let cfg = config(args)?;
    if args.check {
        return check(&cfg);
    }
    if let Some(file) = &args.openapi {
        return openapi(&cfg, file);
    }
    if args.runtime == ServingModel::PerCore {
        let workers = args.threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, usize::from),
            usize::from,
        );
        // The caller's thread serves the admin endpoint and waits for the signal.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the runtime")?;
        return rt.block_on(async {
            let server = Workers::start(&cfg, workers).await?;
            tracing::info!(
                routes = server.gateway().routes().len(),
                workers,
                "gateway ready (per-core workers)"
            );
            super::print_ready(&server.ready_lines())?;
            serve_until_signal(&server.reload, args).await?;
            tracing::info!("signal received: draining and stopping");
            let gateway = server.gateway();
            server.shutdown().await;
            gateway.flush();
            Ok(())
        });
    }
    super::runtime(args.threads)?.block_on(async {
        let server = GatewayServer::start(&cfg).await?;
        tracing::info!(routes = server.gateway().routes().len(), "gateway ready");
        super::print_ready(&server.ready_lines())?;
        serve_until_signal(&server.reload, args).await?;
        tracing::info!("signal received: draining and stopping");
        let gateway = server.gateway();
        server.shutdown().await;
        gateway.flush();
        Ok(())
    })
}

/// Serves until SIGINT or SIGTERM; on SIGHUP (and `POST /reload`, which the admin endpoint
/// answers) reads the configuration again — the same file, the same flags — and swaps it in,
/// or keeps the old one and logs why.
async fn serve_until_signal(
    reload: &std::sync::Arc<crate::gateway::serve::reload::Reload>,
    args: &GatewayArgs,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let again = args.clone();
    reload.set_source(Box::new(move || config(&again).map_err(|e| e.to_string())));
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => return r.context("cannot install the Ctrl-C handler"),
            _ = term.recv() => return Ok(()),
            _ = hup.recv() => match reload.reload().await {
                Ok(done) => tracing::info!(routes = done.routes, "configuration reloaded (SIGHUP)"),
                Err(e) => tracing::error!(
                    error = %e,
                    "reload refused (SIGHUP); the old configuration stays"
                ),
            },
        }
    }
}

/// `gateway --openapi FILE`: the document of the routes, written (to stdout for `-`) without
/// listening; one line on stderr says how many operations and how many rules were skipped.
fn openapi(cfg: &GatewayConfig, file: &std::path::Path) -> anyhow::Result<()> {
    let gateway = super::runtime(Some(1))?.block_on(crate::gateway::Gateway::connect(cfg))?;
    let doc = gateway.openapi(cfg);
    let text = serde_json::to_string_pretty(&doc)? + "\n";
    let operations: usize = doc["paths"].as_object().map_or(0, |p| {
        p.values()
            .filter_map(|v| v.as_object())
            .map(|o| o.len())
            .sum()
    });
    if file == std::path::Path::new("-") {
        super::print_out(&text)?;
    } else {
        std::fs::write(file, &text).with_context(|| format!("cannot write {}", file.display()))?;
    }
    eprintln!(
        "openapi: {operations} operations, {} bytes{}; {} annotated rules skipped (not documented)",
        text.len(),
        match file == std::path::Path::new("-") {
            true => String::new(),
            false => format!(" in {}", file.display()),
        },
        gateway.skipped_rules().len()
    );
    Ok(())
}

/// `gateway --check`: the routes as the gateway would serve them, and what it would skip.
fn check(cfg: &GatewayConfig) -> anyhow::Result<()> {
    let gateway = super::runtime(Some(1))?.block_on(crate::gateway::Gateway::connect(cfg))?;
    let mut out = String::new();
    for r in gateway.routes() {
        out.push_str(&format!(
            "{:<9} {:<7} {}  ->  {}\n",
            r.kind, r.method, r.path, r.target
        ));
    }
    let skipped = gateway.skipped_rules();
    out.push_str(&format!(
        "{} routes; {} annotated rules skipped\n",
        gateway.routes().len(),
        skipped.len()
    ));
    for s in skipped {
        out.push_str(&format!("skipped {} {}: {}\n", s.rpc, s.rule, s.reason));
    }
    super::print_out(&out)?;
    if !skipped.is_empty() {
        anyhow::bail!(
            "{} annotated rules would be skipped (listed above)",
            skipped.len()
        );
    }
    Ok(())
}
