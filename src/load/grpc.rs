//! gRPC targets: the method is looked up in a descriptor set (the embedded one, or a user's) and
//! the `--data` JSON is checked against its request type. Without placeholders it is encoded
//! once into a length-prefixed gRPC message and every call sends those bytes; with `{seq}` or
//! `{rand:A-B}` each call renders and encodes its own (json_to_wire's plan, DynamicMessage for what
//! that declines). Unary and every streaming kind; works for any service the descriptor set
//! describes.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

use super::LoadError;

/// Which way messages flow in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// One message each way.
    Unary,
    /// One message in, a stream out.
    ServerStreaming,
    /// A stream in, one message out.
    ClientStreaming,
    /// Streams both ways.
    Bidi,
}

impl CallKind {
    /// The name in reports (`server_streaming`, …).
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Unary => "unary",
            CallKind::ServerStreaming => "server_streaming",
            CallKind::ClientStreaming => "client_streaming",
            CallKind::Bidi => "bidi_streaming",
        }
    }

    /// Whether the client sends a stream (its message count is `--stream-messages`).
    pub fn client_streams(self) -> bool {
        matches!(self, CallKind::ClientStreaming | CallKind::Bidi)
    }
}

/// A prepared call.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// HTTP/2 path, `/package.Service/Method`.
    pub path: String,
    /// The framed request message (compression flag, length, bytes), as the template renders
    /// for the first call.
    pub body: Bytes,
    /// Unary or which streaming kind.
    pub kind: CallKind,
    /// The request message per call, when `--data` has placeholders.
    pub data: Option<DataTemplate>,
}

/// What every call of a gRPC target sends beyond its fixed bytes.
#[derive(Debug, Clone)]
pub struct GrpcPlan {
    /// Unary or which streaming kind.
    pub kind: CallKind,
    /// The request message per call, when `--data` has placeholders.
    pub data: Option<DataTemplate>,
    /// Messages a client stream sends per call (`--stream-messages`).
    pub messages: u32,
    /// Between two of them (`--stream-interval`; zero: all in the call's first write).
    pub interval: std::time::Duration,
    /// `--deadline`: sent as `grpc-timeout`, and the call is DEADLINE_EXCEEDED here when it
    /// passes (as a gRPC client's own deadline).
    pub deadline: Option<std::time::Duration>,
}

impl GrpcPlan {
    /// The request body of call `index` (0-based): its message, or a client stream's
    /// messages, all at once or paced. A templated message that does not encode (a `{seq}`
    /// past an int32, say) is the error kind `data_error`.
    pub fn body(&self, index: u64, fixed: &Bytes) -> Result<super::body::ReqBody, &'static str> {
        let seq = index.saturating_add(1);
        let message = || match &self.data {
            Some(t) => t.frame(seq).map_err(|_| "data_error"),
            None => Ok(fixed.clone()),
        };
        if !self.kind.client_streams() {
            return Ok(super::body::ReqBody::whole(message()?));
        }
        let n = self.messages as usize;
        if !self.interval.is_zero() {
            let frames = (0..n).map(|_| message()).collect::<Result<Vec<_>, _>>()?;
            return Ok(super::body::ReqBody::paced(frames, self.interval));
        }
        match &self.data {
            None => {
                let mut all = bytes::BytesMut::with_capacity(fixed.len() * n);
                for _ in 0..n {
                    all.extend_from_slice(fixed);
                }
                Ok(super::body::ReqBody::whole(all.freeze()))
            }
            Some(_) => {
                let mut all = bytes::BytesMut::new();
                for _ in 0..n {
                    all.extend_from_slice(&message()?);
                }
                Ok(super::body::ReqBody::whole(all.freeze()))
            }
        }
    }

    /// Messages a call sends when nothing fails.
    pub fn messages_per_call(&self) -> u64 {
        if self.kind.client_streams() {
            u64::from(self.messages)
        } else {
            1
        }
    }
}

/// `--data` with `{seq}` / `{rand:A-B}` in it: rendered and encoded per call.
#[derive(Debug, Clone)]
pub struct DataTemplate {
    parts: Vec<super::template::Part>,
    input: MessageDescriptor,
    plan: Option<std::sync::Arc<crate::proto::json_to_wire::Plan>>,
}

impl DataTemplate {
    /// Finds the placeholders in `data`; None when it has none. Anything else in braces is
    /// JSON and stays as written.
    fn parse(data: &str, input: &MessageDescriptor) -> Result<Option<DataTemplate>, LoadError> {
        let parts = super::template::Part::scan(data)
            .map_err(|e| LoadError::Config(format!("--data: {e}")))?;
        if parts
            .iter()
            .all(|p| matches!(p, super::template::Part::Lit(_)))
        {
            return Ok(None);
        }
        let t = DataTemplate {
            parts,
            input: input.clone(),
            plan: crate::proto::json_to_wire::Plan::new(input).map(std::sync::Arc::new),
        };
        // Both ends of every range, so that a template that cannot encode fails now.
        for edge in [super::template::Edge::Low, super::template::Edge::High] {
            let json = super::template::Part::render_edge(&t.parts, 1, edge);
            encode(&t.input, None, &json)?;
        }
        Ok(Some(t))
    }

    /// The framed message of call `seq` (1, 2, …); an error names what did not encode.
    pub fn frame(&self, seq: u64) -> Result<Bytes, String> {
        let json = super::template::Part::render(&self.parts, seq);
        encode(&self.input, self.plan.as_deref(), &json).map_err(|e| e.to_string())
    }
}

/// `json` as a framed message of `input`.
fn encode(
    input: &MessageDescriptor,
    plan: Option<&crate::proto::json_to_wire::Plan>,
    json: &str,
) -> Result<Bytes, LoadError> {
    if let Some(plan) = plan {
        let mut out = vec![0; crate::grpc::FRAME_PREFIX];
        if plan.write(json.as_bytes(), true, &mut out).is_some() {
            let len = u32::try_from(out.len() - crate::grpc::FRAME_PREFIX).unwrap_or(u32::MAX);
            out[1..crate::grpc::FRAME_PREFIX].copy_from_slice(&len.to_be_bytes());
            return Ok(Bytes::from(out));
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(input.clone(), &mut de)
        .and_then(|msg| de.end().map(|_| msg))
        .map_err(|e| {
            LoadError::Config(format!(
                "--data is not a valid {} in JSON: {e}",
                input.full_name()
            ))
        })?;
    Ok(crate::grpc::frame(&msg.encode_to_vec()))
}

/// Loads a descriptor set file (a serialized `FileDescriptorSet`, as `protoc
/// --descriptor_set_out --include_imports` or protox write).
pub fn load_descriptor_set(path: &std::path::Path) -> Result<DescriptorPool, LoadError> {
    crate::proto::load_descriptor_set(path)
        .map_err(|e| LoadError::Config(format!("--descriptor-set {e}")))
}

/// Finds `method` (`package.Service/Method` or `package.Service.Method`) in `pool` and encodes
/// `data` (proto3 JSON) as its request.
pub fn prepare(pool: &DescriptorPool, method: &str, data: &str) -> Result<GrpcCall, LoadError> {
    let (service, name) = method
        .rsplit_once('/')
        .or_else(|| method.rsplit_once('.'))
        .ok_or_else(|| {
            LoadError::Config(format!(
                "--grpc {method:?}: expected package.Service/Method"
            ))
        })?;
    let svc = pool.get_service_by_name(service).ok_or_else(|| {
        let known: Vec<String> = pool.services().map(|s| s.full_name().to_string()).collect();
        LoadError::Config(format!(
            "--grpc {method}: service {service:?} is not in the descriptor set (it has: {})",
            known.join(", ")
        ))
    })?;
    let m = svc.methods().find(|m| m.name() == name).ok_or_else(|| {
        let known: Vec<String> = svc.methods().map(|m| m.name().to_string()).collect();
        LoadError::Config(format!(
            "--grpc {method}: {service} has no method {name:?} (it has: {})",
            known.join(", ")
        ))
    })?;
    let kind = match (m.is_client_streaming(), m.is_server_streaming()) {
        (false, false) => CallKind::Unary,
        (false, true) => CallKind::ServerStreaming,
        (true, false) => CallKind::ClientStreaming,
        (true, true) => CallKind::Bidi,
    };
    let input = m.input();
    let template = DataTemplate::parse(data, &input)?;
    let body = match &template {
        Some(t) => t.frame(1).map_err(LoadError::Config)?,
        None => encode(&input, None, data)?,
    };
    Ok(GrpcCall {
        path: format!("/{}/{}", svc.full_name(), m.name()),
        body,
        kind,
        data: template,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{descriptor_pool, v1};

    #[test]
    fn encodes_the_request_once_with_the_grpc_frame() {
        let call = prepare(
            descriptor_pool(),
            "gwbench.v1.UserService/GetUser",
            r#"{"id": "42"}"#,
        )
        .unwrap();
        assert_eq!(call.path, "/gwbench.v1.UserService/GetUser");
        assert_eq!(call.body[0], 0);
        let len = u32::from_be_bytes(call.body[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, call.body.len() - 5);
        assert_eq!(v1::GetUserRequest::decode(&call.body[5..]).unwrap().id, 42);
        assert!(prepare(descriptor_pool(), "gwbench.v1.UserService.GetUser", "{}").is_ok());
    }

    #[test]
    fn placeholders_are_filled_per_call_and_other_braces_stay_json() {
        let pool = descriptor_pool();
        let call = prepare(pool, "gwbench.v1.UserService/GetUser", r#"{"id": {seq}}"#).unwrap();
        assert_eq!(call.kind, CallKind::Unary);
        let t = call.data.expect("a template");
        for seq in [1, 7, 1_000] {
            let framed = t.frame(seq).unwrap();
            assert_eq!(
                v1::GetUserRequest::decode(&framed[5..]).unwrap().id,
                seq as i64
            );
        }
        // Without placeholders: encoded once, no template; "{}" is JSON, not a placeholder.
        assert!(
            prepare(pool, "gwbench.v1.UserService/GetUser", "{}")
                .unwrap()
                .data
                .is_none()
        );
        // Streaming kinds are read off the descriptors.
        for (method, kind) in [
            ("WatchStock", CallKind::ServerStreaming),
            ("RecordMovements", CallKind::ClientStreaming),
            ("SyncStock", CallKind::Bidi),
        ] {
            let m = format!("gwbench.v1.InventoryService/{method}");
            assert_eq!(prepare(pool, &m, "{}").unwrap().kind, kind, "{method}");
        }
        // A value past int32 in a templated int32 field: a per-call error, not a panic.
        let c = prepare(
            pool,
            "gwbench.v1.InventoryService/WatchStock",
            r#"{"product_id": 1, "updates": {seq}}"#,
        )
        .unwrap();
        assert!(c.data.unwrap().frame(u64::from(u32::MAX) + 1).is_err());
    }

    #[test]
    fn a_client_stream_sends_its_messages_at_once_or_paced() {
        let pool = descriptor_pool();
        let call = prepare(
            pool,
            "gwbench.v1.InventoryService/RecordMovements",
            r#"{"product_id": 3, "delta": 2}"#,
        )
        .unwrap();
        let plan = |interval_ms| GrpcPlan {
            kind: call.kind,
            data: call.data.clone(),
            messages: 3,
            interval: std::time::Duration::from_millis(interval_ms),
            deadline: None,
        };
        let whole = plan(0).body(0, &call.body).unwrap();
        let bytes = whole.bytes().expect("all at once");
        assert_eq!(bytes.len(), 3 * call.body.len());
        assert!(whole.sent_times().is_none());
        let paced = plan(5).body(0, &call.body).unwrap();
        assert!(paced.bytes().is_none() && paced.sent_times().is_some());
        assert_eq!(plan(0).messages_per_call(), 3);
    }

    #[test]
    fn unknown_methods_and_bad_json_are_config_errors() {
        for (method, data, needle) in [
            ("gwbench.v1.Nope/GetUser", "{}", "not in the descriptor set"),
            ("gwbench.v1.UserService/Nope", "{}", "no method"),
            ("GetUser", "{}", "expected package.Service/Method"),
            ("gwbench.v1.UserService/GetUser", "{\"id\": ", "not a valid"),
            ("gwbench.v1.UserService/GetUser", "{\"idx\": 1}", "idx"),
            (
                "gwbench.v1.UserService/GetUser",
                "{\"id\": {rand:5}}",
                "{rand:A-B}",
            ),
            (
                "gwbench.v1.UserService/GetUser",
                "{\"id\": {rand:1-2",
                "unclosed",
            ),
        ] {
            let err = prepare(descriptor_pool(), method, data)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{method} {data}: {err}");
        }
    }
}
