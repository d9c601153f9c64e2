//! Studio outputs of a live session: what leaves the server besides its
//! WebRTC viewers, each fed the session's already-encoded frames (no
//! second encode). So far the recording format: fragmented MP4
//! ([`fmp4`]) written as frames come ([`fragments`]).

pub mod fmp4;
pub mod fragments;
