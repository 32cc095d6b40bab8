//! `gwbench diff` and `gwbench report`: the flags of the commands that read runs.

use clap::Args;

pub(super) const DIFF_EXAMPLES: &str = "\
Examples:
  gwbench diff reports/base reports/new                # compare run directories
  gwbench diff base/summary.json new/summary.json --max-regression 5%
  gwbench diff a/load.json b/load.json --max-regression 10% --max-regression p99=20%
  gwbench diff reports/base reports/new --html diff.html   # both runs' curves on one chart

A row regresses when the new value is worse by more than its threshold AND the two runs'
95 % intervals (compare v2; v1: the rounds' ranges) do not overlap. Load runs carry one value
each: a change beyond the threshold counts, marked as untested. Exit codes: 0 no regression,
1 regression, 2 bad input.";

/// `gwbench diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The base run: a directory with summary.json (or load.json), or the file.
    #[arg(value_name = "BASE")]
    pub base: std::path::PathBuf,
    /// The new run, likewise.
    #[arg(value_name = "NEW")]
    pub new: std::path::PathBuf,
    /// Allowed worsening: `10%` for every percentile, or `p99=5%` for one (repeatable;
    /// default 10%).
    #[arg(long, value_name = "LIMIT")]
    pub max_regression: Vec<String>,
    /// Also write a page with both runs' latency-by-percentile curves on one chart per
    /// scenario (from the runs' .hlog files, or a load output's histograms) and the diff.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

pub(super) const REPORT_EXAMPLES: &str = "\
Examples:
  gwbench report reports/20261128T061500Z-compare            # rewrite its report.html
  gwbench report --merge a.hlog b.hlog c.hlog                # one table from three machines
  gwbench report --merge a.hlog b.hlog --hgrm merged.hgrm    # and the merged distribution
  gwbench report --merge seg0.json seg1.json seg2.json seg3.json   # load --segment I/4 outputs

Merging adds the histograms; percentiles are never averaged. Load outputs merge only when they
are every segment of one schedule (the same schedule id), so that the counts add up.";

/// `gwbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A `gwbench compare` run directory (with summary.json, summary.md and the .hlog files).
    #[arg(value_name = "DIR", required_unless_present = "merge")]
    pub dir: Option<std::path::PathBuf>,
    /// Interval logs to merge instead (gwbench load --hlog, or any HdrHistogram interval log),
    /// or the --json outputs of `gwbench load --segment I/N` runs (every segment once): one
    /// result whose counts and histograms are the sums of theirs.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with = "dir")]
    pub merge: Vec<std::path::PathBuf>,
    /// With --merge: also write the merged distribution (.hgrm, ms) to FILE.
    #[arg(long, value_name = "FILE", requires = "merge")]
    pub hgrm: Option<std::path::PathBuf>,
    /// With --merge of load outputs: print the merged gwbench.load.v1 JSON instead of the
    /// summary.
    #[arg(long, requires = "merge")]
    pub json: bool,
}
