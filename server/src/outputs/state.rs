//! What state an output is in (a session type: its events report it),
//! published by the output's task and read by the API and the session.

pub use crate::session::OutputState;
use tokio::sync::watch;

/// The task's side: sets the state (an ended output stays ended).
pub struct StateTx(watch::Sender<OutputState>);

impl StateTx {
    pub fn new() -> (Self, watch::Receiver<OutputState>) {
        let (tx, rx) = watch::channel(OutputState::Starting);
        (Self(tx), rx)
    }

    pub fn set(&self, state: OutputState) {
        self.0.send_if_modified(|s| {
            let change = !s.ended() && *s != state;
            if change {
                *s = state;
            }
            change
        });
    }
}
