//! Control plane: gRPC services (also reachable by gRPC-Web) and HTTP.

pub mod audit;
pub mod avatars;
pub mod privacy;
pub mod sessions;
pub mod validate;
