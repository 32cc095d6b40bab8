//! Compiles `proto/` with protox (no `protoc` binary needed): writes the serialized descriptor set to
//! `$OUT_DIR/gwbench_descriptor.bin` (embedded by `src/proto.rs` for runtime transcoding) and generates
//! the prost messages and tonic clients/servers from the same set.

use std::path::{Path, PathBuf};

use prost::Message;

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

    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(&files)?
        .file_descriptor_set();
    std::fs::write(out_dir.join("gwbench_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
