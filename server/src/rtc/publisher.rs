//! WHIP publishers: the host's microphone (Opus) over WebRTC, decoded by
//! voice ingest into the session's voice lane.

use super::peer::*;
use super::settings::RtcSettings;
use crate::ingest::voice::{Encoding, VoiceDecoder};
use crate::pipeline::clock::AUDIO_RATE;
use crate::pipeline::voice::VoiceFeed;
use crate::session::SessionHandle;
use crate::session::voice::{self, Damaged};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_remote::TrackRemoteEvent;
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

/// A publisher accepted by [`publish`]: its id and the SDP answer.
pub struct Published {
    pub publisher_id: String,
    pub answer_sdp: String,
}

/// Answers a WHIP publisher's SDP offer (the host's microphone, Opus) and
/// feeds what it sends into the session's live voice until `cancel` fires,
/// the publisher goes away or the session closes.
pub async fn publish(
    settings: &RtcSettings,
    session: Arc<SessionHandle>,
    feed: VoiceFeed,
    cancel: CancellationToken,
    spawn: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    offer_sdp: String,
) -> Result<Published, RtcError> {
    let offer =
        RTCSessionDescription::offer(offer_sdp).map_err(|e| RtcError::BadOffer(e.to_string()))?;
    let publisher_id = format!("pb_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let mut engine = MediaEngine::default();
    engine
        .register_codec(audio_codec(), RtpCodecKind::Audio)
        .map_err(|e| RtcError::Internal(e.to_string()))?;
    let (pc, mut events) = build_peer(settings, engine, false).await?;
    let answered = async {
        pc.set_remote_description(offer)
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        let sdp = answer_with_candidates(settings, &*pc, &mut events).await?;
        if !sdp.contains("a=rtpmap:") || !sdp.to_ascii_lowercase().contains("opus/48000") {
            return Err(RtcError::Negotiation(
                "the offer sends no Opus audio track (a WHIP publisher sends the host's microphone as Opus)"
                    .into(),
            ));
        }
        Ok(sdp)
    }
    .await;
    let answer_sdp = match answered {
        Ok(sdp) => sdp,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };
    let publisher = Publisher {
        id: publisher_id.clone(),
        pc,
        feed,
        cancel,
        connect_timeout: settings.config.connect_timeout,
        session,
    };
    spawn(Box::pin(publisher.run(events)));
    Ok(Published {
        publisher_id,
        answer_sdp,
    })
}

struct Publisher {
    id: String,
    pc: Arc<dyn PeerConnection>,
    feed: VoiceFeed,
    cancel: CancellationToken,
    connect_timeout: Duration,
    session: Arc<SessionHandle>,
}

impl Publisher {
    async fn run(self, mut events: mpsc::Receiver<Event>) {
        let span =
            tracing::info_span!("publisher", session = %self.session.record.id, id = %self.id);
        let pc = self.pc.clone();
        let cancel = self.cancel.clone();
        tracing::Instrument::instrument(self.serve(&mut events), span).await;
        cancel.cancel();
        let _ = pc.close().await;
    }

    async fn serve(self, events: &mut mpsc::Receiver<Event>) {
        let mut tracks = Vec::new();
        if !wait_connected(events, self.connect_timeout, &self.cancel, &mut tracks).await {
            tracing::info!("publisher did not connect");
            return;
        }
        tracing::info!("publisher connected");
        let track = loop {
            if let Some(t) = tracks.pop() {
                break t;
            }
            let ev = tokio::select! {
                ev = events.recv() => ev,
                _ = self.cancel.cancelled() => return,
            };
            match ev {
                Some(Event::Track(t)) => tracks.push(t),
                Some(Event::State(
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
                ))
                | None => return,
                Some(_) => {}
            }
        };
        let decoder = match VoiceDecoder::new(Encoding::Opus, AUDIO_RATE, 2) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "publisher audio cannot be decoded");
                return;
            }
        };
        // The track's RTP payloads (Opus packets) until it ends or the
        // connection fails (the connection ending ends the track too).
        let packets = futures::stream::unfold((track, events), |(track, events)| async move {
            loop {
                let ev = tokio::select! {
                    ev = track.poll() => ev,
                    Some(Event::State(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) = events.recv() => None,
                };
                match ev {
                    Some(TrackRemoteEvent::OnRtpPacket(pkt)) => {
                        return Some((Ok(pkt.payload.to_vec()), (track, events)));
                    }
                    Some(TrackRemoteEvent::OnEnded) | None => return None,
                    Some(_) => {}
                }
            }
        });
        let played = voice::play(
            &self.session,
            &self.feed,
            decoder,
            packets,
            &self.cancel,
            Damaged::Skip,
        )
        .await;
        match played {
            Ok(ms) => tracing::info!(ms, "publisher left"),
            Err(e) => tracing::info!(error = %e, "publisher ended"),
        }
    }
}
