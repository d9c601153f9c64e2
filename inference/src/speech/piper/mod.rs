//! Piper VITS voices (English): the network on burn, its phoneme-id map and
//! the streaming synthesis of one clause.
//!
//! Synthesis of a clause runs in two parts. [`PiperVoice::prepare`] runs the
//! text encoder, the duration predictor and the flow over the whole clause
//! (cheap: they work at phoneme and frame rate) and returns the per-phoneme
//! frame counts and the decoder's latent. [`PiperVoice::decode`] then turns
//! any range of latent frames into audio; decoding overlapping windows and
//! keeping their centres gives the same samples as one pass (the decoder is
//! convolutional with a finite receptive field), so the first audio of a
//! clause leaves after one small window.

pub mod load;
pub mod model;

use std::collections::HashMap;
use std::path::Path;

use burn::prelude::*;
use serde::Deserialize;

use crate::batch::Batched;
use crate::onnx::{OnnxWeights, WeightError};
use model::{Vits, VitsConfig};

/// Latent frames of context on each side of a decoded window: more than the
/// HiFi-GAN decoder's receptive field (about 14 frames for this generator).
pub const DECODE_CONTEXT: usize = 16;

#[derive(Debug, Deserialize)]
struct VoiceJson {
    audio: AudioJson,
    #[serde(default)]
    inference: InferenceJson,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    num_symbols: usize,
    #[serde(default)]
    espeak: Option<EspeakJson>,
}

#[derive(Debug, Deserialize)]
struct AudioJson {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct EspeakJson {
    voice: String,
}

/// Synthesis scales (Piper's `inference` block).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct InferenceJson {
    pub noise_scale: f32,
    pub length_scale: f32,
    pub noise_w: f32,
}

impl Default for InferenceJson {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

/// Errors loading a voice.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error("cannot read voice config {path}: {reason}")]
    Config { path: String, reason: String },
}

/// The result of the clause-level part of synthesis.
pub struct Prepared<B: Backend> {
    /// Frames per phoneme id (hop-sized frames; sum = `frames`).
    pub durations: Vec<usize>,
    /// `[1, inter, frames]` decoder input.
    pub latent: Tensor<B, 3>,
    pub frames: usize,
}

/// A loaded Piper voice.
pub struct PiperVoice<B: Backend> {
    model: Vits<B>,
    cfg: VitsConfig,
    ids: HashMap<char, i64>,
    pub sample_rate: u32,
    pub scales: InferenceJson,
    pub espeak_voice: String,
    device: B::Device,
}

impl<B: Backend> PiperVoice<B> {
    /// Loads `name.onnx` and `name.onnx.json`.
    pub fn load(onnx: &Path, device: &B::Device) -> Result<Self, VoiceError> {
        let json_path = onnx.with_extension("onnx.json");
        let text = std::fs::read_to_string(&json_path).map_err(|e| VoiceError::Config {
            path: json_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let json: VoiceJson = serde_json::from_str(&text).map_err(|e| VoiceError::Config {
            path: json_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut ids = HashMap::new();
        for (k, v) in &json.phoneme_id_map {
            let mut chars = k.chars();
            if let (Some(c), None, Some(&id)) = (chars.next(), chars.next(), v.first()) {
                ids.insert(c, id);
            }
        }
        let cfg = VitsConfig::piper_medium(json.num_symbols);
        let weights = OnnxWeights::read(onnx)?;
        let model = load::load_vits(&weights, &cfg, device)?;
        Ok(Self {
            model,
            cfg,
            ids,
            sample_rate: json.audio.sample_rate,
            scales: json.inference,
            espeak_voice: json
                .espeak
                .map(|e| e.voice)
                .unwrap_or_else(|| "en-us".into()),
            device: device.clone(),
        })
    }

    /// Audio samples per latent frame.
    pub fn hop(&self) -> usize {
        self.cfg.hop()
    }

    /// Piper's id sequence for IPA text: `^ _ p1 _ p2 _ … $`. Characters
    /// outside the voice's table are dropped. Returns the ids and, for each
    /// id, the index of the input character it came from (`None` for the
    /// markers and pads).
    pub fn phoneme_ids(&self, ipa: &str) -> (Vec<i64>, Vec<Option<usize>>) {
        let id = |c: char| self.ids.get(&c).copied();
        let (bos, pad, eos) = (
            id('^').unwrap_or(1),
            id('_').unwrap_or(0),
            id('$').unwrap_or(2),
        );
        let mut ids = vec![bos, pad];
        let mut src = vec![None, None];
        for (i, c) in ipa.chars().enumerate() {
            if let Some(v) = id(c) {
                ids.extend([v, pad]);
                src.extend([Some(i), None]);
            }
        }
        ids.push(eos);
        src.push(None);
        (ids, src)
    }

    /// Encoder, durations and flow for one clause. `noise`: a source of
    /// standard normal samples (seeded by the caller for reproducibility);
    /// scales of 0 make the output deterministic without it.
    pub fn prepare(
        &self,
        ids: &[i64],
        scales: InferenceJson,
        noise: &mut dyn FnMut() -> f32,
    ) -> Prepared<B> {
        let t = ids.len();
        let ids_t =
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids.to_vec(), [t]), &self.device);
        let enc = self.model.enc.forward(ids_t);
        let dp_noise: Vec<f32> = (0..2 * t).map(|_| noise() * scales.noise_w).collect();
        let dp_noise = Tensor::from_data(TensorData::new(dp_noise, [1, 2, t]), &self.device);
        let logw = self.model.dp.forward(enc.x, dp_noise);
        let durations: Vec<usize> = logw
            .iter()
            .map(|&l| (l.exp() * scales.length_scale).ceil().max(0.0) as usize)
            .collect();
        let frames: usize = durations.iter().sum::<usize>().max(1);
        // Length regulation: repeat each phoneme's prior for its frames.
        let mut index = Vec::with_capacity(frames);
        for (i, &d) in durations.iter().enumerate() {
            index.extend(std::iter::repeat_n(i as i64, d));
        }
        if index.is_empty() {
            index.push(0);
        }
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [frames]), &self.device);
        let m = enc.m.select(2, index.clone());
        let logs = enc.logs.select(2, index);
        let [_, c, _] = m.dims();
        let eps: Vec<f32> = (0..c * frames)
            .map(|_| noise() * scales.noise_scale)
            .collect();
        let eps = Tensor::from_data(TensorData::new(eps, [1, c, frames]), &self.device);
        let z_p = m + eps * logs.exp();
        let latent = self.model.flow.reverse(z_p);
        Prepared {
            durations,
            latent,
            frames,
        }
    }

    /// [`Self::prepare`] for several utterances in one pass, packed along
    /// time ([`model::Packing`]); each gets what it gets alone (its noise
    /// is drawn in the same order).
    pub fn prepare_batch(&self, mut jobs: Vec<PrepareJob>) -> Vec<Prepared<B>> {
        if jobs.len() == 1 {
            let mut j = jobs.pop().expect("one job");
            return vec![self.prepare(&j.ids, j.scales, &mut *j.noise)];
        }
        let dev = &self.device;
        let lengths: Vec<usize> = jobs.iter().map(|j| j.ids.len()).collect();
        let text = model::Packing::new(&lengths, true, dev);
        let ids = jobs
            .iter()
            .map(|j| {
                Tensor::<B, 1, Int>::from_data(TensorData::new(j.ids.clone(), [j.ids.len()]), dev)
            })
            .collect();
        let enc = self.model.enc.forward_packed(ids, &text);
        let noises = jobs
            .iter_mut()
            .map(|j| {
                let t = j.ids.len();
                let v: Vec<f32> = (0..2 * t).map(|_| (j.noise)() * j.scales.noise_w).collect();
                Tensor::from_data(TensorData::new(v, [1, 2, t]), dev)
            })
            .collect();
        let logw = self
            .model
            .dp
            .forward_packed(enc.x.clone(), text.pack(noises), Some(&text));
        let [_, c, _] = enc.m.dims();
        let mut priors = Vec::with_capacity(jobs.len());
        let mut meta = Vec::with_capacity(jobs.len());
        for (j, &(a, n)) in jobs.iter_mut().zip(&text.spans) {
            let durations: Vec<usize> = logw[a..a + n]
                .iter()
                .map(|&l| (l.exp() * j.scales.length_scale).ceil().max(0.0) as usize)
                .collect();
            let frames: usize = durations.iter().sum::<usize>().max(1);
            let mut index = Vec::with_capacity(frames);
            for (i, &d) in durations.iter().enumerate() {
                index.extend(std::iter::repeat_n((a + i) as i64, d));
            }
            if index.is_empty() {
                index.push(a as i64);
            }
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [frames]), dev);
            let m = enc.m.clone().select(2, index.clone());
            let logs = enc.logs.clone().select(2, index);
            let eps: Vec<f32> = (0..c * frames)
                .map(|_| (j.noise)() * j.scales.noise_scale)
                .collect();
            let eps = Tensor::from_data(TensorData::new(eps, [1, c, frames]), dev);
            priors.push(m + eps * logs.exp());
            meta.push((durations, frames));
        }
        let frames: Vec<usize> = meta.iter().map(|m| m.1).collect();
        let latent = model::Packing::new(&frames, false, dev);
        let z = self
            .model
            .flow
            .reverse_packed(latent.pack(priors), Some(&latent));
        latent
            .unpack(z)
            .into_iter()
            .zip(meta)
            .map(|(latent, (durations, frames))| Prepared {
                durations,
                latent,
                frames,
            })
            .collect()
    }

    /// The clause-level networks (encoder, durations, flow) as a batchable
    /// stage.
    pub fn clause_stage(&self) -> PiperClauses<B> {
        PiperClauses {
            voice: std::sync::Arc::new(PiperVoice {
                model: self.model.clone(),
                cfg: self.cfg.clone(),
                ids: self.ids.clone(),
                sample_rate: self.sample_rate,
                scales: self.scales,
                espeak_voice: self.espeak_voice.clone(),
                device: self.device.clone(),
            }),
        }
    }

    /// Audio for latent frames `start..end` (clamped), decoded with
    /// [`DECODE_CONTEXT`] frames of context each side.
    pub fn decode(&self, prepared: &Prepared<B>, start: usize, end: usize) -> Vec<f32> {
        match self.decode_job(prepared, start, end) {
            Some(job) => self.decoder().run(vec![job]).pop().unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// The decoder's input for latent frames `start..end` (clamped), with
    /// [`DECODE_CONTEXT`] frames of context each side; `None` when empty.
    pub fn decode_job(
        &self,
        prepared: &Prepared<B>,
        start: usize,
        end: usize,
    ) -> Option<DecodeJob<B>> {
        let end = end.min(prepared.frames);
        if start >= end {
            return None;
        }
        let a = start.saturating_sub(DECODE_CONTEXT);
        let b = (end + DECODE_CONTEXT).min(prepared.frames);
        let hop = self.hop();
        Some(DecodeJob {
            z: prepared.latent.clone().narrow(2, a, b - a),
            keep_from: (start - a) * hop,
            keep: (end - start) * hop,
        })
    }

    /// The voice's decoder (HiFi-GAN generator) as a batchable stage.
    pub fn decoder(&self) -> PiperDecoder<B> {
        PiperDecoder {
            dec: self.model.dec.clone(),
        }
    }

    /// The whole clause's audio in one decoder pass.
    pub fn decode_all(&self, prepared: &Prepared<B>) -> Vec<f32> {
        self.model
            .dec
            .forward(prepared.latent.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap_or_default()
    }
}

/// Latent frames for the decoder and the samples of its output to keep.
pub struct DecodeJob<B: Backend> {
    pub z: Tensor<B, 3>,
    pub keep_from: usize,
    pub keep: usize,
}

/// The HiFi-GAN decoder, run on chunks of equal length from many clauses
/// at once (batch dimension): the chunks of different sessions never
/// interact, so each gets the audio it would get alone.
#[derive(Clone)]
pub struct PiperDecoder<B: Backend> {
    dec: model::Generator<B>,
}

impl<B: Backend> crate::batch::Batched for PiperDecoder<B> {
    type Input = DecodeJob<B>;
    type Output = Vec<f32>;

    fn key(&self, job: &DecodeJob<B>) -> u64 {
        job.z.dims()[2] as u64
    }

    fn run(&mut self, jobs: Vec<DecodeJob<B>>) -> Vec<Vec<f32>> {
        let (crops, zs): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| ((j.keep_from, j.keep), j.z))
            .unzip();
        let audio = self.dec.forward(Tensor::cat(zs, 0));
        crops
            .into_iter()
            .enumerate()
            .map(|(i, (from, n))| {
                audio
                    .clone()
                    .narrow(0, i, 1)
                    .narrow(2, from, n)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// One utterance for [`PiperVoice::prepare_batch`]: phoneme ids, scales,
/// and its source of standard normal noise.
pub struct PrepareJob {
    pub ids: Vec<i64>,
    pub scales: InferenceJson,
    pub noise: Box<dyn FnMut() -> f32 + Send>,
}

/// The clause-level networks of a voice, batched (utterances of any
/// lengths packed along time).
#[derive(Clone)]
pub struct PiperClauses<B: Backend> {
    voice: std::sync::Arc<PiperVoice<B>>,
}

impl<B: Backend> Batched for PiperClauses<B> {
    type Input = PrepareJob;
    type Output = Prepared<B>;

    fn key(&self, _: &PrepareJob) -> u64 {
        0
    }

    fn run(&mut self, jobs: Vec<PrepareJob>) -> Vec<Prepared<B>> {
        self.voice.prepare_batch(jobs)
    }
}
