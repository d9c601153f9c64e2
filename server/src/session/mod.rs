//! Sessions: the manager ([`manager::SessionManager`]), an actor per
//! session ([`actor`]), admission by count and by measured capacity, and
//! what a session does with what comes in: text to speak ([`speak`]) and
//! the host's voice ([`voice`]), through `ingest`. Below it: `ingest`,
//! `pipeline`, `engines`, `store`.

mod actor;
pub mod admission;
pub mod capacity;
mod create;
pub mod handle;
pub mod lookup;
pub mod manager;
pub mod speak;
mod tasks;
pub mod types;
pub mod viewer_token;
pub mod voice;

pub use handle::SessionHandle;
pub use lookup::Found;
pub use manager::{ManagerConfig, SessionManager};
pub use types::*;
