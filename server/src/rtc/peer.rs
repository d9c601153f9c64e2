//! One WebRTC peer connection, whatever it carries: codecs, the event
//! handler, building the peer on a port of the allocator, answering an
//! offer with every candidate gathered, waiting for it to connect, and a
//! local track fed the session's RTP packets.

use super::keyframes;
use super::settings::RtcSettings;
use crate::pipeline::MediaPacket;
use crate::pipeline::encode::profile_level_id;
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

const H264_PT: u8 = 102;
const OPUS_PT: u8 = 111;
/// How long to wait for ICE gathering before answering.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("the SDP offer is not valid: {0}")]
    BadOffer(String),
    #[error("the offer cannot be answered: {0}")]
    Negotiation(String),
    #[error("no UDP port is free in the configured range")]
    NoPort,
    #[error("WebRTC: {0}")]
    Internal(String),
}

pub(super) fn video_codec(width: u32, height: u32) -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: crate::pipeline::clock::VIDEO_RATE,
            channels: 0,
            sdp_fmtp_line: format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
                profile_level_id(width, height)
            ),
            rtcp_feedback: vec![fb("nack", ""), fb("nack", "pli"), fb("ccm", "fir")],
        },
        payload_type: H264_PT,
    }
}

pub(super) fn audio_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: crate::pipeline::clock::AUDIO_RATE,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: OPUS_PT,
    }
}

/// Connection state changes, ICE gathering completion and remote tracks,
/// as a channel.
pub(super) struct Events {
    tx: mpsc::Sender<Event>,
}

pub(super) enum Event {
    Gathered,
    State(RTCPeerConnectionState),
    /// A track the remote peer sends (a WHIP publisher's microphone).
    Track(Arc<dyn TrackRemote>),
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.try_send(Event::Gathered);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.try_send(Event::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.try_send(Event::Track(track));
    }
}

/// Waits until the peer connects; false when it fails, closes, times out
/// or `cancel` fires first. Remote tracks that arrive meanwhile are kept in
/// `tracks`.
pub(super) async fn wait_connected(
    events: &mut mpsc::Receiver<Event>,
    timeout: Duration,
    cancel: &CancellationToken,
    tracks: &mut Vec<Arc<dyn TrackRemote>>,
) -> bool {
    let connected = tokio::time::timeout(timeout, async {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::State(RTCPeerConnectionState::Connected) => return true,
                Event::State(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) => {
                    return false;
                }
                Event::Track(t) => tracks.push(t),
                _ => {}
            }
        }
        false
    });
    tokio::select! {
        r = connected => r.unwrap_or(false),
        _ = cancel.cancelled() => false,
    }
}

pub(super) struct Track {
    pub(super) track: Arc<TrackLocalStaticRTP>,
    pub(super) ssrc: u32,
    pub(super) payload_type: u8,
    pub(super) seq: u16,
}

impl Track {
    pub(super) fn new(kind: RtpCodecKind, codec: &RTCRtpCodecParameters, id: &str) -> Self {
        let ssrc = rand::random::<u32>();
        let track = MediaStreamTrack::new(
            format!("huashen-{id}"),
            format!("{kind}-{id}"),
            format!("huashen {kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        Self {
            track: Arc::new(TrackLocalStaticRTP::new(track)),
            ssrc,
            payload_type: codec.payload_type,
            seq: rand::random(),
        }
    }

    pub(super) async fn send(&mut self, p: &MediaPacket) -> Result<(), webrtc::error::Error> {
        let mut pkt = p.packet.clone();
        pkt.header.ssrc = self.ssrc;
        pkt.header.payload_type = self.payload_type;
        pkt.header.sequence_number = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.track.write_rtp(pkt).await
    }
}

/// Sets each track's payload type to the one negotiated for its sender;
/// an error when the remote side took neither codec on a track.
pub(super) async fn take_payload_types(
    pairs: [(&mut Track, &Arc<dyn webrtc::rtp_transceiver::RtpSender>); 2],
) -> Result<(), RtcError> {
    for (track, sender) in pairs {
        let params = sender
            .get_parameters()
            .await
            .map_err(|e| RtcError::Negotiation(e.to_string()))?;
        match params.rtp_parameters.codecs.first() {
            Some(c) => track.payload_type = c.payload_type,
            None => {
                return Err(RtcError::Negotiation(
                    "the remote side accepts neither H.264 (constrained baseline) nor Opus on one of the tracks"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// Behind a 1:1 NAT, replaces the address of every host candidate in `sdp`
/// with the public address of the same family (the NAT forwards the
/// viewer's connectivity checks to the local socket; ICE authenticates them
/// by credentials, not by destination address).
pub(super) fn advertise_public(sdp: &str, public_ips: &[String]) -> String {
    if public_ips.is_empty() {
        return sdp.to_owned();
    }
    let public: Vec<std::net::IpAddr> = public_ips.iter().filter_map(|s| s.parse().ok()).collect();
    sdp.split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches(['\r', '\n']);
            if !(body.starts_with("a=candidate:") && body.contains(" typ host")) {
                return line.to_owned();
            }
            let mut f: Vec<String> = body.split(' ').map(str::to_owned).collect();
            let local: Option<std::net::IpAddr> = f.get(4).and_then(|a| a.parse().ok());
            match (local, f.len() > 5) {
                (Some(l), true) => {
                    if let Some(p) = public.iter().find(|p| p.is_ipv4() == l.is_ipv4()) {
                        f[4] = p.to_string();
                    }
                    format!("{}{}", f.join(" "), &line[body.len()..])
                }
                _ => line.to_owned(),
            }
        })
        .collect()
}

/// A peer connection on the next free port of the configured range, with
/// the media engine's codecs, the default interceptors (and the keyframe
/// request watcher, for senders), and its events on a channel.
pub(super) async fn build_peer(
    settings: &RtcSettings,
    base_engine: MediaEngine,
    keyframe_requests: bool,
) -> Result<(Arc<dyn PeerConnection>, mpsc::Receiver<Event>), RtcError> {
    let ice_servers = settings
        .own_ice_servers()
        .into_iter()
        .map(|(urls, username, credential)| RTCIceServer {
            urls,
            username,
            credential,
        })
        .collect();
    let rtc_config = RTCConfigurationBuilder::new()
        .with_ice_servers(ice_servers)
        .build();
    // 1:1 NAT is applied to the answer below: webrtc-rs 0.21 accepts the
    // setting but does not use it.
    let setting_engine = SettingEngineBuilder::new()
        .with_include_loopback_candidate(settings.config.bind_ip.is_loopback())
        .build();

    let (events_tx, events) = mpsc::channel(16);
    let handler = Arc::new(Events { tx: events_tx });
    let mut pc = None;
    for _ in 0..settings.tries() {
        let mut engine = base_engine.clone();
        let mut registry = register_default_interceptors(Registry::new(), &mut engine)
            .map_err(|e| RtcError::Internal(e.to_string()))?;
        if keyframe_requests {
            registry = registry.with(
                Slot::from(keyframes::SLOT),
                keyframes::KeyframeRequests::default(),
            );
        }
        let built = PeerConnectionBuilder::new()
            .with_configuration(rtc_config.clone())
            .with_media_engine(engine)
            .with_setting_engine(setting_engine.clone())
            .with_interceptor_registry(registry)
            .with_handler(handler.clone() as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![settings.next_addr()])
            .build()
            .await;
        match built {
            Ok(p) => {
                pc = Some(p);
                break;
            }
            Err(e) => tracing::debug!(error = %e, "cannot bind a viewer port; trying the next"),
        }
    }
    let pc: Arc<dyn PeerConnection> = Arc::new(pc.ok_or(RtcError::NoPort)?);
    Ok((pc, events))
}

/// Answers the remote offer already set on `pc` and waits for ICE
/// gathering, so the answer carries every candidate (no trickle); behind a
/// 1:1 NAT the public address replaces the host candidates.
pub(super) async fn answer_with_candidates(
    settings: &RtcSettings,
    pc: &dyn PeerConnection,
    events: &mut mpsc::Receiver<Event>,
) -> Result<String, RtcError> {
    let answer = pc
        .create_answer(None)
        .await
        .map_err(|e| RtcError::Negotiation(e.to_string()))?;
    pc.set_local_description(answer)
        .await
        .map_err(|e| RtcError::Negotiation(e.to_string()))?;
    local_sdp_with_candidates(settings, pc, events).await
}

/// The local description once ICE gathering is done (at most
/// `GATHER_TIMEOUT`), so it carries every candidate (no trickle); behind a
/// 1:1 NAT the public address replaces the host candidates.
pub(super) async fn local_sdp_with_candidates(
    settings: &RtcSettings,
    pc: &dyn PeerConnection,
    events: &mut mpsc::Receiver<Event>,
) -> Result<String, RtcError> {
    let _ = tokio::time::timeout(GATHER_TIMEOUT, async {
        while let Some(ev) = events.recv().await {
            if matches!(ev, Event::Gathered) {
                break;
            }
        }
    })
    .await;
    let local = pc
        .local_description()
        .await
        .ok_or_else(|| RtcError::Internal("no local description".into()))?;
    Ok(advertise_public(&local.sdp, &settings.config.nat_1to1_ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_address_replaces_host_candidates_of_its_family() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.5 50000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 fd00::5 50002 typ host\r\n\
                   a=candidate:3 1 udp 1694498815 198.51.100.1 50001 typ srflx raddr 10.0.0.5 rport 50000\r\n";
        let out = advertise_public(sdp, &["203.0.113.7".into()]);
        assert!(out.contains("203.0.113.7 50000 typ host\r\n"), "{out}");
        assert!(
            out.contains("fd00::5 50002 typ host"),
            "no IPv6 public address given: {out}"
        );
        assert!(out.contains("198.51.100.1 50001 typ srflx"), "{out}");
        assert_eq!(advertise_public(sdp, &[]), sdp);
    }
}
