//! REST/JSON ⇄ gRPC for one annotated RPC, at run time from its descriptors (prost-reflect):
//! the request message is built from path parameters, query parameters (scalars, repeated
//! `?a=1&a=2`, nested `a.b=x`) and the JSON body as the rule's `body` says (`*` or a field);
//! the response is rendered as proto3 JSON. No per-method Rust code.

use bytes::Bytes;
use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    SerializeOptions, Value,
};
use tonic::Code;

use crate::gateway::status::GwError;

/// Where the JSON body goes.
#[derive(Debug, Clone)]
pub enum BodyRule {
    /// No body (query parameters fill the message).
    None,
    /// `body: "*"`: the body is the whole request message.
    All,
    /// `body: "field"` or `body: "a.b"`: the body is that (possibly nested) field.
    Field(Vec<FieldDescriptor>),
}

/// JSON mapping options, from the config.
#[derive(Debug, Clone)]
pub struct JsonOptions {
    /// Rendering of responses.
    pub serialize: SerializeOptions,
    /// Whether `serialize` uses proto field names (it has no getter).
    pub proto_names: bool,
    /// Whether `serialize` writes fields that hold their default value.
    pub emit_defaults: bool,
    /// Unknown JSON fields and query parameters are an error.
    pub reject_unknown: bool,
    /// The shape of errors.
    pub errors: crate::gateway::config::ErrorFormat,
    /// The shape of server-streamed answers.
    pub stream: crate::gateway::config::StreamFormat,
}

/// One annotated RPC binding, ready to transcode.
#[derive(Debug, Clone)]
pub struct MethodRoute {
    /// `/package.Service/Method`.
    pub grpc_path: PathAndQuery,
    /// The RPC's full name, for `/routes`.
    pub rpc: String,
    input: MessageDescriptor,
    output: MessageDescriptor,
    body: BodyRule,
    /// Field paths bound to the path's parameters, in order.
    path_fields: Vec<Vec<FieldDescriptor>>,
    response_body: Option<FieldDescriptor>,
    /// Whether a DoubleValue, FloatValue or Value (Struct, ListValue) can occur in the
    /// response (see `nonfinite`).
    float_wrappers: bool,
    /// Whether a google.protobuf.Any can occur in the response (see `opaque`).
    any_fields: bool,
    /// The response is a google.api.HttpBody: its bytes are the HTTP body, as they are.
    http_body_out: bool,
    /// The RPC answers with a stream of messages.
    server_streaming: bool,
    /// Whether the RPC takes a stream of request messages (over WebSocket only).
    client_streaming: bool,
    /// The response written straight from its bytes (`crate::proto::wire_to_json`), with json names
    /// and with proto names; prepared on first use, None for types it does not write.
    plans: [std::sync::OnceLock<Option<crate::proto::wire_to_json::Plan>>; 2],
    /// The request written straight from JSON (`crate::proto::json_to_wire`); prepared on first use,
    /// None for types it does not write.
    request_plan: std::sync::OnceLock<Option<RequestPlan>>,
}

/// A route's rule, as [`MethodRoute::shape`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct RouteShape<'a> {
    /// The request message.
    pub input: &'a MessageDescriptor,
    /// The response message.
    pub output: &'a MessageDescriptor,
    /// Where the HTTP body goes.
    pub body: &'a BodyRule,
    /// The field paths the path's variables bind, in order.
    pub path_fields: &'a [Vec<FieldDescriptor>],
    /// The response field answered (`response_body`), when the rule names one.
    pub response_body: Option<&'a FieldDescriptor>,
}

/// A request type's JSON → wire plan, with the rule's body field and path variables
/// resolved in it.
#[derive(Debug, Clone)]
struct RequestPlan {
    plan: crate::proto::json_to_wire::Plan,
    /// The body field's path (for `body: "a.b"`).
    body: Option<crate::proto::json_to_wire::Path>,
    /// Each path variable's field, None where the plan cannot append one.
    path_fields: Vec<Option<crate::proto::json_to_wire::Path>>,
}

/// The name of the message that carries a raw HTTP body.
const HTTP_BODY: &str = "google.api.HttpBody";

/// Resolves a dotted field path (proto or json names) in `desc`.
fn field_path(desc: &MessageDescriptor, dotted: &str) -> Option<Vec<FieldDescriptor>> {
    let mut out = Vec::new();
    let mut current = desc.clone();
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let f = current
            .get_field_by_name(part)
            .or_else(|| current.get_field_by_json_name(part))?;
        if parts.peek().is_some() {
            current = f.kind().as_message()?.clone();
        }
        out.push(f);
    }
    Some(out)
}

impl MethodRoute {
    /// Binds `method` with the rule's `body`, `response_body` and the variables of its path
    /// template (`vars`, dotted field paths in order). Errors name the RPC and the field.
    pub fn new(
        method: &MethodDescriptor,
        body: &str,
        response_body: &str,
        vars: &[String],
    ) -> Result<Self, String> {
        let input = method.input();
        let rpc = method.full_name().to_string();
        let body = match body {
            "" => BodyRule::None,
            "*" => BodyRule::All,
            name => BodyRule::Field(field_path(&input, name).ok_or_else(|| {
                format!("{rpc}: body field {name:?} is not in {}", input.full_name())
            })?),
        };
        let path_fields = vars
            .iter()
            .map(|v| {
                field_path(&input, v).ok_or_else(|| {
                    format!(
                        "{rpc}: path variable {v:?} is not a field of {}",
                        input.full_name()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let response_body = match response_body {
            "" => None,
            name => Some(
                method
                    .output()
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("{rpc}: response_body {name:?} is not a field"))?,
            ),
        };
        let grpc_path = PathAndQuery::try_from(format!(
            "/{}/{}",
            method.parent_service().full_name(),
            method.name()
        ))
        .map_err(|e| format!("{rpc}: {e}"))?;
        Ok(MethodRoute {
            grpc_path,
            rpc,
            input,
            float_wrappers: nonfinite::reaches_float_wrapper(&method.output()),
            any_fields: opaque::reaches_any(&method.output()),
            http_body_out: method.output().full_name() == HTTP_BODY && response_body.is_none(),
            output: method.output(),
            server_streaming: method.is_server_streaming(),
            client_streaming: method.is_client_streaming(),
            plans: Default::default(),
            request_plan: Default::default(),
            body,
            path_fields,
            response_body,
        })
    }

    /// Whether the RPC answers with a stream of messages.
    pub fn streams(&self) -> bool {
        self.server_streaming
    }

    /// What the route's rule says, for documents written from the routes (OpenAPI): the
    /// request and response types, where the body goes, the fields the path binds (in order),
    /// and the response field the rule answers with.
    pub fn shape(&self) -> RouteShape<'_> {
        RouteShape {
            input: &self.input,
            output: &self.output,
            body: &self.body,
            path_fields: &self.path_fields,
            response_body: self.response_body.as_ref(),
        }
    }

    /// Whether the RPC takes a stream of messages (client-streaming or bidi): an HTTP request
    /// is one message, so these are served over WebSocket only.
    pub fn takes_stream(&self) -> bool {
        self.client_streaming
    }

    /// Builds and encodes the request message (a JSON body).
    pub fn encode_request(
        &self,
        params: &[String],
        query: Option<&str>,
        body: &[u8],
        opts: &JsonOptions,
    ) -> Result<Bytes, GwError> {
        self.encode_request_with(params, query, body, None, opts)
    }

    /// Builds and encodes the request message; when the body goes into a google.api.HttpBody
    /// (the whole request, or the body field), the body is taken as raw bytes with
    /// `content_type`, not parsed as JSON.
    pub fn encode_request_with(
        &self,
        params: &[String],
        query: Option<&str>,
        body: &[u8],
        content_type: Option<&str>,
        opts: &JsonOptions,
    ) -> Result<Bytes, GwError> {
        if matches!(self.body, BodyRule::None) && carries_data(body) {
            return Err(bad(format!(
                "{}: this route takes no body (its google.api.http rule has no `body`), and \
                 the request's {} bytes ({}) would be dropped: send the fields as query \
                 parameters",
                self.rpc,
                body.len(),
                content_type.unwrap_or("no content type")
            )));
        }
        let raw = self.http_body_target();
        if raw.is_none()
            && let Some(bytes) = self.encode_from_plan(params, query, body, opts)
        {
            return Ok(bytes);
        }
        self.encode_dynamic(params, query, body, content_type, opts)
    }

    /// The request built as a `DynamicMessage` (the reference path): every input the plan
    /// declines, raw HttpBody bodies, and every error's text. Public for the benchmark that
    /// sets it beside the plan.
    pub fn encode_dynamic(
        &self,
        params: &[String],
        query: Option<&str>,
        body: &[u8],
        content_type: Option<&str>,
        opts: &JsonOptions,
    ) -> Result<Bytes, GwError> {
        let raw = self.http_body_target();
        let de = DeserializeOptions::new().deny_unknown_fields(opts.reject_unknown);
        let mut msg = match &self.body {
            _ if raw.is_some() => {
                let mut msg = DynamicMessage::new(self.input.clone());
                let target = raw.unwrap_or_default();
                set_http_body(&mut msg, &target, body, content_type)?;
                msg
            }
            BodyRule::All if !body.iter().all(u8::is_ascii_whitespace) => {
                parse_json(&self.input, body, &de)?
            }
            BodyRule::Field(path) if !body.iter().all(u8::is_ascii_whitespace) => {
                // The body is the value of one (nested) field: parse it as
                // {"a": {"b": <body>}}.
                let names: usize = path.iter().map(|f| f.name().len() + 5).sum();
                let mut wrapped = Vec::with_capacity(body.len() + names);
                for f in path {
                    wrapped.extend_from_slice(b"{\"");
                    wrapped.extend_from_slice(f.name().as_bytes());
                    wrapped.extend_from_slice(b"\":");
                }
                wrapped.extend_from_slice(body);
                wrapped.extend(std::iter::repeat_n(b'}', path.len()));
                parse_json(&self.input, &wrapped, &de)?
            }
            _ => DynamicMessage::new(self.input.clone()),
        };
        for (path, raw) in self.path_fields.iter().zip(params) {
            set_path(&mut msg, path, raw)?;
        }
        if !matches!(self.body, BodyRule::All)
            && let Some(q) = query
        {
            for (key, value) in form_urlencoded::parse(q.as_bytes()) {
                let Some(path) = field_path(&self.input, &key) else {
                    if opts.reject_unknown {
                        return Err(bad(format!(
                            "unknown query parameter {key:?} for {}",
                            self.input.full_name()
                        )));
                    }
                    continue;
                };
                // A field the path or the body binds keeps that value: the parameter is
                // ignored, as grpc-gateway and Envoy do.
                let bound_by_path = self.path_fields.iter().any(|p| p == &path);
                let bound_by_body = matches!(&self.body, BodyRule::Field(b) if path.starts_with(b));
                if bound_by_path || bound_by_body {
                    continue;
                }
                set_path(&mut msg, &path, &value)?;
            }
        }
        Ok(Bytes::from(msg.encode_to_vec()))
    }

    /// The request written straight from the JSON, the path and the query by the request
    /// plan; None when there is no plan or it declines (bad input included): the
    /// `DynamicMessage` path then answers, with its own error.
    fn encode_from_plan(
        &self,
        params: &[String],
        query: Option<&str>,
        body: &[u8],
        opts: &JsonOptions,
    ) -> Option<Bytes> {
        let rp = self
            .request_plan
            .get_or_init(|| {
                let plan = crate::proto::json_to_wire::Plan::new(&self.input)?;
                let body = match &self.body {
                    BodyRule::Field(path) => Some(plan.path(path)?),
                    _ => None,
                };
                let path_fields = self.path_fields.iter().map(|p| plan.path(p)).collect();
                Some(RequestPlan {
                    plan,
                    body,
                    path_fields,
                })
            })
            .as_ref()?;
        let mut out = Vec::with_capacity(body.len() + 16);
        let blank = body.iter().all(u8::is_ascii_whitespace);
        match (&self.body, &rp.body) {
            (BodyRule::All, _) if !blank => rp.plan.write(body, opts.reject_unknown, &mut out)?,
            (BodyRule::Field(_), Some(field)) if !blank => {
                rp.plan
                    .write_field(field, body, opts.reject_unknown, &mut out)?
            }
            _ => {}
        }
        // After the body: on the wire the later value wins, as set_path's does.
        for ((fields, path), raw) in self.path_fields.iter().zip(&rp.path_fields).zip(params) {
            let value = text_value(fields, raw)?;
            rp.plan.write_value(path.as_ref()?, &value, &mut out)?;
        }
        if !matches!(self.body, BodyRule::All)
            && let Some(q) = query
        {
            for (key, raw) in form_urlencoded::parse(q.as_bytes()) {
                let Some(path) = field_path(&self.input, &key) else {
                    if opts.reject_unknown {
                        return None;
                    }
                    continue;
                };
                let bound_by_path = self.path_fields.iter().any(|p| p == &path);
                let bound_by_body = matches!(&self.body, BodyRule::Field(b) if path.starts_with(b));
                if bound_by_path || bound_by_body {
                    continue;
                }
                let value = text_value(&path, &raw)?;
                rp.plan
                    .write_value(&rp.plan.path(&path)?, &value, &mut out)?;
            }
        }
        Some(Bytes::from(out))
    }

    /// Where a raw body goes: Some(path) when the request (empty path) or the body field (its
    /// path) is a google.api.HttpBody.
    fn http_body_target(&self) -> Option<Vec<FieldDescriptor>> {
        match &self.body {
            BodyRule::All if self.input.full_name() == HTTP_BODY => Some(Vec::new()),
            BodyRule::Field(path) => match path.last().map(FieldDescriptor::kind) {
                Some(Kind::Message(m))
                    if m.full_name() == HTTP_BODY && !path[path.len() - 1].is_list() =>
                {
                    Some(path.clone())
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the answer is raw bytes (a google.api.HttpBody response).
    pub fn answers_http_body(&self) -> bool {
        self.http_body_out
    }

    /// A google.api.HttpBody response as the HTTP body and its content type.
    pub fn render_http_body(&self, bytes: &[u8]) -> Result<(Bytes, Option<String>), GwError> {
        let msg = DynamicMessage::decode(self.output.clone(), bytes).map_err(|e| {
            GwError::grpc(
                Code::Internal,
                format!("{}: undecodable HttpBody: {e}", self.rpc),
            )
        })?;
        let data = match msg.get_field_by_name("data").as_deref() {
            Some(Value::Bytes(b)) => b.clone(),
            _ => Bytes::new(),
        };
        let content_type = match msg.get_field_by_name("content_type").as_deref() {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok((data, content_type))
    }

    /// An error's typed details (a serialized google.rpc.Status from grpc-status-details-bin)
    /// as JSON: each `Any` with its `@type`, or, when its type is not in the descriptor set,
    /// `{"@type", "value": base64}`. Nothing when the bytes are not a Status.
    pub fn render_details(&self, bytes: &[u8]) -> Vec<serde_json::Value> {
        let pool = self.output.parent_pool();
        let Some(desc) = pool.get_message_by_name("google.rpc.Status") else {
            return Vec::new();
        };
        let Ok(status) = DynamicMessage::decode(desc, bytes) else {
            return Vec::new();
        };
        let Some(Value::List(items)) = status.get_field_by_name("details").map(|v| v.into_owned())
        else {
            return Vec::new();
        };
        items
            .iter()
            .filter_map(Value::as_message)
            .map(|any| {
                serde::Serialize::serialize(any, serde_json::value::Serializer)
                    .unwrap_or_else(|_| opaque_any(any))
            })
            .collect()
    }

    /// Decodes the response message and renders it as JSON (or only its `response_body`
    /// field when the rule names one).
    pub fn render_response(&self, bytes: &[u8], opts: &JsonOptions) -> Result<Vec<u8>, GwError> {
        // Straight from the wire bytes when the plan can; else (and for what it leaves) through
        // a DynamicMessage, which answers exactly as it always did.
        if self.response_body.is_none() && !opts.emit_defaults {
            let plan = self.plans[usize::from(opts.proto_names)].get_or_init(|| {
                crate::proto::wire_to_json::Plan::new(&self.output, opts.proto_names)
            });
            if let Some(plan) = plan {
                let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
                if plan.write(bytes, &mut out).is_some() {
                    return Ok(out);
                }
            }
        }
        let internal = |e: String| GwError::grpc(Code::Internal, format!("{}: {e}", self.rpc));
        let mut msg = DynamicMessage::decode(self.output.clone(), bytes)
            .map_err(|e| internal(format!("upstream sent an undecodable response: {e}")))?;
        if self.float_wrappers && nonfinite::present(&msg) {
            nonfinite::values_to_text(&mut msg);
        }
        // An Any whose type the descriptors lack cannot be written by the serializer: it is
        // set aside and put back in its raw form, {"@type", "value": base64}.
        let unknown = match self.any_fields {
            true => opaque::take_unknown(&mut msg, opts.proto_names),
            false => Vec::new(),
        };
        let nonfinite = self.float_wrappers && nonfinite::present(&msg);
        let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
        match &self.response_body {
            None if !nonfinite && unknown.is_empty() => msg
                .serialize_with_options(&mut serde_json::Serializer::new(&mut out), &opts.serialize)
                .map_err(|e| internal(e.to_string()))?,
            // A non-finite DoubleValue/FloatValue would come out as null (prost-reflect writes
            // wrappers as bare numbers, serde_json writes NaN as null): rendered via a value
            // tree and mended, only when there is one; likewise for an unknown Any.
            None => {
                let mut tree = msg
                    .serialize_with_options(serde_json::value::Serializer, &opts.serialize)
                    .map_err(|e| internal(e.to_string()))?;
                if nonfinite {
                    nonfinite::mend(&msg, &mut tree, opts.proto_names);
                }
                opaque::put_back(&mut tree, unknown);
                serde_json::to_writer(&mut out, &tree).map_err(|e| internal(e.to_string()))?;
            }
            Some(f) => {
                let all = opts.serialize.clone().skip_default_fields(false);
                let mut whole = msg
                    .serialize_with_options(serde_json::value::Serializer, &all)
                    .map_err(|e| internal(e.to_string()))?;
                if nonfinite {
                    nonfinite::mend(&msg, &mut whole, opts.proto_names);
                }
                opaque::put_back(&mut whole, unknown);
                let key = if opts.proto_names {
                    f.name()
                } else {
                    f.json_name()
                };
                serde_json::to_writer(&mut out, whole.get(key).unwrap_or(&serde_json::Value::Null))
                    .map_err(|e| internal(e.to_string()))?;
            }
        }
        Ok(out)
    }
}

impl JsonOptions {
    /// Options from the config's switches.
    pub fn new(proto_names: bool, emit_defaults: bool, reject_unknown: bool) -> Self {
        JsonOptions {
            serialize: SerializeOptions::new()
                .use_proto_field_name(proto_names)
                .skip_default_fields(!emit_defaults),
            proto_names,
            emit_defaults,
            reject_unknown,
            errors: crate::gateway::config::ErrorFormat::default(),
            stream: crate::gateway::config::StreamFormat::default(),
        }
    }
}

/// Non-finite numbers in `google.protobuf.DoubleValue` / `FloatValue`, which the proto3 JSON
/// mapping writes as "NaN", "Infinity" and "-Infinity" (as it does for plain double fields).
mod nonfinite {
    use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

    /// A message whose rendering is a bare number that may not be finite: the float wrappers,
    /// and google.protobuf.Value (its `number_value`), inside Struct and ListValue too.
    fn is_float_wrapper(m: &MessageDescriptor) -> bool {
        matches!(
            m.full_name(),
            "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" | "google.protobuf.Value"
        )
    }

    /// Whether a message of type `m` can hold a float wrapper anywhere (fields, lists, maps;
    /// not inside `Any`).
    pub(super) fn reaches_float_wrapper(m: &MessageDescriptor) -> bool {
        super::reaches(m, &is_float_wrapper)
    }

    /// The wrapper's value when it is not finite.
    fn wrapped(v: &Value) -> Option<f64> {
        let Value::Message(w) = v else { return None };
        wrapped_message(w)
    }

    /// [`wrapped`] for a message: also the whole response's (a DoubleValue answer).
    fn wrapped_message(w: &DynamicMessage) -> Option<f64> {
        if !is_float_wrapper(&w.descriptor()) {
            return None;
        }
        // The wrappers' `value` is field 1; Value's `number_value` field 2 (when it is the one
        // set of its oneof).
        let number = if w.descriptor().full_name() == "google.protobuf.Value" {
            2
        } else {
            1
        };
        if !w.has_field_by_number(number) {
            return None;
        }
        let x = match w.get_field_by_number(number)?.as_ref() {
            Value::F64(x) => *x,
            Value::F32(x) => f64::from(*x),
            _ => return None,
        };
        (!x.is_finite()).then_some(x)
    }

    /// Whether `msg` holds a non-finite float wrapper.
    pub(super) fn present(msg: &DynamicMessage) -> bool {
        wrapped_message(msg).is_some() || msg.fields().any(|(_, v)| value_present(v))
    }

    fn value_present(v: &Value) -> bool {
        match v {
            Value::Message(m) => present(m),
            Value::List(items) => items.iter().any(value_present),
            Value::Map(map) => map.values().any(value_present),
            _ => false,
        }
    }

    fn text(x: f64) -> serde_json::Value {
        serde_json::Value::String(
            if x.is_nan() {
                "NaN"
            } else if x > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            }
            .to_string(),
        )
    }

    /// Writes the non-finite wrappers of `msg` into its rendering `tree` as strings.
    pub(super) fn mend(msg: &DynamicMessage, tree: &mut serde_json::Value, proto_names: bool) {
        if let Some(x) = wrapped_message(msg) {
            *tree = text(x); // the whole answer is the wrapper: a bare value
            return;
        }
        for (f, v) in msg.fields() {
            let key = if proto_names { f.name() } else { f.json_name() };
            if let Some(slot) = tree.get_mut(key) {
                mend_value(v, slot, proto_names);
            }
        }
    }

    /// Rewrites every google.protobuf.Value in `msg` whose number is not finite as the string
    /// proto3 JSON writes for it (prost-reflect refuses to serialize such a Value at all).
    pub(super) fn values_to_text(msg: &mut DynamicMessage) {
        if msg.descriptor().full_name() == "google.protobuf.Value" {
            let number = msg
                .has_field_by_name("number_value")
                .then(|| msg.get_field_by_name("number_value"))
                .flatten()
                .and_then(|v| v.as_f64())
                .filter(|x| !x.is_finite());
            if let Some(x) = number
                && let serde_json::Value::String(t) = text(x)
            {
                msg.set_field_by_name("string_value", Value::String(t));
            }
            return;
        }
        for (_, v) in msg.fields_mut() {
            value_to_text(v);
        }
    }

    fn value_to_text(v: &mut Value) {
        match v {
            Value::Message(m) => values_to_text(m),
            Value::List(items) => items.iter_mut().for_each(value_to_text),
            Value::Map(map) => map.values_mut().for_each(value_to_text),
            _ => {}
        }
    }

    fn mend_value(v: &Value, slot: &mut serde_json::Value, proto_names: bool) {
        if let Some(x) = wrapped(v) {
            *slot = text(x);
            return;
        }
        match (v, slot) {
            (Value::Message(m), slot) => mend(m, slot, proto_names),
            (Value::List(items), serde_json::Value::Array(slots)) => {
                for (item, s) in items.iter().zip(slots) {
                    mend_value(item, s, proto_names);
                }
            }
            (Value::Map(map), serde_json::Value::Object(slots)) => {
                for (k, item) in map {
                    let key = match k {
                        MapKey::Bool(b) => b.to_string(),
                        MapKey::I32(n) => n.to_string(),
                        MapKey::I64(n) => n.to_string(),
                        MapKey::U32(n) => n.to_string(),
                        MapKey::U64(n) => n.to_string(),
                        MapKey::String(s) => s.clone(),
                    };
                    if let Some(s) = slots.get_mut(&key) {
                        mend_value(item, s, proto_names);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Puts a raw body and its content type into the google.api.HttpBody at `path` of `msg` (`msg`
/// itself when the path is empty).
fn set_http_body(
    msg: &mut DynamicMessage,
    path: &[FieldDescriptor],
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(), GwError> {
    let mut current = msg;
    for f in path {
        let Value::Message(inner) = current.get_field_mut(f) else {
            return Err(bad(format!("field {} is not a message", f.name())));
        };
        current = inner;
    }
    current.set_field_by_name("data", Value::Bytes(Bytes::copy_from_slice(body)));
    if let Some(ct) = content_type {
        current.set_field_by_name("content_type", Value::String(ct.to_string()));
    }
    Ok(())
}

/// Whether a body sent to a rule without one holds anything: not when empty, blank or an empty
/// JSON object (`{}`, which clients send for "nothing"). Refused rather than dropped when it
/// does (Envoy's transcoder refuses too; grpc-gateway parses form bodies into fields): the rule
/// says where each field comes from, and data the upstream never sees would be lost silently.
fn carries_data(body: &[u8]) -> bool {
    let text = body.trim_ascii();
    !(text.is_empty()
        || text
            .strip_prefix(b"{")
            .and_then(|t| t.strip_suffix(b"}"))
            .is_some_and(|t| t.trim_ascii().is_empty()))
}

/// Whether a message of type `m` is, or can hold anywhere (fields, lists, maps; not inside an
/// `Any`'s bytes), a message `hit` picks.
fn reaches(m: &MessageDescriptor, hit: &dyn Fn(&MessageDescriptor) -> bool) -> bool {
    fn walk(
        m: &MessageDescriptor,
        hit: &dyn Fn(&MessageDescriptor) -> bool,
        seen: &mut std::collections::HashSet<String>,
    ) -> bool {
        if hit(m) {
            return true;
        }
        if !seen.insert(m.full_name().to_string()) {
            return false;
        }
        m.fields().any(|f| match f.kind() {
            Kind::Message(inner) => walk(&inner, hit, seen),
            _ => false,
        })
    }
    walk(m, hit, &mut std::collections::HashSet::new())
}

/// Responses holding an `Any` of a type the descriptors lack: prost-reflect refuses to write
/// them at all, so each such Any is taken out (its place holds a Duration Any, a type every
/// gateway pool has) and its raw form written into the rendering where it was.
mod opaque {

    use prost_reflect::{DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value};

    const ANY: &str = "google.protobuf.Any";
    const PLACEHOLDER: &str = "type.googleapis.com/google.protobuf.Duration";

    /// One step into a rendering: an object's key or an array's index.
    #[derive(Debug, Clone)]
    pub(super) enum Step {
        Key(String),
        Index(usize),
    }

    /// Where an unknown Any was, and its raw form.
    pub(super) type Found = Vec<(Vec<Step>, serde_json::Value)>;

    /// Whether a message of type `m` can hold an Any (fields, lists, maps).
    pub(super) fn reaches_any(m: &MessageDescriptor) -> bool {
        super::reaches(m, &|m| m.full_name() == ANY)
    }

    /// Takes every Any of an unknown type out of `msg` (see the module).
    pub(super) fn take_unknown(msg: &mut DynamicMessage, proto_names: bool) -> Found {
        let mut found = Vec::new();
        take(msg, proto_names, &mut Vec::new(), &mut found);
        found
    }

    fn take(msg: &mut DynamicMessage, proto_names: bool, at: &mut Vec<Step>, found: &mut Found) {
        if msg.descriptor().full_name() == ANY {
            let url = match msg.get_field_by_number(1).as_deref() {
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            let name = url.rsplit('/').next().unwrap_or_default();
            if msg
                .descriptor()
                .parent_pool()
                .get_message_by_name(name)
                .is_none()
            {
                found.push((at.clone(), super::opaque_any(msg)));
                msg.set_field_by_number(1, Value::String(PLACEHOLDER.into()));
                msg.set_field_by_number(2, Value::Bytes(Default::default()));
            }
            return;
        }
        // Only message-valued fields can hold an Any: scalars are not walked (nor named).
        let fields: Vec<_> = msg
            .fields()
            .filter(|(f, _)| matches!(f.kind(), prost_reflect::Kind::Message(_)))
            .map(|(f, _)| f)
            .collect();
        for f in fields {
            let key = if proto_names { f.name() } else { f.json_name() };
            at.push(Step::Key(key.to_string()));
            let depth = at.len();
            match msg.get_field_mut(&f) {
                Value::Message(m) => take(m, proto_names, at, found),
                Value::List(items) => {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Value::Message(m) = item {
                            at.push(Step::Index(i));
                            take(m, proto_names, at, found);
                            at.truncate(depth);
                        }
                    }
                }
                Value::Map(map) => {
                    for (k, item) in map.iter_mut() {
                        if let Value::Message(m) = item {
                            at.push(Step::Key(key_text(k)));
                            take(m, proto_names, at, found);
                            at.truncate(depth);
                        }
                    }
                }
                _ => {}
            }
            at.truncate(depth - 1);
        }
    }

    /// A map key as the rendering writes it (JSON object keys are strings).
    fn key_text(k: &MapKey) -> String {
        match k {
            MapKey::Bool(b) => b.to_string(),
            MapKey::I32(x) => x.to_string(),
            MapKey::I64(x) => x.to_string(),
            MapKey::U32(x) => x.to_string(),
            MapKey::U64(x) => x.to_string(),
            MapKey::String(s) => s.clone(),
        }
    }

    /// Writes each raw form where its Any was.
    pub(super) fn put_back(tree: &mut serde_json::Value, found: Found) {
        for (path, raw) in found {
            let mut slot = Some(&mut *tree);
            for step in &path {
                slot = slot.and_then(|v| match step {
                    Step::Key(k) => v.get_mut(k.as_str()),
                    Step::Index(i) => v.get_mut(*i),
                });
            }
            if let Some(slot) = slot {
                *slot = raw;
            }
        }
    }
}

/// An `Any` whose type is unknown: its type URL and its bytes in base64.
fn opaque_any(any: &DynamicMessage) -> serde_json::Value {
    use base64::Engine;
    let url = match any.get_field_by_number(1).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let value = match any.get_field_by_number(2).as_deref() {
        Some(Value::Bytes(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        _ => String::new(),
    };
    serde_json::json!({ "@type": url, "value": value })
}

fn bad(message: String) -> GwError {
    GwError::grpc(Code::InvalidArgument, message)
}

fn parse_json(
    desc: &MessageDescriptor,
    body: &[u8],
    de: &DeserializeOptions,
) -> Result<DynamicMessage, GwError> {
    let mut d = serde_json::Deserializer::from_slice(body);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), &mut d, de)
        .map_err(|e| bad(format!("invalid JSON body for {}: {e}", desc.full_name())))?;
    d.end()
        .map_err(|e| bad(format!("invalid JSON body for {}: {e}", desc.full_name())))?;
    Ok(msg)
}

/// Sets the (possibly nested, possibly repeated) scalar at `path` from its text form.
fn set_path(msg: &mut DynamicMessage, path: &[FieldDescriptor], raw: &str) -> Result<(), GwError> {
    let (last, parents) = path.split_last().expect("field paths are not empty");
    let mut current = msg;
    for f in parents {
        let Value::Message(inner) = current.get_field_mut(f) else {
            return Err(bad(format!("field {} is not a message", f.name())));
        };
        current = inner;
    }
    let value = match last.kind() {
        Kind::Message(m) => parse_well_known(last, &m, raw)?,
        _ => parse_scalar(last, raw)?,
    };
    if last.is_list() {
        if let Value::List(items) = current.get_field_mut(last) {
            items.push(value);
        }
    } else {
        current.set_field(last, value);
    }
    Ok(())
}

/// A well-known type given as text in a path or query: its proto3 JSON string form
/// (Timestamp as RFC 3339, Duration as `1.5s`, FieldMask as `a.b,c`), or a wrapper's bare
/// value. Other message types cannot be set from text.
fn parse_well_known(
    f: &FieldDescriptor,
    m: &MessageDescriptor,
    raw: &str,
) -> Result<Value, GwError> {
    let json = match m.full_name() {
        "google.protobuf.Timestamp"
        | "google.protobuf.Duration"
        | "google.protobuf.FieldMask"
        | "google.protobuf.StringValue"
        | "google.protobuf.BytesValue"
        | "google.protobuf.Int64Value"
        | "google.protobuf.UInt64Value"
        | "google.protobuf.Int32Value"
        | "google.protobuf.UInt32Value"
        | "google.protobuf.DoubleValue"
        | "google.protobuf.FloatValue" => serde_json::Value::String(raw.to_string()),
        "google.protobuf.BoolValue" => match raw {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => {
                return Err(bad(format!(
                    "invalid value {raw:?} for field {}: expected true or false",
                    f.name()
                )));
            }
        },
        other => {
            return Err(bad(format!(
                "field {} is a message ({other}); set it in the JSON body, not in the path or query",
                f.name()
            )));
        }
    };
    // Numbers in a wrapper: the JSON mapping takes them quoted too, except where the quoted
    // form is not a number at all (reported below as the field's error).
    let json = match (m.full_name(), &json) {
        ("google.protobuf.BytesValue", serde_json::Value::String(s)) => {
            let bytes = crate::grpc::decode_base64(s.as_bytes()).ok_or_else(|| {
                bad(format!(
                    "invalid value {raw:?} for field {}: expected base64",
                    f.name()
                ))
            })?;
            use base64::Engine;
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        _ => json,
    };
    DynamicMessage::deserialize(m.clone(), json)
        .map(Value::Message)
        .map_err(|e| bad(format!("invalid value {raw:?} for field {}: {e}", f.name())))
}

/// A path or query parameter's value for the last field of `path` (an error is the
/// `DynamicMessage` path's to report).
fn text_value(path: &[FieldDescriptor], raw: &str) -> Option<Value> {
    let last = path.last()?;
    match last.kind() {
        Kind::Message(m) => parse_well_known(last, &m, raw).ok(),
        _ => parse_scalar(last, raw).ok(),
    }
}

fn parse_scalar(f: &FieldDescriptor, raw: &str) -> Result<Value, GwError> {
    let fail = |expected: &str| {
        bad(format!(
            "invalid value {raw:?} for field {}: expected {expected}",
            f.name()
        ))
    };
    Ok(match f.kind() {
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(raw.parse().map_err(|_| fail("an int32"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(raw.parse().map_err(|_| fail("an int64"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(raw.parse().map_err(|_| fail("a uint32"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(raw.parse().map_err(|_| fail("a uint64"))?),
        Kind::Float => Value::F32(raw.parse().map_err(|_| fail("a float"))?),
        Kind::Double => Value::F64(raw.parse().map_err(|_| fail("a double"))?),
        Kind::Bool => Value::Bool(match raw {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(fail("true or false")),
        }),
        Kind::String => Value::String(raw.to_string()),
        Kind::Bytes => {
            Value::Bytes(crate::grpc::decode_base64(raw.as_bytes()).ok_or_else(|| fail("base64"))?)
        }
        Kind::Enum(e) => match e
            .get_value_by_name(raw)
            .or_else(|| raw.parse().ok().and_then(|n| e.get_value(n)))
        {
            Some(v) => Value::EnumNumber(v.number()),
            None => return Err(fail(&format!("a value of {}", e.full_name()))),
        },
        Kind::Message(m) => {
            return Err(bad(format!(
                "field {} is a message ({}); set it in the JSON body, not in the path or query",
                f.name(),
                m.full_name()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{descriptor_pool, v1};

    /// Non-finite numbers inside Struct, Value and ListValue are strings, as in the float
    /// wrappers and plain fields (serde_json would write them as null: data lost with a 200).
    #[test]
    fn non_finite_numbers_in_struct_value_and_list_value_are_strings() {
        let dir = std::env::temp_dir().join(format!("gwbench-nf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("nf.proto"),
            r#"syntax = "proto3";
package nf;
import "google/protobuf/struct.proto";
service S { rpc Get(R) returns (R); }
message R {
  google.protobuf.Struct s = 1; google.protobuf.Value v = 2;
  google.protobuf.ListValue l = 3; double d = 4;
}
"#,
        )
        .unwrap();
        let pool =
            crate::proto::compile_protos(&[dir.join("nf.proto")], std::slice::from_ref(&dir))
                .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let method = pool
            .get_service_by_name("nf.S")
            .unwrap()
            .methods()
            .next()
            .unwrap();
        let route = MethodRoute::new(&method, "", "", &[]).unwrap();
        let r = pool.get_message_by_name("nf.R").unwrap();
        let number = |x: f64| {
            let mut v =
                DynamicMessage::new(pool.get_message_by_name("google.protobuf.Value").unwrap());
            v.set_field_by_name("number_value", Value::F64(x));
            Value::Message(v)
        };
        let mut text =
            DynamicMessage::new(pool.get_message_by_name("google.protobuf.Value").unwrap());
        text.set_field_by_name("string_value", Value::String("x".into()));
        let mut st =
            DynamicMessage::new(pool.get_message_by_name("google.protobuf.Struct").unwrap());
        st.set_field_by_name(
            "fields",
            Value::Map(
                [
                    (prost_reflect::MapKey::String("a".into()), number(f64::NAN)),
                    (prost_reflect::MapKey::String("b".into()), number(1.5)),
                ]
                .into_iter()
                .collect(),
            ),
        );
        let mut list = DynamicMessage::new(
            pool.get_message_by_name("google.protobuf.ListValue")
                .unwrap(),
        );
        list.set_field_by_name(
            "values",
            Value::List(vec![number(f64::INFINITY), Value::Message(text)]),
        );
        let mut msg = DynamicMessage::new(r);
        msg.set_field_by_name("s", Value::Message(st));
        msg.set_field_by_name("v", number(f64::NEG_INFINITY));
        msg.set_field_by_name("l", Value::Message(list));
        msg.set_field_by_name("d", Value::F64(f64::NAN));
        let json = route
            .render_response(&msg.encode_to_vec(), &JsonOptions::new(false, false, true))
            .unwrap();
        let got: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            got,
            serde_json::json!({"s": {"a": "NaN", "b": 1.5}, "v": "-Infinity",
                               "l": ["Infinity", "x"], "d": "NaN"})
        );
    }

    fn route(
        service: &str,
        method: &str,
        body: &str,
        response_body: &str,
        vars: &[&str],
    ) -> MethodRoute {
        let svc = descriptor_pool().get_service_by_name(service).unwrap();
        let m = svc.methods().find(|m| m.name() == method).unwrap();
        let vars: Vec<String> = vars.iter().map(|v| v.to_string()).collect();
        MethodRoute::new(&m, body, response_body, &vars).unwrap()
    }

    #[test]
    fn body_field_query_and_unknown_field_policy() {
        let r = route("gwbench.v1.UserService", "ListUsers", "", "", &[]);
        let strict = JsonOptions::new(false, false, true);
        let lenient = JsonOptions::new(false, false, false);
        assert!(
            r.encode_request(&[], Some("page_size=2&nope=1"), b"", &strict)
                .is_err()
        );
        let bytes = r
            .encode_request(&[], Some("pageSize=2&nope=1"), b"", &lenient)
            .unwrap();
        assert_eq!(
            v1::ListUsersRequest::decode(bytes).unwrap().page_size,
            2,
            "json names work in queries"
        );

        // body: "address" puts the whole body into that field; the rest comes from the query.
        let r = route("gwbench.v1.UserService", "CreateUser", "address", "", &[]);
        let bytes = r
            .encode_request(
                &[],
                Some("username=ada&roles=a&roles=b"),
                br#"{"city": "Rome"}"#,
                &strict,
            )
            .unwrap();
        let req = v1::CreateUserRequest::decode(bytes).unwrap();
        assert_eq!(req.address.unwrap().city, "Rome");
        assert_eq!(req.username, "ada");
        assert_eq!(req.roles, ["a", "b"]);
        // A query parameter for a field the body or the path binds is ignored: they win.
        let bytes = r
            .encode_request(&[], Some("address.city=x"), br#"{"city": "Rome"}"#, &strict)
            .unwrap();
        let req = v1::CreateUserRequest::decode(bytes).unwrap();
        assert_eq!(req.address.unwrap().city, "Rome");
        let get = route("gwbench.v1.UserService", "GetUser", "", "", &["id"]);
        let bytes = get
            .encode_request(&["7".to_string()], Some("id=9"), b"", &strict)
            .unwrap();
        assert_eq!(v1::GetUserRequest::decode(bytes).unwrap().id, 7);
    }

    /// The plan's request (body, path, query) decodes to what the `DynamicMessage` path
    /// builds, errors stay errors, and the plan is what answers the ordinary requests.
    #[test]
    fn requests_from_the_plan_equal_the_reference_path() {
        let canonical = |r: &MethodRoute, b: &Bytes| {
            let m = DynamicMessage::decode(r.input.clone(), b.clone()).unwrap();
            m.serialize_with_options(
                serde_json::value::Serializer,
                &SerializeOptions::new().skip_default_fields(false),
            )
            .unwrap()
        };
        let create = route("gwbench.v1.UserService", "CreateUser", "*", "", &[]);
        let address = route("gwbench.v1.UserService", "CreateUser", "address", "", &[]);
        let get = route("gwbench.v1.UserService", "GetUser", "", "", &["id"]);
        let list = route("gwbench.v1.UserService", "ListUsers", "", "", &[]);
        let user = r#"{"username": "ada", "displayName": "Ada", "tier": "USER_TIER_PRO",
            "address": {"lines": ["1 A St"], "city": "Rome"}, "roles": ["a"],
            "labels": {"k": "v"}}"#;
        type Case<'a> = (&'a MethodRoute, Vec<String>, Option<&'a str>, &'a str, bool);
        let cases: Vec<Case> = vec![
            (&create, vec![], None, user, true),
            (&create, vec![], Some("username=x"), user, true),
            (&create, vec![], None, "  ", true),
            (&create, vec![], None, r#"{"username": 5}"#, false),
            (&create, vec![], None, r#"{"username": "a"} x"#, false),
            (
                &address,
                vec![],
                Some("username=ada&roles=a&roles=b&address.city=x"),
                r#"{"city": "Rome", "lines": ["x"]}"#,
                true,
            ),
            (&address, vec![], None, "null", true),
            (&address, vec![], None, r#"{"city": 1}"#, false),
            (&get, vec!["7".into()], Some("id=9"), "", true),
            (&get, vec!["0".into()], None, "", true),
            (&get, vec!["-1".into()], None, "", true),
            (&get, vec!["x".into()], None, "", false),
            (&list, vec![], Some("pageSize=2&page_size=3"), "", true),
            (&list, vec![], Some("page_size=2&nope=1"), "", false),
            (&list, vec![], Some("page_size=999999999999"), "", false),
        ];
        let strict = JsonOptions::new(false, false, true);
        for (r, params, query, body, ok) in cases {
            let got = r.encode_request(&params, query, body.as_bytes(), &strict);
            let want = r.encode_dynamic(&params, query, body.as_bytes(), None, &strict);
            let planned = r.encode_from_plan(&params, query, body.as_bytes(), &strict);
            match (&got, &want) {
                (Ok(g), Ok(w)) => {
                    assert!(ok, "{body} {query:?} was accepted");
                    assert_eq!(canonical(r, g), canonical(r, w), "{body} {query:?}");
                    assert!(planned.is_some(), "the plan wrote {body} {query:?}");
                }
                (Err(g), Err(w)) => {
                    assert!(!ok, "{body} {query:?}: {g:?}");
                    assert!(planned.is_none());
                    assert_eq!(format!("{g:?}"), format!("{w:?}"), "the same error");
                }
                _ => panic!("{body} {query:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn response_body_and_field_names() {
        let r = route(
            "gwbench.v1.UserService",
            "ListUsers",
            "",
            "next_page_token",
            &[],
        );
        let reply = v1::ListUsersResponse {
            next_page_token: "11".into(),
            ..Default::default()
        };
        let json = r
            .render_response(
                &reply.encode_to_vec(),
                &JsonOptions::new(false, false, true),
            )
            .unwrap();
        assert_eq!(json, br#""11""#);
        let r = route("gwbench.v1.UserService", "GetUser", "", "", &["id"]);
        let user = v1::User {
            id: 1,
            display_name: "A".into(),
            ..Default::default()
        };
        let proto_names = r
            .render_response(&user.encode_to_vec(), &JsonOptions::new(true, false, true))
            .unwrap();
        assert_eq!(
            String::from_utf8(proto_names).unwrap(),
            r#"{"id":"1","display_name":"A"}"#
        );
        let with_defaults = r
            .render_response(&user.encode_to_vec(), &JsonOptions::new(false, true, true))
            .unwrap();
        assert!(
            String::from_utf8(with_defaults)
                .unwrap()
                .contains(r#""active":false"#)
        );
    }

    proptest::proptest! {
        /// Arbitrary bodies, query strings and path values into transcoding: an answer or an
        /// error, never a panic.
        #[test]
        fn arbitrary_client_input_never_panics(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            json_ish in "[{}\\[\\]\":,0-9a-zA-Z .-]{0,80}",
            query in "[a-zA-Z0-9_.=&%+-]{0,60}",
            param in ".{0,20}",
        ) {
            let lenient = JsonOptions::new(false, false, false);
            let strict = JsonOptions::new(false, false, true);
            let create = route("gwbench.v1.UserService", "CreateUser", "*", "", &[]);
            let list = route("gwbench.v1.UserService", "ListUsers", "", "", &[]);
            let get = route("gwbench.v1.UserService", "GetUser", "", "", &["id"]);
            for opts in [&lenient, &strict] {
                let _ = create.encode_request(&[], Some(&query), &body, opts);
                let _ = create.encode_request(&[], None, json_ish.as_bytes(), opts);
                let _ = list.encode_request(&[], Some(&query), b"", opts);
                let _ = get.encode_request(std::slice::from_ref(&param), Some(&query), b"", opts);
            }
        }
    }
}
