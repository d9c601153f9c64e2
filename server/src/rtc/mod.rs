//! WebRTC viewers. Each viewer gets its own peer connection with one H.264
//! and one Opus track, fed the session's already-encoded RTP packets: the
//! session encodes once, however many watch. Only SSRC, payload type and
//! sequence number are rewritten per viewer; timestamps stay on the session
//! clock, and RTCP sender reports map them to wall-clock time for lip sync.
//!
//! A viewer that falls behind loses packets from its own buffer and resumes
//! at the next keyframe (which it requests); it never slows the session or
//! other viewers.

mod keyframes;
pub mod whep;
pub mod whip;

use crate::config::WebrtcConfig;
use crate::pipeline::clock::AUDIO_RATE;
use crate::pipeline::encode::profile_level_id;
use crate::pipeline::voice::{Encoding, VoiceDecoder, VoiceFeed};
use crate::pipeline::{KeyframeRequester, MediaKind, MediaPacket};
use crate::session::{Command, SessionHandle};
use rtc::interceptor::{Registry, Slot};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
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

/// Viewer settings from the config, plus the port allocator.
pub struct RtcSettings {
    config: WebrtcConfig,
    next_port: AtomicU32,
}

impl RtcSettings {
    pub fn new(config: WebrtcConfig) -> Arc<Self> {
        Arc::new(Self {
            next_port: AtomicU32::new(u32::from(config.port_min)),
            config,
        })
    }

    pub fn max_viewers(&self) -> usize {
        self.config.max_viewers_per_session
    }

    /// ICE servers as WHEP `Link` header values (RFC 9725 §4.6).
    pub fn ice_server_links(&self) -> Vec<String> {
        let mut links = vec![];
        for s in &self.config.ice_servers {
            for url in &s.urls {
                let mut l = format!("<{url}>; rel=\"ice-server\"");
                if !s.username.is_empty() {
                    l.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        s.username, s.credential
                    ));
                }
                links.push(l);
            }
        }
        links
    }

    /// The next local UDP address to try for a viewer.
    fn next_addr(&self) -> SocketAddr {
        let (lo, hi) = (self.config.port_min, self.config.port_max);
        let port = if lo == 0 {
            0
        } else {
            let span = u32::from(hi - lo) + 1;
            let n = self.next_port.fetch_add(1, Ordering::Relaxed);
            lo + ((n - u32::from(lo)) % span) as u16
        };
        SocketAddr::new(self.config.bind_ip, port)
    }

    fn tries(&self) -> u32 {
        if self.config.port_min == 0 {
            1
        } else {
            u32::from(self.config.port_max - self.config.port_min) + 1
        }
    }
}

fn video_codec(width: u32, height: u32) -> RTCRtpCodecParameters {
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

fn audio_codec() -> RTCRtpCodecParameters {
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
struct Events {
    tx: mpsc::Sender<Event>,
}

enum Event {
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
async fn wait_connected(
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

struct Track {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
    seq: u16,
}

impl Track {
    fn new(kind: RtpCodecKind, codec: &RTCRtpCodecParameters, id: &str) -> Self {
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

    async fn send(&mut self, p: &MediaPacket) -> Result<(), webrtc::error::Error> {
        let mut pkt = p.packet.clone();
        pkt.header.ssrc = self.ssrc;
        pkt.header.payload_type = self.payload_type;
        pkt.header.sequence_number = self.seq;
        self.seq = self.seq.wrapping_add(1);
        self.track.write_rtp(pkt).await
    }
}

/// Behind a 1:1 NAT, replaces the address of every host candidate in `sdp`
/// with the public address of the same family (the NAT forwards the
/// viewer's connectivity checks to the local socket; ICE authenticates them
/// by credentials, not by destination address).
fn advertise_public(sdp: &str, public_ips: &[String]) -> String {
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
        for (track, sender) in [(&mut video, vsender), (&mut audio, asender)] {
            let params = sender
                .get_parameters()
                .await
                .map_err(|e| RtcError::Negotiation(e.to_string()))?;
            match params.rtp_parameters.codecs.first() {
                Some(c) => track.payload_type = c.payload_type,
                None => {
                    return Err(RtcError::Negotiation(
                        "the offer accepts neither H.264 (constrained baseline) nor Opus on one of its tracks"
                            .into(),
                    ));
                }
            }
        }
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

/// A peer connection on the next free port of the configured range, with
/// the media engine's codecs, the default interceptors (and the keyframe
/// request watcher, for senders), and its events on a channel.
async fn build_peer(
    settings: &RtcSettings,
    base_engine: MediaEngine,
    keyframe_requests: bool,
) -> Result<(Arc<dyn PeerConnection>, mpsc::Receiver<Event>), RtcError> {
    let ice_servers = settings
        .config
        .ice_servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone(),
            credential: s.credential.clone(),
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
async fn answer_with_candidates(
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
        let mut decoder = match VoiceDecoder::new(Encoding::Opus, AUDIO_RATE, 2) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "publisher audio cannot be decoded");
                return;
            }
        };
        let mut pcm = Vec::new();
        let mut last_activity = std::time::Instant::now();
        loop {
            let ev = tokio::select! {
                ev = track.poll() => ev,
                _ = self.cancel.cancelled() => break,
                // The connection ending ends the track too; state changes
                // are only watched for failure here.
                Some(Event::State(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)) = events.recv() => break,
            };
            match ev {
                Some(TrackRemoteEvent::OnRtpPacket(pkt)) => {
                    pcm.clear();
                    // A packet that does not decode is skipped (a lost or
                    // damaged one is a short silence).
                    if decoder.decode(&pkt.payload, &mut pcm).is_ok()
                        && !self.feed.push(&pcm, &self.cancel).await
                    {
                        break;
                    }
                    if last_activity.elapsed() >= Duration::from_secs(1) {
                        last_activity = std::time::Instant::now();
                        self.session.try_send(Command::Activity);
                    }
                }
                Some(TrackRemoteEvent::OnEnded) | None => break,
                Some(_) => {}
            }
        }
        tracing::info!(ms = decoder.decoded_ms(), "publisher left");
    }
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
        self.keyframes.request();
        let rtcp = tokio::spawn(watch_keyframe_requests(
            self.video.track.clone(),
            self.keyframes.clone(),
            self.cancel.clone(),
        ));
        self.forward(packets, events).await;
        rtcp.abort();
        let _ = self
            .session
            .send(Command::ViewerLeft {
                viewer_id: self.id.clone(),
            })
            .await;
        tracing::info!("viewer left");
    }

    async fn forward(
        &mut self,
        mut packets: broadcast::Receiver<Arc<MediaPacket>>,
        events: &mut mpsc::Receiver<Event>,
    ) {
        // Video starts (and resumes after a loss) at a keyframe.
        let mut wait_keyframe = true;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                ev = events.recv() => match ev {
                    Some(Event::State(
                        RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                        | RTCPeerConnectionState::Disconnected,
                    ))
                    | None => return,
                    _ => {}
                },
                p = packets.recv() => match p {
                    Ok(p) => {
                        let sent = match p.kind {
                            MediaKind::Audio => self.audio.send(&p).await,
                            MediaKind::Video => {
                                if wait_keyframe && !p.keyframe_start {
                                    continue;
                                }
                                wait_keyframe = false;
                                self.video.send(&p).await
                            }
                        };
                        if let Err(e) = sent {
                            tracing::debug!(error = %e, "cannot send to viewer");
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "viewer fell behind; resuming at a keyframe");
                        crate::metrics::METRICS.viewer_lag_events.inc();
                        wait_keyframe = true;
                        self.keyframes.request();
                    }
                    // The session's media stopped: the session closed.
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

/// Turns the viewer's PLI/FIR into keyframe requests.
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
