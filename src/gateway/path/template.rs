//! The whole `google.api.http` path-template grammar (google/api/http.proto):
//!
//! ```text
//! Template = "/" Segments [ Verb ] ;
//! Segments = Segment { "/" Segment } ;
//! Segment  = "*" | "**" | LITERAL | Variable ;
//! Variable = "{" FieldPath [ "=" Segments ] "}" ;
//! FieldPath = IDENT { "." IDENT } ;
//! Verb     = ":" LITERAL ;
//! ```
//!
//! The router serves the templates matchit can express (literals, `{v}`, `{v=*}`, a final
//! `{v=**}`) through matchit; the rest — custom verbs, variables over several segments
//! (`{name=shelves/*/books/*}`), literals inside a variable — are parsed and matched here.
//! Matching follows grpc-gateway and Envoy's transcoder: `*` is one non-empty segment, `**` any
//! number of segments (one per template; the segments after it match the path's end:
//! `/v1/{name=**}/versions`, and Firestore's `/v1/{parent=.../documents/**}/{collection_id}`,
//! which Envoy's transcoder refuses: it allows only literals after `**`), a verb must match
//! exactly, and when
//! several templates match, the more literal one wins (segment by segment: literal, then `*`,
//! then `**`). A variable bound to one segment is percent-decoded whole; one bound to several
//! keeps `%2F` as it came (it stands for a `/` inside a segment), and its value is the whole
//! matched text, `shelves/1/books/2`.

/// One segment of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// Matches exactly this text.
    Lit(String),
    /// One segment.
    Star,
    /// Any number of segments (one per template).
    DoubleStar,
}

/// A parsed template: its segments, the variables over them, and the verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The segments, variables expanded into their own.
    pub segs: Vec<Seg>,
    /// Each variable: its field path and the range of `segs` it binds.
    pub vars: Vec<(String, std::ops::Range<usize>)>,
    /// The custom verb, without its colon.
    pub verb: Option<String>,
}

/// Parses a template; the error says what is wrong where.
pub(crate) fn parse(template: &str) -> Result<Template, String> {
    let bad = |what: &str| format!("path {template:?}: {what}");
    let rest = template
        .strip_prefix('/')
        .ok_or_else(|| bad("must start with '/'"))?;
    // The verb is after the last ':' that is outside braces.
    let (body, verb) = split_verb(rest);
    if verb.is_some_and(|v| v.is_empty() || v.contains(['/', '{', '}', '*'])) {
        return Err(bad("the verb after ':' must be a literal"));
    }
    let mut t = Template {
        segs: Vec::new(),
        vars: Vec::new(),
        verb: verb.map(str::to_string),
    };
    for part in split_top(body).map_err(|e| bad(&e))? {
        if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let (field, sub) = inner.split_once('=').unwrap_or((inner, "*"));
            if field.is_empty()
                || !field.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            {
                return Err(bad(&format!("{field:?} is not a field path")));
            }
            let start = t.segs.len();
            for s in sub.split('/') {
                t.segs.push(segment(s).map_err(|e| bad(&e))?);
            }
            t.vars.push((field.to_string(), start..t.segs.len()));
        } else {
            t.segs.push(segment(part).map_err(|e| bad(&e))?);
        }
    }
    // One `**` at most: the segments after it are then a fixed number, matched against the
    // path's end (Firestore's `{parent=.../documents/**}/{collection_id}`).
    if t.segs.iter().filter(|s| **s == Seg::DoubleStar).count() > 1 {
        return Err(bad(
            "more than one '**' (where one ends and the next starts is ambiguous)",
        ));
    }
    Ok(t)
}

/// `body` and the verb, split at the last ':' outside braces.
fn split_verb(rest: &str) -> (&str, Option<&str>) {
    let mut depth = 0i32;
    let mut at = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 => at = Some(i),
            _ => {}
        }
    }
    match at {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    }
}

/// The top-level segments of `body` (a `/` inside braces does not split).
fn split_top(body: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in body.char_indices() {
        match c {
            '{' if depth == 0 => depth = 1,
            '{' => return Err("nested '{'".into()),
            '}' if depth == 1 => depth = 0,
            '}' => return Err("'}' without '{'".into()),
            '/' if depth == 0 => {
                out.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'{' without '}'".into());
    }
    out.push(&body[start..]);
    Ok(out)
}

fn segment(s: &str) -> Result<Seg, String> {
    match s {
        "*" => Ok(Seg::Star),
        "**" => Ok(Seg::DoubleStar),
        "" => Err("an empty segment".into()),
        lit if lit.contains(['{', '}', '*', ':', '=']) => {
            Err(format!("segment {lit:?} is not a literal"))
        }
        lit => Ok(Seg::Lit(lit.to_string())),
    }
}

/// How specific a template is, for choosing among several that match: per segment 2 for a
/// literal, 1 for `*`, 0 for `**`; compared in order (the longer wins a tie of its prefix),
/// and a template with a verb above one without.
pub(crate) type Specificity = (Vec<u8>, bool);

impl Template {
    /// This template's [`Specificity`].
    pub(crate) fn specificity(&self) -> Specificity {
        let per = self
            .segs
            .iter()
            .map(|s| match s {
                Seg::Lit(_) => 2,
                Seg::Star => 1,
                Seg::DoubleStar => 0,
            })
            .collect();
        (per, self.verb.is_some())
    }

    /// The variables' values when `path` (as it came, percent-encoded) matches, else None.
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<String>> {
        let rest = path.strip_prefix('/')?;
        let body = match &self.verb {
            Some(v) => rest.strip_suffix(v.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        // Checked without allocating: most templates tried against a path do not match.
        let count = body.split('/').count();
        // `**` (at most one) takes `count - (segs - 1)` parts, maybe none; the segments after
        // it match the path's last parts.
        let deep = self.segs.iter().position(|s| *s == Seg::DoubleStar);
        let taken = match deep {
            Some(_) => (count + 1).checked_sub(self.segs.len())?,
            None if count == self.segs.len() => 0,
            None => return None,
        };
        // The path index where template segment `i` starts.
        let at = |i: usize| match deep {
            Some(d) if i > d => i - 1 + taken,
            _ => i,
        };
        for (i, seg) in self.segs.iter().enumerate() {
            if *seg == Seg::DoubleStar {
                continue;
            }
            let part = body.split('/').nth(at(i))?;
            match seg {
                Seg::Lit(l) if l != part => return None,
                Seg::Star if part.is_empty() => return None,
                _ => {}
            }
        }
        let parts: Vec<&str> = body.split('/').collect();
        let mut values = Vec::with_capacity(self.vars.len());
        for (_, range) in &self.vars {
            let (from, to) = (at(range.start), at(range.end));
            let whole = &parts[from.min(parts.len())..to.min(parts.len())];
            values.push(if range.len() == 1 && self.segs[range.start] == Seg::Star {
                decode_all(whole.first().copied().unwrap_or(""))
            } else {
                decode_keeping_slashes(&whole.join("/"))
            });
        }
        Some(values)
    }
}

/// Percent-decodes everything (a variable bound to one segment).
pub(crate) fn decode_all(s: &str) -> String {
    if s.contains('%') {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    } else {
        s.to_string()
    }
}

/// Percent-decodes all but `%2F` (a variable bound to several segments: an encoded slash stays
/// encoded, so that it is not confused with the slashes between the segments).
pub(crate) fn decode_keeping_slashes(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest
        .as_bytes()
        .windows(3)
        .position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'))
    {
        out.push_str(&decode_all(&rest[..i]));
        out.push_str(&rest[i..i + 3]);
        rest = &rest[i + 3..];
    }
    out.push_str(&decode_all(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_parses() {
        let t = parse("/v1/{name=publishers/*/books/*}:publish").unwrap();
        assert_eq!(
            t.segs,
            [
                Seg::Lit("v1".into()),
                Seg::Lit("publishers".into()),
                Seg::Star,
                Seg::Lit("books".into()),
                Seg::Star
            ]
        );
        assert_eq!(t.vars, [("name".to_string(), 1..5)]);
        assert_eq!(t.verb.as_deref(), Some("publish"));
        let t = parse("/v1/{book.name=shelves/*}/x/{rest=**}").unwrap();
        assert_eq!(t.vars[0], ("book.name".to_string(), 1..3));
        assert_eq!(t.vars[1], ("rest".to_string(), 4..5));
        assert_eq!(
            parse("/v1/books:search").unwrap().verb.as_deref(),
            Some("search")
        );
        for bad in [
            "v1/x",
            "/v1/{a",
            "/v1/a}",
            "/v1/{a{b}}",
            "/v1/x:",
            "/v1//x",
            "/v1/**/x/**",
            "/v1/{a=**}/{b=**}",
            "/v1/{}",
            "/v1/{a-b}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_binds_whole_text_and_decodes_as_the_spec_says() {
        let t = parse("/v1/{name=publishers/*/books/*}").unwrap();
        assert_eq!(
            t.matches("/v1/publishers/123/books/b%201").unwrap(),
            ["publishers/123/books/b 1"]
        );
        assert_eq!(
            t.matches("/v1/publishers/a%2Fb/books/c").unwrap(),
            ["publishers/a%2Fb/books/c"],
            "a multi-segment variable keeps %2F"
        );
        assert!(t.matches("/v1/publishers/123/books").is_none());
        assert!(
            t.matches("/v1/publishers//books/1").is_none(),
            "* is not empty"
        );
        let one = parse("/v1/users/{id}").unwrap();
        assert_eq!(
            one.matches("/v1/users/a%2Fb").unwrap(),
            ["a/b"],
            "one segment decodes all"
        );
        let verb = parse("/v1/{name=operations/*}:cancel").unwrap();
        assert_eq!(
            verb.matches("/v1/operations/7:cancel").unwrap(),
            ["operations/7"]
        );
        assert!(verb.matches("/v1/operations/7").is_none());
        assert!(verb.matches("/v1/operations/7:cancelled").is_none());
        let rest = parse("/files/{path=**}").unwrap();
        assert_eq!(rest.matches("/files/a/b/c").unwrap(), ["a/b/c"]);
        assert_eq!(rest.matches("/files/").unwrap(), [""]);
        // Literals after `**` match the path's end (Envoy's transcoder).
        let tail = parse("/v1/{name=projects/**}/versions:list").unwrap();
        assert_eq!(
            tail.matches("/v1/projects/a/b/versions:list").unwrap(),
            ["projects/a/b"]
        );
        assert_eq!(
            tail.matches("/v1/projects/versions:list").unwrap(),
            ["projects"]
        );
        assert!(tail.matches("/v1/projects/a/b/other:list").is_none());
        assert!(tail.matches("/v1/versions:list").is_none());
        // A variable after `**` (Firestore's): bound from the path's end.
        let fs = parse("/v1/{parent=projects/*/documents/**}/{collection_id}").unwrap();
        assert_eq!(
            fs.matches("/v1/projects/p/documents/rooms/r1/messages")
                .unwrap(),
            ["projects/p/documents/rooms/r1", "messages"]
        );
        assert_eq!(
            fs.matches("/v1/projects/p/documents/rooms").unwrap(),
            ["projects/p/documents", "rooms"]
        );
        assert!(fs.matches("/v1/projects/p/documents").is_none());
        let prefixed = parse("/v1/{x=strprefix/*}").unwrap();
        assert_eq!(
            prefixed.matches("/v1/strprefix/q").unwrap(),
            ["strprefix/q"]
        );
        assert!(prefixed.matches("/v1/other/q").is_none());
    }

    #[test]
    fn the_more_literal_template_is_more_specific() {
        let s = |t: &str| parse(t).unwrap().specificity();
        assert!(s("/v1/books/special") > s("/v1/books/{id}"));
        assert!(s("/v1/books/{id}") > s("/v1/{path=**}"));
        assert!(s("/v1/books:search") > s("/v1/books"));
    }

    #[test]
    fn slashes_stay_encoded_only_in_multi_segment_values() {
        assert_eq!(decode_keeping_slashes("a%2Fb%20c%2fd%41"), "a%2Fb c%2fdA");
        assert_eq!(decode_keeping_slashes("plain"), "plain");
        assert_eq!(decode_keeping_slashes("%"), "%");
        assert_eq!(decode_all("a%2Fb"), "a/b");
    }
}
