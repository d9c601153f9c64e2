//! Labels per 10 ms frame, feature normalisation and stacking, and the
//! training loop.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::loss::cross_entropy_with_logits;
use huashen_inference::Cpu;
use huashen_inference::face::animate::mouth_at;
use huashen_inference::face::lipsync::{
    INPUT, LipNet, LipWeights, LogMel, N_MELS, N_MOUTH, N_VISEMES,
};
use huashen_inference::speech::timeline::Viseme;

use crate::augment::*;
use crate::common::*;

pub(crate) fn viseme_index(v: Viseme) -> usize {
    Viseme::ALL.iter().position(|x| *x == v).expect("listed")
}

pub(crate) fn label(clip: &Clip) -> Sample {
    let frames = LogMel::all(&clip.pcm);
    let n = frames.len();
    let mut visemes = Vec::with_capacity(n);
    let mut mouth = Vec::with_capacity(n);
    let mut energy = Vec::with_capacity(n);
    for k in 0..n {
        let t = k as f64 * 0.01;
        let v = clip
            .spans
            .iter()
            .find(|s| s.start <= t && t < s.end)
            .map_or(Viseme::Sil, |s| s.viseme);
        visemes.push(viseme_index(v));
        mouth.push(mouth_at(t, &clip.spans));
        let c = k * 160;
        let a = c.saturating_sub(200);
        let b = (c + 200).min(clip.pcm.len());
        energy.push(20.0 * rms(&clip.pcm[a..b.max(a)]).max(1e-7).log10());
    }
    Sample {
        frames,
        visemes,
        mouth,
        energy,
    }
}

// ------------------------------------------------------------ data sets

pub(crate) struct Stacked {
    pub(crate) x: Vec<f32>,
    pub(crate) visemes: Vec<usize>,
    pub(crate) mouth: Vec<[f32; N_MOUTH]>,
}

pub(crate) fn normalisation(samples: &[Sample]) -> ([f32; N_MELS], [f32; N_MELS]) {
    let mut sum = [0f64; N_MELS];
    let mut sq = [0f64; N_MELS];
    let mut n = 0f64;
    for s in samples {
        for f in &s.frames {
            for i in 0..N_MELS {
                sum[i] += f64::from(f[i]);
                sq[i] += f64::from(f[i]) * f64::from(f[i]);
            }
            n += 1.0;
        }
    }
    let mean = std::array::from_fn(|i| (sum[i] / n) as f32);
    let std = std::array::from_fn(|i| ((sq[i] / n - (sum[i] / n).powi(2)).max(1e-6).sqrt()) as f32);
    (mean, std)
}

pub(crate) fn stack_all(samples: &[Sample], w: &LipWeights<Cpu>) -> Stacked {
    let total: usize = samples.iter().map(|s| s.frames.len()).sum();
    let mut out = Stacked {
        x: Vec::with_capacity(total * INPUT),
        visemes: Vec::with_capacity(total),
        mouth: Vec::with_capacity(total),
    };
    for s in samples {
        let normed: Vec<_> = s.frames.iter().map(|f| w.normalize(f)).collect();
        for k in 0..normed.len() {
            LipWeights::<Cpu>::stack(&normed, k, &mut out.x);
        }
        out.visemes.extend(&s.visemes);
        out.mouth.extend(&s.mouth);
    }
    out
}

pub(crate) fn train(
    data: &Stacked,
    mean: [f32; N_MELS],
    std: [f32; N_MELS],
    epochs: usize,
    rng: &mut Rng,
) -> LipWeights<Cpu> {
    let device = Default::default();
    // Same data, same seed, same weights.
    <Train as burn::tensor::backend::Backend>::seed(&device, 0x11b5);
    let mut net = LipNet::<Train>::init(&device);
    let mut optim = AdamConfig::new().with_weight_decay(None).init();
    let n = data.visemes.len();
    let batch = 512;
    let mut order: Vec<usize> = (0..n).collect();
    let started = Instant::now();
    let steps_per_epoch = n / batch;
    let total_steps = steps_per_epoch * epochs;
    let mut step = 0;
    for epoch in 0..epochs {
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for b in 0..steps_per_epoch {
            let idx = &order[b * batch..(b + 1) * batch];
            let mut x = Vec::with_capacity(batch * INPUT);
            let mut y = Vec::with_capacity(batch);
            let mut m = Vec::with_capacity(batch * N_MOUTH);
            for &i in idx {
                x.extend_from_slice(&data.x[i * INPUT..(i + 1) * INPUT]);
                y.push(data.visemes[i] as i64);
                m.extend_from_slice(&data.mouth[i]);
            }
            let x = Tensor::<Train, 2>::from_data(TensorData::new(x, [batch, INPUT]), &device);
            let targets =
                Tensor::<Train, 1, Int>::from_data(TensorData::new(y.clone(), [batch]), &device);
            let mouth_t =
                Tensor::<Train, 2>::from_data(TensorData::new(m, [batch, N_MOUTH]), &device);
            let (logits, mouth) = net.forward(x);
            let pred: Vec<i64> = logits.clone().argmax(1).into_data().iter::<i64>().collect();
            correct += pred.iter().zip(&y).filter(|(a, b)| a == b).count();
            seen += batch;
            let ce = cross_entropy_with_logits(logits, targets.one_hot(N_VISEMES).float());
            let mse = (mouth - mouth_t).powf_scalar(2.0).mean();
            let loss = ce + mse.mul_scalar(2.0);
            loss_sum += f64::from(loss.clone().into_scalar());
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            // Cosine decay from 2e-3.
            let lr = 1e-4
                + 0.5
                    * (2e-3 - 1e-4)
                    * (1.0 + (std::f64::consts::PI * step as f64 / total_steps as f64).cos());
            net = optim.step(lr, net, grads);
            step += 1;
        }
        eprintln!(
            "  epoch {}/{epochs}: loss {:.3}, frame accuracy {:.1} % ({:.0} s)",
            epoch + 1,
            loss_sum / steps_per_epoch as f64,
            100.0 * correct as f64 / seen.max(1) as f64,
            started.elapsed().as_secs_f32()
        );
    }
    LipWeights {
        net: net.valid(),
        mean,
        std,
    }
}

// ------------------------------------------------------------ evaluation
