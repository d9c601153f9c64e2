//! Compiles `huashen/v1/*.proto` with protox (pure Rust, no protoc install)
//! and generates the prost messages and tonic clients/servers.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "huashen/v1/common.proto",
    "huashen/v1/avatar.proto",
    "huashen/v1/session.proto",
    "huashen/v1/audit.proto",
    "huashen/v1/privacy.proto",
    "huashen/v1/output.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(PROTOS, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Kept for the reflection service.
    std::fs::write(out.join("huashen_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Malformed messages become INVALID_ARGUMENT instead of INTERNAL.
        .codec_path("crate::codec::ApiCodec")
        .compile_fds(fds)?;
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    Ok(())
}
