//! The host's live voice (PushAudio): decoding what a client pushes (16-bit
//! PCM at 8/16/24/48 kHz or Opus packets, mono or stereo) into the session's
//! 48 kHz mono, a bounded jitter buffer the media thread plays from on the
//! session clock, and what happens to text speech while the host talks
//! (barge-in).
//!
//! Bounds: the buffer holds at most `max_buffered` samples; a pushing client
//! waits (backpressure through gRPC flow control) until the media thread
//! has played enough to make room. Jitter: playback starts once `prebuffer`
//! samples are waiting (or the stream ended), and after an underrun waits
//! for that much again, so a client's uneven timing becomes short silences
//! rather than crackle. One PushAudio stream feeds a session at a time.

use super::clock::AUDIO_RATE;
use super::resample::Resampler;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What text speech does while the host's voice is on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BargeIn {
    /// The voice cuts off text being spoken and drops what was queued;
    /// text sent while the host talks waits until the voice stops.
    #[default]
    Interrupt,
    /// Text pauses (mid-word if need be) while the host talks and resumes
    /// after.
    Queue,
    /// Both play at once, mixed.
    Mix,
}

/// Frames (20 ms) without voice before the host counts as silent again:
/// short gaps between pushes do not flip the session's state.
const HANGOVER_FRAMES: u32 = 15;

#[derive(Default)]
struct Lane {
    pcm: VecDeque<i16>,
    /// Draining the buffer (prebuffer reached, no underrun since).
    playing: bool,
    /// The host counts as talking (until `HANGOVER_FRAMES` of nothing).
    active: bool,
    quiet_frames: u32,
    /// The feeding stream ended: play what is left without prebuffering.
    ended: bool,
}

/// A change in whether the host is talking, reported by [`VoiceInput::fill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceChange {
    Started,
    Stopped,
}

/// One session's live-voice buffer.
pub struct VoiceInput {
    lane: Mutex<Lane>,
    space: tokio::sync::Notify,
    fed: AtomicBool,
    max_buffered: usize,
    prebuffer: usize,
    pub barge_in: BargeIn,
}

impl VoiceInput {
    /// `max_buffered` and `prebuffer` in 48 kHz samples.
    pub fn new(max_buffered: usize, prebuffer: usize, barge_in: BargeIn) -> Self {
        Self {
            lane: Mutex::new(Lane::default()),
            space: tokio::sync::Notify::new(),
            fed: AtomicBool::new(false),
            max_buffered: max_buffered.max(prebuffer * 2).max(960),
            prebuffer,
            barge_in,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lane> {
        self.lane.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the host is talking now (with the hangover).
    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// Takes the session's one feed, or `None` while another stream has it.
    pub fn feed(self: &Arc<Self>) -> Option<VoiceFeed> {
        if self.fed.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.lock().ended = false;
        Some(VoiceFeed {
            input: self.clone(),
        })
    }

    /// Plays the next 20 ms into `out` (silence where there is no voice).
    /// Returns whether any voice was played, and a change of talking state.
    pub fn fill(&self, out: &mut [i16]) -> (bool, Option<VoiceChange>) {
        out.fill(0);
        let mut lane = self.lock();
        if !lane.playing && !lane.pcm.is_empty() && (lane.pcm.len() >= self.prebuffer || lane.ended)
        {
            lane.playing = true;
        }
        let mut played = false;
        if lane.playing {
            let n = lane.pcm.len().min(out.len());
            for (o, v) in out.iter_mut().zip(lane.pcm.drain(..n)) {
                *o = v;
            }
            played = n > 0;
            if lane.pcm.is_empty() {
                // Underrun (or the end): wait for the prebuffer again.
                lane.playing = false;
            }
        }
        let change = if played {
            lane.quiet_frames = 0;
            (!std::mem::replace(&mut lane.active, true)).then_some(VoiceChange::Started)
        } else if lane.active {
            lane.quiet_frames += 1;
            (lane.quiet_frames >= HANGOVER_FRAMES).then(|| {
                lane.active = false;
                VoiceChange::Stopped
            })
        } else {
            None
        };
        drop(lane);
        if played {
            self.space.notify_waiters();
        }
        (played, change)
    }

    /// Drops buffered voice (the session is closing).
    pub fn clear(&self) {
        self.lock().pcm.clear();
        self.space.notify_waiters();
    }
}

/// The right to feed a session's voice; dropping it ends the stream (what
/// is buffered still plays).
pub struct VoiceFeed {
    input: Arc<VoiceInput>,
}

impl VoiceFeed {
    /// Appends 48 kHz mono samples, waiting while the buffer is full.
    /// Returns false when `closed` fires first.
    pub async fn push(
        &self,
        mut pcm: &[i16],
        closed: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let input = &self.input;
        while !pcm.is_empty() {
            // Register for a wake-up before looking, so none is missed.
            let notified = input.space.notified();
            let room = {
                let mut lane = input.lock();
                let room = input.max_buffered.saturating_sub(lane.pcm.len());
                let n = room.min(pcm.len());
                lane.pcm.extend(&pcm[..n]);
                pcm = &pcm[n..];
                n
            };
            if room == 0 || !pcm.is_empty() {
                tokio::select! {
                    _ = notified => {}
                    _ = closed.cancelled() => return false,
                    // The media thread stops draining when the session
                    // stops; never wait on it forever.
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        }
        true
    }
}

impl Drop for VoiceFeed {
    fn drop(&mut self) {
        self.input.lock().ended = true;
        self.input.fed.store(false, Ordering::Release);
    }
}

/// How pushed audio is encoded (validated from `PushAudioStart.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Pcm16,
    Opus,
}

/// Turns pushed audio messages into 48 kHz mono samples.
pub struct VoiceDecoder {
    encoding: Encoding,
    channels: usize,
    /// Rate of the decoded samples (Opus always decodes at 48 kHz).
    rate: u32,
    /// Sample frames decoded so far, at `rate`.
    decoded: u64,
    resampler: Option<Resampler>,
    opus: Option<opus::Decoder>,
    /// A PCM byte that ended a message mid-sample.
    carry: Vec<u8>,
    scratch: Vec<f32>,
    out: Vec<f32>,
}

/// Most samples per channel in one Opus packet (120 ms at 48 kHz).
const OPUS_MAX_FRAME: usize = 5760;

impl VoiceDecoder {
    pub fn new(encoding: Encoding, sample_rate: u32, channels: u32) -> Result<Self, String> {
        let channels = channels as usize;
        let opus = match encoding {
            Encoding::Opus => Some(
                opus::Decoder::new(
                    AUDIO_RATE,
                    if channels == 2 {
                        opus::Channels::Stereo
                    } else {
                        opus::Channels::Mono
                    },
                )
                .map_err(|e| format!("cannot start the Opus decoder: {e}"))?,
            ),
            Encoding::Pcm16 => None,
        };
        // Opus decodes to 48 kHz whatever rate was declared.
        let rate = if encoding == Encoding::Opus {
            AUDIO_RATE
        } else {
            sample_rate
        };
        Ok(Self {
            encoding,
            channels,
            rate,
            decoded: 0,
            resampler: (rate != AUDIO_RATE).then(|| Resampler::new(rate, AUDIO_RATE)),
            opus,
            carry: Vec::new(),
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Milliseconds of audio decoded so far.
    pub fn decoded_ms(&self) -> u64 {
        self.decoded * 1000 / u64::from(self.rate)
    }

    /// Decodes one message's `data` into `pcm` (48 kHz mono), appending.
    pub fn decode(&mut self, data: &[u8], pcm: &mut Vec<i16>) -> Result<(), String> {
        self.scratch.clear();
        match self.encoding {
            Encoding::Pcm16 => {
                let frame = 2 * self.channels;
                let mut bytes = std::mem::take(&mut self.carry);
                bytes.extend_from_slice(data);
                let whole = bytes.len() / frame * frame;
                for f in bytes[..whole].chunks_exact(frame) {
                    let mut sum = 0f32;
                    for c in f.chunks_exact(2) {
                        sum += f32::from(i16::from_le_bytes([c[0], c[1]]));
                    }
                    self.scratch.push(sum / self.channels as f32 / 32768.0);
                }
                self.carry = bytes[whole..].to_vec();
            }
            Encoding::Opus => {
                let Some(decoder) = self.opus.as_mut() else {
                    return Err("no Opus decoder".into());
                };
                let mut buf = vec![0f32; OPUS_MAX_FRAME * self.channels];
                let n = decoder
                    .decode_float(data, &mut buf, false)
                    .map_err(|e| format!("a data message is not a valid Opus packet ({e})"))?;
                for f in buf[..n * self.channels].chunks_exact(self.channels) {
                    self.scratch
                        .push(f.iter().sum::<f32>() / self.channels as f32);
                }
            }
        }
        self.decoded += self.scratch.len() as u64;
        self.out.clear();
        match self.resampler.as_mut() {
            Some(r) => r.push(&self.scratch, &mut self.out),
            None => self.out.extend_from_slice(&self.scratch),
        }
        pcm.extend(
            self.out
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
        );
        Ok(())
    }

    /// The resampler's tail, at the end of the stream.
    pub fn finish(&mut self, pcm: &mut Vec<i16>) {
        self.out.clear();
        if let Some(r) = self.resampler.as_mut() {
            r.finish(&mut self.out);
        }
        pcm.extend(
            self.out
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_is_downmixed_and_resampled_to_48k() {
        let mut d = VoiceDecoder::new(Encoding::Pcm16, 16000, 2).unwrap();
        // 100 ms of stereo at 16 kHz: left 1000, right 3000.
        let mut bytes = Vec::new();
        for _ in 0..1600 {
            bytes.extend_from_slice(&1000i16.to_le_bytes());
            bytes.extend_from_slice(&3000i16.to_le_bytes());
        }
        let mut pcm = Vec::new();
        // Split mid-sample: the odd byte is carried over.
        d.decode(&bytes[..4001], &mut pcm).unwrap();
        d.decode(&bytes[4001..], &mut pcm).unwrap();
        d.finish(&mut pcm);
        assert_eq!(d.decoded_ms(), 100);
        assert_eq!(pcm.len(), 4800);
        // The mean of the channels, away from the filter's edges.
        assert!(
            pcm[1000..3800].iter().all(|&v| (v - 2000).abs() <= 20),
            "{:?}",
            &pcm[1000..1010]
        );
    }

    #[test]
    fn opus_packets_decode_at_48k() {
        let mut enc =
            opus::Encoder::new(48000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let tone: Vec<i16> = (0..960)
            .map(|i| ((i as f32 * 0.05).sin() * 8000.0) as i16)
            .collect();
        let mut packet = vec![0u8; 4000];
        let n = enc.encode(&tone, &mut packet).unwrap();
        let mut d = VoiceDecoder::new(Encoding::Opus, 16000, 1).unwrap();
        let mut pcm = Vec::new();
        d.decode(&packet[..n], &mut pcm).unwrap();
        assert_eq!(d.decoded_ms(), 20);
        assert_eq!(pcm.len(), 960);
        assert!(d.decode(b"not opus at all", &mut pcm).is_err());
    }

    #[tokio::test]
    async fn jitter_buffer_prebuffers_plays_and_reports_talking() {
        let input = Arc::new(VoiceInput::new(48_000, 2880, BargeIn::Interrupt));
        let feed = input.feed().unwrap();
        assert!(input.feed().is_none(), "one feed at a time");
        let closed = tokio_util::sync::CancellationToken::new();
        let mut out = [0i16; 960];
        // 40 ms is below the 60 ms prebuffer: nothing plays yet.
        assert!(feed.push(&[100; 1920], &closed).await);
        assert_eq!(input.fill(&mut out), (false, None));
        assert!(feed.push(&[100; 1920], &closed).await);
        assert_eq!(input.fill(&mut out), (true, Some(VoiceChange::Started)));
        assert!(out.iter().all(|&v| v == 100));
        assert_eq!(input.fill(&mut out), (true, None));
        assert_eq!(input.fill(&mut out), (true, None));
        assert_eq!(input.fill(&mut out), (true, None));
        assert!(!input.fill(&mut out).0 && input.is_active());
        for _ in 1..HANGOVER_FRAMES - 1 {
            assert_eq!(input.fill(&mut out), (false, None));
        }
        assert_eq!(input.fill(&mut out), (false, Some(VoiceChange::Stopped)));
        assert!(!input.is_active());
        // After the stream ends, a short tail plays without prebuffering.
        assert!(feed.push(&[5; 480], &closed).await);
        drop(feed);
        assert_eq!(input.fill(&mut out), (true, Some(VoiceChange::Started)));
        assert!(input.feed().is_some(), "the feed is free again");
    }

    #[tokio::test]
    async fn a_full_buffer_makes_the_pusher_wait() {
        let input = Arc::new(VoiceInput::new(960 * 4, 960, BargeIn::Mix));
        let feed = input.feed().unwrap();
        let closed = tokio_util::sync::CancellationToken::new();
        let pushing = {
            let closed = closed.clone();
            tokio::spawn(async move { feed.push(&[1; 960 * 8], &closed).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pushing.is_finished(), "waits for room");
        let mut out = [0i16; 960];
        for _ in 0..8 {
            input.fill(&mut out);
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(pushing.await.unwrap());
        // A closing session releases a waiting pusher.
        let feed = input.feed().unwrap();
        closed.cancel();
        assert!(!feed.push(&[1; 960 * 8], &closed).await);
    }
}
