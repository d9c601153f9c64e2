//! Reconnecting outputs (WHIP, RTMP): attempts with backoff up to a
//! limit, the state showing each retry and its reason, a fault only the
//! user can fix failing at once.

use super::state::{OutputState, StateTx};
use crate::rtc::forward::{Ended, Sent};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A connection that lasted less than this before it dropped counts as a
/// failed attempt.
const STEADY: Duration = Duration::from_secs(10);

/// How an output tries again (`limits.output_reconnect_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Tries in a row before it fails.
    pub attempts: u32,
    /// The first wait; each next one doubles, up to `max`.
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait before try `n` (1-based).
    pub fn wait(&self, n: u32) -> Duration {
        self.first
            .saturating_mul(1 << n.saturating_sub(1).min(16))
            .min(self.max)
    }
}

/// Why an attempt failed.
pub enum Fault {
    /// Worth trying again (unreachable, a server error).
    Retry(String),
    /// It was carrying the stream, then this happened (stalled, reset):
    /// tried again, and a connection that had been steady counts anew.
    Lost(String),
    /// Only the user can fix it (a refused key or token, a wrong URL, an
    /// untrusted certificate).
    Fatal(String),
}

/// Runs `attempt` until the output is stopped or its session ends, trying
/// again after a fault (at most `backoff.attempts` times in a row); sets
/// the final state and counts reconnects in `counters`.
pub async fn run<F, Fut>(
    id: &str,
    state: &StateTx,
    stop: &CancellationToken,
    counters: &Sent,
    backoff: Backoff,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Ended, Fault>>,
{
    let mut tries = 0u32;
    loop {
        let began = std::time::Instant::now();
        let (reason, steady) = match attempt().await {
            Ok(Ended::Cancelled | Ended::SessionEnded) => return state.set(OutputState::Stopped),
            Ok(Ended::Disconnected) if began.elapsed() < STEADY => {
                // Accepted, then dropped at once (a refused key often looks
                // like this): an attempt that failed.
                let why = "the destination closed the stream right after accepting it";
                (why.to_owned(), false)
            }
            Ok(Ended::Disconnected) => ("the connection to the destination was lost".into(), true),
            Err(Fault::Lost(reason)) => (reason, began.elapsed() >= STEADY),
            Err(Fault::Fatal(reason)) => return state.set(OutputState::Failed(reason)),
            Err(Fault::Retry(reason)) => (reason, false),
        };
        if steady {
            // It was live for a while: count again from the first attempt.
            tries = 0;
        }
        tries += 1;
        if tries > backoff.attempts {
            let n = backoff.attempts;
            let why = format!("gave up after {n} attempts: {reason}");
            return state.set(OutputState::Failed(why));
        }
        tracing::warn!(output = %id, attempt = tries, reason = %reason, "output reconnecting");
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
        state.set(OutputState::Reconnecting {
            attempt: tries,
            reason,
        });
        tokio::select! {
            _ = stop.cancelled() => return state.set(OutputState::Stopped),
            _ = tokio::time::sleep(backoff.wait(tries)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_longest() {
        let b = Backoff {
            attempts: 5,
            first: Duration::from_millis(500),
            max: Duration::from_secs(3),
        };
        let waits: Vec<u128> = (1..=5).map(|n| b.wait(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 3000, 3000]);
        assert_eq!(b.wait(1000), Duration::from_secs(3));
    }
}
