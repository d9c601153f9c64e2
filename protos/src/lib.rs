//! Huashen public API, package `huashen.v1`.
//!
//! The `.proto` files under `huashen/v1/` are the source of truth; this crate
//! only compiles them. Domain types live in the server, which converts at the
//! edge. [`sei`] is the other wire format the server and its clients share:
//! the AI-generated label inside the H.264 stream.

pub mod codec;
pub mod sei;

/// Generated messages and services of `huashen.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("huashen.v1");
}

/// Encoded `FileDescriptorSet` of the API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/huashen_descriptor.bin"));
