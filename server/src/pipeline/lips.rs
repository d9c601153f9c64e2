//! Lip-sync for the host's live voice: the audio → viseme model
//! (`huashen_inference::face::lipsync`) listens to the voice as it comes
//! off the jitter buffer, and the voice itself is held back by
//! [`LIP_DELAY`] so that each mouth shape is on the clock before its sound
//! plays — the face reads shapes 50 ms ahead (anticipation) and the model
//! needs 52.5 ms of look-ahead, so sound and mouth stay in sync.
//!
//! Features are computed on the media thread, only while the host is
//! talking; the network (two 10 ms frames per 20 ms tick) runs on the
//! lip-sync engine's batched worker together with every other talking
//! session's frames.

use std::collections::VecDeque;

use huashen_inference::Cpu;
use huashen_inference::face::lipsync::{HOP, LipFrame, LipSync, VisemeDecoder};
use huashen_inference::resample::Resampler;

use super::clock::AUDIO_RATE;
use super::playback::Playback;
use super::voice::VoiceChange;
use crate::engines::lipsync::LipSyncEngine;

/// How long the live voice is held back (48 kHz samples: 90 ms).
pub const LIP_DELAY: usize = 4320;

/// 48 kHz samples per model frame.
const FRAME_48K: u64 = (HOP as u64) * 3;

/// One session's voice lip-sync.
pub struct VoiceLips {
    sync: LipSync<Cpu>,
    decoder: VisemeDecoder,
    down: Resampler,
    delay: VecDeque<i16>,
    /// Clock sample at which the stream's first sample plays.
    origin: Option<u64>,
    /// Clock sample the next tick should have (an overloaded media thread
    /// skips ticks: the voice then plays that much later).
    next_sample: u64,
    input: Vec<f32>,
    down_out: Vec<f32>,
    frames: Vec<LipFrame>,
}

impl VoiceLips {
    pub fn new(engine: &LipSyncEngine) -> Self {
        Self {
            sync: engine.stream(),
            decoder: VisemeDecoder::default(),
            down: Resampler::new(AUDIO_RATE, huashen_inference::face::lipsync::RATE),
            delay: VecDeque::with_capacity(LIP_DELAY + 960),
            origin: None,
            next_sample: 0,
            input: Vec::new(),
            down_out: Vec::new(),
            frames: Vec::new(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.origin.is_some()
    }

    /// Takes this tick's voice (`voice`, 20 ms from the jitter buffer; it
    /// carries sound when `voiced`) at clock `sample`, and replaces it with
    /// the voice to play now (the one from [`LIP_DELAY`] ago). Mouth shapes
    /// go to `playback`. Returns whether the voice is on (its audio must be
    /// mixed in).
    pub fn process(
        &mut self,
        voice: &mut [i16],
        voiced: bool,
        change: Option<VoiceChange>,
        sample: u64,
        playback: &Playback,
    ) -> bool {
        if self.origin.is_none() {
            if !voiced {
                return false;
            }
            self.origin = Some(sample + LIP_DELAY as u64);
            self.delay.extend(std::iter::repeat_n(0, LIP_DELAY));
        } else if sample > self.next_sample
            && let Some(origin) = self.origin.as_mut()
        {
            *origin += sample - self.next_sample;
        }
        self.next_sample = sample + voice.len() as u64;
        let origin = self.origin.unwrap_or(sample);
        if !voiced {
            voice.fill(0);
        }
        // The model hears the voice now…
        self.input.clear();
        self.input
            .extend(voice.iter().map(|&v| f32::from(v) / 32768.0));
        self.down_out.clear();
        self.down.push(&self.input, &mut self.down_out);
        self.frames.clear();
        self.sync.push(&self.down_out, &mut self.frames);
        for f in &self.frames {
            if let Some((k, viseme)) = self.decoder.push(f) {
                let centre = origin + k * FRAME_48K;
                let half = FRAME_48K / 2;
                playback.push_voice_viseme(viseme, centre.saturating_sub(half), centre + half);
            }
        }
        // …and it plays LIP_DELAY later.
        self.delay.extend(voice.iter());
        for v in voice.iter_mut() {
            *v = self.delay.pop_front().unwrap_or(0);
        }
        if change == Some(VoiceChange::Stopped) {
            // The host has been quiet for longer than the delay: nothing
            // of the voice is left to play.
            self.reset();
        }
        true
    }

    fn reset(&mut self) {
        self.origin = None;
        self.delay.clear();
        self.sync.reset();
        self.decoder.reset();
        let mut tail = Vec::new();
        self.down.finish(&mut tail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huashen_inference::speech::espeak::{EspeakVoice, synthesize};
    use huashen_inference::speech::timeline::Viseme;

    /// Voice through the lips: the audio comes out LIP_DELAY later,
    /// unchanged, and the mouth opens while it is voiced and rests after.
    #[test]
    fn voice_is_delayed_and_moves_the_mouth_on_time() {
        let speech = synthesize(
            "We talked of the side show in the circus.",
            &EspeakVoice::new("en-us+m7"),
        )
        .unwrap();
        let mut pcm = Vec::new();
        Resampler::new(speech.sample_rate, AUDIO_RATE).push(&speech.pcm, &mut pcm);
        let pcm: Vec<i16> = pcm.iter().map(|v| (v * 20000.0) as i16).collect();
        let playback = Playback::new(48_000);
        let mut lips = VoiceLips::new(&LipSyncEngine::unbatched());
        let start = 96_000u64;
        let mut out = Vec::new();
        let chunks: Vec<&[i16]> = pcm.chunks(960).collect();
        let silent = [0i16; 960];
        let total = chunks.len() + 40;
        for i in 0..total {
            let mut buf = [0i16; 960];
            let voiced = i < chunks.len();
            let src = chunks.get(i).copied().unwrap_or(&silent);
            buf[..src.len()].copy_from_slice(src);
            let change = (i == chunks.len() + 15).then_some(VoiceChange::Stopped);
            let on = lips.process(&mut buf, voiced, change, start + i as u64 * 960, &playback);
            assert!(on || i > chunks.len() + 15);
            out.extend_from_slice(&buf);
        }
        assert!(!lips.is_active());
        assert_eq!(&out[LIP_DELAY..LIP_DELAY + 4800], &pcm[..4800]);
        // Voiced stretches of the speech get open-mouth shapes on the clock
        // where their sound plays; the silence after rests.
        let mut shapes = Vec::new();
        playback.visemes(0, u64::MAX, &mut |v, a, b| shapes.push((v, a, b)));
        let speech_end = start + LIP_DELAY as u64 + pcm.len() as u64;
        let open = shapes
            .iter()
            .filter(|(v, _, _)| !matches!(v, Viseme::Sil | Viseme::PP))
            .count();
        assert!(open > 10, "{shapes:?}");
        assert!(
            shapes
                .iter()
                .filter(|(v, _, _)| *v != Viseme::Sil)
                .all(|&(_, a, b)| a >= start + LIP_DELAY as u64 && b <= speech_end + 4800),
            "{shapes:?}"
        );
    }
}
