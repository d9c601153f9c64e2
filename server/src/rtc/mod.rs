//! WebRTC peers: viewers (WHEP) and publishers (WHIP). Each viewer gets its own peer connection with one H.264
//! and one Opus track, fed the session's already-encoded RTP packets: the
//! session encodes once, however many watch. Only SSRC, payload type and
//! sequence number are rewritten per viewer; timestamps stay on the session
//! clock, and RTCP sender reports map them to wall-clock time for lip sync.
//!
//! A viewer that falls behind loses packets from its own buffer and resumes
//! at the next keyframe (which it requests); it never slows the session or
//! other viewers.

pub mod egress;
pub mod forward;
mod keyframes;
pub mod peer;
pub mod publisher;
pub mod settings;
pub mod viewer;

pub use peer::RtcError;
pub use publisher::{Published, publish};
pub use settings::RtcSettings;
pub use viewer::{Accepted, connect};
