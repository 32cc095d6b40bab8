//! Service-level objectives for CI gating (`--slo 'p99<20ms,errors<0.1%'`), as k6 thresholds do:
//! a violated objective makes `gwbench load` exit 1.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::LoadError;
use super::LoadRun;

/// What an objective bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// A quantile (0..=1) of the corrected latency.
    Latency(f64),
    /// Maximum corrected latency.
    Max,
    /// Fraction of scheduled requests that did not succeed.
    Errors,
}

/// One objective: `metric < bound`.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    text: String,
    metric: Metric,
    /// Nanoseconds for latency, a fraction for errors.
    bound: f64,
}

/// A list of objectives.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Slo(Vec<Objective>);

impl FromStr for Slo {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |part: &str, why: &str| {
            LoadError::Config(format!(
                "--slo {part:?}: {why}; expected e.g. 'p99<20ms,p99.9<50ms,max<1s,errors<0.1%'"
            ))
        };
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lhs, rhs) = part.split_once('<').ok_or_else(|| bad(part, "no '<'"))?;
            let (lhs, rhs) = (lhs.trim(), rhs.trim());
            let (metric, bound) = match lhs {
                "errors" => {
                    let pct = rhs
                        .strip_suffix('%')
                        .ok_or_else(|| bad(part, "errors take a percentage"))?;
                    let v: f64 = pct
                        .trim()
                        .parse()
                        .map_err(|_| bad(part, "not a percentage"))?;
                    (Metric::Errors, v / 100.0)
                }
                _ => {
                    let metric = if lhs == "max" {
                        Metric::Max
                    } else {
                        let p: f64 = lhs
                            .strip_prefix('p')
                            .and_then(|p| p.parse().ok())
                            .filter(|p: &f64| *p > 0.0 && *p < 100.0)
                            .ok_or_else(|| bad(part, "unknown metric (use pNN, max or errors)"))?;
                        Metric::Latency(p / 100.0)
                    };
                    let d: Duration =
                        humantime::parse_duration(rhs).map_err(|_| bad(part, "not a duration"))?;
                    (metric, d.as_nanos() as f64)
                }
            };
            out.push(Objective {
                text: part.to_string(),
                metric,
                bound,
            });
        }
        if out.is_empty() {
            return Err(bad(s, "no objective"));
        }
        Ok(Slo(out))
    }
}

impl fmt::Display for Objective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An objective that a run missed, with the measured value.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The objective as written.
    pub objective: String,
    /// What was measured, formatted.
    pub measured: String,
}

impl Slo {
    /// The objectives `run` violates (empty: all met).
    pub fn check(&self, run: &LoadRun) -> Vec<Violation> {
        let h = &run.total.corrected;
        self.0
            .iter()
            .filter_map(|o| {
                let (value, measured) = match o.metric {
                    Metric::Latency(q) => {
                        let v = h.value_at_quantile(q) as f64;
                        (v, format!("{:.3} ms", v / 1e6))
                    }
                    Metric::Max => (h.max() as f64, format!("{:.3} ms", h.max() as f64 / 1e6)),
                    Metric::Errors => {
                        let total = run.scheduled().max(1) as f64;
                        let v = run.outcomes.failed() as f64 / total;
                        (v, format!("{:.3}%", v * 100.0))
                    }
                };
                (value >= o.bound).then(|| Violation {
                    objective: o.text.clone(),
                    measured,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let slo: Slo = "p99<20ms, p99.9<1s,max<2s,errors<0.1%".parse().unwrap();
        assert_eq!(slo.0.len(), 4);
        assert_eq!(slo.0[0].metric, Metric::Latency(0.99));
        assert_eq!(slo.0[0].bound, 20e6);
        assert_eq!(slo.0[3].bound, 0.001);
        for bad in ["", "p99>20ms", "p100<1ms", "q99<1ms", "p99<10x", "errors<5"] {
            assert!(bad.parse::<Slo>().is_err(), "{bad}");
        }
    }
}
