//! What a data subject (the person an avatar depicts, through the tenant
//! that enrolled them) can ask for: an archive of everything held about
//! them ([`export`]), and its deletion ([`erase`]). The gRPC handlers in
//! `control/privacy.rs` authenticate and call these.

pub mod erase;
pub mod export;
pub mod scope;
