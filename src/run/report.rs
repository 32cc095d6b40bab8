//! `gwbench report`: re-renders a compare run's `report.html` from its `summary.json` and
//! interval logs, or merges interval logs from several load-generator machines into one
//! percentile table (histograms are added; percentiles are never averaged).

use std::path::{Path, PathBuf};

use anyhow::Context;
use thiserror::Error;

use crate::cli::ReportArgs;
use crate::report::json::Percentiles;
use crate::report::text::human_ns;
use crate::report::{hgrm, hlog, html};

/// A report that cannot be made from what was given (exit code 2).
#[derive(Debug, Error)]
#[error("{0}")]
pub(super) struct ReportError(String);

fn read(path: &Path) -> Result<Vec<u8>, ReportError> {
    std::fs::read(path).map_err(|e| ReportError(format!("{}: {e}", path.display())))
}

/// Runs `gwbench report`.
pub(super) fn report(args: &ReportArgs) -> anyhow::Result<()> {
    if !args.merge.is_empty() {
        return merge(&args.merge, args.hgrm.as_deref());
    }
    let dir = args
        .dir
        .as_ref()
        .ok_or_else(|| ReportError("give a compare run directory, or --merge FILE...".into()))?;
    rerender(dir)
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
    let summary: serde_json::Value = serde_json::from_slice(&read(&dir.join("summary.json"))?)
        .map_err(|e| {
            ReportError(format!(
                "{}: not JSON ({e})",
                dir.join("summary.json").display()
            ))
        })?;
    if summary["schema"] != "gwbench.compare.v1" {
        return Err(ReportError(format!(
            "{}: not a gwbench compare summary",
            dir.join("summary.json").display()
        ))
        .into());
    }
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
        let mut sides = Vec::new();
        for side in ["direct", "gateway"] {
            let path = dir.join(format!("{name}-{side}.hlog"));
            let intervals = hlog::read(&read(&path)?)
                .map_err(|e| ReportError(format!("{}: {e}", path.display())))?;
            let series: Vec<(f64, f64)> = intervals
                .iter()
                .filter(|i| i.tag.as_deref() == Some("corrected"))
                .map(|i| (i.start_s, i.hist.value_at_quantile(0.99) as f64))
                .collect();
            sides.push((hlog::merge(&intervals, "corrected"), series));
        }
        data.push((sc.clone(), name, sides));
    }
    let plots: Vec<html::ScenarioPlot<'_>> = data
        .iter_mut()
        .map(|(sc, name, sides)| {
            let labels = sc["labels"].as_array().map(|l| {
                (
                    l[0].as_str().unwrap_or("direct"),
                    l[1].as_str().unwrap_or("gateway"),
                )
            });
            let gateway_series = std::mem::take(&mut sides[1].1);
            let direct_series = std::mem::take(&mut sides[0].1);
            html::ScenarioPlot {
                name: name.as_str(),
                description: sc["description"].as_str().unwrap_or(""),
                labels: labels.unwrap_or(("direct", "gateway")),
                hists: (&sides[0].0, &sides[1].0),
                p99_over_time: (direct_series, gateway_series),
                overhead_ns: (
                    sc["overhead_ns"]["service"]["p50"].as_f64().unwrap_or(0.0),
                    sc["overhead_ns"]["service"]["p99"].as_f64().unwrap_or(0.0),
                ),
            }
        })
        .collect();
    let context = vec![
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
    ];
    let page = html::render("gwbench compare", &context, &table, &plots);
    let out = dir.join("report.html");
    std::fs::write(&out, page).with_context(|| format!("cannot write {}", out.display()))?;
    super::print_out(&format!("wrote {}\n", out.display()))
}
