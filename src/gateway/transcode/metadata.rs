//! gRPC metadata across the HTTP boundary: the client's `Grpc-Metadata-<name>` headers go up as
//! `<name>`, the upstream's metadata comes back as `Grpc-Metadata-<name>` (grpc-gateway's
//! convention), the protocol's own names left out both ways.

use http::header::HeaderMap;

/// The prefix under which gRPC metadata crosses to and from HTTP (grpc-gateway's convention).
const METADATA_PREFIX: &str = "grpc-metadata-";

/// Response metadata that belongs to the protocol, not to the application: never forwarded.
fn protocol_header(name: &str) -> bool {
    matches!(
        name,
        "content-type"
            | "content-length"
            | "te"
            | "trailer"
            | "date"
            | "server"
            | "grpc-status"
            | "grpc-message"
            | "grpc-status-details-bin"
            | "grpc-encoding"
            | "grpc-accept-encoding"
    )
}

/// The client's `Grpc-Metadata-<name>` headers as gRPC metadata `<name>` (names starting
/// with `grpc-` are the protocol's and are not taken).
pub(crate) fn metadata_from_client(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let Some(inner) = name.as_str().strip_prefix(METADATA_PREFIX) else {
            continue;
        };
        if inner.is_empty() || inner.starts_with("grpc-") {
            continue;
        }
        if let Ok(n) = http::HeaderName::from_bytes(inner.as_bytes()) {
            out.append(n, value.clone());
        }
    }
    out
}

/// The upstream's response metadata (headers and trailers) as `Grpc-Metadata-<name>` response
/// headers, the protocol's own left out.
pub(crate) fn metadata_to_client(metadata: &HeaderMap, out: &mut HeaderMap) {
    for (name, value) in metadata {
        if protocol_header(name.as_str()) {
            continue;
        }
        let prefixed = format!("{METADATA_PREFIX}{}", name.as_str());
        if let Ok(n) = http::HeaderName::from_bytes(prefixed.as_bytes()) {
            out.append(n, value.clone());
        }
    }
}
