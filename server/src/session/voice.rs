//! The host's voice into a session: pushed audio (PushAudio, a WHIP
//! publisher) decoded by voice ingest into the session's voice lane, which
//! one stream feeds at a time; the session stays active while it talks.

use super::handle::SessionHandle;
use super::types::Command;
use crate::error::{ApiError, ApiResult};
use crate::ingest::voice::{Encoding, VoiceDecoder};
use crate::pipeline::voice::VoiceFeed;
use futures::{Stream, StreamExt};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How pushed audio is encoded, validated at the edge.
#[derive(Debug, Clone, Copy)]
pub struct VoiceFormat {
    pub encoding: Encoding,
    pub sample_rate: u32,
    pub channels: u32,
}

/// What a stream's packet that does not decode means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damaged {
    /// A client error: the stream ends with INVALID_ARGUMENT (PushAudio).
    Refuse,
    /// Loss on the network: the packet is skipped, a short silence (WebRTC).
    Skip,
}

/// Plays `packets` (in `format`) as the host's voice on `handle`'s session
/// until they end or the session closes; returns how many milliseconds of
/// audio were taken. Takes the session's voice lane first (one stream at a
/// time: FAILED_PRECONDITION while another feeds it).
pub async fn push_voice(
    handle: &SessionHandle,
    format: VoiceFormat,
    packets: impl Stream<Item = ApiResult<Vec<u8>>>,
) -> ApiResult<u64> {
    let decoder = VoiceDecoder::new(format.encoding, format.sample_rate, format.channels)
        .map_err(ApiError::Unavailable)?;
    let feed = handle.media.voice.feed().ok_or_else(|| {
        ApiError::FailedPrecondition(format!(
            "another PushAudio stream is feeding session {}; end it first",
            handle.record.id
        ))
    })?;
    handle.send(Command::Activity).await?;
    let closed = handle.cancel_token.clone();
    let ms = play(handle, &feed, decoder, packets, &closed, Damaged::Refuse).await?;
    if closed.is_cancelled() {
        return Err(ApiError::FailedPrecondition(format!(
            "session {} closed while audio was being pushed",
            handle.record.id
        )));
    }
    Ok(ms)
}

/// Decodes `packets` into the session's voice lane through `feed` (waiting
/// while the lane is full) until they end or `stop` fires; keeps the
/// session from idling out while the host talks. Returns the milliseconds
/// of audio decoded.
pub async fn play(
    handle: &SessionHandle,
    feed: &VoiceFeed,
    mut decoder: VoiceDecoder,
    packets: impl Stream<Item = ApiResult<Vec<u8>>>,
    stop: &CancellationToken,
    damaged: Damaged,
) -> ApiResult<u64> {
    let mut packets = std::pin::pin!(packets);
    let mut pcm = Vec::new();
    let mut last_activity = Instant::now();
    loop {
        let packet = tokio::select! {
            p = packets.next() => p,
            _ = stop.cancelled() => None,
        };
        let Some(packet) = packet else { break };
        pcm.clear();
        match decoder.decode(&packet?, &mut pcm) {
            Ok(()) => {}
            Err(e) if damaged == Damaged::Refuse => return Err(ApiError::invalid(e)),
            Err(_) => continue,
        }
        if !feed.push(&pcm, stop).await {
            break;
        }
        if last_activity.elapsed() >= Duration::from_secs(1) {
            last_activity = Instant::now();
            // A full queue means the session is busy anyway.
            handle.try_send(Command::Activity);
        }
    }
    pcm.clear();
    decoder.finish(&mut pcm);
    feed.push(&pcm, stop).await;
    Ok(decoder.decoded_ms())
}
