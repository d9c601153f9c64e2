//! Studio outputs of a live session: what leaves the server besides its
//! WebRTC viewers, each fed the session's already-encoded frames (no
//! second encode), on its own task or thread with a bounded queue. So far:
//! recordings ([`recording`]: fragmented MP4 ([`fmp4`]) written as frames
//! come ([`fragments`]), sealed into the file store), and WHIP egress into
//! an SFU ([`whip`]). [`manager`] starts, lists and stops them.

pub mod acks;
pub mod flv;
pub mod fmp4;
pub mod fragments;
pub mod manager;
pub mod meter;
pub mod recording;
pub mod recordings;
pub mod retry;
pub mod rtmp;
pub mod state;
#[cfg(test)]
mod test_media;
pub mod whip;
