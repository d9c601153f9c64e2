//! What the stages share: the seeded random source, clips and labelled
//! samples, the training backend.

use burn::backend::Autodiff;
use huashen_inference::Cpu;
use huashen_inference::face::animate::VisemeSpan;
use huashen_inference::face::lipsync::{N_MELS, N_MOUTH};

pub(crate) type Train = Autodiff<Cpu>;

/// Small deterministic generator (splitmix64).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub(crate) fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.unit()
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-7), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// One utterance at 16 kHz with its true visemes (seconds).
pub(crate) struct Clip {
    pub(crate) pcm: Vec<f32>,
    pub(crate) spans: Vec<VisemeSpan>,
}

/// Features and labels of a clip.
pub(crate) struct Sample {
    pub(crate) frames: Vec<[f32; N_MELS]>,
    pub(crate) visemes: Vec<usize>,
    pub(crate) mouth: Vec<[f32; N_MOUTH]>,
    /// Per-frame energy (dB) for the baseline.
    pub(crate) energy: Vec<f32>,
}
