//! Per-session stages, from what plays to encoded packets: the playback
//! buffer (speech) and the voice lane (the host's live voice), lip-sync of
//! that voice, the animated face, the AI label, the encoders and the media
//! thread that runs them on the session clock and publishes one stream of
//! packets for every viewer and output. [`assembly`] builds a session's
//! pipeline from its avatar's stored files and the engines.
//!
//! A new per-session stage goes here and gets what it needs from
//! `engines` through the assembly; consumers of the encoded packets
//! (viewers, outputs) subscribe to [`media::MediaPipeline`].

pub mod animate;
pub mod assembly;
pub mod clock;
pub mod encode;
pub mod frame;
pub mod label;
pub mod lips;
pub mod media;
pub mod playback;
pub mod stats;
pub mod voice;

pub use media::*;
pub use stats::MediaStats;
