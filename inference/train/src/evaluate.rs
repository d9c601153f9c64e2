//! Evaluation on held-out voices against an energy-envelope baseline.

use huashen_inference::Cpu;
use huashen_inference::face::animate::{VisemeSpan, mouth_at};
use huashen_inference::face::lipsync::{
    LipFrame, LipWeights, N_VISEMES, VisemeDecoder, argmax, run_all,
};
use huashen_inference::speech::timeline::Viseme;

use crate::common::*;
use crate::fit::*;

pub(crate) fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut cov, mut va, mut vb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        cov += dx * dy;
        va += dx * dx;
        vb += dy * dy;
    }
    (cov / (va.sqrt() * vb.sqrt()).max(1e-12)) as f32
}

/// The energy-envelope baseline (what energy-driven avatars do): mouth
/// opening from loudness relative to the clip's loudest frame (an oracle
/// level: a live system would have to track it), the most common voiced
/// viseme when loud enough, silence when not. Its two levels are fitted on
/// the training set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Baseline {
    /// Frames quieter than `peak - gate_db` are silence.
    pub(crate) gate_db: f32,
    /// Opening grows over this many dB above the gate.
    pub(crate) range_db: f32,
    pub(crate) voiced: usize,
}

impl Baseline {
    pub(crate) fn floor(&self, energy: &[f32]) -> f32 {
        energy.iter().fold(f32::NEG_INFINITY, |m, &e| m.max(e)) - self.gate_db
    }

    pub(crate) fn jaw(&self, energy: &[f32]) -> Vec<f32> {
        let floor = self.floor(energy);
        let raw: Vec<f32> = energy
            .iter()
            .map(|&e| ((e - floor) / self.range_db).clamp(0.0, 1.0))
            .collect();
        // Three-frame smoothing.
        (0..raw.len())
            .map(|i| {
                let a = raw[i.saturating_sub(1)];
                let c = raw[(i + 1).min(raw.len() - 1)];
                (a + raw[i] + c) / 3.0
            })
            .collect()
    }

    pub(crate) fn visemes(&self, energy: &[f32]) -> Vec<usize> {
        let floor = self.floor(energy);
        energy
            .iter()
            .map(|&e| if e > floor { self.voiced } else { 0 })
            .collect()
    }

    /// Fits the gate and range on training data (best jaw correlation).
    pub(crate) fn fit(samples: &[Sample]) -> Self {
        let mut counts = [0usize; N_VISEMES];
        samples
            .iter()
            .flat_map(|s| &s.visemes)
            .for_each(|&v| counts[v] += 1);
        counts[0] = 0;
        let voiced = argmax(&counts.map(|c| c as f32));
        let mut best = (
            f32::NEG_INFINITY,
            Self {
                gate_db: 30.0,
                range_db: 20.0,
                voiced,
            },
        );
        let speech: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.visemes.iter().any(|&v| v != 0))
            .collect();
        let jaw: Vec<f32> = speech
            .iter()
            .flat_map(|s| s.mouth.iter().map(|m| m[0]))
            .collect();
        for gate in (10..=50).step_by(5) {
            for range in [5.0, 10.0, 15.0, 20.0, 30.0] {
                let b = Self {
                    gate_db: gate as f32,
                    range_db: range,
                    voiced,
                };
                let pred: Vec<f32> = speech.iter().flat_map(|s| b.jaw(&s.energy)).collect();
                let r = pearson(&pred, &jaw);
                if r > best.0 {
                    best = (r, b);
                }
            }
        }
        best.1
    }
}

/// What one system scores on one set.
#[derive(Default)]
pub(crate) struct Score {
    pub(crate) correct: usize,
    pub(crate) frames: usize,
    pub(crate) pred_jaw: Vec<f32>,
    pub(crate) ref_jaw: Vec<f32>,
}

impl Score {
    pub(crate) fn accuracy(&self) -> f32 {
        100.0 * self.correct as f32 / self.frames.max(1) as f32
    }
    pub(crate) fn corr(&self) -> f32 {
        pearson(&self.pred_jaw, &self.ref_jaw)
    }
}

/// The jaw the animator shows for decoded visemes (what a viewer sees).
pub(crate) fn jaw_from_visemes(visemes: &[Viseme]) -> Vec<f32> {
    let mut spans: Vec<VisemeSpan> = Vec::new();
    for (k, &v) in visemes.iter().enumerate() {
        let t = k as f64 * 0.01;
        match spans.last_mut() {
            Some(s) if s.viseme == v => s.end = t + 0.01,
            _ => spans.push(VisemeSpan {
                viseme: v,
                start: t,
                end: t + 0.01,
            }),
        }
    }
    let spans: Vec<_> = spans
        .into_iter()
        .filter(|s| s.viseme != Viseme::Sil)
        .collect();
    (0..visemes.len())
        .map(|k| mouth_at(k as f64 * 0.01, &spans)[0])
        .collect()
}

pub(crate) fn evaluate(
    w: &LipWeights<Cpu>,
    baseline: &Baseline,
    samples: &[Sample],
) -> (Score, Score, Score) {
    let device = Default::default();
    let (mut model, mut head, mut base) = (Score::default(), Score::default(), Score::default());
    for s in samples {
        let out: Vec<LipFrame> = run_all(w, &s.frames, &device);
        let decoded = VisemeDecoder::decode_all(&out);
        let ref_jaw: Vec<f32> = s.mouth.iter().map(|m| m[0]).collect();
        model.correct += decoded
            .iter()
            .zip(&s.visemes)
            .filter(|(v, t)| viseme_index(**v) == **t)
            .count();
        model.frames += s.visemes.len();
        model.pred_jaw.extend(jaw_from_visemes(&decoded));
        model.ref_jaw.extend(&ref_jaw);
        head.pred_jaw.extend(out.iter().map(|f| f.mouth[0]));
        head.ref_jaw.extend(&ref_jaw);
        let bv = baseline.visemes(&s.energy);
        base.correct += bv.iter().zip(&s.visemes).filter(|(a, b)| a == b).count();
        base.frames += s.visemes.len();
        base.pred_jaw.extend(baseline.jaw(&s.energy));
        base.ref_jaw.extend(&ref_jaw);
    }
    (model, head, base)
}

/// Share of frames where the mouth opens (jaw > 0.15) on noise alone.
pub(crate) fn open_on_noise(
    w: &LipWeights<Cpu>,
    baseline: &Baseline,
    samples: &[Sample],
) -> (f32, f32) {
    let device = Default::default();
    let (mut m, mut b, mut n) = (0usize, 0usize, 0usize);
    for s in samples {
        let out = run_all(w, &s.frames, &device);
        let jaw = jaw_from_visemes(&VisemeDecoder::decode_all(&out));
        m += jaw.iter().filter(|&&j| j > 0.15).count();
        b += baseline
            .jaw(&s.energy)
            .iter()
            .filter(|&&j| j > 0.15)
            .count();
        n += jaw.len();
    }
    (
        100.0 * m as f32 / n.max(1) as f32,
        100.0 * b as f32 / n.max(1) as f32,
    )
}
