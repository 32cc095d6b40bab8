//! Routing (matchit): method + path template → a transcoded RPC or a proxy route. Transcoded
//! routes come from the `google.api.http` annotations of a descriptor set, so adding an
//! annotated RPC to a proto makes it routable with no Rust code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prost_reflect::{DescriptorPool, Value};
use serde::Serialize;

use super::template::Specificity;
use crate::gateway::transcode::method::MethodRoute;
use crate::proto::google::api::{HttpRule, http_rule::Pattern};

/// A proxy route's target.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// The configured prefix.
    pub prefix: String,
    /// Removed from the path before forwarding.
    pub strip: String,
    /// Index of the upstream.
    pub upstream: usize,
    /// Per-request deadline.
    pub timeout: Duration,
}

/// What a route leads to.
#[derive(Debug, Clone)]
pub enum Target {
    /// An annotated RPC, transcoded to gRPC.
    Transcode(Arc<MethodRoute>),
    /// A reverse-proxy route.
    Proxy(Arc<ProxyTarget>),
    /// A fan-out aggregation.
    Aggregate(Arc<crate::gateway::transcode::aggregate::Aggregation>),
}

/// A matched route.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    /// Where it leads.
    pub target: &'a Target,
    /// Index of its middleware stack.
    pub stack: usize,
    /// Its path template.
    pub route: &'a Arc<str>,
    /// Values of its path variables, in order, percent-decoded.
    pub params: Vec<String>,
}

/// Why no route was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No route has this path.
    NotFound,
    /// The path exists for other methods (the `Allow` list).
    MethodNotAllowed(String),
}

/// One configured route, for `/routes`.
#[derive(Debug, Clone, Serialize)]
pub struct RouteInfo {
    /// HTTP method, or `*`.
    pub method: String,
    /// Path template.
    pub path: String,
    /// `transcode`, `proxy` or `aggregate`.
    pub kind: &'static str,
    /// The RPC or the upstream.
    pub target: String,
}

/// An annotated rule the gateway cannot serve, skipped (the others are served); `/routes` lists
/// it. With `[transcode] strict = true` (or `gateway --strict`) it is an error at start instead.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The RPC, `package.Service.Method`.
    pub rpc: String,
    /// The rule, `GET /v1/...` (or `-` when the annotation itself could not be read).
    pub rule: String,
    /// Why it cannot be served.
    pub reason: String,
}

/// Where and how annotated RPCs are mounted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mount<'a> {
    /// Prepended to every annotated path ("" keeps them as annotated).
    pub prefix: &'a str,
    /// Only these RPCs (full names), when set.
    pub only: Option<&'a [String]>,
    /// A rule that cannot be served is an error instead of a warning.
    pub strict: bool,
}

/// A route's target, the index of the middleware stack in front of it, and its path template
/// (the `route` label of metrics).
type Bound = (Target, usize, Arc<str>);

#[derive(Debug, Default)]
struct Entry {
    methods: Vec<(Method, Bound)>,
    any: Option<Bound>,
    /// How specific its path is, against the templates only `template` matches.
    specificity: Specificity,
}

/// A matchit path's [`Specificity`]: literal segments 2, `{p}` 1, a catch-all `{*p}` 0.
fn matchit_specificity(path: &str) -> Specificity {
    let per = path
        .trim_start_matches('/')
        .split('/')
        .map(|seg| match seg.strip_prefix('{') {
            Some(rest) if rest.starts_with('*') => 0,
            Some(_) => 1,
            None => 2,
        })
        .collect();
    (per, false)
}

/// The route table, built once.
#[derive(Debug)]
pub struct Router {
    paths: matchit::Router<usize>,
    entries: Vec<Entry>,
    info: Vec<RouteInfo>,
    skipped: Vec<Skipped>,
    /// Templates matchit cannot hold (verbs, multi-segment variables), matched by `template`.
    extended: Vec<ExtRoute>,
}

/// A transcoded route whose template only `template` can match.
#[derive(Debug)]
struct ExtRoute {
    method: Method,
    template: super::template::Template,
    bound: Bound,
}

impl ExtRoute {
    fn matched(&self, params: Vec<String>) -> RouteMatch<'_> {
        let (target, stack, route) = &self.bound;
        RouteMatch {
            target,
            stack: *stack,
            route,
            params,
        }
    }
}

/// A path template translated for matchit: the matchit path and the bound variables in order.
fn translate(template: &str) -> Result<(String, Vec<String>), String> {
    if !template.starts_with('/') {
        return Err(format!("path {template:?} must start with '/'"));
    }
    if template
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') && !last.starts_with('{'))
    {
        return Err(format!(
            "path {template:?}: custom verbs (':verb') are not supported"
        ));
    }
    let mut out = String::new();
    let mut vars = Vec::new();
    let segments: Vec<&str> = template[1..].split('/').collect();
    let mut anon = 0;
    for (i, seg) in segments.iter().enumerate() {
        out.push('/');
        let last = i + 1 == segments.len();
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (name, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
            match pattern {
                "*" => out.push_str(&format!("{{p{}}}", vars.len())),
                // A multi-segment value keeps `%2F` encoded: named apart (`q`) for `at`.
                "**" if last => out.push_str(&format!("{{*q{}}}", vars.len())),
                _ => {
                    return Err(format!(
                        "path {template:?}: variable pattern {{{inner}}} is not supported (use {{name}} or a final {{name=**}})"
                    ));
                }
            }
            vars.push(name.to_string());
        } else if *seg == "*" {
            out.push_str(&format!("{{a{anon}}}"));
            anon += 1;
        } else if *seg == "**" && last {
            out.push_str(&format!("{{*a{anon}}}"));
        } else if seg.contains(['{', '}', '*']) {
            return Err(format!(
                "path {template:?}: segment {seg:?} is not supported"
            ));
        } else {
            out.push_str(seg);
        }
    }
    Ok((out, vars))
}

fn method_of(pattern: &Pattern) -> Result<(Method, &str), String> {
    Ok(match pattern {
        Pattern::Get(p) => (Method::GET, p),
        Pattern::Put(p) => (Method::PUT, p),
        Pattern::Post(p) => (Method::POST, p),
        Pattern::Delete(p) => (Method::DELETE, p),
        Pattern::Patch(p) => (Method::PATCH, p),
        Pattern::Custom(c) => (
            Method::from_bytes(c.kind.as_bytes())
                .map_err(|_| format!("custom method {:?} is not an HTTP method", c.kind))?,
            &c.path,
        ),
    })
}

impl Router {
    /// An empty table.
    pub fn new() -> Self {
        Router {
            paths: matchit::Router::new(),
            entries: Vec::new(),
            info: Vec::new(),
            skipped: Vec::new(),
            extended: Vec::new(),
        }
    }

    fn entry(
        &mut self,
        matchit_path: &str,
        index: &mut HashMap<String, usize>,
    ) -> Result<usize, String> {
        if let Some(i) = index.get(matchit_path) {
            return Ok(*i);
        }
        let i = self.entries.len();
        self.paths
            .insert(matchit_path, i)
            .map_err(|e| format!("route {matchit_path:?} cannot be added: {e}"))?;
        self.entries.push(Entry {
            specificity: matchit_specificity(matchit_path),
            ..Entry::default()
        });
        index.insert(matchit_path.to_string(), i);
        Ok(i)
    }

    /// Adds every annotated RPC of `pool` (and its additional bindings) under `prefix` (""
    /// keeps the annotated paths), served through middleware stack `stack`. A rule that cannot
    /// be served is skipped with a warning naming the RPC and the reason (see [`Skipped`]), or,
    /// with `strict`, is the error.
    pub fn add_annotated(
        &mut self,
        pool: &DescriptorPool,
        mount: &Mount<'_>,
        stack: usize,
        index: &mut HashMap<String, usize>,
    ) -> Result<usize, String> {
        let Some(ext) = pool.get_extension_by_name("google.api.http") else {
            return Ok(0); // the descriptor set has no HTTP annotations at all
        };
        let mut added = 0;
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&ext)
                    || mount
                        .only
                        .is_some_and(|o| !o.iter().any(|r| r == method.full_name()))
                {
                    continue;
                }
                let value = options.get_extension(&ext);
                let Value::Message(rule) = value.as_ref() else {
                    continue;
                };
                let rule: HttpRule = match rule.transcode_to() {
                    Ok(rule) => rule,
                    Err(e) => {
                        self.skip(
                            mount,
                            method.full_name(),
                            "-",
                            format!("bad http rule: {e}"),
                        )?;
                        continue;
                    }
                };
                let mut rules = vec![rule.clone()];
                rules.extend(rule.additional_bindings.iter().cloned());
                for r in rules {
                    let Some(pattern) = &r.pattern else { continue };
                    match self.add_rule(&method, &r, pattern, mount.prefix, stack, index) {
                        Ok(()) => added += 1,
                        Err((rule, reason)) => {
                            self.skip(mount, method.full_name(), &rule, reason)?;
                        }
                    }
                }
            }
        }
        Ok(added)
    }

    /// Notes a rule that cannot be served (a warning), or fails when the mount is strict.
    fn skip(
        &mut self,
        mount: &Mount<'_>,
        rpc: &str,
        rule: &str,
        reason: String,
    ) -> Result<(), String> {
        if mount.strict {
            return Err(format!(
                "{rpc}: {rule}: {reason} (strict: every annotated rule must be served)"
            ));
        }
        tracing::warn!(rpc, rule, %reason, "annotated rule skipped: the gateway cannot serve it");
        self.skipped.push(Skipped {
            rpc: rpc.to_string(),
            rule: rule.to_string(),
            reason,
        });
        Ok(())
    }

    /// Adds one rule of `method`; on failure, the rule as text and why.
    fn add_rule(
        &mut self,
        method: &prost_reflect::MethodDescriptor,
        r: &HttpRule,
        pattern: &Pattern,
        prefix: &str,
        stack: usize,
        index: &mut HashMap<String, usize>,
    ) -> Result<(), (String, String)> {
        let (http_method, template) = method_of(pattern).map_err(|e| ("-".to_string(), e))?;
        let template = format!("{prefix}{template}");
        let rule = format!("{http_method} {template}");
        let fail = |e: String| (rule.clone(), e);
        let (path, vars) = match translate(&template) {
            Ok(t) => t,
            // Beyond matchit (a verb, a multi-segment variable): the full grammar.
            Err(_) => return self.add_extended(method, r, http_method, template, stack),
        };
        let route = MethodRoute::new(method, &r.body, &r.response_body, &vars).map_err(fail)?;
        let i = self.entry(&path, index).map_err(fail)?;
        if self.entries[i]
            .methods
            .iter()
            .any(|(m, _)| *m == http_method)
        {
            return Err(fail(format!("{http_method} {template} is bound twice")));
        }
        let bound = self.bind(&http_method, &template, route, stack);
        self.entries[i].methods.push((http_method, bound));
        Ok(())
    }

    /// Adds a rule only the full grammar can match (see [`super::template`]).
    fn add_extended(
        &mut self,
        method: &prost_reflect::MethodDescriptor,
        r: &HttpRule,
        http_method: Method,
        template: String,
        stack: usize,
    ) -> Result<(), (String, String)> {
        let rule = format!("{http_method} {template}");
        let fail = |e: String| (rule.clone(), e);
        let parsed = super::template::parse(&template).map_err(fail)?;
        let names: Vec<String> = parsed.vars.iter().map(|(n, _)| n.clone()).collect();
        let route = MethodRoute::new(method, &r.body, &r.response_body, &names).map_err(fail)?;
        if self
            .extended
            .iter()
            .any(|e| e.method == http_method && e.template == parsed)
        {
            return Err(fail(format!("{http_method} {template} is bound twice")));
        }
        let bound = self.bind(&http_method, &template, route, stack);
        self.extended.push(ExtRoute {
            method: http_method,
            template: parsed,
            bound,
        });
        Ok(())
    }

    /// Lists a transcoded route for `/routes` and makes what a match of it leads to.
    fn bind(&mut self, method: &Method, template: &str, route: MethodRoute, stack: usize) -> Bound {
        self.info.push(RouteInfo {
            method: method.to_string(),
            path: template.to_string(),
            kind: "transcode",
            target: route.rpc.clone(),
        });
        (
            Target::Transcode(Arc::new(route)),
            stack,
            Arc::from(template),
        )
    }

    /// The annotated rules that were skipped.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// Adds a proxy route for every method under `target.prefix`, served through stack `stack`.
    pub fn add_proxy(
        &mut self,
        target: ProxyTarget,
        upstream_name: &str,
        stack: usize,
        index: &mut HashMap<String, usize>,
    ) -> Result<(), String> {
        let prefix = target.prefix.clone();
        let target = Target::Proxy(Arc::new(target));
        for path in [prefix.clone(), format!("{prefix}{{*rest}}")] {
            let i = self.entry(&path, index)?;
            self.entries[i].any = Some((
                target.clone(),
                stack,
                Arc::from(format!("{prefix}*").as_str()),
            ));
        }
        self.info.push(RouteInfo {
            method: "*".into(),
            path: format!("{prefix}*"),
            kind: "proxy",
            target: upstream_name.into(),
        });
        Ok(())
    }

    /// Adds an aggregation's GET path, served through stack `stack`.
    pub fn add_aggregate(
        &mut self,
        agg: Arc<crate::gateway::transcode::aggregate::Aggregation>,
        stack: usize,
        index: &mut HashMap<String, usize>,
    ) -> Result<(), String> {
        let (path, vars) = translate(&agg.path)?;
        if !vars.is_empty() {
            return Err(format!(
                "aggregation {}: its path takes no variables (use query parameters)",
                agg.name
            ));
        }
        let i = self.entry(&path, index)?;
        if self.entries[i]
            .methods
            .iter()
            .any(|(m, _)| m == Method::GET)
        {
            return Err(format!(
                "aggregation {}: GET {} is already routed",
                agg.name, agg.path
            ));
        }
        self.info.push(RouteInfo {
            method: "GET".into(),
            path: agg.path.clone(),
            kind: "aggregate",
            target: agg.name.clone(),
        });
        let label: Arc<str> = Arc::from(agg.path.as_str());
        self.entries[i]
            .methods
            .push((Method::GET, (Target::Aggregate(agg), stack, label)));
        Ok(())
    }

    /// [`Router::at`] for a request that may be a WebSocket upgrade: an upgrade is always a
    /// GET, so at a path where GET is not bound it reaches the POST rule of a client-streaming
    /// or bidi RPC (those are served over WebSocket only).
    pub fn at_request(
        &self,
        method: &Method,
        path: &str,
        upgrade: bool,
    ) -> Result<RouteMatch<'_>, RouteError> {
        match self.at(method, path) {
            Err(RouteError::MethodNotAllowed(allow)) if upgrade && method == Method::GET => {
                match self.at(&Method::POST, path) {
                    Ok(m) if matches!(m.target, Target::Transcode(r) if r.takes_stream()) => Ok(m),
                    _ => Err(RouteError::MethodNotAllowed(allow)),
                }
            }
            other => other,
        }
    }

    /// Finds the route for `method` and `path`: its target, its stack, and the values of the
    /// bound variables in order, percent-decoded (see `template` for the rules). Among the
    /// matchit table and the templates it cannot hold, the more specific match wins.
    pub fn at(&self, method: &Method, path: &str) -> Result<RouteMatch<'_>, RouteError> {
        let simple = self.simple_at(method, path);
        if self.extended.is_empty() {
            return simple.map(|(m, _)| m);
        }
        let mut best: Option<(Specificity, &ExtRoute, Vec<String>)> = None;
        let mut allow: Vec<&str> = Vec::new();
        for r in &self.extended {
            let Some(values) = r.template.matches(path) else {
                continue;
            };
            if r.method != *method {
                allow.push(r.method.as_str());
                continue;
            }
            let sp = r.template.specificity();
            if best.as_ref().is_none_or(|(b, _, _)| sp > *b) {
                best = Some((sp, r, values));
            }
        }

        match (simple, best) {
            (Ok((s, theirs)), Some((sp, r, values))) => {
                if *theirs >= sp {
                    Ok(s)
                } else {
                    Ok(r.matched(values))
                }
            }
            (Ok((s, _)), None) => Ok(s),
            (Err(_), Some((_, r, values))) => Ok(r.matched(values)),
            (Err(RouteError::MethodNotAllowed(a)), None) => {
                allow.extend(a.split(", "));
                allow.dedup();
                Err(RouteError::MethodNotAllowed(allow.join(", ")))
            }
            (Err(RouteError::NotFound), None) if !allow.is_empty() => {
                allow.dedup();
                Err(RouteError::MethodNotAllowed(allow.join(", ")))
            }
            (Err(e), None) => Err(e),
        }
    }

    /// The match in the matchit table, and how specific its path is.
    fn simple_at(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(RouteMatch<'_>, &Specificity), RouteError> {
        let m = self.paths.at(path).map_err(|_| RouteError::NotFound)?;
        let entry = &self.entries[*m.value];
        let (target, stack, label) = match entry.methods.iter().find(|(mm, _)| mm == method) {
            Some((_, (t, stack, label))) => (t, *stack, label),
            None => match &entry.any {
                Some((t, stack, label)) => (t, *stack, label),
                None => {
                    let allow: Vec<&str> = entry.methods.iter().map(|(m, _)| m.as_str()).collect();
                    return Err(RouteError::MethodNotAllowed(allow.join(", ")));
                }
            },
        };
        let mut params = Vec::with_capacity(m.params.len());
        for (k, v) in m.params.iter() {
            if k.starts_with('p') {
                params.push(super::template::decode_all(v));
            } else if k.starts_with('q') {
                params.push(super::template::decode_keeping_slashes(v));
            }
        }
        let matched = RouteMatch {
            target,
            stack,
            route: label,
            params,
        };
        Ok((matched, &entry.specificity))
    }

    /// Every route, for `/routes`.
    pub fn routes(&self) -> &[RouteInfo] {
        &self.info
    }

    /// Every transcoded route: its method, its path template, its middleware stack's index
    /// (0: none; i: mount i - 1) and the route, in the order they were added.
    pub fn transcoded(&self) -> Vec<(&Method, &str, usize, &Arc<MethodRoute>)> {
        let bound = self
            .entries
            .iter()
            .flat_map(|e| e.methods.iter().map(|(m, b)| (m, b)))
            .chain(self.extended.iter().map(|e| (&e.method, &e.bound)));
        bound
            .filter_map(|(m, (target, stack, template))| match target {
                Target::Transcode(route) => Some((m, &**template, *stack, route)),
                _ => None,
            })
            .collect()
    }
}

impl Default for Router {
    fn default() -> Self {
        Router::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_translate() {
        assert_eq!(
            translate("/api/users/{id}").unwrap(),
            ("/api/users/{p0}".into(), vec!["id".into()])
        );
        assert_eq!(
            translate("/v1/{parent.id}/items/{item=*}").unwrap(),
            (
                "/v1/{p0}/items/{p1}".into(),
                vec!["parent.id".into(), "item".into()]
            )
        );
        assert_eq!(translate("/files/{path=**}").unwrap().0, "/files/{*q0}");
        assert!(translate("/v1/{name=shelves/*}").is_err());
        assert!(translate("/v1/things:batchGet").is_err());
        assert!(translate("v1/x").is_err());
    }

    #[test]
    fn the_embedded_protos_route() {
        let mut r = Router::new();
        let mut index = HashMap::new();
        let pool = crate::proto::descriptor_pool();
        let n = r
            .add_annotated(pool, &Mount::default(), 1, &mut index)
            .unwrap();
        assert_eq!(n, 11);
        let secure = Mount {
            prefix: "/secure",
            ..Mount::default()
        };
        r.add_annotated(pool, &secure, 2, &mut index).unwrap();
        let m = r.at(&Method::GET, "/secure/api/users/7").unwrap();
        assert_eq!(&**m.route, "/secure/api/users/{id}");
        assert_eq!((m.stack, m.params), (2, vec!["7".to_string()]));
        let RouteMatch {
            target: t,
            stack,
            params,
            ..
        } = r.at(&Method::GET, "/api/users/42").unwrap();
        assert_eq!(stack, 1);
        assert!(matches!(t, Target::Transcode(m) if m.rpc == "gwbench.v1.UserService.GetUser"));
        assert_eq!(params, ["42"]);
        // A static segment wins over a parameter.
        let RouteMatch {
            target: t, params, ..
        } = r.at(&Method::GET, "/api/products/search").unwrap();
        assert!(matches!(t, Target::Transcode(m) if m.rpc.ends_with("SearchProducts")));
        assert!(params.is_empty());
        assert!(matches!(
            r.at(&Method::POST, "/api/users").map(|m| m.target),
            Ok(Target::Transcode(_))
        ));
        assert_eq!(
            r.at(&Method::DELETE, "/api/users").err(),
            Some(RouteError::MethodNotAllowed("GET, POST".into()))
        );
        assert_eq!(
            r.at(&Method::GET, "/nope").err(),
            Some(RouteError::NotFound)
        );
        let params = r
            .at(&Method::GET, "/api/orders/ord-1-2%20x")
            .unwrap()
            .params;
        assert_eq!(params, ["ord-1-2 x"]);
    }

    // ===== property test: the table against a naive matcher =====

    /// A template segment: a literal, `{v}` (one segment) or, last, `{v=**}` (the rest).
    #[derive(Debug, Clone, PartialEq)]
    enum Seg {
        Lit(&'static str),
        Var,
        Rest,
    }

    fn template_of(segs: &[Seg]) -> String {
        segs.iter()
            .enumerate()
            .map(|(i, s)| match s {
                Seg::Lit(l) => format!("/{l}"),
                Seg::Var => format!("/{{v{i}}}"),
                Seg::Rest => format!("/{{v{i}=**}}"),
            })
            .collect()
    }

    /// How `segs` matches `path` (segments, no empty ones), naively: the bound values, and a
    /// rank per segment (literal 2, variable 1, rest 0) for precedence; None if it does not.
    fn naive(segs: &[Seg], path: &[&str]) -> Option<(Vec<u8>, Vec<String>)> {
        let mut rank = Vec::new();
        let mut values = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            match s {
                Seg::Lit(l) => (path.get(i)? == l).then_some(())?,
                Seg::Var => values.push(path.get(i)?.to_string()),
                Seg::Rest => {
                    (path.len() > i).then_some(())?;
                    values.push(path[i..].join("/"));
                    rank.push(0);
                    return Some((rank, values));
                }
            }
            rank.push(if matches!(s, Seg::Lit(_)) { 2 } else { 1 });
        }
        (path.len() == segs.len()).then_some((rank, values))
    }

    fn segs() -> impl proptest::strategy::Strategy<Value = Vec<Seg>> {
        use proptest::prelude::*;
        let seg = prop_oneof![
            3 => prop::sample::select(vec!["a", "b", "c"]).prop_map(Seg::Lit),
            2 => Just(Seg::Var),
        ];
        (prop::collection::vec(seg, 1..4), any::<bool>()).prop_map(|(mut v, rest)| {
            if rest {
                v.push(Seg::Rest);
            }
            v
        })
    }

    proptest::proptest! {
        /// Routes made of literals, variables and a final `**`: the table answers what a naive
        /// matcher with "literal beats variable beats rest" precedence answers, values included.
        #[test]
        fn the_table_agrees_with_a_naive_matcher(
            table in proptest::collection::vec(segs(), 1..8),
            paths in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::sample::select(vec!["a", "b", "c", "x", "y"]), 1..6),
                1..20),
        ) {
            let mut r = Router::new();
            let mut index = HashMap::new();
            let mut kept: Vec<Vec<Seg>> = Vec::new();
            for segs in table {
                let template = template_of(&segs);
                let (path, _) = translate(&template).unwrap();
                // Tables the router refuses (a conflict, a path bound twice) are left out.
                let Ok(i) = r.entry(&path, &mut index) else { continue };
                if !r.entries[i].methods.is_empty() {
                    continue;
                }
                let target = Target::Proxy(Arc::new(ProxyTarget {
                    prefix: template.clone(),
                    strip: String::new(),
                    upstream: kept.len(),
                    timeout: std::time::Duration::from_secs(1),
                }));
                r.entries[i].methods.push((Method::GET, (target, 0, Arc::from(template.as_str()))));
                kept.push(segs);
            }
            for path in paths {
                let wire = format!("/{}", path.join("/"));
                let want = kept
                    .iter()
                    .enumerate()
                    .filter_map(|(k, segs)| naive(segs, &path).map(|(rank, v)| (rank, k, v)))
                    .max_by(|a, b| a.0.cmp(&b.0));
                let got = r.at(&Method::GET, &wire).ok().map(|m| match m.target {
                    Target::Proxy(p) => (p.upstream, m.params),
                    _ => unreachable!("only proxy targets here"),
                });
                proptest::prop_assert_eq!(
                    got,
                    want.map(|(_, k, v)| (k, v)),
                    "{} in {:?}",
                    wire,
                    kept.iter().map(|s| template_of(s)).collect::<Vec<_>>()
                );
            }
        }
    }
}
