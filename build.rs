//! Compiles `proto/` with protox (no `protoc` binary needed): writes the serialized descriptor set to
//! `$OUT_DIR/gwbench_descriptor.bin` (embedded by `src/proto.rs` for runtime transcoding) and generates
//! the prost messages and tonic clients/servers from the same set.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut files = Vec::new();
    for entry in std::fs::read_dir(Path::new("proto/gwbench/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    // google.rpc.Status, for the error details upstreams send in grpc-status-details-bin.
    files.push(PathBuf::from("proto/google/rpc/status.proto"));
    // google.api.HttpBody, so that descriptor sets without googleapis can still use it.
    files.push(PathBuf::from("proto/google/api/httpbody.proto"));

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(false)
        .open_files(&files)?;
    // The embedded set keeps custom options (google.api.http): prost_types' structs would drop
    // them as unknown fields, so the bytes come from protox's own encoder.
    std::fs::write(
        out_dir.join("gwbench_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let fds = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
