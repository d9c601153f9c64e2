//! The media pipeline of one session: frames and audio in, H.264 + Opus RTP
//! packets out, encoded once and published to every viewer.
//!
//! A dedicated thread per session runs the session clock in real time: every
//! 20 ms it encodes one audio frame (the session's speech from its playback
//! buffer, or silence — real Opus frames, so the track never starves) and every video frame that has
//! come due on the audio clock. Packets go to a bounded broadcast channel;
//! a viewer that falls behind loses packets, never slows the session.

use super::clock::{AUDIO_FRAME, MediaClock};
use super::encode::{AacEncoder, AudioEncoder, EncodeError, VideoEncoder};
use super::frame::I420;
use super::label::VisibleLabel;
use super::lips;
use super::playback::{Playback, PlaybackEvent};
use super::stats::MediaStats;
use super::voice::{VoiceChange, VoiceInput};
use crate::config::BargeIn;
use crate::engines::lipsync::LipSyncEngine;
use bytes::Bytes;
use huashen_protos::sei;
use rtc::rtp;
use rtc::rtp::codec::h264::H264Payloader;
use rtc::rtp::codec::opus::OpusPayloader;
use rtc::rtp::packetizer::Payloader;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

/// AAC bitrate for outputs that want AAC (kbit/s, mono).
const AAC_KBPS: u32 = 96;

/// `generator` of the AI label in the H.264 stream.
const GENERATOR: &str = concat!("huashen/", env!("CARGO_PKG_VERSION"));

/// RTP payload size: fits a 1500-byte MTU with IP/UDP/SRTP overhead.
pub const RTP_PAYLOAD_MTU: usize = 1188;
/// Packets buffered for viewers (several seconds of audio and video).
pub const FANOUT_CAPACITY: usize = 1024;
/// Encoded frames buffered for outputs (about 4 s of audio and video).
pub const FRAMES_CAPACITY: usize = 320;
/// When the thread falls this far behind real time, it skips ahead instead
/// of bursting to catch up.
const MAX_LAG: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// One RTP packet of the session, shared by all viewers. `ssrc`,
/// `payload_type` and `sequence_number` are set per viewer when sent;
/// timestamps come from the session clock.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    pub kind: MediaKind,
    pub packet: rtp::Packet,
    /// First packet of a keyframe: a viewer may start (or resume) here.
    pub keyframe_start: bool,
}

/// One encoded frame of the session, before RTP: what outputs (recordings,
/// RTMP, WHIP egress) take, so no output encodes again.
/// What an encoded frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// An H.264 access unit (Annex B, with the SEI label when it has one).
    Video,
    /// One 20 ms Opus packet.
    Opus,
    /// One raw AAC-LC frame (1024 samples; only while an output wants AAC,
    /// see [`MediaPipeline::want_aac`]).
    Aac,
}

#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub kind: FrameKind,
    /// The frame's bytes (see [`FrameKind`]).
    pub data: Bytes,
    /// When it plays: session-clock sample (48 kHz).
    pub sample: u64,
    /// An IDR access unit (video): an output may start here.
    pub keyframe: bool,
}

/// The stage before the encoder: hands over the picture for video frame
/// `frame`, due at `clock_ms` on the session clock, already at the output
/// size in I420. Called on the media thread, 25 times a second by default:
/// it must not block.
pub trait FrameSource: Send + 'static {
    /// Picture number `frame`, shown at session-clock sample `sample`
    /// (48 kHz).
    fn frame(&mut self, frame: u64, sample: u64) -> &I420;
}

/// The enrolled portrait as a still: what a session shows until the face
/// model animates it.
pub struct StillFrame(pub I420);

impl FrameSource for StillFrame {
    fn frame(&mut self, _frame: u64, _sample: u64) -> &I420 {
        &self.0
    }
}

/// How the session's output is labelled as AI-generated.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    /// The visible badge, laid out for the output size.
    pub visible: Option<VisibleLabel>,
    /// Session id for the machine-readable SEI label; `None` turns it off.
    pub sei_session: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct MediaConfig {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
}

/// Where a session's audio comes from and where playback progress goes.
pub struct AudioInput {
    pub playback: Arc<Playback>,
    /// The host's live voice (PushAudio), mixed in per its barge-in rule.
    pub voice: Arc<VoiceInput>,
    /// Playback events for the session actor (bounded; dropped when full).
    pub events: mpsc::Sender<PlaybackEvent>,
    /// Lip-sync of the live voice runs on this engine.
    pub lipsync: Arc<LipSyncEngine>,
}

pub struct MediaPipeline {
    packets: broadcast::Sender<Arc<MediaPacket>>,
    frames: broadcast::Sender<Arc<EncodedFrame>>,
    keyframe: Arc<AtomicBool>,
    /// Longest run of video frames without a keyframe while an output asks
    /// for one (0: the encoder's own interval).
    keyframe_interval: Arc<AtomicU64>,
    /// Frames that must pass after an asked-for keyframe before the next.
    keyframe_gap: Arc<AtomicU64>,
    /// Outputs that want the sound as AAC too.
    aac_users: Arc<std::sync::atomic::AtomicUsize>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<MediaStats>,
    pub clock: MediaClock,
    pub config: MediaConfig,
    pub playback: Arc<Playback>,
    pub voice: Arc<VoiceInput>,
    /// The Opus encoder's look-ahead (48 kHz samples), for containers.
    pre_skip: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MediaPipeline {
    /// Starts the media thread, showing the frames of `frames` with `labels`.
    pub fn start(
        config: MediaConfig,
        frames: impl FrameSource,
        labels: Labels,
        audio_in: AudioInput,
        name: &str,
    ) -> Result<Self, EncodeError> {
        let video = VideoEncoder::new(
            config.width,
            config.height,
            config.fps,
            config.video_bitrate_kbps,
        )?;
        let mut audio = AudioEncoder::new(config.audio_bitrate_kbps)?;
        let pre_skip = audio.lookahead();
        let (packets, _) = broadcast::channel(FANOUT_CAPACITY);
        let (frames_tx, _) = broadcast::channel(FRAMES_CAPACITY);
        let keyframe = Arc::new(AtomicBool::new(true));
        let keyframe_interval = Arc::new(AtomicU64::new(0));
        let keyframe_gap = Arc::new(AtomicU64::new(u64::from(config.fps / 2)));
        let aac_users = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(MediaStats::default());
        let clock = MediaClock::new(config.fps);
        let playback = audio_in.playback.clone();
        let voice = audio_in.voice.clone();
        let lips = lips::VoiceLips::new(&audio_in.lipsync);
        let worker = Worker {
            audio_in,
            clock,
            video,
            audio,
            frames: Box::new(frames),
            labels,
            scratch: None,
            packets: packets.clone(),
            encoded: frames_tx.clone(),
            keyframe: keyframe.clone(),
            keyframe_interval: keyframe_interval.clone(),
            keyframe_gap: keyframe_gap.clone(),
            since_asked: u64::MAX / 2,
            since_keyframe: 0,
            aac_users: aac_users.clone(),
            aac: None,
            stop: stop.clone(),
            stats: stats.clone(),
            h264: H264Payloader::default(),
            opus: OpusPayloader,
            seq: rand::random(),
            lips,
        };
        let thread = std::thread::Builder::new()
            .name(format!("media-{name}"))
            .spawn(move || worker.run())
            .map_err(|e| EncodeError::Video(format!("cannot start the media thread: {e}")))?;
        Ok(Self {
            packets,
            frames: frames_tx,
            keyframe,
            keyframe_interval,
            keyframe_gap,
            aac_users,
            stop,
            stats,
            clock,
            config,
            playback,
            voice,
            pre_skip,
            thread: Some(thread),
        })
    }

    /// Packets from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<MediaPacket>> {
        self.packets.subscribe()
    }

    /// The Opus encoder's look-ahead (48 kHz samples), for containers.
    pub fn audio_pre_skip(&self) -> u16 {
        self.pre_skip
    }

    /// Encoded frames from now on (for outputs). A receiver that falls
    /// more than [`FRAMES_CAPACITY`] behind loses frames, never slows the
    /// session.
    pub fn subscribe_frames(&self) -> broadcast::Receiver<Arc<EncodedFrame>> {
        self.frames.subscribe()
    }

    /// Asked-for keyframes come at most once per `interval`.
    pub fn set_keyframe_request_interval(&self, interval: Duration) {
        let frames = (interval.as_secs_f64() * f64::from(self.config.fps)).round() as u64;
        self.keyframe_gap.store(frames, Ordering::Relaxed);
    }

    /// Keyframes at least every `interval` of video (outputs that need
    /// them: platforms ask for one every 2 s), or the encoder's own
    /// interval again with `None`.
    pub fn set_keyframe_interval(&self, interval: Option<Duration>) {
        let frames = interval.map_or(0, |i| {
            (i.as_secs_f64() * f64::from(self.clock.fps()))
                .floor()
                .max(1.0) as u64
        });
        self.keyframe_interval.store(frames, Ordering::Relaxed);
    }

    /// An output starts (`true`) or stops (`false`) wanting the sound as
    /// AAC-LC too ([`FrameKind::Aac`] frames): encoded once, while any does.
    pub fn want_aac(&self, want: bool) {
        if want {
            self.aac_users.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self
                .aac_users
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Asks for a keyframe as the next video frame (new viewer, PLI/FIR,
    /// a viewer that lost packets). Requests between two frames coalesce.
    pub fn request_keyframe(&self) {
        self.keyframe.store(true, Ordering::Relaxed);
    }

    /// Stops the media thread (idempotent); subscribers then see the end of
    /// the stream.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A handle viewers use to ask for keyframes.
    pub fn keyframe_requester(&self) -> KeyframeRequester {
        KeyframeRequester(self.keyframe.clone())
    }
}

impl Drop for MediaPipeline {
    fn drop(&mut self) {
        self.stop();
        // The thread notices within one 20 ms tick; it holds nothing the
        // runtime waits on, so it is not joined here (drop may run on the
        // async runtime).
        drop(self.thread.take());
    }
}

#[derive(Clone)]
pub struct KeyframeRequester(Arc<AtomicBool>);

impl KeyframeRequester {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct Worker {
    audio_in: AudioInput,
    clock: MediaClock,
    video: VideoEncoder,
    audio: AudioEncoder,
    frames: Box<dyn FrameSource>,
    labels: Labels,
    /// Frame buffer the badge is drawn on (the source's frame stays clean).
    scratch: Option<I420>,
    packets: broadcast::Sender<Arc<MediaPacket>>,
    encoded: broadcast::Sender<Arc<EncodedFrame>>,
    keyframe: Arc<AtomicBool>,
    keyframe_interval: Arc<AtomicU64>,
    /// Frames that must pass after an asked-for keyframe before the next.
    keyframe_gap: Arc<AtomicU64>,
    /// Video frames since the last asked-for keyframe.
    since_asked: u64,
    /// Video frames since the last keyframe.
    since_keyframe: u64,
    /// Outputs that want AAC, and the encoder (with the session sample it
    /// started at) while any does.
    aac_users: Arc<std::sync::atomic::AtomicUsize>,
    aac: Option<(AacEncoder, u64)>,
    stop: Arc<AtomicBool>,
    stats: Arc<MediaStats>,
    h264: H264Payloader,
    opus: OpusPayloader,
    seq: u16,
    /// The live voice's lip-sync (holds the voice back until its mouth
    /// shapes are ready).
    lips: lips::VoiceLips,
}

impl Worker {
    fn run(mut self) {
        let tick = Duration::from_millis(20);
        let start = Instant::now();
        let mut audio_frame: u64 = 0;
        let mut video_frame: u64 = 0;
        let mut pcm = [0i16; AUDIO_FRAME as usize];
        let mut voice = [0i16; AUDIO_FRAME as usize];
        let mut events = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let sample = audio_frame * u64::from(AUDIO_FRAME);
            self.stats.clock_sample.store(sample, Ordering::Relaxed);
            self.fill_audio(&mut pcm, &mut voice, sample, &mut events);
            for ev in events.drain(..) {
                // A full queue means the actor is gone or far behind; the
                // audio plays on regardless.
                let _ = self.audio_in.events.try_send(ev);
            }
            if let Err(e) = self.send_audio(&pcm, sample) {
                tracing::error!(error = %e, "audio encoding failed; stopping media");
                return;
            }
            while self.clock.frame_due_sample(video_frame) <= sample {
                if let Err(e) = self.send_video(video_frame) {
                    tracing::error!(error = %e, "video encoding failed; stopping media");
                    return;
                }
                video_frame += 1;
            }
            audio_frame += 1;
            self.stats.cpu.set(crate::metrics::thread_cpu_us());
            let due = start + tick * audio_frame as u32;
            let now = Instant::now();
            if now < due {
                std::thread::sleep(due - now);
            } else if now - due > MAX_LAG {
                // Overloaded: jump the clock to now; the skipped video frames
                // are counted late. Timestamps stay on the session clock.
                let behind = ((now - due).as_micros() / tick.as_micros()) as u64;
                audio_frame += behind;
                let next_sample = audio_frame * u64::from(AUDIO_FRAME);
                while self.clock.frame_due_sample(video_frame) < next_sample {
                    video_frame += 1;
                    self.stats.late_frames.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::METRICS.frames_late.inc();
                }
            }
        }
    }

    /// The next 20 ms of the session's sound: text speech from the
    /// playback buffer and the host's live voice, by the barge-in rule.
    fn fill_audio(
        &mut self,
        pcm: &mut [i16],
        voice: &mut [i16],
        sample: u64,
        events: &mut Vec<PlaybackEvent>,
    ) {
        let input = &self.audio_in.voice;
        let (voiced, change) = input.fill(voice);
        let voiced = self
            .lips
            .process(voice, voiced, change, sample, &self.audio_in.playback);
        match change {
            Some(VoiceChange::Started) => {
                if input.barge_in == BargeIn::Interrupt {
                    self.audio_in.playback.interrupt(sample, events);
                }
                events.push(PlaybackEvent::VoiceStarted { sample });
            }
            Some(VoiceChange::Stopped) => events.push(PlaybackEvent::VoiceStopped { sample }),
            None => {}
        }
        if input.barge_in != BargeIn::Mix && input.is_active() {
            // Text waits while the host talks.
            pcm.fill(0);
            self.audio_in.playback.hold(pcm.len() as u64);
        } else {
            self.audio_in.playback.fill(pcm, sample, events);
        }
        if voiced {
            for (p, v) in pcm.iter_mut().zip(voice.iter()) {
                *p = p.saturating_add(*v);
            }
        }
    }

    fn publish(&mut self, kind: MediaKind, payloads: Vec<Bytes>, timestamp: u32, keyframe: bool) {
        let n = payloads.len();
        for (i, payload) in payloads.into_iter().enumerate() {
            self.seq = self.seq.wrapping_add(1);
            let packet = rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    marker: i + 1 == n && kind == MediaKind::Video,
                    sequence_number: self.seq,
                    timestamp,
                    ..Default::default()
                },
                payload,
            };
            // No receivers (no viewers) is normal.
            let _ = self.packets.send(Arc::new(MediaPacket {
                kind,
                packet,
                keyframe_start: keyframe && i == 0,
            }));
        }
    }

    fn send_audio(&mut self, pcm: &[i16], sample: u64) -> Result<(), EncodeError> {
        let t = Instant::now();
        let frame = Bytes::copy_from_slice(self.audio.encode(pcm)?);
        crate::metrics::METRICS
            .audio_encode_seconds
            .observe(t.elapsed().as_secs_f64());
        let payloads = self
            .opus
            .payload(RTP_PAYLOAD_MTU, &frame)
            .map_err(|e| EncodeError::Audio(e.to_string()))?;
        self.stats.audio_frames.fetch_add(1, Ordering::Relaxed);
        self.to_outputs(FrameKind::Opus, &frame, sample, false);
        self.aac(pcm, sample)?;
        let ts = self.clock.audio_rtp(sample);
        self.publish(MediaKind::Audio, payloads, ts, false);
        Ok(())
    }

    /// AAC of the same sound while an output wants it: the encoder starts
    /// when the first such output does and stops after the last.
    fn aac(&mut self, pcm: &[i16], sample: u64) -> Result<(), EncodeError> {
        if self.aac_users.load(Ordering::Relaxed) == 0 {
            self.aac = None;
            return Ok(());
        }
        if self.aac.is_none() {
            self.aac = Some((AacEncoder::new(AAC_KBPS)?, sample));
        }
        let Some((encoder, start)) = self.aac.as_mut() else {
            return Ok(());
        };
        let start = *start;
        let mut frames = Vec::new();
        encoder.encode(pcm, &mut frames)?;
        for (at, data) in frames {
            self.to_outputs(FrameKind::Aac, &Bytes::from(data), start + at, false);
        }
        Ok(())
    }

    /// Hands an encoded frame to the outputs, if any listen.
    fn to_outputs(&self, kind: FrameKind, data: &Bytes, sample: u64, keyframe: bool) {
        if self.encoded.receiver_count() > 0 {
            let _ = self.encoded.send(Arc::new(EncodedFrame {
                kind,
                data: data.clone(),
                sample,
                keyframe,
            }));
        }
    }

    fn send_video(&mut self, n: u64) -> Result<(), EncodeError> {
        let interval = self.keyframe_interval.load(Ordering::Relaxed);
        let due = interval > 0 && self.since_keyframe + 1 >= interval;
        // Requests within the gap after an asked-for keyframe wait for the
        // next one (due keyframes do not count: a first viewer is served).
        let gap = self.keyframe_gap.load(Ordering::Relaxed);
        self.since_asked = self.since_asked.saturating_add(1);
        let asked = self.since_asked >= gap && self.keyframe.swap(false, Ordering::Relaxed);
        if asked {
            self.since_asked = 0;
        }
        let force = asked || due;
        let t = Instant::now();
        let picture = self.frames.frame(n, self.clock.frame_due_sample(n));
        let rendered = t.elapsed();
        crate::metrics::METRICS
            .render_seconds
            .observe(rendered.as_secs_f64());
        let t = Instant::now();
        let frame = match &self.labels.visible {
            Some(badge) => {
                let scratch = self.scratch.get_or_insert_with(|| picture.clone());
                scratch.copy_from(picture);
                badge.apply(scratch);
                self.video.encode(&*scratch, force)?
            }
            None => self.video.encode(picture, force)?,
        };
        let spent = t.elapsed();
        self.stats
            .video_encode_us
            .fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
        crate::metrics::METRICS
            .video_encode_seconds
            .observe(spent.as_secs_f64());
        self.stats.video_frames.fetch_add(1, Ordering::Relaxed);
        if frame.keyframe {
            self.stats.keyframes.fetch_add(1, Ordering::Relaxed);
            crate::metrics::METRICS.keyframes.inc();
            self.since_keyframe = 0;
        } else {
            self.since_keyframe += 1;
        }
        if frame.data.is_empty() {
            return Ok(());
        }
        let mut data = frame.data;
        if let Some(session) = &self.labels.sei_session
            && (frame.keyframe || n.is_multiple_of(u64::from(self.clock.fps())))
        {
            let sei = sei::label_nal(GENERATOR, session, crate::store::now_ms());
            data = sei::insert_before_first_slice(&data, &sei);
        }
        let data = Bytes::from(data);
        self.to_outputs(
            FrameKind::Video,
            &data,
            self.clock.frame_due_sample(n),
            frame.keyframe,
        );
        let payloads = self
            .h264
            .payload(RTP_PAYLOAD_MTU, &data)
            .map_err(|e| EncodeError::Video(e.to_string()))?;
        let ts = self.clock.video_rtp(n);
        self.publish(MediaKind::Video, payloads, ts, frame.keyframe);
        Ok(())
    }
}

#[cfg(test)]
#[path = "media_tests.rs"]
mod tests;
