//! Speech: text front ends, the TTS networks and their timelines.

pub mod clauses;
pub mod piper;
