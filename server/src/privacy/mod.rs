//! Personal-data rules enforced in code (see docs/PRIVACY.md): consent is
//! validated in `control::validate`, encryption at rest lives in
//! `store::crypto`, labels in `pipeline::label`; retention is here.

pub mod moderation;
pub mod retention;
