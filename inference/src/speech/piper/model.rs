//! Piper's VITS network as burn modules (inference only).
//!
//! The graph in Piper's `.onnx` cannot go through burn's ONNX import (runtime
//! pads, random ops, `NonZero`, `ScatterND`), so the network is written here
//! layer by layer after VITS (Kim et al. 2021) as Piper trains it, and the
//! weights are loaded by name from the ONNX initializers (see `load.rs`).
//!
//! Shapes are `[batch, channels, time]`. Batch 1, no padding masks: every
//! call handles one utterance, so the masks VITS carries are all ones.

use burn::nn::conv::{Conv1d, ConvTranspose1d};
use burn::prelude::*;
use burn::tensor::activation::{gelu, leaky_relu, relu, sigmoid, softmax, tanh};

use crate::nn::ChannelNorm;

/// Hyper-parameters of a Piper "medium" voice (read off the weights).
#[derive(Debug, Clone)]
pub struct VitsConfig {
    pub n_symbols: usize,
    pub hidden: usize,
    pub filter: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    pub window: usize,
    pub inter: usize,
    pub upsample_initial: usize,
    pub upsample_rates: Vec<usize>,
    pub upsample_kernels: Vec<usize>,
    pub resblock_kernels: Vec<usize>,
    pub resblock_dilations: Vec<Vec<usize>>,
    pub spline_bins: usize,
}

impl VitsConfig {
    pub fn piper_medium(n_symbols: usize) -> Self {
        Self {
            n_symbols,
            hidden: 192,
            filter: 768,
            n_heads: 2,
            n_layers: 6,
            window: 4,
            inter: 192,
            upsample_initial: 256,
            upsample_rates: vec![8, 8, 4],
            upsample_kernels: vec![16, 16, 8],
            resblock_kernels: vec![3, 5, 7],
            resblock_dilations: vec![vec![1, 2], vec![2, 6], vec![3, 12]],
            spline_bins: 10,
        }
    }

    /// Audio samples per acoustic frame.
    pub fn hop(&self) -> usize {
        self.upsample_rates.iter().product()
    }
}

// ---------------------------------------------------------------- encoder

/// Multi-head self-attention with relative position embeddings (window ±4).
#[derive(Module, Debug)]
pub struct RelAttention<B: Backend> {
    pub conv_q: Conv1d<B>,
    pub conv_k: Conv1d<B>,
    pub conv_v: Conv1d<B>,
    pub conv_o: Conv1d<B>,
    /// `[1, 2 * window + 1, k_channels]`
    pub emb_rel_k: Tensor<B, 3>,
    pub emb_rel_v: Tensor<B, 3>,
    pub n_heads: usize,
    pub window: usize,
}

impl<B: Backend> RelAttention<B> {
    /// `x`: `[1, hidden, t]` → `[1, hidden, t]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_packed(x, None)
    }

    /// As [`Self::forward`], with `bias` `[t, t]` added to the attention
    /// logits (packed sequences: a large negative number across them).
    pub fn forward_packed(&self, x: Tensor<B, 3>, bias: Option<&Tensor<B, 2>>) -> Tensor<B, 3> {
        let [b, d, t] = x.dims();
        let h = self.n_heads;
        let kc = d / h;
        let heads = |y: Tensor<B, 3>| y.reshape([b, h, kc, t]).swap_dims(2, 3);
        let q = heads(self.conv_q.forward(x.clone())) / (kc as f64).sqrt();
        let k = heads(self.conv_k.forward(x.clone()));
        let v = heads(self.conv_v.forward(x));

        let mut scores = q.clone().matmul(k.swap_dims(2, 3));
        let rel_k = self.relative_embeddings(self.emb_rel_k.clone(), t); // [1, 2t-1, kc]
        let rel_k = rel_k.swap_dims(1, 2).unsqueeze::<4>().repeat_dim(1, h); // [1, h, kc, 2t-1]
        let rel_logits = q.matmul(rel_k); // [1, h, t, 2t-1]
        scores = scores + rel_to_abs(rel_logits);
        if let Some(bias) = bias {
            scores = scores + bias.clone().unsqueeze::<4>();
        }
        let p = softmax(scores, 3);
        let mut out = p.clone().matmul(v); // [1, h, t, kc]
        let rel_v = self.relative_embeddings(self.emb_rel_v.clone(), t); // [1, 2t-1, kc]
        let rel_v = rel_v.unsqueeze::<4>().repeat_dim(1, h); // [1, h, 2t-1, kc]
        out = out + abs_to_rel(p).matmul(rel_v);
        let out = out.swap_dims(2, 3).reshape([b, d, t]);
        self.conv_o.forward(out)
    }

    /// The embeddings for relative offsets `-(t-1) ..= t-1`, zero outside
    /// the trained window.
    fn relative_embeddings(&self, emb: Tensor<B, 3>, t: usize) -> Tensor<B, 3> {
        let w = self.window;
        let [_, _, kc] = emb.dims();
        let pad = t.saturating_sub(w + 1);
        let start = (w + 1).saturating_sub(t);
        let padded = if pad > 0 {
            let z = Tensor::zeros([1, pad, kc], &emb.device());
            Tensor::cat(vec![z.clone(), emb, z], 1)
        } else {
            emb
        };
        padded.narrow(1, start, 2 * t - 1)
    }
}

/// `[b, h, t, 2t-1]` relative logits → `[b, h, t, t]` absolute.
fn rel_to_abs<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, _] = x.dims();
    let dev = x.device();
    let x = Tensor::cat(vec![x, Tensor::zeros([b, h, t, 1], &dev)], 3);
    let flat = x.reshape([b, h, 2 * t * t]);
    let flat = Tensor::cat(vec![flat, Tensor::zeros([b, h, t - 1], &dev)], 2);
    flat.reshape([b, h, t + 1, 2 * t - 1])
        .narrow(2, 0, t)
        .narrow(3, t - 1, t)
}

/// `[b, h, t, t]` absolute weights → `[b, h, t, 2t-1]` relative.
fn abs_to_rel<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, _] = x.dims();
    let dev = x.device();
    let x = if t > 1 {
        Tensor::cat(vec![x, Tensor::zeros([b, h, t, t - 1], &dev)], 3)
    } else {
        x
    };
    let flat = x.reshape([b, h, t * (2 * t - 1)]);
    let flat = Tensor::cat(vec![Tensor::zeros([b, h, t], &dev), flat], 2);
    flat.reshape([b, h, t, 2 * t]).narrow(3, 1, 2 * t - 1)
}

/// Position-wise feed-forward block (two 3-tap convolutions, ReLU).
#[derive(Module, Debug)]
pub struct Ffn<B: Backend> {
    pub conv_1: Conv1d<B>,
    pub conv_2: Conv1d<B>,
}

impl<B: Backend> Ffn<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.conv_2.forward(relu(self.conv_1.forward(x)))
    }

    fn forward_packed(&self, x: Tensor<B, 3>, p: &Packing<B>) -> Tensor<B, 3> {
        self.conv_2
            .forward(p.zero(relu(self.conv_1.forward(p.zero(x)))))
    }
}

/// Columns between packed sequences: more than any convolution of the
/// clause networks reads beyond an edge (the duration predictor's
/// dilation-9 convolutions read 9).
pub const PACK_GAP: usize = 16;

/// Several sequences packed along time (`[1, channels, columns]`) with
/// `PACK_GAP` zero columns between them, so one pass runs them all:
/// attention is masked to each sequence and the gap columns are zeroed
/// before every convolution that reaches across, so each sequence comes
/// out as it would alone.
pub struct Packing<B: Backend> {
    /// First column and length of each sequence.
    pub spans: Vec<(usize, usize)>,
    /// `[1, 1, columns]`: 1 on sequence columns, 0 on gaps.
    pub cols: Tensor<B, 3>,
    pub valid: Vec<bool>,
    /// `[columns, columns]`: 0 where a column may attend, a large negative
    /// number elsewhere (gap columns attend to themselves only).
    pub attention: Tensor<B, 2>,
}

impl<B: Backend> Packing<B> {
    /// `attention`: build the attention mask (the flow needs none).
    pub fn new(lengths: &[usize], attention: bool, dev: &B::Device) -> Self {
        let layout = crate::batch::PackLayout::new(lengths, PACK_GAP, attention);
        let total = layout.len();
        let side = if attention { total } else { 1 };
        let mask = if attention {
            layout.attention.clone()
        } else {
            vec![0.0]
        };
        Self {
            cols: Tensor::from_data(TensorData::new(layout.ones(), [1, 1, total]), dev),
            attention: Tensor::from_data(TensorData::new(mask, [side, side]), dev),
            spans: layout.spans,
            valid: layout.valid,
        }
    }

    /// `parts` (`[1, channels, len]` each) side by side with gaps.
    pub fn pack(&self, parts: Vec<Tensor<B, 3>>) -> Tensor<B, 3> {
        let mut pieces = Vec::with_capacity(parts.len() * 2);
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                let [_, c, _] = p.dims();
                pieces.push(Tensor::zeros([1, c, PACK_GAP], &p.device()));
            }
            pieces.push(p);
        }
        Tensor::cat(pieces, 2)
    }

    /// Each sequence's columns back out.
    pub fn unpack(&self, x: Tensor<B, 3>) -> Vec<Tensor<B, 3>> {
        self.spans
            .iter()
            .map(|&(a, n)| x.clone().narrow(2, a, n))
            .collect()
    }

    pub fn zero(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        x * self.cols.clone()
    }
}

/// Phoneme ids → hidden states and the prior's mean / log-scale.
#[derive(Module, Debug)]
pub struct TextEncoder<B: Backend> {
    /// `[n_symbols, hidden]`
    pub emb: Tensor<B, 2>,
    pub attn: Vec<RelAttention<B>>,
    pub norm_1: Vec<ChannelNorm<B>>,
    pub ffn: Vec<Ffn<B>>,
    pub norm_2: Vec<ChannelNorm<B>>,
    pub proj: Conv1d<B>,
}

/// Output of the text encoder for one utterance.
pub struct Encoded<B: Backend> {
    /// `[1, hidden, t]`
    pub x: Tensor<B, 3>,
    /// `[1, inter, t]`
    pub m: Tensor<B, 3>,
    /// `[1, inter, t]`
    pub logs: Tensor<B, 3>,
}

impl<B: Backend> TextEncoder<B> {
    /// `ids`: `[t]` phoneme ids.
    pub fn forward(&self, ids: Tensor<B, 1, Int>) -> Encoded<B> {
        let [_, hidden] = self.emb.dims();
        let t = ids.dims()[0];
        let x = self.emb.clone().select(0, ids) * (hidden as f64).sqrt(); // [t, hidden]
        let mut x = x.swap_dims(0, 1).reshape([1, hidden, t]);
        for i in 0..self.attn.len() {
            let y = self.attn[i].forward(x.clone());
            x = self.norm_1[i].forward(x + y);
            let y = self.ffn[i].forward(x.clone());
            x = self.norm_2[i].forward(x + y);
        }
        self.encoded(x)
    }

    /// The hidden states with the prior's mean and log-scale.
    fn encoded(&self, x: Tensor<B, 3>) -> Encoded<B> {
        let stats = self.proj.forward(x.clone());
        let inter = stats.dims()[1] / 2;
        let m = stats.clone().narrow(1, 0, inter);
        let logs = stats.narrow(1, inter, inter);
        Encoded { x, m, logs }
    }

    /// Several utterances' ids packed along time (see [`Packing`]); the
    /// outputs are packed alike.
    pub fn forward_packed(&self, ids: Vec<Tensor<B, 1, Int>>, p: &Packing<B>) -> Encoded<B> {
        let [_, hidden] = self.emb.dims();
        let parts = ids
            .into_iter()
            .map(|ids| {
                let t = ids.dims()[0];
                let x = self.emb.clone().select(0, ids) * (hidden as f64).sqrt();
                x.swap_dims(0, 1).reshape([1, hidden, t])
            })
            .collect();
        let mut x = p.pack(parts);
        for i in 0..self.attn.len() {
            let y = self.attn[i].forward_packed(x.clone(), Some(&p.attention));
            x = self.norm_1[i].forward(x + y);
            let y = self.ffn[i].forward_packed(x.clone(), p);
            x = self.norm_2[i].forward(x + y);
        }
        self.encoded(x)
    }
}

// ------------------------------------------------------ duration predictor

/// Dilated depth-separable convolution stack (VITS `DDSConv`, dilation 3^i).
#[derive(Module, Debug)]
pub struct DdsConv<B: Backend> {
    pub sep: Vec<Conv1d<B>>,
    pub one: Vec<Conv1d<B>>,
    pub norm_1: Vec<ChannelNorm<B>>,
    pub norm_2: Vec<ChannelNorm<B>>,
}

impl<B: Backend> DdsConv<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_packed(x, None)
    }

    fn forward_packed(&self, mut x: Tensor<B, 3>, p: Option<&Packing<B>>) -> Tensor<B, 3> {
        for i in 0..self.sep.len() {
            let input = match p {
                Some(p) => p.zero(x.clone()),
                None => x.clone(),
            };
            let y = gelu(self.norm_1[i].forward(self.sep[i].forward(input)));
            let y = gelu(self.norm_2[i].forward(self.one[i].forward(y)));
            x = x + y;
        }
        x
    }
}

/// One spline coupling flow of the stochastic duration predictor.
#[derive(Module, Debug)]
pub struct ConvFlow<B: Backend> {
    pub pre: Conv1d<B>,
    pub convs: DdsConv<B>,
    pub proj: Conv1d<B>,
}

/// Stochastic duration predictor, run in reverse (noise → log-durations).
#[derive(Module, Debug)]
pub struct DurationPredictor<B: Backend> {
    pub pre: Conv1d<B>,
    pub convs: DdsConv<B>,
    pub proj: Conv1d<B>,
    /// Applied in reverse order: `flows[0]` first (VITS' flows 7, 5, 3).
    pub flows: Vec<ConvFlow<B>>,
    /// Element-wise affine flow: `[2, 1]` mean and `exp(-logs)`.
    pub affine_m: Tensor<B, 2>,
    pub affine_inv_scale: Tensor<B, 2>,
    pub filter: usize,
    pub bins: usize,
}

impl<B: Backend> DurationPredictor<B> {
    /// `x`: encoder output `[1, hidden, t]`; `noise`: `[1, 2, t]` (already
    /// scaled by `noise_w`). Returns log-durations in frames, `t` values.
    pub fn forward(&self, x: Tensor<B, 3>, noise: Tensor<B, 3>) -> Vec<f32> {
        self.forward_packed(x, noise, None)
    }

    /// As [`Self::forward`] on packed utterances (see [`Packing`]); one
    /// value per column (gap columns give 0).
    pub fn forward_packed(
        &self,
        x: Tensor<B, 3>,
        noise: Tensor<B, 3>,
        p: Option<&Packing<B>>,
    ) -> Vec<f32> {
        let g = self
            .proj
            .forward(self.convs.forward_packed(self.pre.forward(x), p));
        let [_, _, t] = g.dims();
        let mut z = noise;
        for flow in &self.flows {
            z = z.flip([1]);
            let x0 = z.clone().narrow(1, 0, 1);
            let x1 = z.narrow(1, 1, 1);
            let h = flow.pre.forward(x0.clone());
            let h = flow.convs.forward_packed(h + g.clone(), p);
            let h = flow.proj.forward(h); // [1, 3 * bins - 1, t]
            let params = h
                .swap_dims(1, 2)
                .into_data()
                .to_vec::<f32>()
                .unwrap_or_default();
            let x1v = x1.into_data().to_vec::<f32>().unwrap_or_default();
            let k = 3 * self.bins - 1;
            let scale = 1.0 / (self.filter as f32).sqrt();
            let out: Vec<f32> = (0..t)
                .map(|i| {
                    if p.is_some_and(|p| !p.valid[i]) {
                        return 0.0;
                    }
                    let p = &params[i * k..(i + 1) * k];
                    spline_inverse(
                        x1v[i],
                        &p[..self.bins],
                        &p[self.bins..2 * self.bins],
                        &p[2 * self.bins..],
                        scale,
                    )
                })
                .collect();
            let x1 = Tensor::<B, 1>::from_data(TensorData::new(out, [t]), &x0.device())
                .reshape([1, 1, t]);
            z = Tensor::cat(vec![x0, x1], 1);
        }
        z = z.flip([1]);
        let [_, c, _] = z.dims();
        let m = self.affine_m.clone().reshape([1, c, 1]);
        let s = self.affine_inv_scale.clone().reshape([1, c, 1]);
        let z = (z - m) * s;
        z.narrow(1, 0, 1)
            .into_data()
            .to_vec::<f32>()
            .unwrap_or_default()
    }
}

/// Inverse of the monotonic rational-quadratic spline (Durkan et al. 2019)
/// with linear tails outside ±5, as VITS' `ConvFlow` uses it. Scalar work on a
/// handful of values per phoneme, so it runs on the host.
fn spline_inverse(y: f32, uw: &[f32], uh: &[f32], ud: &[f32], scale: f32) -> f32 {
    const BOUND: f32 = 5.0;
    const MIN_W: f32 = 1e-3;
    const MIN_H: f32 = 1e-3;
    const MIN_D: f32 = 1e-3;
    if !(-BOUND..=BOUND).contains(&y) {
        return y;
    }
    let n = uw.len();
    let knots = |u: &[f32], min: f32| -> Vec<f32> {
        let max = u.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * scale));
        let e: Vec<f32> = u.iter().map(|&v| (v * scale - max).exp()).collect();
        let sum: f32 = e.iter().sum();
        let mut cum = vec![-BOUND];
        let mut acc = 0.0;
        for v in &e {
            acc += min + (1.0 - min * n as f32) * v / sum;
            cum.push(2.0 * BOUND * acc - BOUND);
        }
        cum[n] = BOUND;
        cum
    };
    let cw = knots(uw, MIN_W);
    let ch = knots(uh, MIN_H);
    let tail = ((1.0 - MIN_D).exp() - 1.0).ln();
    let softplus = |v: f32| if v > 20.0 { v } else { v.exp().ln_1p() };
    let mut d = Vec::with_capacity(n + 1);
    d.push(MIN_D + softplus(tail));
    d.extend(ud.iter().map(|&v| MIN_D + softplus(v)));
    d.push(MIN_D + softplus(tail));
    // searchsorted on the height knots (last knot nudged up by 1e-6).
    let mut idx = 0;
    for (j, &c) in ch.iter().enumerate() {
        let c = if j == n { c + 1e-6 } else { c };
        if y >= c {
            idx = j;
        }
    }
    let idx = idx.min(n - 1);
    let (x0, w) = (cw[idx], cw[idx + 1] - cw[idx]);
    let (y0, h) = (ch[idx], ch[idx + 1] - ch[idx]);
    let delta = h / w;
    let (d0, d1) = (d[idx], d[idx + 1]);
    let dy = y - y0;
    let a = dy * (d0 + d1 - 2.0 * delta) + h * (delta - d0);
    let b = h * d0 - dy * (d0 + d1 - 2.0 * delta);
    let c = -delta * dy;
    let disc = (b * b - 4.0 * a * c).max(0.0);
    let root = (2.0 * c) / (-b - disc.sqrt());
    root * w + x0
}

// ------------------------------------------------------------------- flow

/// WaveNet-style residual stack (VITS `WN`) without conditioning.
#[derive(Module, Debug)]
pub struct WaveNet<B: Backend> {
    pub in_layers: Vec<Conv1d<B>>,
    pub res_skip: Vec<Conv1d<B>>,
    pub hidden: usize,
}

impl<B: Backend> WaveNet<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_packed(x, None)
    }

    fn forward_packed(&self, mut x: Tensor<B, 3>, p: Option<&Packing<B>>) -> Tensor<B, 3> {
        let h = self.hidden;
        let mut out: Option<Tensor<B, 3>> = None;
        let n = self.in_layers.len();
        for i in 0..n {
            let input = match p {
                Some(p) => p.zero(x.clone()),
                None => x.clone(),
            };
            let a = self.in_layers[i].forward(input);
            let acts = tanh(a.clone().narrow(1, 0, h)) * sigmoid(a.narrow(1, h, h));
            let rs = self.res_skip[i].forward(acts);
            let skip = if i < n - 1 {
                x = x + rs.clone().narrow(1, 0, h);
                rs.narrow(1, h, h)
            } else {
                rs
            };
            out = Some(match out {
                Some(o) => o + skip,
                None => skip,
            });
        }
        out.unwrap_or(x)
    }
}

/// Mean-only affine coupling layer.
#[derive(Module, Debug)]
pub struct Coupling<B: Backend> {
    pub pre: Conv1d<B>,
    pub enc: WaveNet<B>,
    pub post: Conv1d<B>,
}

/// The normalising flow from the prior to the decoder's latent, in reverse.
#[derive(Module, Debug)]
pub struct Flow<B: Backend> {
    /// In reverse order of application in training: `layers[0]` is VITS'
    /// `flows.6`, applied first at inference.
    pub layers: Vec<Coupling<B>>,
}

impl<B: Backend> Flow<B> {
    /// `z`: `[1, inter, frames]` → `[1, inter, frames]`.
    pub fn reverse(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        self.reverse_packed(z, None)
    }

    /// As [`Self::reverse`] on packed utterances (see [`Packing`]).
    pub fn reverse_packed(&self, mut z: Tensor<B, 3>, p: Option<&Packing<B>>) -> Tensor<B, 3> {
        let [_, c, _] = z.dims();
        let half = c / 2;
        for layer in &self.layers {
            z = z.flip([1]);
            let x0 = z.clone().narrow(1, 0, half);
            let x1 = z.narrow(1, half, half);
            let h = layer.enc.forward_packed(layer.pre.forward(x0.clone()), p);
            let m = layer.post.forward(h);
            z = Tensor::cat(vec![x0, x1 - m], 1);
        }
        z
    }
}

// ---------------------------------------------------------------- decoder

/// HiFi-GAN residual block type 2 (two dilated convolutions).
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub convs: Vec<Conv1d<B>>,
}

impl<B: Backend> ResBlock<B> {
    pub fn forward(&self, mut x: Tensor<B, 3>) -> Tensor<B, 3> {
        for c in &self.convs {
            x = c.forward(leaky_relu(x.clone(), 0.1)) + x;
        }
        x
    }
}

/// HiFi-GAN generator: latent frames → waveform (hop 256).
#[derive(Module, Debug)]
pub struct Generator<B: Backend> {
    pub conv_pre: Conv1d<B>,
    pub ups: Vec<ConvTranspose1d<B>>,
    /// `ups.len() * kernels` blocks, grouped by upsampling stage.
    pub resblocks: Vec<ResBlock<B>>,
    pub conv_post: Conv1d<B>,
}

impl<B: Backend> Generator<B> {
    /// `z`: `[1, inter, frames]` → `[1, 1, frames * hop]` in [-1, 1].
    pub fn forward(&self, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut x = self.conv_pre.forward(z);
        let k = self.resblocks.len() / self.ups.len();
        for (i, up) in self.ups.iter().enumerate() {
            x = up.forward(leaky_relu(x, 0.1));
            let mut sum: Option<Tensor<B, 3>> = None;
            for rb in &self.resblocks[i * k..(i + 1) * k] {
                let y = rb.forward(x.clone());
                sum = Some(match sum {
                    Some(s) => s + y,
                    None => y,
                });
            }
            x = sum.unwrap_or(x) / k as f64;
        }
        tanh(self.conv_post.forward(leaky_relu(x, 0.01)))
    }
}

/// The whole voice.
#[derive(Module, Debug)]
pub struct Vits<B: Backend> {
    pub enc: TextEncoder<B>,
    pub dp: DurationPredictor<B>,
    pub flow: Flow<B>,
    pub dec: Generator<B>,
}
