//! Huashen models: speech (text front ends, acoustic model, vocoder, phoneme
//! timeline), face (detection, landmarks), animation and rendering. No server
//! code lives here (see ARCHITECTURE.md in the repository docs).
//!
//! Every streaming stage follows one shape: feed a chunk, get whatever output
//! is ready, flush at the end, reset to start over.

pub mod speech;
