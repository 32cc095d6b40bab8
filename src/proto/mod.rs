//! The project's protobuf types: generated prost messages and tonic clients/servers, plus the
//! serialized descriptor set that `build.rs` compiled them from (for runtime reflection and
//! transcoding), and the proto3 JSON mapping in both directions: [`json_to_wire`] (requests, while
//! serde_json parses) and [`wire_to_json`] (responses, straight from the bytes), each with
//! prost-reflect's `DynamicMessage` behind it for what it declines.

pub mod json_to_wire;
pub mod wire_to_json;

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

/// `google.api` annotation types (`HttpRule`), generated from the vendored protos.
pub mod google {
    /// `google.api`: HTTP annotations.
    pub mod api {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("google.api");
    }
}

/// The mock shop's services and messages (`proto/gwbench/v1`).
pub mod gwbench {
    /// Version 1 of the mock shop API.
    pub mod v1 {
        #![allow(missing_docs, unreachable_pub, clippy::all)]
        tonic::include_proto!("gwbench.v1");
    }
}

pub use gwbench::v1;

/// The serialized `FileDescriptorSet` of every proto under `proto/` (with imports, without source
/// info), as written by `build.rs`.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/gwbench_descriptor.bin"));

/// The embedded descriptor set, decoded once.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("the descriptor set embedded by build.rs decodes (it was produced by protox)")
    })
}

/// Loads a descriptor set file (a serialized `FileDescriptorSet`, as `protoc
/// --descriptor_set_out --include_imports` or protox write). The error starts with the path.
pub fn load_descriptor_set(path: &std::path::Path) -> Result<DescriptorPool, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    DescriptorPool::decode(bytes.as_slice())
        .map_err(|e| format!("{}: not a FileDescriptorSet ({e})", path.display()))
}

/// Compiles `.proto` files at run time (no protoc: protox) into a descriptor pool. Imports are
/// looked up among protobuf's well-known types (always the bundled ones), then in `includes`
/// (in order), then among the `google/api` annotation protos bundled in this binary. With no include directory, each file's own
/// directory is one. The error names the file and, for a syntax error, the line.
pub fn compile_protos(
    files: &[std::path::PathBuf],
    includes: &[std::path::PathBuf],
) -> Result<DescriptorPool, String> {
    use protox::file::{ChainFileResolver, GoogleFileResolver, IncludeFileResolver};
    let mut dirs: Vec<std::path::PathBuf> = includes.to_vec();
    if dirs.is_empty() {
        for f in files {
            let parent = f
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            let parent = if parent.as_os_str().is_empty() {
                ".".into()
            } else {
                parent
            };
            if !dirs.contains(&parent) {
                dirs.push(parent);
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    // protobuf's own well-known types first: the runtime's definitions, whatever copy an
    // include directory holds (googleapis bundles ship a descriptor.proto newer than the
    // compiler parses, and every copy describes the same wire types).
    resolver.add(GoogleFileResolver::new());
    for d in &dirs {
        resolver.add(IncludeFileResolver::new(d.clone()));
    }
    resolver.add(BundledGoogleApi);
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    // Comments are kept: `gateway --openapi` writes them as descriptions.
    compiler.include_source_info(true);
    for f in files {
        compiler.open_file(f).map_err(|e| match e.file() {
            // The error is in an import: name it, and what imported it.
            Some(at) if !f.ends_with(at) => format!("{at} (imported by {}): {e}", f.display()),
            _ => format!("{}: {e}", f.display()),
        })?;
    }
    DescriptorPool::decode(compiler.encode_file_descriptor_set().as_slice())
        .map_err(|e| format!("the compiled protos do not decode: {e}"))
}

/// `google/api/annotations.proto`, `http.proto` and `httpbody.proto`, and `google/rpc`'s
/// `status.proto` and `error_details.proto`, bundled so that `--proto` works without a copy of
/// googleapis.
struct BundledGoogleApi;

impl protox::file::FileResolver for BundledGoogleApi {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        let source = match name {
            "google/api/annotations.proto" => {
                include_str!("../../proto/google/api/annotations.proto")
            }
            "google/api/http.proto" => include_str!("../../proto/google/api/http.proto"),
            "google/api/httpbody.proto" => include_str!("../../proto/google/api/httpbody.proto"),
            "google/rpc/status.proto" => include_str!("../../proto/google/rpc/status.proto"),
            "google/rpc/error_details.proto" => {
                include_str!("../../proto/google/rpc/error_details.proto")
            }
            _ => return Err(protox::Error::file_not_found(name)),
        };
        protox::file::File::from_source(name, source)
    }
}

/// A generated message type whose fully qualified protobuf name is known, so that it can be
/// rendered with the proto3 JSON mapping through the descriptor pool.
pub trait Named: prost::Message + Default {
    /// Fully qualified protobuf name, e.g. `gwbench.v1.User`.
    const FULL_NAME: &'static str;
    /// The type's JSON writer (`crate::proto::wire_to_json`), prepared once.
    fn json_plan() -> Option<&'static crate::proto::wire_to_json::Plan>;
}

macro_rules! named {
    ($($ty:ident),* $(,)?) => {
        $(impl Named for v1::$ty {
            const FULL_NAME: &'static str = concat!("gwbench.v1.", stringify!($ty));
            fn json_plan() -> Option<&'static crate::proto::wire_to_json::Plan> {
                static PLAN: OnceLock<Option<crate::proto::wire_to_json::Plan>> = OnceLock::new();
                PLAN.get_or_init(|| {
                    let desc = descriptor_pool().get_message_by_name(Self::FULL_NAME)?;
                    crate::proto::wire_to_json::Plan::new(&desc, false)
                })
                .as_ref()
            }
        })*
    };
}
named!(
    User,
    ListUsersResponse,
    CreateUserRequest,
    Order,
    ListOrdersResponse,
    Product,
    SearchProductsResponse,
    Stock,
    StockMovement,
);

/// Renders a message as proto3 JSON (lowerCamelCase names, default values omitted, 64-bit
/// integers as strings, timestamps as RFC 3339), exactly as a grpc-gateway would.
pub fn to_json<M: Named>(msg: &M) -> Vec<u8> {
    // Written from the encoded bytes by the type's plan (the mocks' hot path); what it leaves
    // goes through a DynamicMessage, as before.
    if let Some(plan) = M::json_plan() {
        let bytes = msg.encode_to_vec();
        let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
        if plan.write(&bytes, &mut out).is_some() {
            return out;
        }
    }
    to_json_with(msg, &SerializeOptions::new())
}

/// Like [`to_json`], with explicit serialization options.
pub fn to_json_with<M: Named>(msg: &M, options: &SerializeOptions) -> Vec<u8> {
    let desc = descriptor_pool()
        .get_message_by_name(M::FULL_NAME)
        .expect("every Named type is in the embedded descriptor set");
    let mut dynamic = DynamicMessage::new(desc);
    dynamic
        .transcode_from(msg)
        .expect("a generated message re-decodes with its own descriptor");
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    dynamic
        .serialize_with_options(&mut ser, options)
        .expect("serializing to a Vec cannot fail");
    out
}

/// Parses proto3 JSON into a generated message (unknown fields are an error).
pub fn from_json<M: Named>(json: &[u8]) -> Result<M, String> {
    let desc = descriptor_pool()
        .get_message_by_name(M::FULL_NAME)
        .expect("every Named type is in the embedded descriptor set");
    let mut de = serde_json::Deserializer::from_slice(json);
    let dynamic = DynamicMessage::deserialize(desc, &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    dynamic.transcode_to::<M>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mocks' JSON, written by the plans, is what the DynamicMessage path writes.
    #[test]
    fn the_mocks_json_is_the_reference_json() {
        use crate::backend::data;
        let same = |fast: Vec<u8>, slow: Vec<u8>| {
            let (f, s): (serde_json::Value, serde_json::Value) = (
                serde_json::from_slice(&fast).unwrap(),
                serde_json::from_slice(&slow).unwrap(),
            );
            assert_eq!(f, s);
        };
        let opts = SerializeOptions::new();
        for id in 1..40 {
            let u = data::user(id).unwrap();
            same(to_json(&u), to_json_with(&u, &opts));
            let p = data::product(id).unwrap();
            same(to_json(&p), to_json_with(&p, &opts));
            let s = data::stock(id).unwrap();
            same(to_json(&s), to_json_with(&s, &opts));
        }
        let orders = data::list_orders(&v1::ListOrdersRequest {
            user_id: 3,
            page_size: 20,
        })
        .unwrap();
        same(to_json(&orders), to_json_with(&orders, &opts));
        assert!(v1::User::json_plan().is_some() && v1::ListOrdersResponse::json_plan().is_some());
    }

    #[test]
    fn pool_has_every_service_and_the_http_annotation() {
        let pool = descriptor_pool();
        for svc in [
            "gwbench.v1.UserService",
            "gwbench.v1.OrderService",
            "gwbench.v1.ProductService",
            "gwbench.v1.InventoryService",
        ] {
            assert!(pool.get_service_by_name(svc).is_some(), "{svc} missing");
        }
        assert!(pool.get_extension_by_name("google.api.http").is_some());
    }

    #[test]
    fn json_round_trip_uses_proto3_mapping() {
        let user = v1::User {
            id: 42,
            username: "ada".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_704_067_200,
                nanos: 0,
            }),
            ..Default::default()
        };
        let json: serde_json::Value = serde_json::from_slice(&to_json(&user)).unwrap();
        assert_eq!(json["id"], "42", "int64 is a JSON string");
        assert_eq!(json["createdAt"], "2024-01-01T00:00:00Z");
        assert!(json.get("email").is_none(), "defaults are omitted");
        let req: v1::CreateUserRequest =
            from_json(br#"{"username":"ada","tier":"USER_TIER_PRO"}"#).unwrap();
        assert_eq!(req.tier, v1::UserTier::Pro as i32);
        let err = from_json::<v1::CreateUserRequest>(br#"{"nope":1}"#).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
