//! What state an output is in, published by its task and read by the API.

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputState {
    /// Waiting for the first keyframe, or connecting.
    Starting,
    Live,
    /// Ended by request or by the session closing.
    Stopped,
    /// Ended by a fault, with a reason a user can act on.
    Failed(String),
}

impl OutputState {
    pub fn ended(&self) -> bool {
        matches!(self, Self::Stopped | Self::Failed(_))
    }
}

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
