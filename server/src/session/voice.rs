//! The host's voice into a session: pushed audio (PushAudio, a WHIP
//! publisher) decoded by voice ingest into the session's voice lane, which
//! one stream feeds at a time; the session stays active while it talks.

use super::handle::SessionHandle;
use super::types::Command;
use crate::error::{ApiError, ApiResult};
use crate::ingest::voice::{Encoding, VoiceDecoder};
use futures::{Stream, StreamExt};
use std::time::{Duration, Instant};

/// How pushed audio is encoded, validated at the edge.
#[derive(Debug, Clone, Copy)]
pub struct VoiceFormat {
    pub encoding: Encoding,
    pub sample_rate: u32,
    pub channels: u32,
}

/// Plays `packets` (in `format`) as the host's voice on `handle`'s session
/// until they end or the session closes; returns how many milliseconds of
/// audio were taken.
pub async fn push_voice(
    handle: &SessionHandle,
    format: VoiceFormat,
    mut packets: impl Stream<Item = ApiResult<Vec<u8>>> + Unpin,
) -> ApiResult<u64> {
    let mut decoder = VoiceDecoder::new(format.encoding, format.sample_rate, format.channels)
        .map_err(ApiError::Unavailable)?;
    let feed = handle.media.voice.feed().ok_or_else(|| {
        ApiError::FailedPrecondition(format!(
            "another PushAudio stream is feeding session {}; end it first",
            handle.record.id
        ))
    })?;
    handle.send(Command::Activity).await?;
    let closed = handle.cancel_token.clone();
    let mut pcm = Vec::new();
    let mut last_activity = Instant::now();
    loop {
        let packet = tokio::select! {
            p = packets.next() => p,
            _ = closed.cancelled() => None,
        };
        let Some(packet) = packet else { break };
        pcm.clear();
        decoder
            .decode(&packet?, &mut pcm)
            .map_err(ApiError::invalid)?;
        if !feed.push(&pcm, &closed).await {
            break;
        }
        // Keep the session from idling out while the host talks.
        if last_activity.elapsed() >= Duration::from_secs(1) {
            last_activity = Instant::now();
            handle.send(Command::Activity).await?;
        }
    }
    pcm.clear();
    decoder.finish(&mut pcm);
    feed.push(&pcm, &closed).await;
    if closed.is_cancelled() {
        return Err(ApiError::FailedPrecondition(format!(
            "session {} closed while audio was being pushed",
            handle.record.id
        )));
    }
    Ok(decoder.decoded_ms())
}
