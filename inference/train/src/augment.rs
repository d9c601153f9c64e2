//! Augmentation: noise, reverb, telephone band, gain, tempo and pitch,
//! noise-only clips.

use huashen_inference::face::animate::VisemeSpan;
use huashen_inference::face::lipsync::RATE;

use crate::clips::*;
use crate::common::*;

pub(crate) fn noise(rng: &mut Rng, n: usize) -> Vec<f32> {
    let kind = rng.below(4);
    let mut out = Vec::with_capacity(n);
    let (mut b0, mut b1, mut b2, mut brown) = (0f32, 0f32, 0f32, 0f32);
    let hum = rng.range(45.0, 65.0);
    for i in 0..n {
        let w = rng.gauss();
        out.push(match kind {
            0 => w,
            1 => {
                // Pink (Paul Kellet's economy filter).
                b0 = 0.99765 * b0 + w * 0.099_046;
                b1 = 0.963 * b1 + w * 0.296_516_4;
                b2 = 0.57 * b2 + w * 1.052_691_3;
                b0 + b1 + b2 + w * 0.1848
            }
            2 => {
                brown = (brown + w * 0.02) * 0.999;
                brown
            }
            _ => {
                let t = i as f32 / RATE as f32;
                (std::f32::consts::TAU * hum * t).sin()
                    + 0.5 * (std::f32::consts::TAU * hum * 3.0 * t).sin()
                    + 0.1 * w
            }
        });
    }
    out
}

pub(crate) fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

pub(crate) fn add_noise(rng: &mut Rng, pcm: &mut [f32], snr_db: f32) {
    let n = noise(rng, pcm.len());
    let (s, nr) = (rms(pcm).max(1e-6), rms(&n).max(1e-9));
    let g = s / nr / 10f32.powf(snr_db / 20.0);
    pcm.iter_mut().zip(&n).for_each(|(p, v)| *p += g * v);
}

pub(crate) fn reverb(rng: &mut Rng, pcm: &[f32]) -> Vec<f32> {
    let rt60 = rng.range(0.15, 0.6);
    let len = (rt60 * RATE as f32) as usize;
    let decay = (-6.9 / len as f32).exp();
    let mut ir = vec![0f32; len];
    let mut a = 1.0;
    for v in ir.iter_mut() {
        *v = rng.gauss() * a;
        a *= decay;
    }
    ir[0] = 0.0;
    let e = rms(&ir).max(1e-9) * (len as f32).sqrt();
    let wet = rng.range(0.2, 0.7);
    // Sparse convolution (every 4th tap, scaled): cheap and still diffuse.
    let mut out = pcm.to_vec();
    for (k, h) in ir.iter().enumerate().step_by(4) {
        let h = 4.0 * wet * h / e;
        for i in k..pcm.len() {
            out[i] += h * pcm[i - k];
        }
    }
    out
}

pub(crate) fn augment(rng: &mut Rng, clip: &Clip) -> Clip {
    // Pitch/tempo by resampling (a speaker slightly higher and faster, or
    // lower and slower), timeline scaled alike.
    let factor = if rng.unit() < 0.5 {
        rng.range(0.9, 1.1)
    } else {
        1.0
    };
    let mut pcm = if factor != 1.0 {
        let to = (RATE as f32 * factor) as u32;
        resample(&clip.pcm, to, RATE)
    } else {
        clip.pcm.clone()
    };
    let time = pcm.len() as f64 / clip.pcm.len().max(1) as f64;
    let mut spans: Vec<VisemeSpan> = clip
        .spans
        .iter()
        .map(|s| VisemeSpan {
            viseme: s.viseme,
            start: s.start * time,
            end: s.end * time,
        })
        .collect();
    // Silence around the speech.
    let lead = (rng.range(0.05, 0.6) * RATE as f32) as usize;
    let tail = (rng.range(0.05, 0.6) * RATE as f32) as usize;
    let mut padded = vec![0.0; lead];
    padded.extend(&pcm);
    padded.extend(std::iter::repeat_n(0.0, tail));
    pcm = padded;
    let shift = lead as f64 / RATE as f64;
    for s in &mut spans {
        s.start += shift;
        s.end += shift;
    }
    if rng.unit() < 0.3 {
        pcm = reverb(rng, &pcm);
    }
    let peak = pcm.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let gain = 10f32.powf(rng.range(-24.0, -1.0) / 20.0) / peak;
    pcm.iter_mut().for_each(|v| *v *= gain);
    if rng.unit() < 0.6 {
        let snr = rng.range(0.0, 30.0);
        add_noise(rng, &mut pcm, snr);
    }
    if rng.unit() < 0.15 {
        pcm = resample(&resample(&pcm, RATE, 8000), 8000, RATE);
    }
    if rng.unit() < 0.1 {
        // μ-law 8-bit.
        for v in pcm.iter_mut() {
            let x = v.clamp(-1.0, 1.0);
            let y = x.signum() * (1.0 + 255.0 * x.abs()).ln() / 256f32.ln();
            let q = (y * 127.0).round() / 127.0;
            *v = q.signum() * ((256f32).powf(q.abs()) - 1.0) / 255.0;
        }
    }
    Clip { pcm, spans }
}

/// A clip of noise alone (no speech: mouth closed).
pub(crate) fn noise_clip(rng: &mut Rng) -> Clip {
    let n = (rng.range(1.0, 3.0) * RATE as f32) as usize;
    let mut pcm = noise(rng, n);
    // Bursty: some noise comes and goes.
    if rng.unit() < 0.5 {
        let period = rng.range(0.1, 0.8);
        for (i, v) in pcm.iter_mut().enumerate() {
            let t = i as f32 / RATE as f32;
            *v *= 0.5 + 0.5 * (std::f32::consts::TAU * t / period).sin().abs();
        }
    }
    let g = 10f32.powf(rng.range(-50.0, -15.0) / 20.0) / rms(&pcm).max(1e-9);
    pcm.iter_mut().for_each(|v| *v *= g);
    Clip {
        pcm,
        spans: Vec::new(),
    }
}
