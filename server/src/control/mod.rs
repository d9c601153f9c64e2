//! Control plane, the top of the server: gRPC services (also reachable by
//! gRPC-Web), HTTP pages, and the WHEP/WHIP endpoints. Handlers are thin:
//! they validate, authorise and call one function of the layers below.

pub mod audit;
pub mod auth;
pub mod avatars;
pub mod downloads;
pub mod http;
pub mod outputs;
pub mod privacy;
pub mod ratelimit;
pub mod sessions;
pub mod validate;
pub mod whep;
pub mod whip;
