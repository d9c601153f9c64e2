//! Sending a session's packets down one peer connection (a viewer, or a
//! WHIP egress): video starts and resumes at keyframes, a peer that falls
//! behind skips to the next one (and asks for it), and the peer's PLI/FIR
//! become keyframe requests.

use super::keyframes;
use super::peer::{Event, Track};
use crate::pipeline::{KeyframeRequester, MediaKind, MediaPacket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

/// Why forwarding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `cancel` fired.
    Cancelled,
    /// The connection failed, closed or the peer stopped taking packets.
    Disconnected,
    /// The session's media ended (it closed).
    SessionEnded,
}

/// What an output counts as it goes (read by the API and `/metrics`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Media bytes sent or written.
    pub bytes: AtomicU64,
    /// What was skipped because the destination fell behind: frames (for a
    /// WebRTC peer, RTP packets).
    pub dropped: AtomicU64,
    /// Times the destination was tried again.
    pub reconnects: AtomicU64,
    /// Bits per second over the last seconds (set by whoever meters it).
    pub bitrate: AtomicU64,
}

impl Counters {
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }
}

/// An output's counters, shared with what reads them.
pub type Sent = Arc<Counters>;

/// Forwards `packets` to the two tracks until one of [`Ended`] happens.
pub(super) async fn forward(
    video: &mut Track,
    audio: &mut Track,
    keyframes: &KeyframeRequester,
    cancel: &CancellationToken,
    mut packets: broadcast::Receiver<Arc<MediaPacket>>,
    events: &mut mpsc::Receiver<Event>,
    sent: Option<&Sent>,
) -> Ended {
    let rtcp = tokio::spawn(watch_keyframe_requests(
        video.track.clone(),
        keyframes.clone(),
        cancel.clone(),
    ));
    keyframes.request();
    // Video starts (and resumes after a loss) at a keyframe.
    let mut wait_keyframe = true;
    let ended = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ended::Cancelled,
            ev = events.recv() => match ev {
                Some(Event::State(
                    RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Closed
                    | RTCPeerConnectionState::Disconnected,
                ))
                | None => break Ended::Disconnected,
                _ => {}
            },
            p = packets.recv() => match p {
                Ok(p) => {
                    let result = match p.kind {
                        MediaKind::Audio => audio.send(&p).await,
                        MediaKind::Video => {
                            if wait_keyframe && !p.keyframe_start {
                                continue;
                            }
                            wait_keyframe = false;
                            video.send(&p).await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "cannot send to the peer");
                        break Ended::Disconnected;
                    }
                    if let Some(sent) = sent {
                        sent.add_bytes(p.packet.payload.len() as u64);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "peer fell behind; resuming at a keyframe");
                    crate::metrics::METRICS.viewer_lag_events.inc();
                    if let Some(sent) = sent {
                        sent.add_dropped(n);
                    }
                    wait_keyframe = true;
                    keyframes.request();
                }
                // The session's media stopped: the session closed.
                Err(broadcast::error::RecvError::Closed) => break Ended::SessionEnded,
            },
        }
    };
    rtcp.abort();
    ended
}

/// Turns the peer's PLI/FIR into keyframe requests.
async fn watch_keyframe_requests(
    track: Arc<TrackLocalStaticRTP>,
    keyframes: KeyframeRequester,
    cancel: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            ev = track.poll() => ev,
            _ = cancel.cancelled() => return,
        };
        match ev {
            Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                if packets
                    .iter()
                    .any(|p| keyframes::is_keyframe_request(p.as_ref()))
                {
                    keyframes.request();
                }
            }
            Some(_) => {}
            None => return,
        }
    }
}
