//! Huashen server library: the `huashen` binary is a thin CLI over this.
//!
//! Data flow (see ../README.md): control plane (`control`) → session manager
//! (`session`) → media pipeline; records and files in `store`.

pub mod app;
pub mod auth;
pub mod config;
pub mod control;
pub mod error;
pub mod http;
pub mod ids;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod rtc;
pub mod session;
pub mod store;
