//! Generates the services of `proto/hrs/v1/*.proto` (clients and servers) with protox, a
//! pure-Rust protobuf compiler, so no `protoc` is needed; their messages are hrs-proto's.
//! Also writes the encoded descriptor set, which server reflection answers from.

use std::path::PathBuf;

use prost::Message as _;

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
    // prost-build writes `file_descriptor_set_path` only when it runs protoc itself.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("hrs_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    // Malformed messages are the caller's mistake: see `codec`.
    tonic_prost_build::configure()
        .extern_path(".hrs.v1", "::hrs_proto::v1")
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
