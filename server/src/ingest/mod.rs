//! What comes into a session, shared by every way it arrives (gRPC, the
//! console, WHIP): text (split into clauses as it streams, moderated,
//! refusals audited: [`text`]) and the host's voice (decoded to the
//! session's 48 kHz mono: [`voice`]). Ingest hands clauses and samples to
//! the session layer above and the pipeline's voice lane below; it keeps
//! nothing: text and audio are processed in memory only.

pub mod moderation;
pub mod text;
pub mod voice;
