//! Descriptors from a running gRPC server over the server reflection protocol
//! (`grpc.reflection.v1`, and `v1alpha` when the server has only that): the services it lists,
//! the files that declare them and every file those import, as the servers sent them (their
//! bytes are kept as they are, so custom options such as `google.api.http` survive; decoding
//! them into `prost_types` would drop them).
//!
//! One bidirectional call, one request at a time. Bounded: at most [`MAX_FILES`] files and
//! [`MAX_BYTES`] bytes, and the whole exchange within the caller's timeout.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use http::uri::PathAndQuery;
use prost::Message;
use prost_reflect::DescriptorPool;
use tonic::Code;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// Most files taken from one server.
pub const MAX_FILES: usize = 10_000;
/// Most bytes of descriptors taken from one server.
pub const MAX_BYTES: usize = 64 << 20;

const V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
// The same messages, field for field, under the older package name.
const V1ALPHA: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";

/// Asks the gRPC server at `addr` (`host:port`) for its services and returns their
/// descriptors, imports included. Errors are one sentence naming the server.
pub async fn fetch(addr: &str, timeout: Duration) -> Result<DescriptorPool, String> {
    let fail = |e: String| format!("server reflection from {addr}: {e}");
    let files = tokio::time::timeout(timeout, files_of(addr, timeout))
        .await
        .map_err(|_| {
            fail(format!(
                "no complete answer within {}",
                humantime::format_duration(timeout)
            ))
        })?
        .map_err(fail)?;
    pool_of(&files).map_err(fail)
}

async fn files_of(addr: &str, timeout: Duration) -> Result<Vec<(String, Vec<u8>)>, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("bad address: {e}"))?
        .connect_timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    // The call failing is the outer error; the exchange going wrong inside it, the inner one.
    let answer = match converse(channel.clone(), V1).await {
        Err(s) if s.code() == Code::Unimplemented => converse(channel, V1ALPHA).await,
        other => other,
    };
    match answer {
        Ok(exchange) => exchange,
        Err(s) if s.code() == Code::Unimplemented => Err(
            "the server does not offer server reflection (grpc.reflection.v1 or v1alpha)".into(),
        ),
        Err(s) => Err(format!(
            "{}: {}",
            crate::grpc::code_name(s.code() as i32),
            s.message()
        )),
    }
}

/// One reflection conversation on `path`; a failed call is the outer error, a failed
/// exchange inside it the inner one.
async fn converse(
    channel: tonic::transport::Channel,
    path: &'static str,
) -> Result<Result<Vec<(String, Vec<u8>)>, String>, tonic::Status> {
    let (tx, mut answers) = open(channel, path).await?;
    let mut next = async || -> Result<MessageResponse, tonic::Status> {
        match answers.message().await? {
            Some(ServerReflectionResponse {
                message_response: Some(m),
                ..
            }) => Ok(m),
            _ => Err(tonic::Status::internal("the server ended the conversation")),
        }
    };
    let services = match next().await? {
        MessageResponse::ListServicesResponse(l) => l.service,
        other => return Ok(Err(unexpected(&other))),
    };
    let mut wanted: Vec<MessageRequest> = services
        .into_iter()
        .map(|s| s.name)
        .filter(|n| !n.starts_with("grpc.reflection."))
        .map(MessageRequest::FileContainingSymbol)
        .collect();
    if wanted.is_empty() {
        return Ok(Err("the server lists no service".into()));
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut seen, mut asked) = (HashSet::new(), HashSet::new());
    let mut bytes = 0usize;
    while let Some(request) = wanted.pop() {
        if let MessageRequest::FileByFilename(name) = &request
            && !asked.insert(name.clone())
        {
            continue;
        }
        tx.send(ask(request.clone()))
            .await
            .map_err(|_| tonic::Status::internal("request stream closed"))?;
        let raw = match next().await? {
            MessageResponse::FileDescriptorResponse(f) => f.file_descriptor_proto,
            MessageResponse::ErrorResponse(e) => {
                return Ok(Err(format!(
                    "{request:?}: {} ({})",
                    e.error_message, e.error_code
                )));
            }
            other => return Ok(Err(unexpected(&other))),
        };
        if let Err(e) = keep(raw, &mut files, &mut seen, &mut wanted, &mut bytes)? {
            return Ok(Err(e));
        }
    }
    Ok(Ok(files))
}

/// Opens the conversation on `path` and asks for the service list: the request side and the
/// answers.
async fn open(
    channel: tonic::transport::Channel,
    path: &'static str,
) -> Result<
    (
        tokio::sync::mpsc::Sender<ServerReflectionRequest>,
        tonic::Streaming<ServerReflectionResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel::<ServerReflectionRequest>(1);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    tx.send(ask(MessageRequest::ListServices(String::new())))
        .await
        .map_err(|_| tonic::Status::internal("request stream closed"))?;
    let codec =
        tonic_prost::ProstCodec::<ServerReflectionRequest, ServerReflectionResponse>::default();
    let answers = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static(path),
            codec,
        )
        .await?
        .into_inner();
    Ok((tx, answers))
}

/// A reflection request.
fn ask(r: MessageRequest) -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r),
    }
}

/// Keeps the files of one answer not seen yet (bytes as they came) and asks for their imports;
/// past the bounds, the inner error.
fn keep(
    raw: Vec<Vec<u8>>,
    files: &mut Vec<(String, Vec<u8>)>,
    seen: &mut HashSet<String>,
    wanted: &mut Vec<MessageRequest>,
    bytes: &mut usize,
) -> Result<Result<(), String>, tonic::Status> {
    for file in raw {
        *bytes += file.len();
        if files.len() >= MAX_FILES || *bytes > MAX_BYTES {
            return Ok(Err(format!(
                "more than {MAX_FILES} files or {} MiB of descriptors",
                MAX_BYTES >> 20
            )));
        }
        // Read for its name and imports only; the bytes are kept as they came.
        let d = prost_types::FileDescriptorProto::decode(file.as_slice())
            .map_err(|e| tonic::Status::internal(format!("undecodable descriptor: {e}")))?;
        let name = d.name.unwrap_or_default();
        if !seen.insert(name.clone()) {
            continue;
        }
        for dep in d.dependency {
            if !seen.contains(&dep) {
                wanted.push(MessageRequest::FileByFilename(dep));
            }
        }
        files.push((name, file));
    }
    Ok(Ok(()))
}

fn unexpected(m: &MessageResponse) -> String {
    let kind = match m {
        MessageResponse::FileDescriptorResponse(_) => "a file descriptor",
        MessageResponse::AllExtensionNumbersResponse(_) => "extension numbers",
        MessageResponse::ListServicesResponse(_) => "a service list",
        MessageResponse::ErrorResponse(_) => "an error",
    };
    format!("the server answered with {kind}, not what was asked")
}

/// The files as one encoded FileDescriptorSet, each after the files it imports, decoded.
fn pool_of(files: &[(String, Vec<u8>)]) -> Result<DescriptorPool, String> {
    let by_name: HashMap<&str, &[u8]> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut set = Vec::new();
    let mut done = HashSet::new();
    for (name, _) in files {
        put(name, &by_name, &mut done, &mut set, 0)?;
    }
    DescriptorPool::decode(set.as_slice()).map_err(|e| format!("the descriptors do not link: {e}"))
}

/// Appends `name` after its imports (FileDescriptorSet field 1 per file).
fn put<'a>(
    name: &'a str,
    by_name: &HashMap<&'a str, &'a [u8]>,
    done: &mut HashSet<&'a str>,
    set: &mut Vec<u8>,
    depth: usize,
) -> Result<(), String> {
    if done.contains(name) {
        return Ok(());
    }
    if depth > 64 {
        return Err(format!("imports nest deeper than 64 files at {name}"));
    }
    let Some(bytes) = by_name.get(name) else {
        return Err(format!("the server did not send {name}"));
    };
    done.insert(name);
    let d = prost_types::FileDescriptorProto::decode(*bytes).map_err(|e| e.to_string())?;
    for dep in &d.dependency {
        if let Some((k, _)) = by_name.get_key_value(dep.as_str()) {
            put(k, by_name, done, set, depth + 1)?;
        } else {
            return Err(format!("the server did not send {dep}, imported by {name}"));
        }
    }
    prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, set);
    prost::encoding::encode_varint(bytes.len() as u64, set);
    set.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_linked_whatever_order_they_came_in_and_a_missing_import_is_named() {
        let pool = crate::proto::descriptor_pool();
        let mut files: Vec<(String, Vec<u8>)> = pool
            .files()
            .map(|f| {
                (
                    f.name().to_string(),
                    f.file_descriptor_proto().encode_to_vec(),
                )
            })
            .collect();
        files.reverse();
        let linked = pool_of(&files).unwrap();
        assert!(
            linked
                .get_service_by_name("gwbench.v1.UserService")
                .is_some()
        );
        let without: Vec<_> = files
            .into_iter()
            .filter(|(n, _)| n != "google/api/http.proto")
            .collect();
        let err = pool_of(&without).unwrap_err();
        assert!(err.contains("google/api/http.proto"), "{err}");
    }
}
