//! Speech: text front end and (with their issue) the TTS models.

pub mod clauses;
