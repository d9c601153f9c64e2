//! Audio → visemes: the face-animation model for a live voice.
//!
//! No pretrained audio-to-face weights exist in the package registries, so
//! this network is trained by the project (`cargo run --release -p
//! huashen-train`, see that program for the data and
//! the evaluation) and its small weights file is committed
//! (`inference/weights/lipsync.bin`, embedded in the binary).
//!
//! - Features: 16 kHz audio, 25 ms Hann windows every 10 ms (frame `k` is
//!   centred on sample `160 k`), 512-point FFT, 40 mel bands (50–7600 Hz),
//!   natural log of the band power, normalised per band with the training
//!   set's mean and deviation.
//! - Network: the frames `k − 15 … k + 3` (150 ms of context, 30 ms of
//!   look-ahead) stacked into one vector → two ReLU layers (256, 128) →
//!   fifteen viseme logits and five mouth parameters (jaw, spread, round,
//!   upper lip, lower lip; the targets [`animate::mouth_at`] gives for the
//!   true visemes, anticipation included).
//! - Decoding: per frame the most likely viseme, then a median over three
//!   frames (one frame of delay) so single-frame flickers never reach the
//!   mouth. Total look-ahead from a sample to its viseme: 3 frames + half a
//!   window + 1 frame = 52.5 ms.
//!
//! [`animate::mouth_at`]: super::animate::mouth_at

use std::collections::VecDeque;
use std::sync::Arc;

use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

pub use super::logmel::{HOP, LogMel, N_MELS, RATE, WINDOW};
use crate::batch::{BatchWorker, Batched};
use crate::speech::timeline::Viseme;

/// Frames of past context.
pub const PAST: usize = 15;
/// Frames of look-ahead.
pub const AHEAD: usize = 3;
pub const CONTEXT: usize = PAST + 1 + AHEAD;
pub const INPUT: usize = CONTEXT * N_MELS;
pub const N_VISEMES: usize = 15;
pub const N_MOUTH: usize = 5;
const HIDDEN1: usize = 256;
const HIDDEN2: usize = 128;

/// The network (see the module docs).
#[derive(Module, Debug)]
pub struct LipNet<B: Backend> {
    pub hidden1: Linear<B>,
    pub hidden2: Linear<B>,
    pub visemes: Linear<B>,
    pub mouth: Linear<B>,
}

impl<B: Backend> LipNet<B> {
    /// Freshly initialised (for training).
    pub fn init(device: &B::Device) -> Self {
        Self {
            hidden1: LinearConfig::new(INPUT, HIDDEN1).init(device),
            hidden2: LinearConfig::new(HIDDEN1, HIDDEN2).init(device),
            visemes: LinearConfig::new(HIDDEN2, N_VISEMES).init(device),
            mouth: LinearConfig::new(HIDDEN2, N_MOUTH).init(device),
        }
    }

    /// `[batch, INPUT]` normalised stacked frames → viseme logits
    /// `[batch, 15]` and mouth parameters `[batch, 5]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let h = relu(self.hidden1.forward(x));
        let h = relu(self.hidden2.forward(h));
        (self.visemes.forward(h.clone()), self.mouth.forward(h))
    }

    fn layers(&self) -> [&Linear<B>; 4] {
        [&self.hidden1, &self.hidden2, &self.visemes, &self.mouth]
    }
}

/// Trained weights and the feature normalisation they expect.
#[derive(Clone, Debug)]
pub struct LipWeights<B: Backend> {
    pub net: LipNet<B>,
    pub mean: [f32; N_MELS],
    pub std: [f32; N_MELS],
}

const MAGIC: &[u8; 8] = b"HSLIPS01";

#[derive(Debug, thiserror::Error)]
#[error("lip-sync weights are damaged: {0}")]
pub struct WeightsError(&'static str);

impl<B: Backend> LipWeights<B> {
    /// The committed weights.
    pub fn embedded(device: &B::Device) -> Self {
        Self::from_bytes(include_bytes!("../../weights/lipsync.bin"), device)
            .expect("the embedded lip-sync weights load (tested)")
    }

    /// File layout: magic, then little-endian f32: mean (40), std (40), and
    /// per layer (hidden1, hidden2, visemes, mouth) the weight `[in, out]`
    /// row-major then the bias `[out]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let mut put = |v: &[f32]| v.iter().for_each(|x| out.extend(x.to_le_bytes()));
        put(&self.mean);
        put(&self.std);
        for l in self.net.layers() {
            put(&l.weight.val().into_data().to_vec::<f32>().expect("f32"));
            put(&l
                .bias
                .as_ref()
                .expect("biased")
                .val()
                .into_data()
                .to_vec::<f32>()
                .expect("f32"));
        }
        out
    }

    pub fn from_bytes(bytes: &[u8], device: &B::Device) -> Result<Self, WeightsError> {
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(WeightsError("wrong magic"))?;
        if body.len() % 4 != 0 {
            return Err(WeightsError("length"));
        }
        let values: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut at = 0;
        let mut take = |n: usize| -> Result<Vec<f32>, WeightsError> {
            let v = values.get(at..at + n).ok_or(WeightsError("too short"))?;
            at += n;
            Ok(v.to_vec())
        };
        let mean: [f32; N_MELS] = take(N_MELS)?.try_into().expect("length");
        let std: [f32; N_MELS] = take(N_MELS)?.try_into().expect("length");
        let mut linear = |d_in: usize, d_out: usize| -> Result<Linear<B>, WeightsError> {
            let w = take(d_in * d_out)?;
            let b = take(d_out)?;
            Ok(Linear {
                weight: Param::from_tensor(Tensor::from_data(
                    TensorData::new(w, [d_in, d_out]),
                    device,
                )),
                bias: Some(Param::from_tensor(Tensor::from_data(
                    TensorData::new(b, [d_out]),
                    device,
                ))),
            })
        };
        let net = LipNet {
            hidden1: linear(INPUT, HIDDEN1)?,
            hidden2: linear(HIDDEN1, HIDDEN2)?,
            visemes: linear(HIDDEN2, N_VISEMES)?,
            mouth: linear(HIDDEN2, N_MOUTH)?,
        };
        if at != values.len() {
            return Err(WeightsError("trailing data"));
        }
        if mean.iter().chain(&std).any(|v| !v.is_finite()) || std.iter().any(|&s| s <= 0.0) {
            return Err(WeightsError("bad normalisation"));
        }
        Ok(Self { net, mean, std })
    }

    /// The network input for frame `k` of `frames` (already normalised):
    /// frames before the start and past the end repeat the edge frame.
    pub fn stack(frames: &[[f32; N_MELS]], k: usize, out: &mut Vec<f32>) {
        let last = frames.len() as isize - 1;
        for d in -(PAST as isize)..=(AHEAD as isize) {
            let i = (k as isize + d).clamp(0, last) as usize;
            out.extend_from_slice(&frames[i]);
        }
    }

    pub fn normalize(&self, frame: &[f32; N_MELS]) -> [f32; N_MELS] {
        std::array::from_fn(|i| (frame[i] - self.mean[i]) / self.std[i])
    }
}

/// What the model says about one 10 ms frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LipFrame {
    /// Frame number from the start of the stream (centred on 10 ms × index).
    pub index: u64,
    pub posteriors: [f32; N_VISEMES],
    pub mouth: [f32; N_MOUTH],
}

impl LipFrame {
    pub fn best(&self) -> Viseme {
        let i = argmax(&self.posteriors);
        Viseme::ALL[i]
    }
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// Runs the network over frames of a whole recording (offline: training
/// evaluation, tests).
pub fn run_all<B: Backend>(
    w: &LipWeights<B>,
    frames: &[[f32; N_MELS]],
    device: &B::Device,
) -> Vec<LipFrame> {
    let normed: Vec<_> = frames.iter().map(|f| w.normalize(f)).collect();
    let mut out = Vec::with_capacity(frames.len());
    for chunk_start in (0..normed.len()).step_by(1024) {
        let end = (chunk_start + 1024).min(normed.len());
        let mut x = Vec::with_capacity((end - chunk_start) * INPUT);
        for k in chunk_start..end {
            LipWeights::<B>::stack(&normed, k, &mut x);
        }
        out.extend(infer(w, x, end - chunk_start, chunk_start as u64, device));
    }
    out
}

fn infer<B: Backend>(
    w: &LipWeights<B>,
    x: Vec<f32>,
    n: usize,
    first: u64,
    device: &B::Device,
) -> Vec<LipFrame> {
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [n, INPUT]), device);
    let (logits, mouth) = w.net.forward(x);
    let post = burn::tensor::activation::softmax(logits, 1)
        .into_data()
        .to_vec::<f32>()
        .expect("f32");
    let mouth = mouth.into_data().to_vec::<f32>().expect("f32");
    (0..n)
        .map(|i| LipFrame {
            index: first + i as u64,
            posteriors: post[i * N_VISEMES..(i + 1) * N_VISEMES]
                .try_into()
                .expect("15"),
            mouth: mouth[i * N_MOUTH..(i + 1) * N_MOUTH].try_into().expect("5"),
        })
        .collect()
}

/// The network as a batchable stage: rows of stacked frames from many
/// streams run as one matrix (rows never interact, so each stream gets
/// what it would get alone).
#[derive(Clone)]
pub struct LipStage<B: Backend> {
    weights: LipWeights<B>,
    device: B::Device,
}

impl<B: Backend> LipStage<B> {
    pub fn new(weights: LipWeights<B>, device: B::Device) -> Self {
        Self { weights, device }
    }
}

/// `n` network inputs (`n × INPUT` values) of one stream, the first being
/// its frame `first`.
pub struct LipRows {
    pub x: Vec<f32>,
    pub n: usize,
    pub first: u64,
}

impl<B: Backend> Batched for LipStage<B> {
    type Input = LipRows;
    type Output = Vec<LipFrame>;

    fn key(&self, _: &LipRows) -> u64 {
        // Every row has the same width: any requests can share a batch.
        0
    }

    fn run(&mut self, inputs: Vec<LipRows>) -> Vec<Vec<LipFrame>> {
        let total = inputs.iter().map(|r| r.n).sum();
        let mut x = Vec::with_capacity(total * INPUT);
        for r in &inputs {
            x.extend_from_slice(&r.x);
        }
        let mut frames = infer(&self.weights, x, total, 0, &self.device).into_iter();
        inputs
            .iter()
            .map(|r| {
                frames
                    .by_ref()
                    .take(r.n)
                    .enumerate()
                    .map(|(i, f)| LipFrame {
                        index: r.first + i as u64,
                        ..f
                    })
                    .collect()
            })
            .collect()
    }
}

/// Where a stream's network runs.
enum Runner<B: Backend> {
    /// On the caller's thread.
    Local(Box<LipStage<B>>),
    /// On a batched worker shared by many streams.
    Shared(Arc<BatchWorker<LipStage<B>>>),
}

/// Streaming inference: push 16 kHz audio, get each frame's output as soon
/// as its look-ahead has arrived.
pub struct LipSync<B: Backend> {
    runner: Runner<B>,
    mean: [f32; N_MELS],
    std: [f32; N_MELS],
    mel: LogMel,
    /// Normalised frames kept for context (the last PAST + 1 + AHEAD).
    history: VecDeque<[f32; N_MELS]>,
    /// Frames computed so far.
    computed: u64,
    /// Next frame to output.
    next: u64,
    scratch: Vec<[f32; N_MELS]>,
}

impl<B: Backend> LipSync<B> {
    /// Runs the network on the caller's thread.
    pub fn new(weights: LipWeights<B>, device: B::Device) -> Self {
        let (mean, std) = (weights.mean, weights.std);
        Self::with(
            Runner::Local(Box::new(LipStage::new(weights, device))),
            mean,
            std,
        )
    }

    /// Runs the network on `worker` (batched with other streams);
    /// `weights` must be the ones the worker runs (for the features'
    /// normalisation).
    pub fn batched(worker: Arc<BatchWorker<LipStage<B>>>, weights: &LipWeights<B>) -> Self {
        Self::with(Runner::Shared(worker), weights.mean, weights.std)
    }

    fn with(runner: Runner<B>, mean: [f32; N_MELS], std: [f32; N_MELS]) -> Self {
        Self {
            runner,
            mean,
            std,
            mel: LogMel::new(),
            history: VecDeque::with_capacity(CONTEXT + 1),
            computed: 0,
            next: 0,
            scratch: Vec::new(),
        }
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.mel.reset();
        self.history.clear();
        self.computed = 0;
        self.next = 0;
    }

    /// Adds audio; appends the outputs that became ready.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<LipFrame>) {
        self.scratch.clear();
        self.mel.push(samples, &mut self.scratch);
        if self.scratch.is_empty() {
            return;
        }
        let mut x = Vec::new();
        let mut n = 0;
        let first = self.next;
        for f in std::mem::take(&mut self.scratch) {
            let f: [f32; N_MELS] = std::array::from_fn(|i| (f[i] - self.mean[i]) / self.std[i]);
            if self.history.is_empty() {
                // The stream's first frame stands in for the past.
                self.history.extend(std::iter::repeat_n(f, PAST));
            }
            self.history.push_back(f);
            self.computed += 1;
            while self.history.len() > CONTEXT {
                self.history.pop_front();
            }
            if self.computed > AHEAD as u64 {
                for h in &self.history {
                    x.extend_from_slice(h);
                }
                n += 1;
                self.next += 1;
            }
        }
        if n > 0 {
            let rows = LipRows { x, n, first };
            match &mut self.runner {
                Runner::Local(stage) => out.extend(stage.run(vec![rows]).into_iter().flatten()),
                Runner::Shared(worker) => out.extend(worker.run(rows).unwrap_or_default()),
            }
        }
    }
}

/// Per-frame visemes from model outputs, without flicker: each frame takes
/// the median (majority) of the best visemes of itself and its two
/// neighbours, so it is known one frame after the network's output.
#[derive(Default)]
pub struct VisemeDecoder {
    recent: VecDeque<(u64, Viseme)>,
}

impl VisemeDecoder {
    pub fn reset(&mut self) {
        self.recent.clear();
    }

    /// Adds a frame; returns the decided viseme of the frame before it.
    pub fn push(&mut self, f: &LipFrame) -> Option<(u64, Viseme)> {
        self.recent.push_back((f.index, f.best()));
        if self.recent.len() > 3 {
            self.recent.pop_front();
        }
        match self.recent.len() {
            2 => Some(self.recent[0]),
            3 => {
                let (a, b, c) = (self.recent[0].1, self.recent[1].1, self.recent[2].1);
                let v = if a == c && a != b { a } else { b };
                Some((self.recent[1].0, v))
            }
            _ => None,
        }
    }

    /// Decodes a whole recording's frames.
    pub fn decode_all(frames: &[LipFrame]) -> Vec<Viseme> {
        let mut d = Self::default();
        let mut out: Vec<Viseme> = frames
            .iter()
            .filter_map(|f| d.push(f))
            .map(|x| x.1)
            .collect();
        if let Some(last) = frames.last() {
            out.push(last.best());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::logmel::fft;
    use super::*;
    use crate::Cpu;

    #[test]
    fn fft_finds_a_tone() {
        let mut re: Vec<f32> = (0..512)
            .map(|i| (std::f32::consts::TAU * 32.0 * i as f32 / 512.0).cos())
            .collect();
        let mut im = vec![0.0; 512];
        fft(&mut re, &mut im);
        let mag: Vec<f32> = re.iter().zip(&im).map(|(r, i)| r.hypot(*i)).collect();
        assert_eq!(argmax(&mag[..256]), 32);
        assert!((mag[32] - 256.0).abs() < 0.1);
    }

    #[test]
    fn streaming_features_equal_offline_ones() {
        let audio: Vec<f32> = (0..8000)
            .map(|i| (i as f32 * 0.07).sin() * 0.3 + (i as f32 * 0.91).sin() * 0.1)
            .collect();
        let all = LogMel::all(&audio);
        let mut m = LogMel::new();
        let mut streamed = Vec::new();
        for c in audio.chunks(333) {
            m.push(c, &mut streamed);
        }
        assert_eq!(all.len(), 50);
        assert!(streamed.len() >= 47);
        for (a, b) in all.iter().zip(&streamed) {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn embedded_weights_load_and_stream_like_offline() {
        let device = Default::default();
        let w = LipWeights::<Cpu>::embedded(&device);
        let bytes = w.to_bytes();
        assert_eq!(bytes, include_bytes!("../../weights/lipsync.bin"));
        let audio: Vec<f32> = (0..16000)
            .map(|i| (i as f32 * 0.05).sin() * (i as f32 / 3000.0).sin() * 0.4)
            .collect();
        let frames = LogMel::all(&audio);
        let offline = run_all(&w, &frames, &device);
        let mut s = LipSync::new(
            LipWeights::<Cpu>::from_bytes(&bytes, &device).unwrap(),
            device,
        );
        let mut streamed = Vec::new();
        for c in audio.chunks(320) {
            s.push(c, &mut streamed);
        }
        assert!(streamed.len() >= 90, "{}", streamed.len());
        // Away from the stream's start (where the past is padded the same
        // way) every frame matches.
        for (a, b) in offline.iter().zip(&streamed) {
            assert_eq!(a.index, b.index);
            for (x, y) in a.posteriors.iter().zip(&b.posteriors) {
                assert!((x - y).abs() < 1e-4, "frame {}: {x} vs {y}", a.index);
            }
        }
    }

    #[test]
    fn streams_batched_together_equal_each_alone() {
        use crate::batch::BatchConfig;
        let device = Default::default();
        let weights = LipWeights::<Cpu>::embedded(&device);
        let audio = |k: usize| -> Vec<f32> {
            (0..16000)
                .map(|i| {
                    (i as f32 * 0.01 * (k + 2) as f32).sin()
                        * (i as f32 / (900.0 + 300.0 * k as f32)).sin()
                        * 0.4
                })
                .collect()
        };
        let alone: Vec<Vec<LipFrame>> = (0..4)
            .map(|k| {
                let mut s = LipSync::new(weights.clone(), device);
                let mut out = Vec::new();
                for c in audio(k).chunks(320) {
                    s.push(c, &mut out);
                }
                out
            })
            .collect();
        let worker = Arc::new(
            BatchWorker::start(
                LipStage::new(weights.clone(), device),
                BatchConfig {
                    slots: 4,
                    max_wait: std::time::Duration::from_millis(5),
                    queue: 16,
                    threads: 1,
                },
                "test-lips",
            )
            .unwrap(),
        );
        let together: Vec<Vec<LipFrame>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..4)
                .map(|k| {
                    let (worker, weights) = (worker.clone(), &weights);
                    sc.spawn(move || {
                        let mut s = LipSync::batched(worker, weights);
                        let mut out = Vec::new();
                        for c in audio(k).chunks(320) {
                            s.push(c, &mut out);
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (a, b) in alone.iter().zip(&together) {
            assert_eq!(a.len(), b.len());
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.index, y.index);
                for (p, q) in x.posteriors.iter().zip(&y.posteriors) {
                    assert!((p - q).abs() < 1e-5, "frame {}: {p} vs {q}", x.index);
                }
            }
        }
        // And rows of different streams in one batch (whether the threads
        // above happened to meet in a batch depends on timing) give what
        // each gets alone.
        let mut stage = LipStage::new(weights.clone(), device);
        let rows = |k: usize, first: u64| {
            let frames = LogMel::all(&audio(k)[..8000]);
            let normed: Vec<_> = frames.iter().map(|f| weights.normalize(f)).collect();
            let mut x = Vec::new();
            for i in 0..10 {
                LipWeights::<Cpu>::stack(&normed, 20 + i, &mut x);
            }
            LipRows { x, n: 10, first }
        };
        let both = stage.run(vec![rows(0, 20), rows(1, 20)]);
        let single = [stage.run(vec![rows(0, 20)]), stage.run(vec![rows(1, 20)])];
        for (b, s) in both.iter().zip(single.iter().flatten()) {
            assert_eq!(b.len(), 10);
            for (x, y) in b.iter().zip(s) {
                assert_eq!(x.index, y.index);
                for (p, q) in x.posteriors.iter().zip(&y.posteriors) {
                    assert!((p - q).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn damaged_weights_are_refused() {
        let device = Default::default();
        assert!(LipWeights::<Cpu>::from_bytes(b"nonsense", &device).is_err());
        let mut bytes = include_bytes!("../../weights/lipsync.bin").to_vec();
        bytes.pop();
        assert!(LipWeights::<Cpu>::from_bytes(&bytes, &device).is_err());
    }

    #[test]
    fn decoder_removes_single_frame_flicker() {
        let frame = |index: u64, v: usize| {
            let mut posteriors = [0.0; N_VISEMES];
            posteriors[v] = 1.0;
            LipFrame {
                index,
                posteriors,
                mouth: [0.0; N_MOUTH],
            }
        };
        let seq = [0, 0, 10, 0, 0, 10, 10, 10, 0];
        let frames: Vec<_> = seq
            .iter()
            .enumerate()
            .map(|(i, &v)| frame(i as u64, v))
            .collect();
        let out: Vec<usize> = VisemeDecoder::decode_all(&frames)
            .iter()
            .map(|v| Viseme::ALL.iter().position(|x| x == v).unwrap())
            .collect();
        assert_eq!(out, [0, 0, 0, 0, 0, 10, 10, 10, 0]);
    }
}
