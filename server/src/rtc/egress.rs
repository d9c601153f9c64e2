//! WHIP egress, the WebRTC side (Huashen as the WHIP client, RFC 9725): a
//! peer connection that offers the session's H.264 and Opus with every
//! ICE candidate in the offer (no trickle); the WHIP endpoint's answer
//! completes it, and the session's already-encoded packets then flow as
//! they do to a viewer. The HTTP side is in `outputs/whip.rs`.

use super::forward::{Ended, Sent, forward};
use super::peer::*;
use super::settings::RtcSettings;
use crate::session::SessionHandle;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;
use webrtc::rtp_transceiver::RtpSender;

/// An offer made, waiting for the endpoint's answer.
pub struct Offer {
    pub sdp: String,
    pc: Arc<dyn PeerConnection>,
    events: mpsc::Receiver<Event>,
    video: Track,
    audio: Track,
    senders: [Arc<dyn RtpSender>; 2],
}

/// A connected egress, ready to carry the session.
pub struct Connected {
    pc: Arc<dyn PeerConnection>,
    events: mpsc::Receiver<Event>,
    video: Track,
    audio: Track,
}

/// Makes the offer for `session`'s audio and video (`id` names the tracks).
pub async fn offer(
    settings: &RtcSettings,
    session: &SessionHandle,
    id: &str,
) -> Result<Offer, RtcError> {
    let (w, h) = (session.media.config.width, session.media.config.height);
    let (vcodec, acodec) = (video_codec(w, h), audio_codec());
    let mut engine = MediaEngine::default();
    engine
        .register_codec(vcodec.clone(), RtpCodecKind::Video)
        .and_then(|_| engine.register_codec(acodec.clone(), RtpCodecKind::Audio))
        .map_err(|e| RtcError::Internal(e.to_string()))?;
    let (pc, mut events) = build_peer(settings, engine, true).await?;
    let made = async {
        let video = Track::new(RtpCodecKind::Video, &vcodec, id);
        let audio = Track::new(RtpCodecKind::Audio, &acodec, id);
        let mut senders = Vec::new();
        for track in [&video, &audio] {
            let sender = pc
                .add_track(track.track.clone() as Arc<dyn TrackLocal>)
                .await
                .map_err(|e| RtcError::Negotiation(e.to_string()))?;
            senders.push(sender);
        }
        let offer = pc
            .create_offer(None)
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        pc.set_local_description(offer)
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        let sdp = local_sdp_with_candidates(settings, &*pc, &mut events).await?;
        let senders: [Arc<dyn RtpSender>; 2] = senders
            .try_into()
            .map_err(|_| RtcError::Internal("two senders".into()))?;
        Ok((sdp, video, audio, senders))
    }
    .await;
    match made {
        Ok((sdp, video, audio, senders)) => Ok(Offer {
            sdp,
            pc,
            events,
            video,
            audio,
            senders,
        }),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

impl Offer {
    /// Applies the endpoint's answer and waits (at most `timeout`) for the
    /// connection.
    pub async fn complete(
        mut self,
        answer_sdp: String,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Connected, RtcError> {
        let result = async {
            let answer = RTCSessionDescription::answer(answer_sdp)
                .map_err(|e| RtcError::BadOffer(format!("the answer is not SDP: {e}")))?;
            self.pc
                .set_remote_description(answer)
                .await
                .map_err(|e| RtcError::Negotiation(e.to_string()))?;
            let [vs, as_] = &self.senders;
            take_payload_types([(&mut self.video, vs), (&mut self.audio, as_)]).await?;
            if !wait_connected(&mut self.events, timeout, cancel, &mut Vec::new()).await {
                return Err(RtcError::Negotiation(
                    "the endpoint's peer did not connect (ICE/DTLS)".into(),
                ));
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(Connected {
                pc: self.pc,
                events: self.events,
                video: self.video,
                audio: self.audio,
            }),
            Err(e) => {
                let _ = self.pc.close().await;
                Err(e)
            }
        }
    }

    /// Gives up on the offer.
    pub async fn close(self) {
        let _ = self.pc.close().await;
    }
}

impl Connected {
    /// Carries the session until `cancel`, a failed connection or the
    /// session's end; then closes the connection.
    pub async fn run(
        mut self,
        session: &SessionHandle,
        cancel: &CancellationToken,
        sent: &Sent,
    ) -> Ended {
        let packets = session.media.subscribe();
        let keyframes = session.media.keyframe_requester();
        let ended = forward(
            &mut self.video,
            &mut self.audio,
            &keyframes,
            cancel,
            packets,
            &mut self.events,
            Some(sent),
        )
        .await;
        let _ = self.pc.close().await;
        ended
    }
}
