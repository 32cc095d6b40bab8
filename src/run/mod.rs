//! Runs a parsed command line: builds the tokio runtime, starts what the subcommand asks for,
//! and waits for Ctrl-C / SIGTERM. This is the one place (with `main`) that uses `anyhow`.

use std::io::Write;

use anyhow::Context;

mod compare;
mod fleet;
mod gateway;
mod load;
mod peers;
pub mod process;
mod report;
mod saturate;
mod stack;

use crate::backend::{BackendError, Backends};
use crate::cli::{BackendsArgs, Cli, Command};
use crate::load::LoadError;

/// Runs `cli` to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing();
    match cli.command {
        Command::Backends(args) => backends(&args),
        Command::Load(args) => load::load(&args),
        Command::Gateway(args) => gateway::gateway(&args),
        Command::Compare(args) => compare::compare(&args),
        Command::Token(args) => token(&args),
        Command::Saturate(args) => saturate::saturate(&args),
        Command::Report(args) => report::report(&args),
        Command::Diff(args) => report::diff(&args),
        Command::Completions(args) => completions(&args),
        Command::Man(args) => man(&args),
    }
}

/// `gwbench completions SHELL`: the script on stdout.
fn completions(args: &crate::cli::CompletionsArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "gwbench", &mut out);
    print_out(&String::from_utf8_lossy(&out))
}

/// `gwbench man`: gwbench(1) on stdout, or with `--out DIR` it and one page per subcommand.
fn man(args: &crate::cli::ManArgs) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let render = |cmd: clap::Command, title: &str| -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).title(title).render(&mut out)?;
        Ok(out)
    };
    let Some(dir) = &args.out else {
        return print_out(&String::from_utf8_lossy(&render(cmd, "gwbench")?));
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |name: &str, page: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
    };
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("gwbench-{}", sub.get_name());
        write(&format!("{name}.1"), render(sub.clone(), &name)?)?;
    }
    write("gwbench.1", render(cmd, "gwbench")?)
}

/// The process exit code for an error `run` returned: 2 for problems with what the user asked
/// (bad configuration, a port in use, an unreachable target), 1 for everything else (including
/// a missed `--slo`).
pub fn exit_code(err: &anyhow::Error) -> u8 {
    let kind = err
        .chain()
        .find_map(ExitKind::of)
        .unwrap_or(ExitKind::Failure);
    kind as u8
}

/// What an error says about whose fault it is; the exit code follows from it alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ExitKind {
    /// The run failed (exit 1).
    Failure = 1,
    /// The user's input is wrong: a flag, a file, a port in use, an unreachable target (exit 2).
    BadInput = 2,
    /// Ctrl-C stopped a measurement; what finished was reported (exit 130).
    Interrupted = crate::load::interrupt::EXIT_CODE,
}

/// Ctrl-C stopped a measurement (exit 130); what finished was printed and saved.
#[derive(Debug, thiserror::Error)]
#[error("interrupted (Ctrl-C): what finished is reported above{0}")]
pub(crate) struct Interrupted(pub(crate) String);

impl ExitKind {
    /// The kind of one error of a chain, when it is one of ours.
    fn of(e: &(dyn std::error::Error + 'static)) -> Option<ExitKind> {
        if e.is::<Interrupted>() {
            return Some(ExitKind::Interrupted);
        }
        if let Some(load) = e.downcast_ref::<LoadError>() {
            return Some(match load.is_bad_input() {
                true => ExitKind::BadInput,
                false => ExitKind::Failure,
            });
        }
        let bad_input = e.is::<BackendError>()
            || e.is::<crate::net::BindError>()
            || e.is::<crate::gateway::config::ConfigError>()
            || e.is::<crate::gateway::serve::server::StartError>()
            || e.is::<crate::gateway::GatewayError>()
            || e.is::<compare::CompareError>()
            || e.is::<TokenError>()
            || e.is::<saturate::SaturateError>()
            || e.is::<report::ReportError>()
            || e.is::<process::SpawnError>();
        bad_input.then_some(ExitKind::BadInput)
    }
}

/// `out`, or `reports/<start time>-<kind>`, created.
fn report_dir(
    out: Option<&std::path::Path>,
    started: std::time::SystemTime,
    kind: &str,
) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let stamp = humantime::format_rfc3339_seconds(started)
        .to_string()
        .replace(['-', ':'], "");
    let dir = out
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("reports").join(format!("{stamp}-{kind}")));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A token the user asked for cannot be made (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TokenError(String);

/// `gwbench token`: mints a JWT for the gateway's [auth] settings.
fn token(args: &crate::cli::TokenArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => crate::gateway::config::GatewayConfig::load(path)?,
        None => crate::gateway::config::GatewayConfig::default_config(),
    };
    let auth = &cfg.auth;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims =
        serde_json::json!({ "sub": args.sub, "iat": now, "exp": now + args.ttl.as_secs().max(1) });
    if let Some(iss) = &auth.issuer {
        claims["iss"] = iss.clone().into();
    }
    if let Some(aud) = &auth.audience {
        claims["aud"] = aud.clone().into();
    }
    if let Some(scope) = &args.scope {
        claims["scope"] = scope.clone().into();
    }
    let token = match (&args.alg, &args.key_file) {
        (Some(alg), Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| TokenError(format!("--key-file {}: {e}", path.display())))?;
            crate::gateway::middleware::auth::mint(alg, &pem, args.kid.as_deref(), &claims)
                .map_err(TokenError)?
        }
        _ => {
            let key = auth
                .keys
                .iter()
                .find(|k| k.secret.is_some() && k.algorithms.iter().any(|a| a.starts_with("HS")))
                .ok_or_else(|| {
                    TokenError(
                        "the config has no shared-secret (HS*) key; pass --alg and --key-file"
                            .into(),
                    )
                })?;
            let alg = key
                .algorithms
                .iter()
                .find(|a| a.starts_with("HS"))
                .expect("checked above");
            let kid = args.kid.as_deref().or(key.kid.as_deref());
            let secret = key.secret.as_deref().expect("checked above").as_bytes();
            crate::gateway::middleware::auth::mint(alg, secret, kid, &claims).map_err(TokenError)?
        }
    };
    print_out(&format!("{token}\n"))
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("gwbench=info,warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn runtime(threads: Option<u16>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n as usize);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn backends(args: &BackendsArgs) -> anyhow::Result<()> {
    let cfg = args.to_config();
    // Per-core: this thread is worker 0 (and serves the admin endpoint); the others start
    // their own runtimes.
    let rt = match args.runtime {
        crate::cli::ServingModel::PerCore => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the tokio runtime")?,
        crate::cli::ServingModel::WorkStealing => runtime(args.threads)?,
    };
    rt.block_on(async {
        let backends = Backends::start(&cfg).await?;
        print_ready(&backends.ready_lines())?;
        wait_for_signal().await?;
        tracing::info!("signal received: draining and stopping");
        backends.shutdown().await;
        Ok(())
    })
}

/// Prints the `ready ...` lines on stdout and flushes, so a parent process can read them.
fn print_ready(lines: &[String]) -> anyhow::Result<()> {
    print_out(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())
}

/// Writes `text` to stdout and flushes. A closed pipe (`gwbench ... | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot install the Ctrl-C handler")?,
        _ = term.recv() => {}
    }
    Ok(())
}
