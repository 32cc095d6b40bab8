//! `report.html`: one self-contained page (inline SVG drawn with plotters, no scripts, no network)
//! with, per scenario, the HdrHistogram-style latency-by-percentile chart (log "nines" axis,
//! direct and gateway on the same chart) and the p99 over time, plus the overhead per scenario as
//! bars and the summary table.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Points of a chart: (x, y).
pub type Series = Vec<(f64, f64)>;

/// What one scenario's charts need.
#[derive(Debug)]
pub struct ScenarioPlot<'a> {
    /// Scenario name.
    pub name: &'a str,
    /// One sentence.
    pub description: &'a str,
    /// Names of the two sides, e.g. ("direct", "gateway").
    pub labels: (&'a str, &'a str),
    /// Corrected latency of all rounds, per side (ns).
    pub hists: (&'a Histogram<u64>, &'a Histogram<u64>),
    /// p99 per interval over the run, per side: (seconds from the first round's start, ns).
    pub p99_over_time: (Series, Series),
    /// Median overhead of the service time at p50 and p99, ns.
    pub overhead_ns: (f64, f64),
    /// When the run has them: the overheads' 95 % intervals and the noise floor.
    pub intervals: Option<OverheadIntervals>,
    /// The gateway's CPU per request, µs (its process and children, by PID), when measured.
    pub gateway_cpu_us: Option<f64>,
}

/// The service-time overhead at p50 and p99 with their 95 % intervals and the noise floor at
/// those percentiles, ns: drawn as the bars, their error bars and a grey band of ±floor.
#[derive(Debug, Clone, Copy)]
pub struct OverheadIntervals {
    /// (value, lo, hi) at p50 and at p99.
    pub p50: (f64, f64, f64),
    /// Likewise at p99.
    pub p99: (f64, f64, f64),
    /// The noise floor at p50 and p99 (0 when not measured).
    pub floor: (f64, f64),
}

const NINES: [(f64, &str); 5] = [
    (0.0, "0%"),
    (1.0, "90%"),
    (2.0, "99%"),
    (3.0, "99.9%"),
    (4.0, "99.99%"),
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Points (nines, ms) of a histogram, up to 99.99 %.
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 0.9999 {
            break;
        }
        points.push((
            -(1.0 - q).log10(),
            (v.value_iterated_to() as f64 / 1e6).max(0.001),
        ));
    }
    points.push((4.0, (h.value_at_quantile(0.9999) as f64 / 1e6).max(0.001)));
    points
}

/// The short line drawn beside a series' name in a chart's legend.
fn legend_line(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
}

/// A dashed series' legend mark: dashed, as the line is drawn.
fn legend_dashes(
    color: RGBColor,
) -> impl Fn((i32, i32)) -> plotters::element::DashedPathElement<std::vec::IntoIter<(i32, i32)>, u32>
{
    move |(x, y)| {
        plotters::element::DashedPathElement::new(
            vec![(x, y), (x + 20, y)],
            6,
            4,
            color.stroke_width(2),
        )
    }
}

/// Draws a chart's legend in the report's style: black border, white fill.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(position)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
}

/// The drawing area of one chart.
type Root<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// One chart as inline SVG of `size`: `draw` paints on a white area; a drawing error becomes a
/// short paragraph in its place.
fn svg_chart(size: (u32, u32), draw: impl FnOnce(&Root<'_>) -> Drawn) -> String {
    let mut svg = String::new();
    let drawn = (|| -> Drawn {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    drawn.map_or_else(chart_error, |()| svg)
}

/// A chart builder in the report's style: caption, margins, label areas.
fn builder<'a, 'b>(root: &'a Root<'b>, caption: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    // The right margin holds the last x label ("99.99%") whole.
    b.caption(caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(36)
        .y_label_area_size(64);
    b
}

fn chart_error(e: impl std::fmt::Display) -> String {
    format!(
        "<p>chart could not be drawn: {}</p>",
        escape(&e.to_string())
    )
}

fn percentile_chart(s: &ScenarioPlot<'_>) -> String {
    curves_chart(
        &format!("{}: corrected latency by percentile", s.name),
        &[
            (s.labels.0, s.hists.0, BLUE, false),
            (s.labels.1, s.hists.1, RED, false),
        ],
    )
}

/// Latency-by-percentile curves on one chart (log "nines" axis): (label, histogram, colour,
/// dashed) each.
fn curves_chart(caption: &str, series: &[(&str, &Histogram<u64>, RGBColor, bool)]) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|s| percentile_curve(s.1)).collect();
    let top = curves.iter().flatten().map(|p| p.1).fold(0.01f64, f64::max) * 1.5;
    let bottom = curves
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::MAX, f64::min)
        .min(top / 10.0)
        .max(0.001);
    svg_chart((720, 380), |root| {
        let mut chart =
            builder(root, caption).build_cartesian_2d(0f64..4f64, (bottom..top).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&|x| {
                NINES
                    .iter()
                    .find(|(n, _)| (n - x).abs() < 1e-9)
                    .map_or(String::new(), |(_, l)| l.to_string())
            })
            .y_label_formatter(&tick)
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .draw()?;
        for (curve, (label, _, color, dashed)) in curves.iter().zip(series) {
            let style = color.stroke_width(2);
            if *dashed {
                chart
                    .draw_series(DashedLineSeries::new(curve.iter().copied(), 6, 4, style))?
                    .label(*label)
                    .legend(legend_dashes(*color));
            } else {
                chart
                    .draw_series(LineSeries::new(curve.iter().copied(), style))?
                    .label(*label)
                    .legend(legend_line(*color));
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

fn over_time_chart(s: &ScenarioPlot<'_>) -> String {
    let all = s.p99_over_time.0.iter().chain(&s.p99_over_time.1);
    let t_max = all.clone().map(|p| p.0).fold(1.0f64, f64::max);
    let top = all.map(|p| p.1 / 1e6).fold(0.01f64, f64::max) * 1.2;
    svg_chart((720, 300), |root| {
        let mut chart = builder(
            root,
            &format!("{}: p99 per 1 s interval (all rounds)", s.name),
        )
        .build_cartesian_2d(0f64..t_max, 0f64..top)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("seconds since the first round's start")
            .y_desc("p99 (ms)")
            .draw()?;
        for (series, label, color) in [
            (&s.p99_over_time.0, s.labels.0, BLUE),
            (&s.p99_over_time.1, s.labels.1, RED),
        ] {
            let points: Vec<(f64, f64)> = series.iter().map(|(t, v)| (*t, v / 1e6)).collect();
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 10, y), 3, color.filled()));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// Per scenario: (p50, p99) as (value, lo, hi), and the noise floors, in µs.
#[allow(clippy::type_complexity)]
fn overhead_values(scenarios: &[ScenarioPlot<'_>]) -> (Vec<[(f64, f64, f64); 2]>, Vec<(f64, f64)>) {
    let us = |v: (f64, f64, f64)| (v.0 / 1e3, v.1 / 1e3, v.2 / 1e3);
    let values: Vec<[(f64, f64, f64); 2]> = scenarios
        .iter()
        .map(|s| match &s.intervals {
            Some(i) => [us(i.p50), us(i.p99)],
            None => {
                let (a, b) = (s.overhead_ns.0 / 1e3, s.overhead_ns.1 / 1e3);
                [(a, a, a), (b, b, b)]
            }
        })
        .collect();
    let floors: Vec<(f64, f64)> = scenarios
        .iter()
        .map(|s| {
            s.intervals
                .map_or((0.0, 0.0), |i| (i.floor.0 / 1e3, i.floor.1 / 1e3))
        })
        .collect();
    (values, floors)
}

/// A tick label for a person: at most three significant digits, no float noise
/// (`0.30000000000000004` is `0.3`), thousands as they are.
fn tick(v: &f64) -> String {
    let v = *v;
    if v == 0.0 || !v.is_finite() {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (2 - magnitude).clamp(0, 12) as usize;
    let text = format!("{v:.decimals$}");
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

/// A bar chart's x label: the scenario's name under the middle of its bar, nothing elsewhere.
fn bar_label(scenarios: &[ScenarioPlot<'_>], x: f64) -> String {
    let i = x.floor() as usize;
    match (x - i as f64 - 0.5).abs() < 0.01 {
        true => scenarios
            .get(i)
            .map_or(String::new(), |s| s.name.to_string()),
        false => String::new(),
    }
}

/// The overhead of the gateway side at one percentile (`which`: 0 for p50, 1 for p99) per
/// scenario, on a scale of its own: p99's noise would flatten p50's bars on a shared one.
fn overhead_chart(scenarios: &[ScenarioPlot<'_>], which: usize) -> String {
    let (values, floors) = overhead_values(scenarios);
    let at = |v: &[(f64, f64, f64); 2]| v[which];
    let floor = |f: &(f64, f64)| if which == 0 { f.0 } else { f.1 };
    let ends = values.iter().map(at).flat_map(|v| [v.0, v.1, v.2]);
    let top = ends.clone().fold(0.1f64, f64::max) * 1.2;
    let low = ends.fold(0.0f64, f64::min) * 1.2;
    let (top, low) = floors
        .iter()
        .map(floor)
        .fold((top, low), |(t, l), f| (t.max(f * 1.2), l.min(-f * 1.2)));
    let with_intervals = scenarios.iter().any(|s| s.intervals.is_some());
    let name = ["p50", "p99"][which];
    let title = match with_intervals {
        true => format!(
            "{name} overhead of the gateway side (service time; 95 % interval; grey: noise floor)"
        ),
        false => format!("{name} overhead of the gateway side (service time, median of rounds)"),
    };
    let color = [BLUE, RED][which];
    let n = scenarios.len().max(1);
    svg_chart((720, 280), |root| {
        let mut chart = builder(root, &title).build_cartesian_2d(0f64..n as f64, low..top)?;
        chart
            .configure_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| bar_label(scenarios, *x))
            .y_label_formatter(&tick)
            .y_desc("added latency (µs)")
            .draw()?;
        let grey = RGBColor(220, 220, 220);
        for (i, (v, f)) in values
            .iter()
            .map(at)
            .zip(floors.iter().map(floor))
            .enumerate()
        {
            let x = i as f64;
            chart.draw_series([Rectangle::new(
                [(x + 0.25, -f), (x + 0.75, f)],
                grey.filled(),
            )])?;
            chart.draw_series([Rectangle::new(
                [(x + 0.3, 0.0), (x + 0.7, v.0)],
                color.filled(),
            )])?;
            if with_intervals {
                let mid = x + 0.5;
                chart.draw_series([
                    PathElement::new(vec![(mid, v.1), (mid, v.2)], BLACK.stroke_width(2)),
                    PathElement::new(vec![(mid - 0.05, v.1), (mid + 0.05, v.1)], BLACK),
                    PathElement::new(vec![(mid - 0.05, v.2), (mid + 0.05, v.2)], BLACK),
                ])?;
            }
        }
        Ok(())
    })
}

/// The gateway's CPU per request per scenario, drawn when at least one scenario measured it:
/// with `--gateway gwbench,nginx,…` the build-vs-buy comparison of what each costs.
fn cpu_chart(scenarios: &[ScenarioPlot<'_>]) -> Option<String> {
    if scenarios.iter().all(|s| s.gateway_cpu_us.is_none()) {
        return None;
    }
    let n = scenarios.len();
    let top = scenarios
        .iter()
        .filter_map(|s| s.gateway_cpu_us)
        .fold(1.0f64, f64::max)
        * 1.2;
    let title = "gateway CPU per request (its process and children; none: not measured)";
    Some(svg_chart((720, 280), |root| {
        let mut chart = builder(root, title).build_cartesian_2d(0f64..n as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| bar_label(scenarios, *x))
            .y_label_formatter(&tick)
            .y_desc("CPU per request (µs)")
            .draw()?;
        for (i, s) in scenarios.iter().enumerate() {
            let Some(us) = s.gateway_cpu_us else { continue };
            let x = i as f64;
            chart.draw_series([Rectangle::new(
                [(x + 0.3, 0.0), (x + 0.7, us)],
                RGBColor(90, 90, 160).filled(),
            )])?;
        }
        Ok(())
    }))
}

/// The whole page.
pub fn render(
    title: &str,
    context: &[String],
    table: &str,
    scenarios: &[ScenarioPlot<'_>],
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;max-width:760px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}\
         figure{{margin:1em 0}} h2{{border-bottom:1px solid #ccc}}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(title)
    );
    out.push_str("<ul>\n");
    for c in context {
        let _ = writeln!(out, "<li>{}</li>", escape(c));
    }
    out.push_str("</ul>\n");
    for (which, id) in ["overhead-p50", "overhead-p99"].iter().enumerate() {
        let _ = writeln!(
            out,
            "<figure id=\"{id}\">{}</figure>",
            overhead_chart(scenarios, which)
        );
    }
    if let Some(chart) = cpu_chart(scenarios) {
        let _ = writeln!(out, "<figure id=\"gateway-cpu\">{chart}</figure>");
    }
    for s in scenarios {
        let _ = writeln!(
            out,
            "<h2 id=\"{n}\">{n}</h2>\n<p>{d}</p>",
            n = escape(s.name),
            d = escape(s.description)
        );
        let _ = writeln!(
            out,
            "<figure class=\"percentiles\">{}</figure>",
            percentile_chart(s)
        );
        let _ = writeln!(
            out,
            "<figure class=\"over-time\">{}</figure>",
            over_time_chart(s)
        );
    }
    let _ = writeln!(
        out,
        "<h2>Summary</h2>\n<pre>{}</pre>\n</body></html>",
        escape(table)
    );
    out
}

/// One chart of a diff: a scenario (or a load run) with both runs' curves.
#[derive(Debug)]
pub struct DiffPlot<'a> {
    /// Scenario name (or the load target).
    pub name: String,
    /// (label, corrected histogram): the base run's dashed, the new run's solid, a colour per
    /// side.
    pub base: Vec<(String, &'a Histogram<u64>)>,
    /// Likewise for the new run.
    pub new: Vec<(String, &'a Histogram<u64>)>,
}

/// `gwbench diff --html`: both runs' latency curves on one chart per scenario, and the diff's
/// table.
pub fn render_diff(context: &[String], table: &str, plots: &[DiffPlot<'_>]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>gwbench diff</title>\n<style>\
         body{{font-family:sans-serif;max-width:1040px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:11px}}\
         figure{{margin:1em 0}} h2{{border-bottom:1px solid #ccc}}</style></head><body>\n<h1>gwbench diff</h1>\n<ul>\n"
    );
    for c in context {
        let _ = writeln!(out, "<li>{}</li>", escape(c));
    }
    out.push_str("</ul>\n");
    let colors = [BLUE, RED, GREEN, MAGENTA];
    for p in plots {
        // Each curve says which run it is: "direct (base)" dashed, "direct (new)" solid.
        let labels: Vec<Vec<String>> = [("base", &p.base), ("new", &p.new)]
            .iter()
            .map(|(run, side)| {
                side.iter()
                    .map(|(l, _)| match l == run {
                        true => l.clone(),
                        false => format!("{l} ({run})"),
                    })
                    .collect()
            })
            .collect();
        let mut series = Vec::new();
        for ((dashed, side), names) in [(true, &p.base), (false, &p.new)].into_iter().zip(&labels) {
            for (i, ((_, h), name)) in side.iter().zip(names).enumerate() {
                series.push((name.as_str(), *h, colors[i % colors.len()], dashed));
            }
        }
        let _ = writeln!(
            out,
            "<h2>{n}</h2>\n<p>base dashed, new solid</p>\n<figure class=\"percentiles\">{c}</figure>",
            n = escape(&p.name),
            c = curves_chart(
                &format!("{}: corrected latency by percentile", p.name),
                &series
            )
        );
    }
    let _ = writeln!(
        out,
        "<h2>Diff</h2>\n<pre>{}</pre>\n</body></html>",
        escape(table)
    );
    out
}

/// One side of a saturation search, for its charts: (offered, achieved, p99 ns) per step, the
/// knee.
#[derive(Debug)]
pub struct SaturationPlot<'a> {
    /// Side name.
    pub label: &'a str,
    /// (offered req/s, achieved req/s, p99 ns) per step, in the order run.
    pub steps: Vec<(f64, f64, f64)>,
    /// Highest good rate.
    pub knee: Option<f64>,
}

fn saturation_chart(sides: &[SaturationPlot<'_>], p99: bool) -> String {
    if p99 {
        p99_by_offered(sides)
    } else {
        achieved_by_offered(sides)
    }
}

const SIDE_COLORS: [RGBColor; 4] = [BLUE, RED, GREEN, MAGENTA];

/// The largest offered rate, with a margin: the x axis of both saturation charts.
fn offered_max(sides: &[SaturationPlot<'_>]) -> f64 {
    sides
        .iter()
        .flat_map(|s| s.steps.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        * 1.05
}

/// A side's steps as (offered, y) points in offered order; y is p99 in ms or achieved req/s.
fn series(s: &SaturationPlot<'_>, p99: bool) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = s
        .steps
        .iter()
        .map(|p| (p.0, if p99 { p.2 / 1e6 } else { p.1 }))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// p99 (log scale) by offered rate, each side's knee marked with a vertical line.
fn p99_by_offered(sides: &[SaturationPlot<'_>]) -> String {
    let x_max = offered_max(sides);
    let p99s = || sides.iter().flat_map(|s| s.steps.iter().map(|p| p.2 / 1e6));
    let y_max = p99s().fold(0.01f64, f64::max) * 1.5;
    let y_min = p99s().fold(f64::MAX, f64::min).clamp(0.001, y_max / 10.0);
    svg_chart((720, 340), |root| {
        let mut builder = builder(root, "p99 by offered rate (knee marked)");
        builder.margin_right(36);
        let mut chart = builder.build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("offered (req/s)")
            .y_desc("p99 (ms)")
            .draw()?;
        for (i, s) in sides.iter().enumerate() {
            let color = SIDE_COLORS[i % SIDE_COLORS.len()];
            chart
                .draw_series(LineSeries::new(series(s, true), color.stroke_width(2)))?
                .label(s.label)
                .legend(legend_line(color));
            if let Some(k) = s.knee {
                chart.draw_series(LineSeries::new(
                    vec![(k, y_min), (k, y_max)],
                    color.stroke_width(1),
                ))?;
            }
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// Achieved by offered rate, with the diagonal a server that keeps up follows.
fn achieved_by_offered(sides: &[SaturationPlot<'_>]) -> String {
    let x_max = offered_max(sides);
    svg_chart((720, 340), |root| {
        let mut builder = builder(root, "achieved by offered rate");
        builder.margin_right(36);
        let mut chart = builder.build_cartesian_2d(0f64..x_max, 0f64..x_max)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("offered (req/s)")
            .y_desc("achieved (req/s)")
            .draw()?;
        chart.draw_series(LineSeries::new(
            vec![(0.0, 0.0), (x_max, x_max)],
            BLACK.mix(0.3),
        ))?;
        for (i, s) in sides.iter().enumerate() {
            let color = SIDE_COLORS[i % SIDE_COLORS.len()];
            chart
                .draw_series(LineSeries::new(series(s, false), color.stroke_width(2)))?
                .label(s.label)
                .legend(legend_line(color));
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })
}

/// The saturate page: the answer, the two charts, the step tables.
pub fn render_saturation(
    title: &str,
    answer: &str,
    table: &str,
    sides: &[SaturationPlot<'_>],
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
         body{{font-family:sans-serif;max-width:760px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:12px}}</style></head><body>\n<h1>{t}</h1>\n\
         <p><strong>{a}</strong></p>\n",
        t = escape(title),
        a = escape(answer)
    );
    let _ = writeln!(out, "<figure>{}</figure>", saturation_chart(sides, false));
    let _ = writeln!(out, "<figure>{}</figure>", saturation_chart(sides, true));
    let _ = writeln!(
        out,
        "<h2>Steps</h2>\n<pre>{}</pre>\n</body></html>",
        escape(table)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_chart_without_scripts() {
        let mut a = Histogram::<u64>::new(3).unwrap();
        let mut b = Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            a.record(50_000 + v * 10).unwrap();
            b.record(90_000 + v * 20).unwrap();
        }
        let plot = ScenarioPlot {
            name: "rest",
            description: "a <test>",
            labels: ("direct", "gateway"),
            hists: (&a, &b),
            p99_over_time: (vec![(0.0, 1e6), (1.0, 2e6)], vec![(0.0, 2e6), (1.0, 3e6)]),
            overhead_ns: (40_000.0, 120_000.0),
            intervals: Some(OverheadIntervals {
                p50: (40_000.0, 30_000.0, 50_000.0),
                p99: (120_000.0, -10_000.0, 300_000.0),
                floor: (5_000.0, 200_000.0),
            }),
            gateway_cpu_us: Some(14.6),
        };
        let page = render(
            "gwbench compare",
            &["2 cores".into()],
            "table & <stuff>",
            std::slice::from_ref(&plot),
        );
        assert_eq!(page.matches("<svg").count(), 5);
        assert!(page.contains("id=\"gateway-cpu\"") && page.contains("CPU per request (µs)"));
        assert!(!page.contains("<script"));
        // No tick label carries float noise (0.30000000000000004).
        assert!(!page.contains("00000000"), "{page}");
        assert!(page.contains("a &lt;test&gt;") && page.contains("table &amp; &lt;stuff&gt;"));
        assert!(!page.contains("chart could not be drawn"), "{page}");
        assert!(page.contains("99.9%"), "the nines axis is labelled");
        // Without a CPU figure (a gateway URL without --gateway-pid) there is no CPU chart.
        let unmeasured = ScenarioPlot {
            gateway_cpu_us: None,
            ..plot
        };
        let page = render("gwbench compare", &[], "", &[unmeasured]);
        assert_eq!(page.matches("<svg").count(), 4);
        assert!(!page.contains("gateway-cpu"));
    }

    #[test]
    fn ticks_are_round_numbers() {
        let cases = [
            (0.1 + 0.2, "0.3"),
            (0.2 * 3.0, "0.6"),
            (0.0, "0"),
            (1.25, "1.25"),
            (12.5, "12.5"),
            (250.0, "250"),
            (5000.0, "5000"),
            (-12.5, "-12.5"),
            (0.0012, "0.0012"),
        ];
        for (v, want) in cases {
            assert_eq!(tick(&v), want, "{v}");
        }
    }

    #[test]
    fn p50_and_p99_overheads_each_get_their_own_scale() {
        let h = Histogram::<u64>::new(3).unwrap();
        let plot = ScenarioPlot {
            name: "rest",
            description: "",
            labels: ("direct", "gateway"),
            hists: (&h, &h),
            p99_over_time: (vec![], vec![]),
            overhead_ns: (20_000.0, 2_000_000.0),
            intervals: Some(OverheadIntervals {
                p50: (20_000.0, 18_000.0, 22_000.0),
                p99: (2_000_000.0, -500_000.0, 4_000_000.0),
                floor: (5_000.0, 3_000_000.0),
            }),
            gateway_cpu_us: None,
        };
        // The largest tick label of a chart (the SVG writes each on a line of its own).
        let top = |svg: &str| {
            svg.lines()
                .filter_map(|l| l.trim().parse::<f64>().ok())
                .fold(f64::MIN, f64::max)
        };
        // The p50 chart's scale is p50's: its axis stops in the tens of µs, not near 4,800.
        let p50 = overhead_chart(std::slice::from_ref(&plot), 0);
        assert!((20.0..=30.0).contains(&top(&p50)), "{p50}");
        let p99 = overhead_chart(std::slice::from_ref(&plot), 1);
        assert!(p99.contains("p99 overhead") && top(&p99) >= 3000.0, "{p99}");
    }
}
