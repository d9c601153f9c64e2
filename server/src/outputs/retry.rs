//! Reconnecting outputs (WHIP, RTMP): attempts with backoff up to a
//! limit, the state showing each retry and its reason, a fault only the
//! user can fix failing at once.

use super::state::{OutputState, StateTx};
use crate::rtc::forward::Ended;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First and longest wait between attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A connection that lasted less than this before it dropped counts as a
/// failed attempt.
const STEADY: Duration = Duration::from_secs(10);

/// Why an attempt failed.
pub enum Fault {
    /// Worth trying again (unreachable, a server error, a lost connection).
    Retry(String),
    /// Only the user can fix it (a refused key or token, a wrong URL).
    Fatal(String),
}

/// Runs `attempt` until the output is stopped or its session ends, trying
/// again after a fault (at most `max_attempts` times in a row); sets the
/// final state.
pub async fn run<F, Fut>(
    kind: &str,
    id: &str,
    state: &StateTx,
    stop: &CancellationToken,
    max_attempts: u32,
    mut attempt: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Ended, Fault>>,
{
    let mut tries = 0u32;
    loop {
        let began = std::time::Instant::now();
        let reason = match attempt().await {
            Ok(Ended::Cancelled | Ended::SessionEnded) => return state.set(OutputState::Stopped),
            Ok(Ended::Disconnected) if began.elapsed() < STEADY => {
                // Accepted, then dropped at once (a refused key often looks
                // like this): an attempt that failed.
                "the destination closed the stream right after accepting it".to_owned()
            }
            Ok(Ended::Disconnected) => {
                // It was live for a while: count again from the first
                // attempt.
                tries = 0;
                "the connection to the destination was lost".to_owned()
            }
            Err(Fault::Fatal(reason)) => return state.set(OutputState::Failed(reason)),
            Err(Fault::Retry(reason)) => reason,
        };
        tries += 1;
        if tries > max_attempts {
            let why = format!("gave up after {max_attempts} attempts: {reason}");
            return state.set(OutputState::Failed(why));
        }
        tracing::warn!(output = %id, attempt = tries, reason = %reason, "output reconnecting");
        crate::metrics::METRICS
            .output_reconnects
            .with_label_values(&[kind])
            .inc();
        state.set(OutputState::Reconnecting {
            attempt: tries,
            reason,
        });
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << (tries - 1).min(8))
            .min(BACKOFF_MAX);
        tokio::select! {
            _ = stop.cancelled() => return state.set(OutputState::Stopped),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
