//! `gwbench report`: re-renders a compare run's `report.html` from its `summary.json` and
//! interval logs, or merges interval logs from several load-generator machines into one
//! percentile table (histograms are added; percentiles are never averaged).

use std::path::{Path, PathBuf};

use anyhow::Context;
use thiserror::Error;

use crate::cli::ReportArgs;
use crate::report::json::{LoadReport, Percentiles};
use crate::report::text::human_ns;
use crate::report::{hgrm, hlog, html, text};

/// A report that cannot be made from what was given (exit code 2).
#[derive(Debug, Error)]
#[error("{0}")]
pub(super) struct ReportError(String);

fn read(path: &Path) -> Result<Vec<u8>, ReportError> {
    std::fs::read(path).map_err(|e| ReportError(format!("{}: {e}", path.display())))
}

/// Runs `gwbench report`.
pub(super) fn report(args: &ReportArgs) -> anyhow::Result<()> {
    let is_json = |p: &PathBuf| p.extension().is_some_and(|e| e == "json");
    if !args.merge.is_empty() && args.merge.iter().all(is_json) {
        return merge_loads(args);
    }
    if args.merge.iter().any(is_json) {
        return Err(ReportError(
            "--merge takes either interval logs or load --json outputs, not both".into(),
        )
        .into());
    }
    if args.json {
        return Err(ReportError("--json is for merging load --json outputs".into()).into());
    }
    if !args.merge.is_empty() {
        return merge(&args.merge, args.hgrm.as_deref());
    }
    let dir = args
        .dir
        .as_ref()
        .ok_or_else(|| ReportError("give a compare run directory, or --merge FILE...".into()))?;
    rerender(dir)
}

/// `--merge` of `load --segment` outputs: one load report.
fn merge_loads(args: &ReportArgs) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    for f in &args.merge {
        let report: LoadReport = serde_json::from_slice(&read(f)?).map_err(|e| {
            ReportError(format!(
                "{}: not a gwbench load --json output ({e})",
                f.display()
            ))
        })?;
        reports.push((f.display().to_string(), report));
    }
    let merged = crate::report::merge::merge(&reports).map_err(ReportError)?;
    if let Some(path) = &args.hgrm {
        let h = merged
            .histograms
            .as_ref()
            .map(|h| hlog::decode_histogram(&h.corrected))
            .transpose()
            .map_err(ReportError)?
            .unwrap_or_else(|| hdrhistogram::Histogram::new(3).expect("3 figures"));
        std::fs::write(path, hgrm::render(&h))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        super::print_out(&(serde_json::to_string_pretty(&merged)? + "\n"))
    } else {
        super::print_out(&text::render(&merged))
    }
}

fn merge(files: &[PathBuf], hgrm_out: Option<&Path>) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for f in files {
        let intervals =
            hlog::read(&read(f)?).map_err(|e| ReportError(format!("{}: {e}", f.display())))?;
        all.extend(intervals);
    }
    let mut out = format!(
        "merged {} interval(s) from {} log(s)\n",
        all.len(),
        files.len()
    );
    out.push_str(&format!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "tag", "count", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    ));
    let mut tags: Vec<String> = all.iter().filter_map(|i| i.tag.clone()).collect();
    tags.sort();
    tags.dedup();
    for tag in &tags {
        let p = Percentiles::of(&hlog::merge(&all, tag));
        out.push_str(&format!(
            "  {tag:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            p.count,
            human_ns(p.p50),
            human_ns(p.p90),
            human_ns(p.p99),
            human_ns(p.p999),
            human_ns(p.p9999),
            human_ns(p.max)
        ));
    }
    if let Some(path) = hgrm_out {
        let tag = if tags.iter().any(|t| t == "corrected") {
            "corrected"
        } else {
            tags.first().map_or("", String::as_str)
        };
        std::fs::write(path, hgrm::render(&hlog::merge(&all, tag)))
            .with_context(|| format!("cannot write {}", path.display()))?;
        out.push_str(&format!(
            "wrote the merged {tag} distribution to {}\n",
            path.display()
        ));
    }
    super::print_out(&out)
}

fn rerender(dir: &Path) -> anyhow::Result<()> {
    let summary = read_summary(dir)?;
    let md = String::from_utf8_lossy(&read(&dir.join("summary.md"))?).into_owned();
    let table = md
        .split("```")
        .nth(1)
        .map_or(md.as_str(), |t| t.trim_start_matches('\n'))
        .to_string();
    let scenarios = summary["scenarios"].as_array().cloned().unwrap_or_default();
    // Everything each chart needs, read from the logs first (the plots borrow it).
    let mut data = Vec::new();
    for sc in &scenarios {
        let name = sc["name"].as_str().unwrap_or("?").to_string();
        let direct = side_from_log(dir, &name, "direct")?;
        let gateway = side_from_log(dir, &name, "gateway")?;
        data.push((sc, name, direct, gateway));
    }
    let plots: Vec<html::ScenarioPlot<'_>> = data
        .iter()
        .map(|(sc, name, direct, gateway)| {
            let labels = sc["labels"].as_array();
            let label = |i: usize, default| {
                labels
                    .and_then(|l| l.get(i))
                    .and_then(|v| v.as_str())
                    .unwrap_or(default)
            };
            html::ScenarioPlot {
                name: name.as_str(),
                description: sc["description"].as_str().unwrap_or(""),
                labels: (label(0, "direct"), label(1, "gateway")),
                hists: (&direct.0, &gateway.0),
                p99_over_time: (direct.1.clone(), gateway.1.clone()),
                overhead_ns: (
                    sc["overhead_ns"]["service"]["p50"].as_f64().unwrap_or(0.0),
                    sc["overhead_ns"]["service"]["p99"].as_f64().unwrap_or(0.0),
                ),
                intervals: intervals_of(sc, &summary["noise_floor"]),
                gateway_cpu_us: sc["gateway"]["cpu_ms_per_1000"]["gateway_ms"].as_f64(),
            }
        })
        .collect();
    let page = html::render("gwbench compare", &context(&summary), &table, &plots);
    let out = dir.join("report.html");
    std::fs::write(&out, page).with_context(|| format!("cannot write {}", out.display()))?;
    super::print_out(&format!("wrote {}\n", out.display()))
}

/// A v2 summary's service-time overhead intervals and noise floor (None for v1 summaries).
fn intervals_of(
    sc: &serde_json::Value,
    floor: &serde_json::Value,
) -> Option<html::OverheadIntervals> {
    let o = &sc["ci_ns"]["service"]["overhead"];
    let at = |p: &str| {
        let e = &o[p];
        Some((e["value"].as_f64()?, e["lo"].as_f64()?, e["hi"].as_f64()?))
    };
    let f = |p: &str| floor["floor_ns"]["service"][p].as_f64().unwrap_or(0.0);
    Some(html::OverheadIntervals {
        p50: at("p50")?,
        p99: at("p99")?,
        floor: (f("p50"), f("p99")),
    })
}

/// A compare run's `summary.json`, refused when it is not one.
fn read_summary(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = dir.join("summary.json");
    let summary: serde_json::Value = serde_json::from_slice(&read(&path)?)
        .map_err(|e| ReportError(format!("{}: not JSON ({e})", path.display())))?;
    if summary["schema"] != "gwbench.compare.v1" && summary["schema"] != "gwbench.compare.v2" {
        return Err(
            ReportError(format!("{}: not a gwbench compare summary", path.display())).into(),
        );
    }
    Ok(summary)
}

/// A side as the report draws it: its corrected latencies merged, and (seconds, p99 ns) per
/// interval.
type SideData = (hdrhistogram::Histogram<u64>, Vec<(f64, f64)>);

/// One side's merged corrected histogram and p99 per interval, from its `.hlog`.
fn side_from_log(dir: &Path, scenario: &str, side: &str) -> anyhow::Result<SideData> {
    let path = dir.join(format!("{scenario}-{side}.hlog"));
    let intervals =
        hlog::read(&read(&path)?).map_err(|e| ReportError(format!("{}: {e}", path.display())))?;
    let series = intervals
        .iter()
        .filter(|i| i.tag.as_deref() == Some("corrected"))
        .map(|i| (i.start_s, i.hist.value_at_quantile(0.99) as f64))
        .collect();
    Ok((hlog::merge(&intervals, "corrected"), series))
}

/// The lines above the charts, from the summary.
fn context(summary: &serde_json::Value) -> Vec<String> {
    vec![
        format!(
            "{} req/s offered, {} rounds × {} s",
            summary["rps"], summary["rounds"], summary["duration_s"]
        ),
        format!(
            "machine: {} cores, {}",
            summary["machine"]["cores"],
            summary["machine"]["cpu_model"].as_str().unwrap_or("")
        ),
        format!(
            "started {} (re-rendered by gwbench report)",
            summary["started"].as_str().unwrap_or("")
        ),
    ]
}

/// A run's corrected latency per scenario and side, for `diff --html`: a compare run's from its
/// `.hlog` files (beside its summary.json), a load output's from the histograms it carries. A
/// scenario without them is left out.
type Curves = Vec<(String, Vec<(String, hdrhistogram::Histogram<u64>)>)>;

fn curves_of(path: &Path, summary: &serde_json::Value) -> anyhow::Result<Curves> {
    if summary["schema"] == "gwbench.load.v1" {
        let Some(b64) = summary["histograms"]["corrected"].as_str() else {
            return Ok(Vec::new());
        };
        let h = hlog::decode_histogram(b64)
            .map_err(|e| ReportError(format!("{}: {e}", path.display())))?;
        let name = summary["target"].as_str().unwrap_or("load").to_string();
        return Ok(vec![(name, vec![(String::new(), h)])]);
    }
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let mut out = Vec::new();
    for sc in summary["scenarios"].as_array().into_iter().flatten() {
        let name = sc["name"].as_str().unwrap_or("?").to_string();
        let sides: Vec<(String, hdrhistogram::Histogram<u64>)> = ["direct", "gateway"]
            .iter()
            .filter_map(|side| {
                side_from_log(dir, &name, side)
                    .ok()
                    .map(|(h, _)| (side.to_string(), h))
            })
            .collect();
        if !sides.is_empty() {
            out.push((name, sides));
        }
    }
    Ok(out)
}

/// The summary of a run: `PATH` when it is a file, else `PATH/summary.json`, else
/// `PATH/load.json`.
fn summary_of(path: &Path) -> Result<serde_json::Value, ReportError> {
    let file = if path.is_dir() {
        ["summary.json", "load.json"]
            .iter()
            .map(|f| path.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                ReportError(format!(
                    "{}: has neither summary.json nor load.json",
                    path.display()
                ))
            })?
    } else {
        path.to_path_buf()
    };
    serde_json::from_slice(&read(&file)?)
        .map_err(|e| ReportError(format!("{}: not JSON: {e}", file.display())))
}

/// A regression beyond the thresholds was found (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0} regression(s) beyond the threshold")]
pub(super) struct Regressed(usize);

/// Runs `gwbench diff`.
pub(super) fn diff(args: &crate::cli::DiffArgs) -> anyhow::Result<()> {
    use crate::report::diff;
    let mut thresholds = diff::Thresholds::default();
    for spec in &args.max_regression {
        thresholds.add(spec).map_err(ReportError)?;
    }
    let (base, new) = (summary_of(&args.base)?, summary_of(&args.new)?);
    let d = diff::diff(&base, &new, &thresholds).map_err(ReportError)?;
    let table = diff::render(&d, &thresholds);
    super::print_out(&table)?;
    if let Some(out) = &args.html {
        let runs = [(&args.base, &base), (&args.new, &new)];
        let [b, n] = runs.map(|(path, summary)| curves_of(path, summary));
        let (b, n) = (b?, n?);
        let plots: Vec<html::DiffPlot<'_>> = n
            .iter()
            .filter_map(|(name, new_sides)| {
                let base_sides = b.iter().find(|(bn, _)| bn == name).map(|(_, s)| s)?;
                fn label<'a>(
                    run: &str,
                    sides: &'a [(String, hdrhistogram::Histogram<u64>)],
                ) -> Vec<(String, &'a hdrhistogram::Histogram<u64>)> {
                    sides
                        .iter()
                        .map(|(side, h)| (format!("{run} {side}").trim().to_string(), h))
                        .collect()
                }
                Some(html::DiffPlot {
                    name: name.clone(),
                    base: label("base", base_sides),
                    new: label("new", new_sides),
                })
            })
            .collect();
        let context = vec![
            format!("base: {}", args.base.display()),
            format!("new: {}", args.new.display()),
        ];
        let page = html::render_diff(&context, &table, &plots);
        std::fs::write(out, page).with_context(|| format!("cannot write {}", out.display()))?;
    }
    match d.regressions() {
        0 if d.kind == "compare" && !d.rows.is_empty() && d.nothing_judged() => Err(ReportError(
            "nothing could be judged: every scenario of a run is too short (fewer than 10 \
                 one-second intervals; run compare longer)"
                .into(),
        )
        .into()),
        0 => Ok(()),
        n => Err(Regressed(n).into()),
    }
}
