//! ringkv's wire API, package `ringkv.v1`: the public `KV` and `Admin` services and
//! the node-to-node `Raft` transport. Generated at build time from `proto/` by
//! protox and tonic-prost-build; no `protoc` needed.

#![allow(clippy::large_enum_variant)]
#![allow(missing_docs)]

pub mod codec;

/// Generated messages and services of `ringkv.v1`.
pub mod v1 {
    tonic::include_proto!("ringkv.v1");
}

pub use v1::*;

/// The encoded `FileDescriptorSet` of every ringkv `.proto`, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ringkv_descriptor.bin"));
