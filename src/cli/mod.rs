//! The command line (clap derive): one struct per subcommand, with help text and examples.
//! Nothing below this module imports clap; `run` turns these into typed configs.

use clap::{Args, Parser, Subcommand};

mod backends;
mod compare;
mod gateway;
mod load;
mod report;

use backends::BACKENDS_EXAMPLES;
pub use backends::{BackendsArgs, Serve};
use compare::{COMPARE_EXAMPLES, SATURATE_EXAMPLES};
pub use compare::{CompareArgs, LayoutMode, Method, SaturateArgs};
use gateway::GATEWAY_EXAMPLES;
pub use gateway::{GatewayArgs, Http1Choice, ServingModel};
use load::LOAD_EXAMPLES;
pub use load::{Arrival, LoadArgs};
use report::{DIFF_EXAMPLES, REPORT_EXAMPLES};
pub use report::{DiffArgs, ReportArgs};

const EXAMPLES: &str = "\
Examples:
  gwbench backends                      # mock REST :8081, gRPC :50051, admin :8082
  gwbench backends --latency exp:2ms    # every mock answers after ~2 ms on average
  curl localhost:8081/api/users/42      # a user, as proto3 JSON

Every listener defaults to 127.0.0.1; a port of 0 means \"pick a free one\".
Set RUST_LOG (e.g. RUST_LOG=debug) for more logs on stderr.

Exit codes (every command):
  0  done (load: every --slo objective met; diff: no regression)
  1  the run failed: an --slo objective missed, a regression found by diff, a generator
     thread that crashed, a target that failed while measured
  2  what was asked cannot be done: a flag, a file, a configuration, a port in use, an
     unreachable target — said in one line on stderr
  130  interrupted by Ctrl-C (load, compare, saturate): what finished is printed and saved;
       a second Ctrl-C stops at once";

/// gwbench: measure what an API gateway costs.
///
/// Mock backends (REST and gRPC), a gateway (REST proxy, REST→gRPC transcoding, aggregation,
/// JWT auth, rate limits, breakers, caching), an open-loop load generator, and `compare` /
/// `saturate` / `report`, which measure the latency and CPU the gateway adds.
#[derive(Debug, Parser)]
#[command(
    name = "gwbench",
    version = env!("GWBENCH_VERSION"),
    propagate_version = true,
    arg_required_else_help = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the mock REST (hyper) and gRPC (tonic) backends with controllable latency and faults.
    #[command(after_help = BACKENDS_EXAMPLES)]
    Backends(BackendsArgs),
    /// Offer load to any HTTP or gRPC target at a constant (open-loop) or maximal rate and report
    /// coordinated-omission-corrected latency.
    #[command(after_help = LOAD_EXAMPLES)]
    Load(Box<LoadArgs>),
    /// Run the API gateway: REST/JSON routes transcoded to gRPC from the protos'
    /// google.api.http annotations, and reverse-proxy routes to HTTP upstreams.
    #[command(after_help = GATEWAY_EXAMPLES)]
    Gateway(GatewayArgs),
    /// The main job: how much latency and CPU does the gateway add? Starts the mocks and the
    /// gateway on loopback and offers the same load directly and through the gateway.
    #[command(after_help = COMPARE_EXAMPLES)]
    Compare(CompareArgs),
    /// Mint a JWT the gateway accepts (for the default config's dev key, or a config's first
    /// shared-secret key, or a private key file).
    #[command(after_help = TOKEN_EXAMPLES)]
    Token(TokenArgs),
    /// At what request rate does the gateway become the bottleneck? Steps the offered rate up,
    /// then bisects to the knee, for the direct path and through the gateway.
    #[command(after_help = SATURATE_EXAMPLES)]
    Saturate(SaturateArgs),
    /// Re-render a compare run's report.html from its files, or merge interval logs from several
    /// load-generator machines into one percentile table.
    #[command(after_help = REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Did my change make it slower? Compares two runs (compare's summary.json, or load.json)
    /// per scenario and percentile, with the runs' confidence intervals; exits 1 when a
    /// regression beyond the threshold is distinguishable from the noise.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to stdout, or write one per subcommand into a directory.
    #[command(after_help = MAN_EXAMPLES)]
    Man(ManArgs),
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  gwbench completions bash > ~/.local/share/bash-completion/completions/gwbench
  gwbench completions zsh > ~/.zfunc/_gwbench          # with fpath+=~/.zfunc in .zshrc
  gwbench completions fish > ~/.config/fish/completions/gwbench.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  gwbench man | man -l -                    # read it now
  gwbench man --out /usr/local/share/man/man1   # gwbench.1 and gwbench-<command>.1";

/// `gwbench completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `gwbench man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write gwbench.1 and one page per subcommand (gwbench-load.1, …) into DIR instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// Every `--help` example text, for the test that runs them.
pub const ALL_EXAMPLES: &[&str] = &[
    EXAMPLES,
    BACKENDS_EXAMPLES,
    LOAD_EXAMPLES,
    GATEWAY_EXAMPLES,
    COMPARE_EXAMPLES,
    TOKEN_EXAMPLES,
    SATURATE_EXAMPLES,
    REPORT_EXAMPLES,
    DIFF_EXAMPLES,
    COMPLETIONS_EXAMPLES,
    MAN_EXAMPLES,
];

const TOKEN_EXAMPLES: &str = "\
Examples:
  curl -H \"Authorization: Bearer $(gwbench token --sub alice)\" localhost:8080/secure/api/users/42
  gwbench token --sub bob --ttl 10m --scope 'read write'
  gwbench token --sub carol --alg RS256 --key-file private.pem --kid k1";

/// `gwbench token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (`sub`).
    #[arg(long, default_value = "alice")]
    pub sub: String,
    /// Lifetime.
    #[arg(long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
    /// Space-separated scopes (`scope`).
    #[arg(long)]
    pub scope: Option<String>,
    /// Gateway config whose [auth] issuer, audience and first HS key to use (default: embedded).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Sign with this algorithm and private key instead (RS256, ES256, …).
    #[arg(long, requires = "key_file")]
    pub alg: Option<String>,
    /// PEM private key for --alg.
    #[arg(long, value_name = "FILE", requires = "alg")]
    pub key_file: Option<std::path::PathBuf>,
    /// Key id for the header (default: the config key's kid).
    #[arg(long)]
    pub kid: Option<String>,
}

pub(super) fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 500ms, 10s, 1m"))
}

/// Renders a clap usage error as one line (`invalid value 'x' for '--latency <SPEC>': ...`)
/// followed by where to get help, instead of clap's multi-line block.
pub fn one_line_error(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    // The first paragraph, on one line (clap lists missing arguments on the lines after a ':').
    let first: Vec<&str> = rendered
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let text = first.join(" ");
    let text = text.trim_start_matches("error: ");
    let text = if text.is_empty() {
        "invalid command line"
    } else {
        text
    };
    // clap's hint ("a similar subcommand exists: 'load'") is kept, and the help pointed to is
    // the subcommand's when the error is in one (from clap's usage line).
    let tip = rendered
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("tip: "))
        .map_or(String::new(), |t| format!("; {t}"));
    let help = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .and_then(|usage| {
            let mut words = usage.split_whitespace();
            let (bin, sub) = (words.next()?, words.next()?);
            (!sub.starts_with(['[', '<'])).then(|| format!("{bin} {sub} --help"))
        })
        .unwrap_or_else(|| "gwbench --help".into());
    format!("{text}{tip} (see {help})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_latency_is_a_one_line_error_naming_the_value() {
        let err =
            Cli::try_parse_from(["gwbench", "backends", "--latency", "fixed:10x"]).unwrap_err();
        let line = one_line_error(&err);
        assert!(line.contains("10x") && line.contains("--latency"), "{line}");
        assert!(!line.contains('\n'));
    }
}
