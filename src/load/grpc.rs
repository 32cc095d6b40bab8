//! gRPC targets: the method is looked up in a descriptor set (the embedded one, or a user's), the
//! `--data` JSON is encoded once into a length-prefixed gRPC message, and every call sends those
//! same bytes over HTTP/2. Works for any service the descriptor set describes.

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use super::LoadError;

/// A prepared unary call.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// HTTP/2 path, `/package.Service/Method`.
    pub path: String,
    /// The framed request message (compression flag, length, bytes).
    pub body: Bytes,
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
    if m.is_client_streaming() || m.is_server_streaming() {
        return Err(LoadError::Config(format!(
            "--grpc {method}: only unary methods are supported"
        )));
    }
    let input = m.input();
    let mut de = serde_json::Deserializer::from_str(data);
    let msg = DynamicMessage::deserialize(input.clone(), &mut de)
        .and_then(|msg| de.end().map(|_| msg))
        .map_err(|e| {
            LoadError::Config(format!(
                "--data is not a valid {} in JSON: {e}",
                input.full_name()
            ))
        })?;
    Ok(GrpcCall {
        path: format!("/{}/{}", svc.full_name(), m.name()),
        body: crate::grpc::frame(&msg.encode_to_vec()),
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
    fn unknown_methods_and_bad_json_are_config_errors() {
        for (method, data, needle) in [
            ("gwbench.v1.Nope/GetUser", "{}", "not in the descriptor set"),
            ("gwbench.v1.UserService/Nope", "{}", "no method"),
            ("GetUser", "{}", "expected package.Service/Method"),
            ("gwbench.v1.UserService/GetUser", "{\"id\": ", "not a valid"),
            ("gwbench.v1.UserService/GetUser", "{\"idx\": 1}", "idx"),
        ] {
            let err = prepare(descriptor_pool(), method, data)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{method} {data}: {err}");
        }
    }
}
