//! `gwbench diff BASE NEW`: two runs' `summary.json` (compare, v1 or v2) or `load.json`, compared
//! per scenario, side, latency kind and percentile. A row is a regression when the new value is
//! worse than the base by more than its threshold **and** the two are distinguishable: their
//! 95 % intervals (compare v2), or their rounds' ranges (compare v1), do not overlap. A load run
//! has one value and no interval: a change beyond the threshold counts, and the row says it could
//! not be tested.

use std::collections::BTreeMap;

use serde_json::Value;

use super::text::human_ns;

/// The percentiles compared.
pub const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p999"];

/// Allowed worsening, per percentile (a fraction: 0.10 = 10 %).
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// For percentiles not listed below.
    pub default: f64,
    /// Per percentile (`p99`).
    pub per: BTreeMap<String, f64>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            default: 0.10,
            per: BTreeMap::new(),
        }
    }
}

impl Thresholds {
    /// Adds one `--max-regression` value: `10%` (every percentile) or `p99=5%`.
    pub fn add(&mut self, spec: &str) -> Result<(), String> {
        let bad = || format!("--max-regression {spec:?}: expected e.g. 10% or p99=5%");
        let (p, pct) = match spec.split_once('=') {
            Some((p, v)) => (Some(p.trim()), v.trim()),
            None => (None, spec.trim()),
        };
        let n: f64 = pct
            .strip_suffix('%')
            .ok_or_else(bad)?
            .trim()
            .parse()
            .map_err(|_| bad())?;
        if !n.is_finite() || n < 0.0 {
            return Err(bad());
        }
        match p {
            None => self.default = n / 100.0,
            Some(p) if PERCENTILES.contains(&p) => {
                self.per.insert(p.to_string(), n / 100.0);
            }
            Some(p) => {
                return Err(format!(
                    "--max-regression {spec:?}: {p:?} is not one of {}",
                    PERCENTILES.join(", ")
                ));
            }
        }
        Ok(())
    }

    fn of(&self, p: &str) -> f64 {
        self.per.get(p).copied().unwrap_or(self.default)
    }
}

/// One value with its interval, when the run has one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Nanoseconds.
    pub value: f64,
    /// The interval (or the rounds' range), when there is one.
    pub range: Option<(f64, f64)>,
}

/// One compared row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Scenario name (`load` for a load run).
    pub scenario: String,
    /// `direct`, `gateway` (or the scenario's own labels), `overhead`, or `load`.
    pub side: String,
    /// `corrected` or `service`.
    pub kind: String,
    /// `p99`.
    pub percentile: String,
    /// Base run.
    pub base: Point,
    /// New run.
    pub new: Point,
    /// Relative change of the value (None when the base is 0).
    pub change: Option<f64>,
    /// Whether the intervals do not overlap (None without intervals).
    pub distinguishable: Option<bool>,
    /// Worse beyond the threshold and distinguishable (or without intervals).
    pub regression: bool,
    /// Either run's figure rests on fewer than `stats::MIN_INTERVALS` seconds: not judged.
    pub too_short: bool,
}

/// The comparison of two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// What the runs are (`compare`, `load`).
    pub kind: &'static str,
    /// Rows in scenario, side, kind, percentile order.
    pub rows: Vec<Row>,
    /// Scenarios only one run has.
    pub unmatched: Vec<String>,
}

impl Diff {
    /// How many rows regressed.
    pub fn regressions(&self) -> usize {
        self.rows.iter().filter(|r| r.regression).count()
    }

    /// Whether no row could be judged (every one too short): `gwbench diff` exits 2.
    pub fn nothing_judged(&self) -> bool {
        self.rows.iter().all(|r| r.too_short)
    }
}

/// Whether a compare scenario rests on too few seconds to judge: its own `too_short`, or (runs
/// from before it was written) rounds x duration below the minimum.
fn too_short(run: &Value, scenario: &Value) -> bool {
    if let Some(t) = scenario["too_short"].as_bool() {
        return t;
    }
    let seconds =
        scenario["rounds_run"].as_f64().unwrap_or(0.0) * run["duration_s"].as_f64().unwrap_or(0.0);
    seconds < crate::stats::MIN_INTERVALS as f64
}

fn kind_of(summary: &Value) -> Result<&'static str, String> {
    match summary["schema"].as_str() {
        Some("gwbench.compare.v2") => Ok("compare.v2"),
        Some("gwbench.compare.v1") => Ok("compare.v1"),
        Some("gwbench.load.v1") => Ok("load"),
        Some(other) => Err(format!(
            "schema {other:?}: diff compares compare runs (summary.json) and load runs (load.json)"
        )),
        None => Err("no \"schema\": not a gwbench summary".into()),
    }
}

/// Compares `base` with `new` (both parsed summaries of the same kind).
pub fn diff(base: &Value, new: &Value, thresholds: &Thresholds) -> Result<Diff, String> {
    let (kb, kn) = (kind_of(base)?, kind_of(new)?);
    if kb.split('.').next() != kn.split('.').next() {
        return Err(format!("the runs differ in kind: {kb} and {kn}"));
    }
    let mut rows = Vec::new();
    let mut unmatched = Vec::new();
    if kb == "load" {
        for kind in ["corrected", "service"] {
            for p in PERCENTILES {
                let at = |s: &Value| {
                    s["latency_ns"][kind][p]
                        .as_f64()
                        .map(|value| Point { value, range: None })
                };
                if let (Some(b), Some(n)) = (at(base), at(new)) {
                    rows.push(row("load", "load", kind, p, b, n, thresholds));
                }
            }
        }
        return Ok(Diff {
            kind: "load",
            rows,
            unmatched,
        });
    }
    let scenarios = |s: &Value| -> BTreeMap<String, Value> {
        s["scenarios"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sc| Some((sc["name"].as_str()?.to_string(), sc.clone())))
            .collect()
    };
    let (bs, ns) = (scenarios(base), scenarios(new));
    for name in bs.keys().chain(ns.keys()) {
        let both = bs.contains_key(name) && ns.contains_key(name);
        if !both && !unmatched.contains(name) {
            unmatched.push(name.clone());
        }
    }
    for (name, b) in &bs {
        let Some(n) = ns.get(name) else { continue };
        for kind in ["corrected", "service"] {
            for side in ["direct", "gateway", "overhead"] {
                for p in PERCENTILES {
                    let (Some(pb), Some(pn)) = (point(b, kind, side, p), point(n, kind, side, p))
                    else {
                        continue;
                    };
                    let label = label_of(b, side);
                    let mut r = row(name, &label, kind, p, pb, pn, thresholds);
                    r.too_short = too_short(base, b) || too_short(new, n);
                    if side == "overhead" {
                        // An overhead near zero has no meaningful ratio: its worsening is
                        // measured against the base's gateway-side value.
                        let reference = point(b, kind, "gateway", p).map_or(0.0, |g| g.value);
                        let worse = pn.value - pb.value;
                        r.change = (reference > 0.0).then(|| worse / reference);
                        r.regression = r.change.is_some_and(|c| c > thresholds.of(p))
                            && r.distinguishable != Some(false);
                    }
                    r.regression &= !r.too_short;
                    rows.push(r);
                }
            }
        }
    }
    Ok(Diff {
        kind: "compare",
        rows,
        unmatched,
    })
}

/// A side's label as the scenario names it (`bare` / `middleware` for the `full` scenario).
fn label_of(scenario: &Value, side: &str) -> String {
    let labels = scenario["labels"].as_array();
    let at = |i: usize| {
        labels
            .and_then(|l| l.get(i))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match side {
        "direct" => at(0).unwrap_or_else(|| side.into()),
        "gateway" => at(1).unwrap_or_else(|| side.into()),
        _ => side.into(),
    }
}

/// One side's percentile: the v2 interval, or (v1) the median of the rounds and their range.
fn point(scenario: &Value, kind: &str, side: &str, p: &str) -> Option<Point> {
    let ci = &scenario["ci_ns"][kind][side][p];
    if let Some(value) = ci["value"].as_f64() {
        let range = ci["lo"].as_f64().zip(ci["hi"].as_f64());
        return Some(Point { value, range });
    }
    if side == "overhead" {
        let value = scenario["overhead_ns"][kind][p].as_f64()?;
        return Some(Point { value, range: None });
    }
    let field = format!("{kind}_ns");
    let v = &scenario[side][field.as_str()][p];
    Some(Point {
        value: v["median"].as_f64()?,
        range: v["min"].as_f64().zip(v["max"].as_f64()),
    })
}

fn row(
    scenario: &str,
    side: &str,
    kind: &str,
    p: &str,
    base: Point,
    new: Point,
    thresholds: &Thresholds,
) -> Row {
    let change = (base.value > 0.0).then(|| new.value / base.value - 1.0);
    let distinguishable = match (base.range, new.range) {
        (Some((blo, bhi)), Some((nlo, nhi))) => Some(nlo > bhi || nhi < blo),
        _ => None,
    };
    let regression = change.is_some_and(|c| c > thresholds.of(p))
        && distinguishable != Some(false)
        && new.value > base.value;
    Row {
        scenario: scenario.to_string(),
        side: side.to_string(),
        kind: kind.to_string(),
        percentile: p.to_string(),
        base,
        new,
        change,
        distinguishable,
        regression,
        too_short: false,
    }
}

fn show(p: &Point) -> String {
    let ns = |v: f64| {
        if v < 0.0 {
            format!("-{}", human_ns((-v) as u64))
        } else {
            human_ns(v as u64)
        }
    };
    match p.range {
        Some((lo, hi)) => format!("{} [{}, {}]", ns(p.value), ns(lo), ns(hi)),
        None => ns(p.value),
    }
}

/// The terminal table: one line per row, the regressions marked, and the verdict.
pub fn render(d: &Diff, thresholds: &Thresholds) -> String {
    let mut out = String::from(
        "base run -> new run [95 % interval]; change = (new - base) / base, in % of the base\n",
    );
    let mut last = String::new();
    for r in &d.rows {
        let head = format!("{} ({})", r.scenario, r.kind);
        if head != last {
            out.push_str(&format!("== {head}\n"));
            last = head;
        }
        let change = r
            .change
            .map_or("n/a".to_string(), |c| format!("{:+.1}%", c * 100.0));
        let verdict = match (r.regression, r.distinguishable) {
            _ if r.too_short => "too short to judge (fewer than 10 one-second intervals)",
            (true, None) => "REGRESSION (no interval: one value each)",
            (true, _) => "REGRESSION",
            (false, Some(false)) => "within the noise (intervals overlap)",
            (false, _) => "ok",
        };
        out.push_str(&format!(
            "  {:<10} {:<5} {:>28} -> {:<28} {:>8}  {verdict}\n",
            r.side,
            r.percentile,
            show(&r.base),
            show(&r.new),
            change
        ));
    }
    for name in &d.unmatched {
        out.push_str(&format!(
            "  scenario {name}: in one run only, not compared\n"
        ));
    }
    let short: Vec<&str> = d
        .rows
        .iter()
        .filter(|r| r.too_short)
        .map(|r| r.scenario.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !short.is_empty() {
        out.push_str(&format!(
            "not judged, too short (fewer than {} one-second intervals in a run): {}\n",
            crate::stats::MIN_INTERVALS,
            short.join(", ")
        ));
    }
    let per: Vec<String> = thresholds
        .per
        .iter()
        .map(|(p, t)| format!("{p} {:.0}%", t * 100.0))
        .collect();
    out.push_str(&format!(
        "{} regression(s) beyond {:.0}%{}{}\n",
        d.regressions(),
        thresholds.default * 100.0,
        if per.is_empty() { "" } else { " (" },
        if per.is_empty() {
            String::new()
        } else {
            format!("{})", per.join(", "))
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ci(value: f64, lo: f64, hi: f64) -> Value {
        json!({"value": value, "lo": lo, "hi": hi})
    }

    fn compare(gateway_p99: (f64, f64, f64)) -> Value {
        let (v, lo, hi) = gateway_p99;
        let side = |p99: Value| {
            json!({"p50": ci(100.0, 90.0, 110.0), "p90": ci(200.0, 180.0, 220.0),
                   "p99": p99, "p999": ci(500.0, 400.0, 600.0)})
        };
        json!({"schema": "gwbench.compare.v2", "duration_s": 4.0, "scenarios": [{
            "name": "rest", "labels": ["direct", "gateway"], "rounds_run": 3,
            "ci_ns": {"corrected": {
                "direct": side(ci(300.0, 280.0, 320.0)),
                "gateway": side(ci(v, lo, hi)),
            }}
        }]})
    }

    #[test]
    fn a_worse_value_counts_only_beyond_the_threshold_and_outside_the_noise() {
        let t = Thresholds::default();
        let base = compare((400.0, 380.0, 420.0));
        // 25 % worse, intervals apart: a regression.
        let d = diff(&base, &compare((500.0, 480.0, 520.0)), &t).unwrap();
        assert_eq!(d.regressions(), 1, "{d:?}");
        let r = d.rows.iter().find(|r| r.regression).unwrap();
        assert_eq!((r.side.as_str(), r.percentile.as_str()), ("gateway", "p99"));
        // 25 % worse but the intervals overlap: within the noise.
        let d = diff(&base, &compare((500.0, 300.0, 700.0)), &t).unwrap();
        assert_eq!(d.regressions(), 0);
        // 5 % worse, apart: under the threshold.
        let d = diff(&base, &compare((420.0, 421.0, 430.0)), &t).unwrap();
        assert_eq!(d.regressions(), 0);
        // A per-percentile threshold.
        let mut strict = Thresholds::default();
        strict.add("p99=2%").unwrap();
        assert_eq!(
            diff(&base, &compare((420.0, 421.0, 430.0)), &strict)
                .unwrap()
                .regressions(),
            1
        );
        // Better is never a regression.
        assert_eq!(
            diff(&base, &compare((200.0, 190.0, 210.0)), &t)
                .unwrap()
                .regressions(),
            0
        );
        // The same run against itself: nothing.
        assert_eq!(diff(&base, &base, &t).unwrap().regressions(), 0);
    }

    #[test]
    fn short_runs_are_never_a_regression() {
        let t = Thresholds::default();
        let (mut base, mut new) = (
            compare((400.0, 380.0, 420.0)),
            compare((500.0, 480.0, 520.0)),
        );
        assert_eq!(diff(&base, &new, &t).unwrap().regressions(), 1);
        new["scenarios"][0]["too_short"] = json!(true);
        let d = diff(&base, &new, &t).unwrap();
        assert_eq!(d.regressions(), 0, "{d:?}");
        assert!(d.nothing_judged());
        assert!(render(&d, &t).contains("not judged, too short"));
        // A run from before the field: 2 rounds x 2 s is too short.
        new["scenarios"][0]["too_short"] = json!(null);
        new["scenarios"][0]["rounds_run"] = json!(2);
        new["duration_s"] = json!(2.0);
        base["scenarios"][0]["rounds_run"] = json!(3);
        base["duration_s"] = json!(4.0);
        assert_eq!(diff(&base, &new, &t).unwrap().regressions(), 0);
        new["duration_s"] = json!(4.0);
        new["scenarios"][0]["rounds_run"] = json!(3);
        assert_eq!(diff(&base, &new, &t).unwrap().regressions(), 1);
    }

    #[test]
    fn load_runs_compare_without_intervals_and_kinds_must_match() {
        let load = |p99: u64| {
            json!({"schema": "gwbench.load.v1", "latency_ns": {
                "corrected": {"p50": 100, "p90": 200, "p99": p99, "p999": 900},
                "service": {"p50": 100, "p90": 200, "p99": p99, "p999": 900}}})
        };
        let d = diff(&load(300), &load(400), &Thresholds::default()).unwrap();
        assert_eq!(d.regressions(), 2, "{d:?}");
        assert!(d.rows.iter().all(|r| r.distinguishable.is_none()));
        let text = render(&d, &Thresholds::default());
        assert!(text.contains("no interval"), "{text}");
        assert!(text.contains("in % of the base"), "{text}");
        let err = diff(
            &load(300),
            &compare((1.0, 1.0, 1.0)),
            &Thresholds::default(),
        )
        .unwrap_err();
        assert!(err.contains("differ in kind"), "{err}");
        let err = diff(
            &json!({"schema": "gwbench.saturate.v1"}),
            &load(1),
            &Thresholds::default(),
        )
        .unwrap_err();
        assert!(err.contains("saturate"), "{err}");
    }

    #[test]
    fn thresholds_parse_or_say_what_is_wrong() {
        let mut t = Thresholds::default();
        t.add("5%").unwrap();
        t.add("p99 = 20%").unwrap();
        assert_eq!((t.default, t.per["p99"]), (0.05, 0.20));
        for bad in ["5", "x%", "-1%", "p98=5%", "p99=5"] {
            assert!(t.add(bad).is_err(), "{bad}");
        }
    }
}
