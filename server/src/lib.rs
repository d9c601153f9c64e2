//! Huashen server library: the `huashen` binary is a thin CLI over this.
//!
//! Layers, top to bottom; each imports only layers below it (a test in
//! `tests/architecture.rs` checks it, and that no module cycle exists). See
//! docs/ARCHITECTURE.md.
//!
//! - `app`: wiring at start and shutdown.
//! - `control`: gRPC, gRPC-Web and HTTP handlers, WHEP/WHIP endpoints (thin).
//! - `rtc`: WebRTC peers (viewers, publishers) of live sessions; beside it
//!   `avatars` (enrollment, removal) and `privacy` (subject-data export and
//!   deletion).
//! - `session`: the manager, an actor per session, admission.
//! - `ingest`: text and voice in, shared by every entry point.
//! - `pipeline`: per-session stages, encode once, fan-out of packets.
//! - `engines`: process-wide models (speech, face, lip-sync), built once.
//! - `store`: records (SQLite / PostgreSQL) and encrypted files.
//! - at the bottom: `config` (plain data), `error`, `ids`, `metrics`,
//!   `logging`, `util`.

pub mod app;
pub mod avatars;
pub mod config;
pub mod control;
pub mod engines;
pub mod error;
pub mod ids;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod outputs;
pub mod pipeline;
pub mod privacy;
pub mod rtc;
pub mod session;
pub mod store;
pub mod util;
