//! Speech: text front ends, the TTS networks and their timelines.

pub mod clauses;
pub mod espeak;
pub mod piper;
pub mod timeline;
pub mod tts;
pub mod voices;
pub mod zh;
