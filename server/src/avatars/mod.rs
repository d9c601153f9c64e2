//! Avatars: enrollment (a streamed upload → a checked, normalised portrait
//! and its face record, stored encrypted with the consent record) and
//! removal (sessions closed, records and files deleted). The gRPC handlers
//! in `control/avatars.rs` validate the request and call these.

pub mod enroll;
pub mod remove;
