//! Compiles the `.proto` files with protox (pure Rust), so building needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/ringkv/v1/kv.proto", "proto/ringkv/v1/admin.proto", "proto/ringkv/v1/raft.proto"];
    for file in &files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // Kept for gRPC server reflection (grpcurl, grpcui and friends).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ringkv_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    // Every service uses the codec in src/codec.rs (smaller per-call buffers).
    tonic_prost_build::configure()
        .bytes(".")
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
