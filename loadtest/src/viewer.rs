//! A real WebRTC viewer: a recvonly peer connection signalled by WHEP, H.264
//! depacketized and decoded with OpenH264, Opus decoded, RTCP sender reports
//! recorded so audio/video offset can be computed as a browser would.
//! Used by `huashen-loadtest` and by the server's integration tests.

use crate::http;
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
/// RMS (full scale 1) above which a decoded audio frame counts as speech;
/// the server's silence decodes to exactly 0.
pub const SPEECH_RMS: f64 = 0.01;

#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// When the WHEP offer was sent (Unix seconds).
    pub started_at: f64,
    pub connected: bool,
    /// Arrival of the first complete video frame (Unix seconds).
    pub first_frame_at: Option<f64>,
    /// Arrival of the first audio packet (Unix seconds).
    pub first_audio_at: Option<f64>,
    pub frames_decoded: usize,
    /// Mean absolute RGB error of every 5th decoded frame against the
    /// expected picture (when one was given).
    pub frame_errors: Vec<f64>,
    pub audio_packets: usize,
    pub audio_decoded: usize,
    /// Decoded 20 ms audio frames louder than [`SPEECH_RMS`] (speech, not
    /// silence), and the arrival of the first one (Unix seconds).
    pub audio_loud_frames: usize,
    pub first_loud_audio_at: Option<f64>,
    /// RTP timestamp of the first loud audio frame.
    pub first_loud_audio_ts: Option<u32>,
    /// Highest RMS of a decoded audio frame (full scale = 1).
    pub audio_peak_rms: f64,
    /// Arrival times (Unix seconds) of speech onsets: a loud frame after at
    /// least 100 ms of silence.
    pub speech_onsets: Vec<f64>,
    /// Arrival of the last loud frame.
    pub last_loud_audio_at: Option<f64>,
    /// (RTP timestamp, arrival as Unix seconds) of audio packets.
    pub audio_ts: Vec<(u32, f64)>,
    /// (RTP timestamp, RMS) of every decoded audio frame.
    pub audio_levels: Vec<(u32, f64)>,
    /// (RTP timestamp, arrival) of complete video frames.
    pub video_ts: Vec<(u32, f64)>,
    /// Last sender report per track: (its NTP time as Unix seconds, RTP time).
    pub audio_sr: Option<(f64, u32)>,
    pub video_sr: Option<(f64, u32)>,
    /// Packets received and the span of sequence numbers seen, per track,
    /// for loss: 1 - received / span.
    pub video_seq: SeqCount,
    pub audio_seq: SeqCount,
    /// AI-generated labels found in the video stream, and the last one.
    pub ai_labels: usize,
    pub last_ai_label: Option<String>,
    /// The last decoded frame as RGB (kept when an expected picture is
    /// given, for inspection).
    pub last_frame: Option<Vec<u8>>,
    /// Per decoded frame, when a region is watched: (RTP timestamp, arrival
    /// as Unix seconds, mean luma of the region, share of its pixels darker
    /// than luma 60).
    pub watched: Vec<(u32, f64, f64, f64)>,
}

/// Where a session's picture shows the avatar's mouth: Huashen frames the
/// face head-and-shoulders with the eyes at 40 % of the height and 24 % of
/// the shorter side from eyes to chin, so the mouth sits in this box
/// (x0, y0, x1, y1) whatever the portrait.
pub fn mouth_region(w: usize, h: usize) -> [usize; 4] {
    let s = w.min(h) as f64;
    let (cx, eyes) = (w as f64 / 2.0, h as f64 * 0.4);
    [
        (cx - 0.12 * s) as usize,
        (eyes + 0.08 * s) as usize,
        (cx + 0.12 * s) as usize,
        ((eyes + 0.26 * s) as usize).min(h),
    ]
}

impl Seen {
    /// Arrival (Unix seconds) of the first frame after `t` whose watched
    /// region changed beyond anything in the second before `t`: more
    /// dark pixels (an open mouth), or a mean brightness outside the idle
    /// range by more than 1.5 levels.
    pub fn mouth_opened_after(&self, t: f64) -> Option<f64> {
        let idle: Vec<_> = self
            .watched
            .iter()
            .filter(|w| w.1 < t && w.1 >= t - 1.0)
            .collect();
        if idle.is_empty() {
            return None;
        }
        let dark = idle.iter().map(|w| w.3).fold(0.0, f64::max);
        let lo = idle.iter().map(|w| w.2).fold(f64::MAX, f64::min);
        let hi = idle.iter().map(|w| w.2).fold(f64::MIN, f64::max);
        self.watched
            .iter()
            .find(|w| w.1 >= t && (w.3 > dark + 0.003 || w.2 < lo - 1.5 || w.2 > hi + 1.5))
            .map(|w| w.1)
    }
}

/// Counts received packets against the sequence-number span.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqCount {
    first: Option<u16>,
    /// Extended highest sequence number, relative to the first.
    highest: i64,
    pub received: u64,
}

impl SeqCount {
    fn add(&mut self, seq: u16) {
        let first = *self.first.get_or_insert(seq);
        let rel = i64::from(seq.wrapping_sub(first));
        // Unwrap relative to the highest seen so far.
        let cycle = self.highest & !0xFFFF;
        let mut ext = cycle + rel;
        if ext < self.highest - 0x8000 {
            ext += 0x10000;
        } else if ext > self.highest + 0x8000 && ext >= 0x10000 {
            ext -= 0x10000;
        }
        self.highest = self.highest.max(ext);
        self.received += 1;
    }

    /// Fraction of packets lost (0 when none expected).
    pub fn loss(&self) -> f64 {
        let expected = (self.highest + 1) as f64;
        if self.first.is_none() || expected <= 0.0 {
            return 0.0;
        }
        (1.0 - self.received as f64 / expected).max(0.0)
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn ntp_to_unix(ntp: u64) -> f64 {
    (ntp >> 32) as f64 - 2_208_988_800.0 + (ntp & 0xFFFF_FFFF) as f64 / 4_294_967_296.0
}

/// Marks inbound sender reports for the application (webrtc-rs stops inbound
/// RTCP at the end of its interceptor chain otherwise).
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

/// Expected picture for the frame comparison: RGB bytes, width, height.
pub type Expected = Arc<(Vec<u8>, u32, u32)>;

#[derive(Debug, Clone)]
pub struct ViewerOptions {
    /// Decode H.264 and Opus (costs CPU in this process); otherwise only
    /// count and time packets.
    pub decode: bool,
    /// Compare decoded frames with this picture.
    pub expected: Option<Expected>,
    /// Local address for the viewer's media socket (loopback by default).
    pub bind_ip: std::net::IpAddr,
    /// A rectangle of the picture (x0, y0, x1, y1) whose brightness is
    /// recorded for every decoded frame (e.g. the avatar's mouth).
    pub watch: Option<[usize; 4]>,
}

impl Default for ViewerOptions {
    fn default() -> Self {
        Self {
            decode: false,
            expected: None,
            bind_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            watch: None,
        }
    }
}

pub struct Viewer {
    pub pc: Arc<dyn PeerConnection>,
    pub seen: Arc<Mutex<Seen>>,
    /// WHEP resource of this viewer.
    pub location: String,
    /// The ICE servers the answer offered (its `Link` headers, RFC 9725).
    pub ice_links: Vec<String>,
    addr: SocketAddr,
    token: String,
    watch: Option<[usize; 4]>,
}

fn codec(mime: &str, rate: u32, channels: u16, fmtp: &str, pt: u8) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// Connects a viewer to `session_id` on the server at `addr` by WHEP; media
/// is collected into `seen` until the viewer is closed.
pub async fn connect(
    addr: SocketAddr,
    session_id: &str,
    token: &str,
    options: ViewerOptions,
) -> Result<Viewer, String> {
    let watch = options.watch;
    fn err(what: &'static str) -> impl Fn(webrtc::error::Error) -> String {
        move |e| format!("{what}: {e}")
    }
    let mut me = MediaEngine::default();
    me.register_codec(
        codec(
            MIME_TYPE_H264,
            90_000,
            0,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
            96,
        ),
        RtpCodecKind::Video,
    )
    .map_err(|e| e.to_string())?;
    me.register_codec(
        codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 109),
        RtpCodecKind::Audio,
    )
    .map_err(|e| e.to_string())?;
    let registry = register_default_interceptors(Registry::new(), &mut me)
        .map_err(|e| e.to_string())?
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
        .with_udp_addrs(vec![SocketAddr::new(options.bind_ip, 0)])
        .build()
        .await
        .map_err(err("peer connection"))?;
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
        .map_err(err("transceiver"))?;
    }
    let offer = pc.create_offer(None).await.map_err(err("offer"))?;
    pc.set_local_description(offer)
        .await
        .map_err(err("local description"))?;
    let _ = tokio::time::timeout(Duration::from_secs(5), grx.recv()).await;
    let sdp = pc
        .local_description()
        .await
        .ok_or("no local description")?
        .sdp;
    let seen = Arc::new(Mutex::new(Seen {
        started_at: unix_now(),
        ..Default::default()
    }));
    let auth = format!("Bearer {token}");
    let resp = http::request(
        addr,
        "POST",
        &format!("/whep/sessions/{session_id}"),
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        sdp.as_bytes(),
        Duration::from_secs(20),
    )
    .await
    .map_err(|e| format!("WHEP request: {e}"))?;
    if resp.status != 201 {
        let _ = pc.close().await;
        return Err(format!(
            "WHEP answered {}: {}",
            resp.status,
            resp.text().trim()
        ));
    }
    let location = resp.header("location").ok_or("no Location")?.to_owned();
    let ice_links = resp
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("link"))
        .map(|(_, v)| v.clone())
        .collect();
    let answer = RTCSessionDescription::answer(resp.text()).map_err(|e| e.to_string())?;
    pc.set_remote_description(answer)
        .await
        .map_err(err("remote description"))?;

    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(s) = srx.recv().await {
                if s == RTCPeerConnectionState::Connected {
                    lock(&seen).connected = true;
                }
            }
        });
    }
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(track) = trx.recv().await {
                let seen = seen.clone();
                let options = options.clone();
                tokio::spawn(async move { read_track(track, seen, options).await });
            }
        });
    }
    Ok(Viewer {
        pc,
        seen,
        location,
        ice_links,
        addr,
        token: token.to_owned(),
        watch,
    })
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

async fn read_track(track: Arc<dyn TrackRemote>, seen: Arc<Mutex<Seen>>, options: ViewerOptions) {
    let video = track.kind().await == RtpCodecKind::Video;
    let mut h264 = H264Packet::default();
    let mut au: Vec<u8> = vec![];
    let mut h264_decoder = if video && options.decode {
        openh264::decoder::Decoder::new().ok()
    } else {
        None
    };
    let mut opus_decoder = if !video && options.decode {
        opus::Decoder::new(48_000, opus::Channels::Stereo).ok()
    } else {
        None
    };
    let mut pcm = vec![0i16; 5760 * 2];
    let mut rgb = vec![];
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let now = unix_now();
                if video {
                    if let Ok(nals) = h264.depacketize(&pkt.payload) {
                        au.extend_from_slice(&nals);
                    }
                    let mut s = lock(&seen);
                    s.video_seq.add(pkt.header.sequence_number);
                    if !pkt.header.marker {
                        continue;
                    }
                    let data = std::mem::take(&mut au);
                    if let Some(label) = huashen_protos::sei::find_label(&data) {
                        s.ai_labels += 1;
                        s.last_ai_label = Some(label);
                    }
                    s.video_ts.push((pkt.header.timestamp, now));
                    s.first_frame_at.get_or_insert(now);
                    let Some(dec) = h264_decoder.as_mut() else {
                        s.frames_decoded += 1;
                        continue;
                    };
                    if let Ok(Some(yuv)) = dec.decode(&data) {
                        s.frames_decoded += 1;
                        if let Some([x0, y0, x1, y1]) = options.watch {
                            use openh264::formats::YUVSource;
                            let (w, h) = yuv.dimensions();
                            let stride = yuv.strides().0;
                            let (x1, y1) = (x1.min(w), y1.min(h));
                            let (mut sum, mut dark, mut n) = (0u64, 0u64, 0u64);
                            for yy in y0..y1 {
                                for &l in &yuv.y()[yy * stride + x0..yy * stride + x1] {
                                    sum += u64::from(l);
                                    dark += u64::from(l < 60);
                                    n += 1;
                                }
                            }
                            let n = n.max(1) as f64;
                            s.watched.push((
                                pkt.header.timestamp,
                                now,
                                sum as f64 / n,
                                dark as f64 / n,
                            ));
                        }
                        if let Some(exp) = &options.expected
                            && s.frames_decoded % 5 == 1
                        {
                            use openh264::formats::YUVSource;
                            let (w, h) = (exp.1 as usize, exp.2 as usize);
                            if yuv.dimensions() == (w, h) {
                                rgb.resize(w * h * 3, 0);
                                yuv.write_rgb8(&mut rgb);
                                let err = rgb
                                    .iter()
                                    .zip(&exp.0)
                                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                                    .sum::<f64>()
                                    / rgb.len() as f64;
                                s.frame_errors.push(err);
                                s.last_frame = Some(rgb.clone());
                            } else {
                                s.frame_errors.push(f64::INFINITY);
                            }
                        }
                    }
                } else {
                    let mut s = lock(&seen);
                    s.audio_seq.add(pkt.header.sequence_number);
                    s.audio_packets += 1;
                    s.audio_ts.push((pkt.header.timestamp, now));
                    s.first_audio_at.get_or_insert(now);
                    match opus_decoder.as_mut() {
                        Some(d) => {
                            let n = d.decode(&pkt.payload, &mut pcm, false).unwrap_or(0);
                            if n > 0 {
                                s.audio_decoded += 1;
                                let samples = &pcm[..n * 2];
                                let rms = (samples
                                    .iter()
                                    .map(|&v| (f64::from(v) / 32768.0).powi(2))
                                    .sum::<f64>()
                                    / samples.len() as f64)
                                    .sqrt();
                                s.audio_peak_rms = s.audio_peak_rms.max(rms);
                                s.audio_levels.push((pkt.header.timestamp, rms));
                                if rms > SPEECH_RMS {
                                    if s.last_loud_audio_at.is_none_or(|t| now - t > 0.1) {
                                        s.speech_onsets.push(now);
                                    }
                                    s.last_loud_audio_at = Some(now);
                                    s.audio_loud_frames += 1;
                                    s.first_loud_audio_at.get_or_insert(now);
                                    s.first_loud_audio_ts.get_or_insert(pkt.header.timestamp);
                                }
                            }
                        }
                        None => s.audio_decoded += 1,
                    }
                }
            }
            TrackRemoteEvent::OnRtcpPacket(packets) => {
                for p in packets {
                    if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                        let mut s = lock(&seen);
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

impl Seen {
    /// Audio minus video presentation offset in seconds, from the sender
    /// reports: each packet's wall-clock time by its track's report, minus
    /// its arrival; the medians of the two tracks are compared. `None`
    /// until both tracks have a report and packets.
    pub fn av_offset(&self) -> Option<f64> {
        let offsets = |ts: &[(u32, f64)], sr: (f64, u32), rate: f64| {
            let mut v: Vec<f64> = ts
                .iter()
                .map(|&(t, arrived)| sr.0 + f64::from(t.wrapping_sub(sr.1) as i32) / rate - arrived)
                .collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v.get(v.len() / 2).copied()
        };
        let a = offsets(&self.audio_ts, self.audio_sr?, 48_000.0)?;
        let v = offsets(&self.video_ts, self.video_sr?, 90_000.0)?;
        Some(a - v)
    }

    /// A track's RTP timestamp as sender time (Unix seconds, from its last
    /// sender report): audio and video timestamps become comparable.
    pub fn sender_time(&self, ts: u32, video: bool) -> Option<f64> {
        let (sr, rate) = if video {
            (self.video_sr?, 90_000.0)
        } else {
            (self.audio_sr?, 48_000.0)
        };
        Some(sr.0 + f64::from(ts.wrapping_sub(sr.1) as i32) / rate)
    }

    /// Standard deviation of the gaps between video frame arrivals, seconds.
    pub fn frame_interval_jitter(&self) -> f64 {
        let gaps: Vec<f64> = self.video_ts.windows(2).map(|w| w[1].1 - w[0].1).collect();
        if gaps.len() < 2 {
            return 0.0;
        }
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt()
    }
}

impl Viewer {
    /// The region this viewer watches (see [`ViewerOptions::watch`]).
    pub fn watched_region(&self) -> Option<[usize; 4]> {
        self.watch
    }

    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// Ends the viewer politely: WHEP DELETE, then close. Returns the DELETE
    /// status (0 when the request failed).
    pub async fn hang_up(self) -> u16 {
        let auth = format!("Bearer {}", self.token);
        let status = http::request(
            self.addr,
            "DELETE",
            &self.location,
            &[("Authorization", &auth)],
            b"",
            Duration::from_secs(10),
        )
        .await
        .map(|r| r.status)
        .unwrap_or(0);
        let _ = self.pc.close().await;
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_counts_gaps_across_wraparound() {
        let mut c = SeqCount::default();
        for s in [65530u16, 65531, 65533, 65534, 65535, 0, 1, 3] {
            c.add(s);
        }
        // 65530..=3 spans 10 numbers; 8 arrived.
        assert!((c.loss() - 0.2).abs() < 1e-9, "{}", c.loss());
        let mut none = SeqCount::default();
        assert_eq!(none.loss(), 0.0);
        none.add(7);
        assert_eq!(none.loss(), 0.0);
    }
}
