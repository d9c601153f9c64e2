//! A real WebRTC viewer for tests: recvonly peer connection, WHEP signalling,
//! H.264 depacketized and decoded with OpenH264, Opus decoded, RTCP sender
//! reports recorded.

#![allow(dead_code)]

use crate::common::http;
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::codec::h264::H264Packet;
use rtc::rtp::packetizer::Depacketizer;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

/// What one viewer saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub frames_decoded: usize,
    /// Mean absolute RGB error of each checked frame against the expected.
    pub frame_errors: Vec<f64>,
    pub audio_packets: usize,
    pub audio_decoded: usize,
    /// (RTP timestamp, arrival as Unix seconds).
    pub audio_ts: Vec<(u32, f64)>,
    /// Timestamps of complete video frames.
    pub video_ts: Vec<(u32, f64)>,
    /// Last sender report per kind: (NTP seconds as Unix, RTP timestamp).
    pub audio_sr: Option<(f64, u32)>,
    pub video_sr: Option<(f64, u32)>,
    pub connected: bool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn ntp_to_unix(ntp: u64) -> f64 {
    (ntp >> 32) as f64 - 2_208_988_800.0 + (ntp & 0xFFFF_FFFF) as f64 / 4_294_967_296.0
}

/// Marks inbound sender reports for the application.
#[derive(Default)]
struct SenderReports {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SenderReports {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = std::time::Instant;
    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && packets.iter().any(|p| p.as_any().is::<SenderReport>())
        {
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.reads.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for SenderReports {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

struct Handler {
    gathered: mpsc::Sender<()>,
    tracks: mpsc::Sender<Arc<dyn TrackRemote>>,
    state: mpsc::Sender<RTCPeerConnectionState>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }
    async fn on_track(&self, t: Arc<dyn TrackRemote>) {
        let _ = self.tracks.try_send(t);
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.state.try_send(s);
    }
}

pub struct Viewer {
    pub pc: Arc<dyn PeerConnection>,
    pub seen: Arc<Mutex<Seen>>,
    /// WHEP resource of this viewer.
    pub location: String,
    pub addr: SocketAddr,
    pub token: String,
}

/// Expected picture for the frame comparison: RGB, width, height.
pub type Expected = Arc<(Vec<u8>, u32, u32)>;

/// Connects a viewer by WHEP; media is collected into `seen` until closed.
pub async fn connect(
    addr: SocketAddr,
    session_id: &str,
    token: &str,
    expected: Expected,
) -> Result<Viewer, String> {
    let mut me = MediaEngine::default();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.into(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )
    .unwrap();
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.into(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
                rtcp_feedback: vec![],
            },
            payload_type: 109,
        },
        RtpCodecKind::Audio,
    )
    .unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut me)
        .unwrap()
        .with(Slot::from(14_000usize), SenderReports::default());
    let (gtx, mut grx) = mpsc::channel(1);
    let (ttx, mut trx) = mpsc::channel(4);
    let (stx, mut srx) = mpsc::channel(16);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler {
            gathered: gtx,
            tracks: ttx,
            state: stx,
        }))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let offer = pc.create_offer(None).await.map_err(|e| e.to_string())?;
    pc.set_local_description(offer)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
    let sdp = pc.local_description().await.unwrap().sdp;
    let auth = format!("Bearer {token}");
    let resp = http(
        addr,
        "POST",
        &format!("/whep/sessions/{session_id}"),
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        sdp.as_bytes(),
    )
    .await;
    if resp.status != 201 {
        return Err(format!("WHEP answered {}: {}", resp.status, resp.text()));
    }
    let location = resp.header("location").ok_or("no Location")?.to_owned();
    let answer = RTCSessionDescription::answer(resp.text()).map_err(|e| e.to_string())?;
    pc.set_remote_description(answer)
        .await
        .map_err(|e| e.to_string())?;

    let seen = Arc::new(Mutex::new(Seen::default()));
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(s) = srx.recv().await {
                if s == RTCPeerConnectionState::Connected {
                    seen.lock().unwrap().connected = true;
                }
            }
        });
    }
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(track) = trx.recv().await {
                let seen = seen.clone();
                let expected = expected.clone();
                tokio::spawn(async move { read_track(track, seen, expected).await });
            }
        });
    }
    Ok(Viewer {
        pc,
        seen,
        location,
        addr,
        token: token.to_owned(),
    })
}

async fn read_track(track: Arc<dyn TrackRemote>, seen: Arc<Mutex<Seen>>, expected: Expected) {
    let video = track.kind().await == RtpCodecKind::Video;
    let mut h264 = H264Packet::default();
    let mut au: Vec<u8> = vec![];
    let mut decoder = openh264::decoder::Decoder::new().unwrap();
    let mut opus = opus::Decoder::new(48_000, opus::Channels::Stereo).unwrap();
    let mut pcm = vec![0i16; 5760 * 2];
    let (exp, w, h) = (&expected.0, expected.1 as usize, expected.2 as usize);
    let mut rgb = vec![0u8; w * h * 3];
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let now = unix_now();
                if video {
                    if let Ok(nals) = h264.depacketize(&pkt.payload) {
                        au.extend_from_slice(&nals);
                    }
                    if pkt.header.marker {
                        let data = std::mem::take(&mut au);
                        let mut s = seen.lock().unwrap();
                        s.video_ts.push((pkt.header.timestamp, now));
                        if let Ok(Some(yuv)) = decoder.decode(&data) {
                            s.frames_decoded += 1;
                            // Compare every 5th frame (decoding is cheap, comparing less so).
                            if s.frames_decoded % 5 == 1 {
                                use openh264::formats::YUVSource;
                                if yuv.dimensions() == (w, h) {
                                    yuv.write_rgb8(&mut rgb);
                                    let err = rgb
                                        .iter()
                                        .zip(exp)
                                        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                                        .sum::<f64>()
                                        / rgb.len() as f64;
                                    s.frame_errors.push(err);
                                } else {
                                    s.frame_errors.push(f64::INFINITY);
                                }
                            }
                        }
                    }
                } else {
                    let mut s = seen.lock().unwrap();
                    s.audio_packets += 1;
                    s.audio_ts.push((pkt.header.timestamp, now));
                    if opus.decode(&pkt.payload, &mut pcm, false).unwrap_or(0) > 0 {
                        s.audio_decoded += 1;
                    }
                }
            }
            TrackRemoteEvent::OnRtcpPacket(packets) => {
                for p in packets {
                    if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                        let mut s = seen.lock().unwrap();
                        let v = Some((ntp_to_unix(sr.ntp_time), sr.rtp_time));
                        if video {
                            s.video_sr = v
                        } else {
                            s.audio_sr = v
                        }
                    }
                }
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

impl Viewer {
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Ends the viewer the polite way: WHEP DELETE, then close.
    pub async fn hang_up(self) -> u16 {
        let auth = format!("Bearer {}", self.token);
        let r = http(
            self.addr,
            "DELETE",
            &self.location,
            &[("Authorization", &auth)],
            b"",
        )
        .await;
        let _ = self.pc.close().await;
        r.status
    }
}
