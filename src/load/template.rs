//! A URL path's placeholders: `{seq}` and `{rand:A-B}`, parsed once and rendered per request
//! (the gRPC generator's `--data` uses the same pieces).

use http::uri::PathAndQuery;
use rand::Rng;

use super::LoadError;

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text as written.
    Lit(String),
    /// `{seq}`: 1, 2, 3, … (the request's 1-based index in the phase).
    Seq,
    /// `{rand:A-B}`: a uniform integer in A..=B.
    Rand(u64, u64),
}

/// Which end of every `{rand:A-B}` range [`Part::render_edge`] takes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Edge {
    /// A.
    Low,
    /// B.
    High,
}

impl Part {
    /// The placeholders `{seq}` and `{rand:A-B}` in `s`; every other brace is text (a JSON
    /// message keeps its own). A `{rand:` that is not a valid range is an error.
    pub(crate) fn scan(s: &str) -> Result<Vec<Part>, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            lit.push_str(&rest[..open]);
            let tail = &rest[open..];
            let (part, used) = if tail.starts_with("{seq}") {
                (Part::Seq, "{seq}".len())
            } else if let Some(range) = tail.strip_prefix("{rand:") {
                let close = range
                    .find('}')
                    .ok_or_else(|| "unclosed {rand:".to_string())?;
                let spec = &range[..close];
                let bad = || format!("{{rand:{spec}}} must be {{rand:A-B}} with A <= B");
                let (a, b) = spec.split_once('-').ok_or_else(bad)?;
                let (a, b): (u64, u64) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                (Part::Rand(a, b), "{rand:".len() + close + 1)
            } else {
                lit.push('{');
                rest = &tail[1..];
                continue;
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(part);
            rest = &tail[used..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(parts)
    }

    /// `parts` for request `seq`, each `{rand}` drawn anew.
    pub(crate) fn render(parts: &[Part], seq: u64) -> String {
        Self::write(parts, seq, |a, b| rand::rng().random_range(a..=b))
    }

    /// `parts` with every `{rand:A-B}` at the same end of its range (to check a template).
    pub(crate) fn render_edge(parts: &[Part], seq: u64, edge: Edge) -> String {
        Self::write(parts, seq, |a, b| match edge {
            Edge::Low => a,
            Edge::High => b,
        })
    }

    fn write(parts: &[Part], seq: u64, mut pick: impl FnMut(u64, u64) -> u64) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(64);
        for part in parts {
            // Writing into a String cannot fail.
            let _ = match part {
                Part::Lit(l) => s.write_str(l),
                Part::Seq => write!(s, "{seq}"),
                Part::Rand(a, b) => write!(s, "{}", pick(*a, *b)),
            };
        }
        s
    }
}

/// A path-and-query with placeholders.
#[derive(Debug, Clone)]
pub(crate) struct PathTemplate {
    pub(crate) parts: Vec<Part>,
    pub(crate) fixed: Option<PathAndQuery>,
}

impl PathTemplate {
    pub(crate) fn parse(pq: &str, url: &str) -> Result<Self, LoadError> {
        let mut parts = Vec::new();
        let mut rest = pq;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| LoadError::Config(format!("{url}: unclosed '{{' in the path")))?;
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let inner = &rest[open + 1..close];
            parts.push(match inner.split_once(':') {
                None if inner == "seq" => Part::Seq,
                Some(("rand", range)) => {
                    let bad = || {
                        LoadError::Config(format!(
                            "{url}: {{rand:{range}}} must be {{rand:A-B}} with A <= B"
                        ))
                    };
                    let (a, b) = range.split_once('-').ok_or_else(bad)?;
                    let (a, b): (u64, u64) =
                        (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                    if a > b {
                        return Err(bad());
                    }
                    Part::Rand(a, b)
                }
                _ => {
                    return Err(LoadError::Config(format!(
                        "{url}: unknown placeholder {{{inner}}}; expected {{seq}} or {{rand:A-B}}"
                    )));
                }
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        let fixed = match parts.as_slice() {
            [] => Some(PathAndQuery::from_static("/")),
            [Part::Lit(s)] => Some(
                PathAndQuery::try_from(s.as_str())
                    .map_err(|e| LoadError::Config(format!("{url}: invalid path ({e})")))?,
            ),
            _ => None,
        };
        // Check that an instance of the template is a valid path.
        let t = PathTemplate { parts, fixed };
        PathAndQuery::try_from(t.render(1).as_str())
            .map_err(|e| LoadError::Config(format!("{url}: invalid path ({e})")))?;
        Ok(t)
    }

    /// The template as it was written, placeholders and all (for reports).
    pub(crate) fn text(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.clone(),
                Part::Seq => "{seq}".to_string(),
                Part::Rand(a, b) => format!("{{rand:{a}-{b}}}"),
            })
            .collect()
    }

    pub(crate) fn render(&self, seq: u64) -> String {
        Part::render(&self.parts, seq)
    }

    pub(crate) fn instance(&self, seq: u64) -> PathAndQuery {
        match &self.fixed {
            Some(pq) => pq.clone(),
            // The template was checked at parse time; a rendered number cannot make it invalid.
            None => PathAndQuery::try_from(self.render(seq))
                .unwrap_or_else(|_| PathAndQuery::from_static("/")),
        }
    }
}
