//! Compiles `proto/` with protox (no `protoc` binary needed): writes the serialized descriptor set to
//! `$OUT_DIR/gwbench_descriptor.bin` (embedded by `src/proto.rs` for runtime transcoding) and generates
//! the prost messages and tonic clients/servers from the same set.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    version();
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
    // The standard error detail types, so that details render as JSON, not base64.
    files.push(PathBuf::from("proto/google/rpc/error_details.proto"));
    // google.api.HttpBody, so that descriptor sets without googleapis can still use it.
    files.push(PathBuf::from("proto/google/api/httpbody.proto"));

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
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

/// `gwbench --version`: the package version, the git commit it was built from (`-dirty` with
/// uncommitted changes to tracked files; `unknown` outside a git checkout) and the profile.
fn version() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!(
        "cargo:rustc-env=GWBENCH_VERSION={} (commit {commit}{}, {profile} build)",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        if dirty { "-dirty" } else { "" }
    );
    // Again when HEAD moves (a commit, a checkout) or the index changes; only paths that exist,
    // or cargo would run this on every build.
    for path in [
        ".git/HEAD",
        ".git/index",
        ".git/refs/heads",
        ".git/packed-refs",
    ] {
        if Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
