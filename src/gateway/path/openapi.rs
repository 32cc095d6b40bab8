//! An OpenAPI 3.1 document of the transcoded routes (`gateway --openapi FILE`), written from the
//! same route table the gateway serves (its templates read by the router's own grammar): every operation a rule binds (skipped rules are not
//! there), its path and query parameters, request body and responses as the proto3 JSON mapping
//! writes them (64-bit integers as strings, enums by name, well-known types in their JSON
//! forms), server streams as NDJSON or one array, `google.api.HttpBody` as raw bytes, the
//! configured error shape, the JWT scheme on mounts with `auth`, and descriptions from the
//! protos' comments where the descriptors kept them. Client-streaming and bidi RPCs are served
//! over WebSocket, which OpenAPI does not describe: they are listed under `x-websocket`.
//!
//! Like protoc-gen-openapiv2 (grpc-gateway's) with `expand_slashed_path_patterns`, a variable
//! over several segments (`{name=shelves/*}`) is expanded into them (`shelves/{shelf}`);
//! messages are components named by their full proto name.

use std::collections::{BTreeMap, BTreeSet};

use http::Method;
use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use super::template::Seg;
use crate::gateway::config::{ErrorFormat, GatewayConfig, StreamFormat};
use crate::gateway::transcode::method::{BodyRule, MethodRoute, RouteShape};

/// What a document needs of each route: (method, template, middleware stack, route).
pub type Routes<'a> = [(&'a Method, &'a str, usize, &'a std::sync::Arc<MethodRoute>)];

/// The whole document.
pub fn document(routes: &Routes<'_>, cfg: &GatewayConfig) -> Value {
    let mut doc = Doc {
        cfg,
        schemas: BTreeMap::new(),
        pending: Vec::new(),
    };
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut websocket = Vec::new();
    let mut clashes = Vec::new();
    let mut ids = BTreeSet::new();
    let mut tags: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut sorted: Vec<_> = routes.iter().collect();
    sorted.sort_by(|a, b| (a.1, a.0.as_str()).cmp(&(b.1, b.0.as_str())));
    for (method, template, stack, route) in sorted {
        if route.takes_stream() {
            websocket.push(json!({"path": template, "rpc": route.rpc}));
            continue;
        }
        if let Some((service, _)) = route.rpc.rsplit_once('.') {
            let pool = route.shape().input.parent_pool();
            let text = pool
                .get_service_by_name(service)
                .and_then(|s| comment(&s.parent_file(), s.path()));
            tags.insert(service.to_string(), text);
        }
        let (path, names) = openapi_path(template);
        let key = method.as_str().to_ascii_lowercase();
        if paths.get(&path).is_some_and(|p| p.contains_key(&key)) {
            // Two templates one OpenAPI path cannot tell apart (`**` in both): said, not lost.
            clashes.push(json!({"path": template, "rpc": route.rpc, "method": key,
                "reason": format!("the same OpenAPI path as another rule: {path}")}));
            continue;
        }
        let op = doc.operation(&names, *stack, route, &mut ids);
        paths.entry(path).or_default().insert(key, op);
    }
    doc.flush();
    let mut out = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "gwbench gateway",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The routes this gateway transcodes to gRPC, from their \
                google.api.http rules (proto3 JSON mapping).",
        },
        "tags": tags.into_iter().map(|(name, text)| match text {
            Some(t) => json!({"name": name, "description": t}),
            None => json!({"name": name}),
        }).collect::<Vec<_>>(),
        "paths": paths,
        "components": {"schemas": doc.schemas},
    });
    if doc.any_auth() {
        out["components"]["securitySchemes"] = json!({
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        });
    }
    if !websocket.is_empty() {
        out["x-websocket"] = Value::Array(websocket);
    }
    if !clashes.is_empty() {
        out["x-undocumented"] = Value::Array(clashes);
    }
    out
}

/// A path parameter of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PathParam {
    /// Its name in the OpenAPI path.
    name: String,
    /// Which of the rule's variables it is (by order), or None for an anonymous wildcard.
    var: Option<usize>,
    /// For a segment of a variable over several segments: that variable's name and pattern.
    part_of: Option<(String, String)>,
    /// `**`: the rest of the path, slashes included.
    rest: bool,
}

/// An OpenAPI path from a rule's template (parsed by the router's own grammar,
/// [`super::template`]), and its parameters in order. `{id}` and `{a.b}` stay; a variable over
/// several segments is expanded into them, each wildcard a parameter named after the literal
/// before it (`{name=shelves/*/books/*}` → `shelves/{shelf}/books/{book}`, as
/// protoc-gen-openapiv2's `expand_slashed_path_patterns` does): a client that fills one
/// `{name}` would percent-encode its slashes, which the gateway refuses. Anonymous `*` and `**`
/// become `{_wildcard1}`, …. A template the grammar refuses (never one the router served) is
/// kept as it is, without parameters.
fn openapi_path(template: &str) -> (String, Vec<PathParam>) {
    let Ok(t) = super::template::parse(template) else {
        return (template.to_string(), Vec::new());
    };
    let mut params: Vec<PathParam> = Vec::new();
    let mut parts: Vec<String> = Vec::new();
    let mut anonymous = 0;
    let mut i = 0;
    while i < t.segs.len() {
        let Some((var, (field, range))) =
            t.vars.iter().enumerate().find(|(_, (_, r))| r.start == i)
        else {
            match &t.segs[i] {
                Seg::Lit(text) => parts.push(text.clone()),
                wild => {
                    anonymous += 1;
                    let name = format!("_wildcard{anonymous}");
                    parts.push(format!("{{{name}}}"));
                    let rest = *wild == Seg::DoubleStar;
                    params.push(PathParam {
                        name,
                        var: None,
                        part_of: None,
                        rest,
                    });
                }
            }
            i += 1;
            continue;
        };
        let segs = &t.segs[range.clone()];
        if segs == [Seg::Star] {
            let name = unique(field, &params);
            parts.push(format!("{{{name}}}"));
            params.push(PathParam {
                name,
                var: Some(var),
                part_of: None,
                rest: false,
            });
        } else {
            let pattern: Vec<&str> = segs.iter().map(seg_text).collect();
            let pattern = pattern.join("/");
            let mut before = field.rsplit('.').next().unwrap_or(field).to_string();
            for s in segs {
                if let Seg::Lit(text) = s {
                    parts.push(text.clone());
                    before = singular(text);
                    continue;
                }
                let name = unique(&before, &params);
                parts.push(format!("{{{name}}}"));
                params.push(PathParam {
                    name,
                    var: Some(var),
                    part_of: Some((field.clone(), pattern.clone())),
                    rest: *s == Seg::DoubleStar,
                });
            }
        }
        i = range.end.max(i + 1);
    }
    let mut out = format!("/{}", parts.join("/"));
    if let Some(verb) = &t.verb {
        out.push(':');
        out.push_str(verb);
    }
    (out, params)
}

/// A segment as the template wrote it.
fn seg_text(s: &Seg) -> &str {
    match s {
        Seg::Lit(text) => text,
        Seg::Star => "*",
        Seg::DoubleStar => "**",
    }
}

/// `name`, or `name2`, `name3`… when a parameter already has it.
fn unique(name: &str, params: &[PathParam]) -> String {
    let mut out = name.to_string();
    let mut n = 1;
    while params.iter().any(|p| p.name == out) {
        n += 1;
        out = format!("{name}{n}");
    }
    out
}

/// `shelves` → `shelf`, `books` → `book`, `entries` → `entry`: a parameter's name from the
/// collection before it (a word that is not a plural stays).
fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix("ves") {
        format!("{stem}f")
    } else if let Some(stem) = word.strip_suffix('s').filter(|s| !s.ends_with('s')) {
        stem.to_string()
    } else {
        word.to_string()
    }
}

struct Doc<'a> {
    cfg: &'a GatewayConfig,
    /// Component schemas written so far, by full name.
    schemas: BTreeMap<String, Value>,
    /// Messages and enums referenced but not yet written.
    pending: Vec<Pending>,
}

enum Pending {
    Message(MessageDescriptor),
    Enum(prost_reflect::EnumDescriptor),
}

impl Doc<'_> {
    fn proto_names(&self) -> bool {
        self.cfg.transcode.proto_field_names
    }

    fn any_auth(&self) -> bool {
        self.cfg.transcode.mounts.iter().any(|m| m.auth)
    }

    /// One operation.
    fn operation(
        &mut self,
        names: &[PathParam],
        stack: usize,
        route: &MethodRoute,
        ids: &mut BTreeSet<String>,
    ) -> Value {
        let shape = route.shape();
        let mut id = route.rpc.clone();
        let mut n = 1;
        while !ids.insert(id.clone()) {
            n += 1;
            id = format!("{}_{n}", route.rpc);
        }
        let mut op = serde_json::Map::new();
        op.insert("operationId".into(), json!(id));
        if let Some((service, _)) = route.rpc.rsplit_once('.') {
            op.insert("tags".into(), json!([service]));
        }
        if let Some(text) = method_comment(shape.input, &route.rpc) {
            op.insert("description".into(), json!(text));
        }
        let mut params = self.path_parameters(names, shape.path_fields);
        if !matches!(shape.body, BodyRule::All) {
            let bound: Vec<Vec<String>> = shape
                .path_fields
                .iter()
                .map(|p| p.iter().map(|f| f.name().to_string()).collect())
                .collect();
            let body: Option<Vec<String>> = match shape.body {
                BodyRule::Field(p) => Some(p.iter().map(|f| f.name().to_string()).collect()),
                _ => None,
            };
            let mut prefix = Vec::new();
            let mut seen = vec![shape.input.full_name().to_string()];
            self.query_parameters(
                shape.input,
                &mut prefix,
                &mut seen,
                &bound,
                &body,
                &mut params,
            );
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = self.request_body(&shape) {
            op.insert("requestBody".into(), body);
        }
        op.insert("responses".into(), self.responses(route, stack));
        if self.mount_of(stack).is_some_and(|m| m.auth) {
            op.insert("security".into(), json!([{"bearerAuth": []}]));
        }
        Value::Object(op)
    }

    fn mount_of(&self, stack: usize) -> Option<&crate::gateway::config::Mount> {
        stack
            .checked_sub(1)
            .and_then(|i| self.cfg.transcode.mounts.get(i))
    }

    fn path_parameters(
        &mut self,
        params: &[PathParam],
        fields: &[Vec<FieldDescriptor>],
    ) -> Vec<Value> {
        let mut out = Vec::new();
        for p in params {
            let field = p
                .var
                .and_then(|v| fields.get(v))
                .and_then(|path| path.last());
            let mut schema = match (field, &p.part_of) {
                (Some(f), None) => self.kind_schema(&f.kind()),
                _ => json!({"type": "string"}),
            };
            if p.rest {
                schema["pattern"] = json!("^.+$");
            }
            let mut param =
                json!({"name": p.name, "in": "path", "required": true, "schema": schema});
            let text = match &p.part_of {
                Some((var, pattern)) => Some(format!(
                    "A segment of `{var}` (`{pattern}`): the field is sent as the whole matched \
                     path."
                )),
                None => field.and_then(field_comment),
            };
            if let Some(text) = text {
                param["description"] = json!(text);
            }
            out.push(param);
        }
        out
    }

    /// Query parameters: every scalar, enum, well-known scalar and repeated scalar reachable
    /// from the request, by dotted path (JSON names unless `proto_field_names`; the gateway
    /// takes either), except what the path or the body binds; messages are entered once per
    /// path (a type inside itself stops there).
    fn query_parameters(
        &mut self,
        msg: &MessageDescriptor,
        prefix: &mut Vec<FieldDescriptor>,
        seen: &mut Vec<String>,
        bound: &[Vec<String>],
        body: &Option<Vec<String>>,
        out: &mut Vec<Value>,
    ) {
        for f in msg.fields() {
            prefix.push(f.clone());
            let names: Vec<String> = prefix.iter().map(|p| p.name().to_string()).collect();
            let taken =
                bound.contains(&names) || body.as_ref().is_some_and(|b| names.starts_with(b));
            let nested = match f.kind() {
                Kind::Message(m) if !f.is_map() && !f.is_list() && !is_scalar_wkt(&m) => Some(m),
                _ => None,
            };
            match nested {
                _ if taken || f.is_map() => {}
                Some(m) if !seen.iter().any(|s| s == m.full_name()) => {
                    seen.push(m.full_name().to_string());
                    self.query_parameters(&m, prefix, seen, bound, body, out);
                    seen.pop();
                }
                Some(_) => {}
                None if matches!(f.kind(), Kind::Message(_)) && f.is_list() => {}
                None => {
                    let dotted: Vec<&str> = prefix
                        .iter()
                        .map(|p| match self.proto_names() {
                            true => p.name(),
                            false => p.json_name(),
                        })
                        .collect();
                    let mut param = json!({
                        "name": dotted.join("."), "in": "query", "required": false,
                        "schema": self.field_schema(&f),
                    });
                    if f.is_list() {
                        param["explode"] = json!(true);
                    }
                    if let Some(text) = field_comment(&f) {
                        param["description"] = json!(text);
                    }
                    out.push(param);
                }
            }
            prefix.pop();
        }
    }

    fn request_body(&mut self, shape: &RouteShape<'_>) -> Option<Value> {
        let schema = match shape.body {
            BodyRule::None => return None,
            BodyRule::All => self.message_schema(shape.input),
            BodyRule::Field(path) => self.field_schema(path.last()?),
        };
        let http_body = match shape.body {
            BodyRule::All => shape.input.full_name() == HTTP_BODY,
            BodyRule::Field(p) => p.last().is_some_and(
                |f| matches!(f.kind(), Kind::Message(m) if m.full_name() == HTTP_BODY),
            ),
            BodyRule::None => false,
        };
        let content = match http_body {
            true => json!({"*/*": {"schema": {"type": "string", "format": "binary"}}}),
            false => json!({"application/json": {"schema": schema}}),
        };
        Some(json!({"required": false, "content": content}))
    }

    fn responses(&mut self, route: &MethodRoute, stack: usize) -> Value {
        let shape = route.shape();
        let message = match shape.response_body {
            Some(f) => self.field_schema(f),
            None => self.message_schema(shape.output),
        };
        let ok = if route.answers_http_body() {
            json!({"description": "the response's bytes, with its content type",
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}})
        } else if route.streams() {
            match self.cfg.transcode.stream_format {
                StreamFormat::Ndjson => json!({
                    "description": "a stream: one line per message, {\"result\": …}; an error \
                        after the first message is the last line, {\"error\": …}",
                    "content": {"application/x-ndjson": {"schema": {
                        "type": "object",
                        "properties": {"result": message, "error": {}},
                    }}},
                }),
                StreamFormat::Array => json!({
                    "description": "a stream: one JSON array of the messages; an error after \
                        the first message is its last element, {\"error\": …}",
                    "content": {"application/json": {"schema": {"type": "array", "items": {}}}},
                }),
            }
        } else {
            json!({"description": "OK", "content": {"application/json": {"schema": message}}})
        };
        let error = |what: &str| {
            json!({"description": what,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/gwbench.Error"}}}})
        };
        let mut out = json!({
            "200": ok,
            "400": error("the request does not fit the rule (bad JSON, an unknown field or query parameter, a body on a rule without one)"),
            "default": error("an error: the upstream's gRPC status mapped to HTTP as grpc-gateway does, or the gateway's own (404, 413, 502, 503, 504…)"),
        });
        let mount = self.mount_of(stack);
        if mount.is_some_and(|m| m.auth) {
            out["401"] = error("no valid bearer token");
        }
        if mount.is_some_and(|m| m.rate_limit) {
            out["429"] = error("over the rate limit (Retry-After says when to retry)");
        }
        self.error_schema();
        out
    }

    /// `gwbench.Error`: the configured error shape (with `google`, the transcoded route's
    /// errors are google.rpc.Status JSON and the gateway's own keep its shape: either).
    fn error_schema(&mut self) {
        if self.schemas.contains_key("gwbench.Error") {
            return;
        }
        let any = json!({"type": "array", "items": wkt_schema("google.protobuf.Any")});
        let ours = json!({
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "the gRPC code's name, e.g. NOT_FOUND"},
                    "message": {"type": "string"},
                    "http_status": {"type": "integer"},
                    "details": any,
                },
            }},
        });
        let schema = match self.cfg.transcode.error_format {
            ErrorFormat::Gwbench => ours,
            ErrorFormat::Google => json!({"anyOf": [
                {
                    "type": "object", "required": ["code", "message"],
                    "description": "google.rpc.Status as JSON",
                    "properties": {
                        "code": {"type": "integer", "format": "int32"},
                        "message": {"type": "string"},
                        "details": any,
                    },
                },
                ours,
            ]}),
        };
        self.schemas.insert("gwbench.Error".into(), schema);
    }

    /// A field's schema: its kind's, as an array for a repeated field, an object for a map.
    fn field_schema(&mut self, f: &FieldDescriptor) -> Value {
        if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => self.kind_schema(&entry.map_entry_value_field().kind()),
                other => self.kind_schema(&other),
            };
            return json!({"type": "object", "additionalProperties": value});
        }
        let one = self.kind_schema(&f.kind());
        match f.is_list() {
            true => json!({"type": "array", "items": one}),
            false => one,
        }
    }

    /// A message as the whole request or response: a well-known type's JSON form, else a
    /// reference to its component.
    fn message_schema(&mut self, m: &MessageDescriptor) -> Value {
        self.kind_schema(&Kind::Message(m.clone()))
    }

    fn kind_schema(&mut self, kind: &Kind) -> Value {
        match kind {
            Kind::Double => number("double"),
            Kind::Float => number("float"),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => bytes(),
            Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => {
                json!({"type": "null"})
            }
            Kind::Enum(e) => {
                if !self.schemas.contains_key(e.full_name()) {
                    self.pending.push(Pending::Enum(e.clone()));
                }
                reference(e.full_name())
            }
            Kind::Message(m) if m.full_name().starts_with("google.protobuf.") && is_wkt(m) => {
                wkt_schema(m.full_name())
            }
            Kind::Message(m) => {
                if !self.schemas.contains_key(m.full_name()) {
                    self.pending.push(Pending::Message(m.clone()));
                }
                reference(m.full_name())
            }
        }
    }

    /// Writes every referenced component (and what those reference in turn).
    fn flush(&mut self) {
        while let Some(p) = self.pending.pop() {
            match p {
                Pending::Enum(e) => {
                    if self.schemas.contains_key(e.full_name()) {
                        continue;
                    }
                    let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                    let mut schema = json!({"type": "string", "enum": names});
                    if let Some(text) = comment(&e.parent_file(), e.path()) {
                        schema["description"] = json!(text);
                    }
                    self.schemas.insert(e.full_name().to_string(), schema);
                }
                Pending::Message(m) => {
                    if self.schemas.contains_key(m.full_name()) {
                        continue;
                    }
                    // Placed first, so that a message inside itself refers to it, not loops.
                    self.schemas.insert(m.full_name().to_string(), json!({}));
                    let schema = self.object_schema(&m);
                    self.schemas.insert(m.full_name().to_string(), schema);
                }
            }
        }
    }

    fn object_schema(&mut self, m: &MessageDescriptor) -> Value {
        let mut properties = serde_json::Map::new();
        for f in m.fields() {
            let name = match self.proto_names() {
                true => f.name(),
                false => f.json_name(),
            };
            let mut schema = self.field_schema(&f);
            if let Some(text) = field_comment(&f) {
                schema = with_description(schema, text);
            }
            properties.insert(name.to_string(), schema);
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if let Some(text) = comment(&m.parent_file(), m.path()) {
            schema["description"] = json!(text);
        }
        schema
    }
}

const HTTP_BODY: &str = "google.api.HttpBody";

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A `$ref` cannot carry siblings in every tool: a described reference is wrapped.
fn with_description(schema: Value, text: String) -> Value {
    match schema.get("$ref") {
        Some(_) => json!({"allOf": [schema], "description": text}),
        None => {
            let mut s = schema;
            s["description"] = json!(text);
            s
        }
    }
}

/// A float in proto3 JSON: a number, or one of the strings for what JSON numbers cannot hold.
fn number(format: &str) -> Value {
    json!({"anyOf": [
        {"type": "number", "format": format},
        {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
    ]})
}

fn bytes() -> Value {
    json!({"type": "string", "format": "byte", "contentEncoding": "base64"})
}

/// The well-known types with a JSON form of their own.
fn is_wkt(m: &MessageDescriptor) -> bool {
    !wkt_schema(m.full_name()).is_null()
}

/// A well-known type that a query parameter can carry as one string (a wrapper, Timestamp,
/// Duration, FieldMask).
fn is_scalar_wkt(m: &MessageDescriptor) -> bool {
    is_wkt(m)
        && !matches!(
            m.full_name(),
            "google.protobuf.Struct"
                | "google.protobuf.Value"
                | "google.protobuf.ListValue"
                | "google.protobuf.Any"
                | "google.protobuf.Empty"
        )
}

/// A well-known type's JSON form (null for a type without one).
fn wkt_schema(name: &str) -> Value {
    match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"})
        }
        "google.protobuf.FieldMask" => json!({"type": "string"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => bytes(),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.UInt32Value" => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        "google.protobuf.Int64Value" => json!({"type": "string", "format": "int64"}),
        "google.protobuf.UInt64Value" => json!({"type": "string", "format": "uint64"}),
        "google.protobuf.DoubleValue" => number("double"),
        "google.protobuf.FloatValue" => number("float"),
        "google.protobuf.Struct" => json!({"type": "object", "additionalProperties": true}),
        "google.protobuf.Value" => json!({"description": "any JSON value"}),
        "google.protobuf.ListValue" => json!({"type": "array", "items": {}}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Any" => json!({
            "type": "object", "required": ["@type"],
            "properties": {"@type": {"type": "string"}},
            "additionalProperties": true,
            "description": "a message of the type its @type names, with its fields \
                (a well-known type's JSON form under \"value\")",
        }),
        _ => Value::Null,
    }
}

/// The leading (else trailing) comment at `path` of `file`, when the descriptors kept source
/// info.
fn comment(file: &prost_reflect::FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let loc = info.location.iter().find(|l| l.path == path)?;
    let text = loc
        .leading_comments
        .as_deref()
        .filter(|t| !t.trim().is_empty())
        .or(loc.trailing_comments.as_deref())?;
    let text = text
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    (!text.is_empty()).then_some(text)
}

fn field_comment(f: &FieldDescriptor) -> Option<String> {
    comment(&f.parent_file(), f.path())
}

/// The comment of the RPC `rpc` (`pkg.Service.Method`), found through the request type's pool.
fn method_comment(input: &MessageDescriptor, rpc: &str) -> Option<String> {
    let (service, name) = rpc.rsplit_once('.')?;
    let service = input.parent_pool().get_service_by_name(service)?;
    let method = service.methods().find(|m| m.name() == name)?;
    comment(&method.parent_file(), method.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_become_openapi_paths() {
        let cases: &[(&str, &str, &[&str])] = &[
            ("/api/users/{id}", "/api/users/{id}", &["id"]),
            ("/v1/{name=shelves/*}", "/v1/shelves/{shelf}", &["shelf"]),
            (
                "/v1/{name=shelves/*/books/*}",
                "/v1/shelves/{shelf}/books/{book}",
                &["shelf", "book"],
            ),
            ("/v1/{a.b}/x:cancel", "/v1/{a.b}/x:cancel", &["a.b"]),
            (
                "/v1/{name=things/*}:run",
                "/v1/things/{thing}:run",
                &["thing"],
            ),
            (
                "/v1/{parent=projects/*}/entries/{project}",
                "/v1/projects/{project}/entries/{project2}",
                &["project", "project2"],
            ),
            ("/v1/{name=**}", "/v1/{name}", &["name"]),
            (
                "/v1/*/x/**",
                "/v1/{_wildcard1}/x/{_wildcard2}",
                &["_wildcard1", "_wildcard2"],
            ),
        ];
        for (template, path, names) in cases {
            let (p, n) = openapi_path(template);
            assert_eq!(&p, path, "{template}");
            let got: Vec<&str> = n.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(&got, names, "{template}");
        }
        let (_, n) = openapi_path("/v1/{name=shelves/*/books/*}");
        assert!(n.iter().all(|p| p.var == Some(0) && p.part_of.is_some()));
        assert_eq!(singular("entries"), "entry");
        assert_eq!(singular("address"), "address");
    }
}
