//! Fan-out aggregation, declared in config (not in Rust): one GET path answered by calling
//! several RPCs of the transcode upstream — in parallel, except that a part may depend on
//! another part's result (and run once per item of an array in it) — under one deadline. The
//! answer is one JSON document; a part that failed or missed the deadline is `null` and listed
//! in `_meta`, with `X-Gwbench-Completed: false`. All parts failing, or a required part
//! failing, is a 502 (504 when it was the deadline).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, StatusCode};
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::{Map, Value, json};
use tonic::Code;

use super::method::JsonOptions;
use crate::gateway::GwResponse;
use crate::gateway::config::AggregationConfig;
use crate::gateway::status::GwError;
use crate::gateway::upstream::pool::Upstream;

/// One call of an aggregation.
#[derive(Debug)]
struct Part {
    name: String,
    grpc_path: PathAndQuery,
    input: MessageDescriptor,
    output: MessageDescriptor,
    request: Map<String, Value>,
    depends_on: Option<String>,
    for_each: Option<String>,
    required: bool,
    timeout: Option<Duration>,
}

/// A configured aggregation, resolved against the descriptor set.
#[derive(Debug)]
pub struct Aggregation {
    /// Its name.
    pub name: String,
    /// The GET path it answers.
    pub path: String,
    timeout: Duration,
    parts: Vec<Part>,
}

/// The outcome of one part.
type PartResult = Result<Value, (String, bool)>; // Err((message, timed_out))

/// Looks up `a.b.0.c` in a JSON value.
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| match cur {
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        Value::Object(map) => map.get(seg),
        _ => None,
    })
}

/// Replaces every `{scope.path}` in `s` with its value from `scopes`; None if one is missing.
fn substitute(s: &str, scopes: &BTreeMap<&str, &Value>) -> Option<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}')?;
        out.push_str(&rest[..open]);
        let expr = &rest[open + 1..close];
        let (scope, path) = expr.split_once('.').unwrap_or((expr, ""));
        let base = scopes.get(scope)?;
        let value = if path.is_empty() {
            Some(*base)
        } else {
            lookup(base, path)
        }?;
        match value {
            Value::String(v) => out.push_str(v),
            Value::Null => return None,
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Refuses a request template whose placeholders could never be filled: an unclosed `{`, or
/// a scope other than `query`, the part's dependency, or `item` (with `for_each`). A misspelled
/// one would otherwise make every call of the part fail at run time.
fn check_placeholders(p: &crate::gateway::config::AggregationPart) -> Result<(), String> {
    for (field, v) in &p.request {
        let Value::String(template) = v else { continue };
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            let Some(len) = rest[open..].find('}') else {
                return Err(format!(
                    "request.{field}: {template:?} has an unclosed '{{'"
                ));
            };
            let expr = &rest[open + 1..open + len];
            let scope = expr.split_once('.').map_or(expr, |(s, _)| s);
            let known = scope == "query"
                || p.depends_on.as_deref() == Some(scope)
                || (scope == "item" && p.for_each.is_some());
            if !known {
                let mut scopes = vec!["query".to_string()];
                scopes.extend(p.depends_on.clone());
                if p.for_each.is_some() {
                    scopes.push("item".into());
                }
                return Err(format!(
                    "request.{field}: {{{expr}}} names no scope (known: {})",
                    scopes.join(", ")
                ));
            }
            rest = &rest[open + len + 1..];
        }
    }
    Ok(())
}

/// What every part's call of one request shares.
struct Ctx<'a> {
    /// The request's query parameters, as the `query` scope of placeholders.
    query: &'a Value,
    upstream: &'a Upstream,
    metadata: &'a http::HeaderMap,
    deadline_at: Instant,
    json: &'a JsonOptions,
}

impl Aggregation {
    /// Resolves the configured parts' RPCs in `pool` and checks their dependencies.
    pub fn new(cfg: &AggregationConfig, pool: &DescriptorPool) -> Result<Aggregation, String> {
        let at = |m: String| format!("aggregations.{}: {m}", cfg.name);
        let mut parts = Vec::new();
        for p in &cfg.parts {
            let (service, method) = p.rpc.rsplit_once('/').ok_or_else(|| {
                at(format!(
                    "part {}: rpc {:?} is not package.Service/Method",
                    p.name, p.rpc
                ))
            })?;
            let svc = pool
                .get_service_by_name(service)
                .ok_or_else(|| at(format!("part {}: no service {service}", p.name)))?;
            let m = svc
                .methods()
                .find(|m| m.name() == method)
                .ok_or_else(|| at(format!("part {}: {service} has no {method}", p.name)))?;
            if let Some(dep) = &p.depends_on
                && !cfg
                    .parts
                    .iter()
                    .any(|o| &o.name == dep && o.depends_on.is_none())
            {
                return Err(at(format!(
                    "part {}: depends_on {dep:?} must name a part without dependencies",
                    p.name
                )));
            }
            if p.for_each.is_some() && p.depends_on.is_none() {
                return Err(at(format!("part {}: for_each needs depends_on", p.name)));
            }
            check_placeholders(p).map_err(|m| at(format!("part {}: {m}", p.name)))?;
            parts.push(Part {
                name: p.name.clone(),
                grpc_path: PathAndQuery::try_from(format!("/{service}/{method}"))
                    .map_err(|e| at(e.to_string()))?,
                input: m.input(),
                output: m.output(),
                request: p.request.clone(),
                depends_on: p.depends_on.clone(),
                for_each: p.for_each.clone(),
                required: p.required,
                timeout: p.timeout.map(|t| t.0),
            });
        }
        Ok(Aggregation {
            name: cfg.name.clone(),
            path: cfg.path.clone(),
            timeout: cfg.timeout.0,
            parts,
        })
    }

    /// Its deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One call: the request built from the template, sent, and the answer as JSON.
    async fn call(
        &self,
        part: &Part,
        scopes: &BTreeMap<&str, &Value>,
        ctx: &Ctx<'_>,
    ) -> PartResult {
        let msg = self.build(part, scopes).map_err(|m| (m, false))?;
        self.send(part, &msg, ctx).await
    }

    /// The part's request: its template filled from `scopes`, as its input message.
    fn build(
        &self,
        part: &Part,
        scopes: &BTreeMap<&str, &Value>,
    ) -> Result<DynamicMessage, String> {
        let mut body = Map::new();
        for (k, v) in &part.request {
            let v = match v {
                Value::String(s) => Value::String(
                    substitute(s, scopes).ok_or_else(|| format!("cannot fill {k:?} from {s:?}"))?,
                ),
                other => other.clone(),
            };
            body.insert(k.clone(), v);
        }
        DynamicMessage::deserialize_with_options(
            part.input.clone(),
            Value::Object(body),
            &DeserializeOptions::new(),
        )
        .map_err(|e| format!("bad request for {}: {e}", part.input.full_name()))
    }

    /// Sends a built request within the part's share of the deadline; the answer as JSON.
    async fn send(&self, part: &Part, msg: &DynamicMessage, ctx: &Ctx<'_>) -> PartResult {
        let (upstream, metadata, deadline, json) =
            (ctx.upstream, ctx.metadata, ctx.deadline_at, ctx.json);
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = part.timeout.map_or(left, |t| t.min(left));
        if limit.is_zero() {
            return Err(("deadline reached before the call".into(), true));
        }
        let call = upstream.grpc_unary(
            &part.grpc_path,
            Bytes::from(msg.encode_to_vec()),
            metadata,
            Some(limit),
        );
        match tokio::time::timeout(limit, call).await {
            Err(_) => Err((
                format!("no answer within {}", humantime::format_duration(limit)),
                true,
            )),
            Ok(Err(s)) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                // The upstream gave up on the grpc-timeout it was sent (servers answer either).
                Err((
                    format!("no answer within {}", humantime::format_duration(limit)),
                    true,
                ))
            }
            Ok(Err(s)) => Err((
                format!(
                    "{}: {}",
                    crate::grpc::code_name(s.code() as i32),
                    s.message()
                ),
                false,
            )),
            Ok(Ok(reply)) => {
                let out = DynamicMessage::decode(part.output.clone(), reply.message)
                    .map_err(|e| (format!("undecodable answer: {e}"), false))?;
                out.serialize_with_options(serde_json::value::Serializer, &json.serialize)
                    .map_err(|e| (e.to_string(), false))
            }
        }
    }

    /// Runs every part and assembles the document.
    pub async fn run(
        &self,
        query: Option<&str>,
        upstream: &Upstream,
        request_id: &HeaderValue,
        deadline: Duration,
        json: &JsonOptions,
    ) -> GwResponse {
        let started = Instant::now();
        let deadline_at = started + deadline.min(self.timeout);
        let query_json: Value = Value::Object(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
                .collect(),
        );
        let mut metadata = http::HeaderMap::new();
        metadata.insert(crate::gateway::REQUEST_ID, request_id.clone());
        let ctx = Ctx {
            query: &query_json,
            upstream,
            metadata: &metadata,
            deadline_at,
            json,
        };
        // Wave 1's requests come from the client's query alone: one that cannot be built (a
        // parameter missing or malformed) is the client's error, 400, before any call.
        let scopes: BTreeMap<&str, &Value> = [("query", &query_json)].into_iter().collect();
        let mut first = Vec::new();
        for p in self.parts.iter().filter(|p| p.depends_on.is_none()) {
            match self.build(p, &scopes) {
                Ok(msg) => first.push((p, msg)),
                Err(m) => {
                    let message = format!("aggregation {}: part {}: {m}", self.name, p.name);
                    return GwError::grpc(Code::InvalidArgument, message).into_response();
                }
            }
        }
        let mut results = self.independent_parts(&ctx, first).await;
        self.dependent_parts(&ctx, &mut results).await;
        self.assemble(results, started)
    }

    /// Wave 1: the parts that depend on nothing, in parallel.
    async fn independent_parts(
        &self,
        ctx: &Ctx<'_>,
        first: Vec<(&Part, DynamicMessage)>,
    ) -> BTreeMap<String, PartResult> {
        let calls = first.iter().map(|(p, msg)| self.send(p, msg, ctx));
        let outcomes = futures_util::future::join_all(calls).await;
        first
            .iter()
            .zip(outcomes)
            .map(|((p, _), r)| (p.name.clone(), r))
            .collect()
    }

    /// Wave 2: the parts that depend on a wave-1 part (once per item with `for_each`), in
    /// parallel; a part whose dependency failed is missing.
    async fn dependent_parts(&self, ctx: &Ctx<'_>, results: &mut BTreeMap<String, PartResult>) {
        let mut jobs = Vec::new();
        for p in self.parts.iter().filter(|p| p.depends_on.is_some()) {
            let dep = p.depends_on.as_deref().unwrap_or_default();
            match results.get(dep) {
                Some(Ok(dep_value)) => {
                    let items = match &p.for_each {
                        None => vec![dep_value.clone()],
                        Some(path) => lookup(dep_value, path)
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                    };
                    jobs.push((p, dep_value.clone(), items));
                }
                _ => {
                    results.insert(p.name.clone(), Err((format!("{dep} is missing"), false)));
                }
            }
        }
        let calls = jobs
            .iter()
            .map(|(p, dep_value, items)| self.part_over_items(ctx, p, dep_value, items));
        let outcomes = futures_util::future::join_all(calls).await;
        for ((p, _, _), r) in jobs.iter().zip(outcomes) {
            results.insert(p.name.clone(), r);
        }
    }

    /// One dependent part: called once, or once per item of `for_each` (every item must
    /// succeed for the part to count).
    async fn part_over_items(
        &self,
        ctx: &Ctx<'_>,
        p: &Part,
        dep_value: &Value,
        items: &[Value],
    ) -> PartResult {
        let dep = p.depends_on.as_deref().unwrap_or_default();
        let each = items.iter().map(|item| {
            let scopes: BTreeMap<&str, &Value> =
                [("query", ctx.query), (dep, dep_value), ("item", item)]
                    .into_iter()
                    .collect();
            async move { self.call(p, &scopes, ctx).await }
        });
        let outs = futures_util::future::join_all(each).await;
        if p.for_each.is_none() {
            outs.into_iter()
                .next()
                .unwrap_or(Err(("nothing to call".into(), false)))
        } else {
            outs.into_iter()
                .collect::<Result<Vec<Value>, _>>()
                .map(Value::Array)
        }
    }

    fn assemble(&self, results: BTreeMap<String, PartResult>, started: Instant) -> GwResponse {
        let mut doc = Map::new();
        let (mut missing, mut errors) = (Vec::new(), Map::new());
        let mut required_failed: Option<bool> = None; // Some(timed_out)
        for p in &self.parts {
            match results.get(&p.name) {
                Some(Ok(v)) => {
                    doc.insert(p.name.clone(), v.clone());
                }
                other => {
                    let (msg, timed_out) = match other {
                        Some(Err((m, t))) => (m.clone(), *t),
                        _ => ("not run".to_string(), false),
                    };
                    doc.insert(p.name.clone(), Value::Null);
                    missing.push(Value::String(p.name.clone()));
                    errors.insert(p.name.clone(), Value::String(msg));
                    if p.required {
                        required_failed = Some(required_failed.unwrap_or(false) || timed_out);
                    }
                }
            }
        }
        let complete = missing.is_empty();
        let all_failed = missing.len() == self.parts.len();
        if all_failed || required_failed.is_some() {
            let timed_out = required_failed.unwrap_or(false);
            let (status, code) = if timed_out {
                (StatusCode::GATEWAY_TIMEOUT, Code::DeadlineExceeded)
            } else {
                (StatusCode::BAD_GATEWAY, Code::Unavailable)
            };
            let what = if all_failed {
                "every part failed"
            } else {
                "a required part failed"
            };
            return GwError::http(
                status,
                code,
                format!(
                    "aggregation {}: {what}: {}",
                    self.name,
                    Value::Object(errors)
                ),
            )
            .into_response();
        }
        doc.insert(
            "_meta".into(),
            json!({ "complete": complete, "missing": missing, "errors": errors, "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0 }),
        );
        let mut resp = crate::net::json(StatusCode::OK, Value::Object(doc).to_string())
            .map(http_body_util::Either::Left);
        resp.headers_mut().insert(
            "x-gwbench-completed",
            HeaderValue::from_static(if complete { "true" } else { "false" }),
        );
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_resolve_from_query_and_results() {
        let q = json!({"user_id": "42"});
        let r = json!({"products": [{"id": "7"}, {"id": "9"}]});
        let scopes: BTreeMap<&str, &Value> =
            [("query", &q), ("recommended", &r)].into_iter().collect();
        assert_eq!(substitute("{query.user_id}", &scopes).unwrap(), "42");
        assert_eq!(
            substitute("p-{recommended.products.1.id}", &scopes).unwrap(),
            "p-9"
        );
        assert!(substitute("{query.nope}", &scopes).is_none());
        assert!(substitute("{other.x}", &scopes).is_none());
    }

    #[test]
    fn placeholders_that_could_never_be_filled_are_refused_at_start() {
        let cfg = crate::gateway::config::GatewayConfig::default_config();
        let pool = crate::proto::descriptor_pool();
        let mut a = cfg.aggregations[0].clone();
        assert!(
            Aggregation::new(&a, pool).is_ok(),
            "the default dashboard is valid"
        );
        let part = a.parts.iter_mut().find(|p| p.name == "user").unwrap();
        part.request.insert("id".into(), "{qeury.user_id}".into());
        let err = Aggregation::new(&a, pool).unwrap_err();
        assert!(
            err.contains("part user") && err.contains("{qeury.user_id} names no scope"),
            "{err}"
        );
        let mut a = cfg.aggregations[0].clone();
        let part = a.parts.iter_mut().find(|p| p.name == "user").unwrap();
        part.request.insert("id".into(), "{query.user_id".into());
        assert!(Aggregation::new(&a, pool).unwrap_err().contains("unclosed"));
    }
}
