//! Text a session speaks: a stream of pieces from one call, through text
//! ingest (clauses, moderation) onto the session's queue.

use super::handle::SessionHandle;
use super::types::Command;
use crate::error::{ApiError, ApiResult};
use crate::ingest::text::{Clause, TextIngest};
use crate::store::Principal;
use futures::{Stream, StreamExt};
use tokio::sync::oneshot;

/// One piece of a Speak call's text.
pub struct TextPiece {
    pub text: String,
    /// Speak what is pending now, even mid-sentence.
    pub flush: bool,
}

/// What one Speak call queued (clauses refused by moderation are neither
/// spoken nor counted; the session's watchers got an error event for each).
#[derive(Debug, Default)]
pub struct Queued {
    pub chars: u64,
    pub utterance_ids: Vec<String>,
}

/// Speaks `pieces` (in order, as they arrive) on `handle`'s session.
pub async fn speak(
    ingest: &TextIngest,
    who: &Principal,
    handle: &SessionHandle,
    mut pieces: impl Stream<Item = ApiResult<TextPiece>> + Unpin,
) -> ApiResult<Queued> {
    handle.send(Command::Activity).await?;
    let record = &handle.record;
    let mut text = ingest.open(who, &record.id, &record.language);
    let mut queued = Queued::default();
    while let Some(piece) = pieces.next().await {
        let piece = piece?;
        for clause in text.push(&piece.text, piece.flush).await? {
            queue(handle, clause, &mut queued).await?;
        }
    }
    for clause in text.finish().await? {
        queue(handle, clause, &mut queued).await?;
    }
    Ok(queued)
}

/// Queues one clause on the session (or reports its refusal).
async fn queue(handle: &SessionHandle, clause: Clause, queued: &mut Queued) -> ApiResult<()> {
    let utterance = match clause {
        Clause::Speak(u) => u,
        Clause::Blocked { category } => {
            return handle.send(Command::ModerationBlocked { category }).await;
        }
    };
    let chars = utterance.text.chars().count() as u64;
    let id = utterance.id.clone();
    let (reply, rx) = oneshot::channel();
    handle.send(Command::Speak { utterance, reply }).await?;
    rx.await
        .map_err(|_| ApiError::FailedPrecondition(format!("session {} closed", handle.record.id)))?
        .map_err(ApiError::ResourceExhausted)?;
    queued.chars += chars;
    queued.utterance_ids.push(id);
    Ok(())
}
