//! WebRTC viewers (WHEP): each gets its own peer connection with one H.264
//! and one Opus track, fed the session's already-encoded RTP packets.

use super::forward::forward;
use super::peer::*;
use super::settings::RtcSettings;
use crate::pipeline::KeyframeRequester;
use crate::session::{Command, SessionHandle};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::peer_connection::PeerConnection;

/// A viewer accepted by [`connect`]: its id and the SDP answer.
pub struct Accepted {
    pub viewer_id: String,
    pub answer_sdp: String,
}

/// Answers a viewer's SDP offer and starts feeding it the session's media.
/// The answer carries every ICE candidate (full gathering, no trickle).
pub async fn connect(
    settings: &RtcSettings,
    session: Arc<SessionHandle>,
    spawn: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
    offer_sdp: String,
) -> Result<Accepted, RtcError> {
    let offer =
        RTCSessionDescription::offer(offer_sdp).map_err(|e| RtcError::BadOffer(e.to_string()))?;
    let viewer_id = format!("vw_{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let (w, h) = (session.media.config.width, session.media.config.height);
    let vcodec = video_codec(w, h);
    let acodec = audio_codec();
    let mut base_engine = MediaEngine::default();
    base_engine
        .register_codec(vcodec.clone(), RtpCodecKind::Video)
        .and_then(|_| base_engine.register_codec(acodec.clone(), RtpCodecKind::Audio))
        .map_err(|e| RtcError::Internal(e.to_string()))?;
    let (pc, mut events) = build_peer(settings, base_engine, true).await?;
    let result = async {
        pc.set_remote_description(offer)
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        let mut video = Track::new(RtpCodecKind::Video, &vcodec, &viewer_id);
        let mut audio = Track::new(RtpCodecKind::Audio, &acodec, &viewer_id);
        let vsender = pc
            .add_track(video.track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        let asender = pc
            .add_track(audio.track.clone() as Arc<dyn TrackLocal>)
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        let answer_sdp = answer_with_candidates(settings, &*pc, &mut events).await?;
        take_payload_types([(&mut video, &vsender), (&mut audio, &asender)]).await?;
        Ok((answer_sdp, video, audio))
    }
    .await;
    let (answer_sdp, video, audio) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = pc.close().await;
            return Err(e);
        }
    };

    let cancel = session.cancel_token.child_token();
    session.viewers.insert(viewer_id.clone(), cancel.clone());
    let viewer = Viewer {
        id: viewer_id.clone(),
        pc,
        video,
        audio,
        keyframes: session.media.keyframe_requester(),
        cancel,
        connect_timeout: settings.config.connect_timeout,
        session,
    };
    spawn(Box::pin(viewer.run(events)));
    Ok(Accepted {
        viewer_id,
        answer_sdp,
    })
}

struct Viewer {
    id: String,
    pc: Arc<dyn PeerConnection>,
    video: Track,
    audio: Track,
    keyframes: KeyframeRequester,
    cancel: CancellationToken,
    connect_timeout: Duration,
    session: Arc<SessionHandle>,
}

impl Viewer {
    async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        let span = tracing::info_span!("viewer", session = %self.session.record.id, id = %self.id);
        let _ = tracing::Instrument::instrument(self.serve(&mut events), span).await;
        let _ = self.pc.close().await;
        self.session.viewers.remove(&self.id);
    }

    async fn serve(&mut self, events: &mut mpsc::Receiver<Event>) {
        // Wait for the connection (or give up).
        let up = wait_connected(events, self.connect_timeout, &self.cancel, &mut Vec::new()).await;
        if !up {
            tracing::info!("viewer did not connect");
            return;
        }
        tracing::info!("viewer connected");
        let _counted = crate::metrics::Gauged::new(&crate::metrics::METRICS.viewers);
        // Watch the session's events only via the actor; a full queue just
        // delays the count.
        let _ = self
            .session
            .send(Command::ViewerJoined {
                viewer_id: self.id.clone(),
            })
            .await;
        // Subscribe only now: a viewer starts from the live edge, never with
        // a burst of media queued while it was connecting.
        let packets = self.session.media.subscribe();
        forward(
            &mut self.video,
            &mut self.audio,
            &self.keyframes,
            &self.cancel,
            packets,
            events,
            None,
        )
        .await;
        let _ = self
            .session
            .send(Command::ViewerLeft {
                viewer_id: self.id.clone(),
            })
            .await;
        tracing::info!("viewer left");
    }
}
