//! Generates the services of `proto/hrs/v1/*.proto` (clients and servers) with protox, a
//! pure-Rust protobuf compiler, so no `protoc` is needed; their messages are hrs-proto's.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let dir = root.join("hrs/v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    // tonic-prost-build does not emit these itself.
    println!("cargo:rerun-if-changed={}", dir.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    // Malformed messages are the caller's mistake: see `codec`.
    tonic_prost_build::configure()
        .extern_path(".hrs.v1", "::hrs_proto::v1")
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
