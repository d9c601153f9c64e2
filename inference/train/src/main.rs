//! Trains the audio → viseme network (`face::lipsync`) and evaluates it on
//! voices it never heard, against an energy-envelope baseline.
//!
//! `cargo run --release -p huashen-train [-- --quick] [--out PATH]`
//!
//! A crate of its own (`inference/train/`) so that the server never compiles
//! it or the gradient machinery it needs.
//!
//! Data (all made here, labels exact because they come from synthesisers):
//! - the project's own TTS voices, `en-US-joe` (Piper) and `zh-CN-baker`,
//!   with their phoneme timelines;
//! - espeak-ng's formant voices (Debian `espeak-ng-data`): English accents
//!   and Mandarin (pinyin from the project's Mandarin front end), in many
//!   voice variants, with the phoneme events espeak-ng reports.
//!
//! Voices are split: the training set uses some espeak-ng variants, the
//! evaluation set uses other variants and accents never heard in training
//! (and sentences never seen). The project's two TTS voices are trained on;
//! their evaluation rows use held-out sentences only (seen voice).
//!
//! Augmentation: tempo and pitch (speaker rate/pitch, resampling), gain,
//! noise (white, pink, brown, hum) at 0–30 dB SNR, synthetic room reverb,
//! telephone band and μ-law, leading/trailing silence; 8 % of clips are
//! noise alone (label: silence, mouth closed).
//!
//! Labels per 10 ms frame: the viseme sounding at the frame's centre and the
//! mouth shape the animator computes from the true visemes
//! (`animate::mouth_at`). Loss: cross-entropy + 2 × mean squared error.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::loss::cross_entropy_with_logits;
use huashen_inference::Cpu;
use huashen_inference::face::animate::{VisemeSpan, mouth_at};
use huashen_inference::face::lipsync::{
    INPUT, LipFrame, LipNet, LipWeights, LogMel, N_MELS, N_MOUTH, N_VISEMES, RATE, VisemeDecoder,
    argmax, run_all,
};
use huashen_inference::resample::Resampler;
use huashen_inference::speech::espeak::{self, EspeakVoice};
use huashen_inference::speech::timeline::Viseme;
use huashen_inference::speech::voices::Voices;
use huashen_inference::speech::zh::frontend::Piece;

type Train = Autodiff<Cpu>;

/// espeak-ng variants heard in training.
const TRAIN_EN: &[&str] = &[
    "en-us+m1",
    "en-us+m2",
    "en-us+m3",
    "en-us+f1",
    "en-us+f2",
    "en-us+klatt",
    "en-us+klatt2",
    "en-gb+m4",
    "en-gb+f3",
    "en-gb-scotland+m5",
    "en-us+Andy",
    "en-us+belinda",
];
const TRAIN_ZH: &[&str] = &[
    "cmn-latn-pinyin+m1",
    "cmn-latn-pinyin+m2",
    "cmn-latn-pinyin+f1",
    "cmn-latn-pinyin+f2",
    "cmn-latn-pinyin+klatt",
];
/// Never heard in training.
const HELD_OUT_EN: &[&str] = &[
    "en-us+m7",
    "en-us+f5",
    "en-us+klatt4",
    "en-gb-x-rp+m6",
    "en-029+Annie",
];
const HELD_OUT_ZH: &[&str] = &[
    "cmn-latn-pinyin+m7",
    "cmn-latn-pinyin+f4",
    "cmn-latn-pinyin+klatt3",
];

/// Small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.unit()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn gauss(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-7), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// One utterance at 16 kHz with its true visemes (seconds).
struct Clip {
    pcm: Vec<f32>,
    spans: Vec<VisemeSpan>,
}

/// Features and labels of a clip.
struct Sample {
    frames: Vec<[f32; N_MELS]>,
    visemes: Vec<usize>,
    mouth: Vec<[f32; N_MOUTH]>,
    /// Per-frame energy (dB) for the baseline.
    energy: Vec<f32>,
}

fn resample(pcm: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to {
        return pcm.to_vec();
    }
    let mut r = Resampler::new(from, to);
    let mut out = Vec::new();
    r.push(pcm, &mut out);
    r.finish(&mut out);
    out
}

/// espeak-ng phoneme names (IPA) → visemes, as the timeline's table maps
/// IPA, plus the Mandarin symbols espeak-ng writes its own way.
fn espeak_viseme(name: &str) -> Viseme {
    let n = name.trim_start_matches(['ˈ', 'ˌ']);
    if n.is_empty() || n.starts_with('_') {
        return Viseme::Sil;
    }
    if n.starts_with("ts.") || n.starts_with("s.") || n.starts_with("tɕ") || n.starts_with('ɕ') {
        return Viseme::CH;
    }
    if n.starts_with("tʃ") || n.starts_with("dʒ") {
        return Viseme::CH;
    }
    if n.starts_with("ts") {
        return Viseme::SS;
    }
    if n.starts_with("i.") {
        return Viseme::IH;
    }
    for c in n.chars() {
        if let Some(v) = Viseme::for_ipa(c) {
            return v;
        }
        match c {
            'χ' => return Viseme::KK,
            'ɤ' | 'ø' | 'œ' => return Viseme::E,
            _ => {}
        }
    }
    Viseme::E
}

fn espeak_clip(text: &str, voice: &EspeakVoice) -> Option<Clip> {
    let s = espeak::synthesize(text, voice).ok()?;
    let rate = f64::from(s.sample_rate);
    let phonemes: Vec<_> = s
        .phonemes
        .iter()
        .filter(|(p, _)| !p.starts_with('('))
        .collect();
    let mut spans = Vec::new();
    for (i, (name, start)) in phonemes.iter().enumerate() {
        let end = phonemes
            .get(i + 1)
            .map(|p| p.1)
            .unwrap_or(s.pcm.len() as u64);
        if end > *start {
            spans.push(VisemeSpan {
                viseme: espeak_viseme(name),
                start: *start as f64 / rate,
                end: end as f64 / rate,
            });
        }
    }
    if spans.is_empty() || s.pcm.is_empty() {
        return None;
    }
    Some(Clip {
        pcm: resample(&s.pcm, s.sample_rate, RATE),
        spans,
    })
}

fn tts_clip(voices: &Voices<Cpu>, voice: &str, text: &str, speed: f32) -> Option<Clip> {
    let mut clause = voices.begin(voice, text, speed).ok()?;
    let mut pcm = Vec::new();
    while let Some(c) = voices.next_chunk(&mut clause) {
        pcm.extend(c);
    }
    let t = clause.timeline;
    let rate = f64::from(t.sample_rate);
    let spans = t
        .visemes
        .iter()
        .map(|s| VisemeSpan {
            viseme: s.value,
            start: s.start as f64 / rate,
            end: s.end as f64 / rate,
        })
        .collect();
    Some(Clip {
        pcm: resample(&pcm, t.sample_rate, RATE),
        spans,
    })
}

/// Tone-number pinyin of a Chinese sentence, for espeak-ng's Mandarin.
fn pinyin(voices: &Voices<Cpu>, text: &str) -> String {
    let Some(zh) = voices.mandarin.as_ref() else {
        return String::new();
    };
    let mut out = String::new();
    for piece in zh.analyse(text) {
        match piece {
            Piece::Syllable(s) => {
                out.push_str(&s.pinyin.replace('ü', "v"));
                out.push(' ');
            }
            Piece::Pause => out.push_str(", "),
            Piece::Latin(l) => out.push_str(&l),
        }
    }
    out.push('.');
    out
}

// ------------------------------------------------------------ augmentation

fn noise(rng: &mut Rng, n: usize) -> Vec<f32> {
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

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

fn add_noise(rng: &mut Rng, pcm: &mut [f32], snr_db: f32) {
    let n = noise(rng, pcm.len());
    let (s, nr) = (rms(pcm).max(1e-6), rms(&n).max(1e-9));
    let g = s / nr / 10f32.powf(snr_db / 20.0);
    pcm.iter_mut().zip(&n).for_each(|(p, v)| *p += g * v);
}

fn reverb(rng: &mut Rng, pcm: &[f32]) -> Vec<f32> {
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

fn augment(rng: &mut Rng, clip: &Clip) -> Clip {
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
fn noise_clip(rng: &mut Rng) -> Clip {
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

fn viseme_index(v: Viseme) -> usize {
    Viseme::ALL.iter().position(|x| *x == v).expect("listed")
}

fn label(clip: &Clip) -> Sample {
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

struct Corpus {
    en: Vec<String>,
    zh: Vec<String>,
}

fn split(lines: &str) -> (Vec<String>, Vec<String>) {
    let all: Vec<String> = lines
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    // Every seventh sentence is held out for evaluation.
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (i, l) in all.into_iter().enumerate() {
        if i % 7 == 3 { &mut test } else { &mut train }.push(l);
    }
    (train, test)
}

fn espeak_voice(rng: &mut Rng, name: &str, vary: bool) -> EspeakVoice {
    let mut v = EspeakVoice::new(name);
    if vary {
        v.rate = rng.range(130.0, 230.0) as i32;
        v.pitch = rng.range(20.0, 80.0) as i32;
        v.range = rng.range(15.0, 85.0) as i32;
    }
    v
}

fn progress(what: &str, done: usize, total: usize, started: Instant) {
    if done == total || done.is_multiple_of(25) {
        eprintln!(
            "  {what}: {done}/{total} ({:.0} s)",
            started.elapsed().as_secs_f32()
        );
    }
}

fn training_clips(voices: &Voices<Cpu>, corpus: &Corpus, rng: &mut Rng, quick: bool) -> Vec<Clip> {
    let started = Instant::now();
    let mut clips = Vec::new();
    let per_voice = if quick { 4 } else { 36 };
    let jobs: Vec<(&str, bool)> = TRAIN_EN
        .iter()
        .map(|v| (*v, true))
        .chain(TRAIN_ZH.iter().map(|v| (*v, false)))
        .collect();
    for (i, (voice, en)) in jobs.iter().enumerate() {
        for _ in 0..per_voice {
            let text = if *en {
                corpus.en[rng.below(corpus.en.len())].clone()
            } else {
                pinyin(voices, &corpus.zh[rng.below(corpus.zh.len())])
            };
            let v = espeak_voice(rng, voice, true);
            if let Some(c) = espeak_clip(&text, &v) {
                clips.push(c);
            }
        }
        progress("espeak-ng voices", i + 1, jobs.len(), started);
    }
    let tts_n = if quick {
        3
    } else {
        corpus.en.len() + corpus.en.len() / 2
    };
    for i in 0..tts_n {
        let text = &corpus.en[i % corpus.en.len()];
        if let Some(c) = tts_clip(voices, "en-US-joe", text, rng.range(0.8, 1.25)) {
            clips.push(c);
        }
        progress("en-US-joe", i + 1, tts_n, started);
    }
    let zh_n = if quick {
        3
    } else {
        corpus.zh.len() + corpus.zh.len() / 2
    };
    for i in 0..zh_n {
        let text = &corpus.zh[i % corpus.zh.len()];
        if let Some(c) = tts_clip(voices, "zh-CN-baker", text, rng.range(0.8, 1.25)) {
            clips.push(c);
        }
        progress("zh-CN-baker", i + 1, zh_n, started);
    }
    clips
}

/// Evaluation sets: name → clips.
fn evaluation_clips(
    voices: &Voices<Cpu>,
    corpus: &Corpus,
    quick: bool,
) -> Vec<(String, Vec<Clip>)> {
    let take = |v: &Vec<String>| if quick { v.len().min(2) } else { v.len() };
    let mut sets = Vec::new();
    let mut held = Vec::new();
    for voice in HELD_OUT_EN {
        for text in corpus.en.iter().take(take(&corpus.en)) {
            held.extend(espeak_clip(text, &EspeakVoice::new(voice)));
        }
    }
    sets.push(("held-out espeak-ng English voices (5)".to_string(), held));
    let mut held = Vec::new();
    for voice in HELD_OUT_ZH {
        for text in corpus.zh.iter().take(take(&corpus.zh)) {
            held.extend(espeak_clip(&pinyin(voices, text), &EspeakVoice::new(voice)));
        }
    }
    sets.push(("held-out espeak-ng Mandarin voices (3)".to_string(), held));
    let joe = corpus
        .en
        .iter()
        .take(take(&corpus.en))
        .filter_map(|t| tts_clip(voices, "en-US-joe", t, 1.0))
        .collect();
    sets.push(("en-US-joe, unseen sentences (voice seen)".to_string(), joe));
    let baker = corpus
        .zh
        .iter()
        .take(take(&corpus.zh))
        .filter_map(|t| tts_clip(voices, "zh-CN-baker", t, 1.0))
        .collect();
    sets.push((
        "zh-CN-baker, unseen sentences (voice seen)".to_string(),
        baker,
    ));
    sets
}

// ------------------------------------------------------------ training

struct Stacked {
    x: Vec<f32>,
    visemes: Vec<usize>,
    mouth: Vec<[f32; N_MOUTH]>,
}

fn normalisation(samples: &[Sample]) -> ([f32; N_MELS], [f32; N_MELS]) {
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

fn stack_all(samples: &[Sample], w: &LipWeights<Cpu>) -> Stacked {
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

fn train(
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

fn pearson(a: &[f32], b: &[f32]) -> f32 {
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
struct Baseline {
    /// Frames quieter than `peak - gate_db` are silence.
    gate_db: f32,
    /// Opening grows over this many dB above the gate.
    range_db: f32,
    voiced: usize,
}

impl Baseline {
    fn floor(&self, energy: &[f32]) -> f32 {
        energy.iter().fold(f32::NEG_INFINITY, |m, &e| m.max(e)) - self.gate_db
    }

    fn jaw(&self, energy: &[f32]) -> Vec<f32> {
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

    fn visemes(&self, energy: &[f32]) -> Vec<usize> {
        let floor = self.floor(energy);
        energy
            .iter()
            .map(|&e| if e > floor { self.voiced } else { 0 })
            .collect()
    }

    /// Fits the gate and range on training data (best jaw correlation).
    fn fit(samples: &[Sample]) -> Self {
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
struct Score {
    correct: usize,
    frames: usize,
    pred_jaw: Vec<f32>,
    ref_jaw: Vec<f32>,
}

impl Score {
    fn accuracy(&self) -> f32 {
        100.0 * self.correct as f32 / self.frames.max(1) as f32
    }
    fn corr(&self) -> f32 {
        pearson(&self.pred_jaw, &self.ref_jaw)
    }
}

/// The jaw the animator shows for decoded visemes (what a viewer sees).
fn jaw_from_visemes(visemes: &[Viseme]) -> Vec<f32> {
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

fn evaluate(w: &LipWeights<Cpu>, baseline: &Baseline, samples: &[Sample]) -> (Score, Score, Score) {
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
fn open_on_noise(w: &LipWeights<Cpu>, baseline: &Baseline, samples: &[Sample]) -> (f32, f32) {
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../weights/lipsync.bin"));
    let models = std::env::var_os("HUASHEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../models"));
    let started = Instant::now();
    let (voices, errors) = Voices::<Cpu>::load(&models, &Default::default());
    if !errors.is_empty() {
        return Err(format!(
            "the TTS voices are needed for training data ({errors:?}); run scripts/fetch-models.sh"
        )
        .into());
    }
    let (en_train, en_test) = split(include_str!("../sentences-en.txt"));
    let (zh_train, zh_test) = split(include_str!("../sentences-zh.txt"));
    let train_corpus = Corpus {
        en: en_train,
        zh: zh_train,
    };
    let test_corpus = Corpus {
        en: en_test,
        zh: zh_test,
    };
    let mut rng = Rng(0x4855_4153_4845_4e21);
    eprintln!("1/4 synthesising training speech");
    let clips = training_clips(&voices, &train_corpus, &mut rng, quick);
    eprintln!("2/4 augmenting and labelling {} clips", clips.len());
    let mut samples = Vec::new();
    for c in &clips {
        samples.push(label(&augment(&mut rng, c)));
        // The clean speech too, now and then.
        if rng.unit() < 0.25 {
            samples.push(label(c));
        }
    }
    let noise_n = samples.len() / 12;
    for _ in 0..noise_n {
        samples.push(label(&noise_clip(&mut rng)));
    }
    let frames: usize = samples.iter().map(|s| s.frames.len()).sum();
    eprintln!(
        "  {} clips, {frames} frames ({:.1} min of audio), {:.0} s",
        samples.len(),
        frames as f32 / 6000.0,
        started.elapsed().as_secs_f32()
    );
    let (mean, std) = normalisation(&samples);
    let norm_only = LipWeights::<Cpu> {
        net: LipNet::init(&Default::default()),
        mean,
        std,
    };
    let data = stack_all(&samples, &norm_only);
    let baseline = Baseline::fit(&samples);
    drop(samples);
    let epochs = if quick { 2 } else { 30 };
    eprintln!("3/4 training ({epochs} epochs)");
    let weights = train(&data, mean, std, epochs, &mut rng);
    drop(data);
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&out, weights.to_bytes())?;
    eprintln!("  wrote {}", out.display());

    eprintln!("4/4 evaluating");
    let sets = evaluation_clips(&voices, &test_corpus, quick);
    println!(
        "| set | frames | viseme accuracy, model | energy baseline | mouth-opening correlation, model | model mouth head | energy baseline |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut eval_rng = Rng(7);
    for (name, clips) in &sets {
        for noisy in [false, true] {
            let samples: Vec<Sample> = clips
                .iter()
                .map(|c| {
                    let mut c = Clip {
                        pcm: c.pcm.clone(),
                        spans: c.spans.clone(),
                    };
                    if noisy {
                        add_noise(&mut eval_rng, &mut c.pcm, 10.0);
                    }
                    label(&c)
                })
                .collect();
            let (m, h, b) = evaluate(&weights, &baseline, &samples);
            println!(
                "| {name}{} | {} | {:.1} % | {:.1} % | {:.3} | {:.3} | {:.3} |",
                if noisy {
                    ", 10 dB SNR noise"
                } else {
                    ", clean"
                },
                m.frames,
                m.accuracy(),
                b.accuracy(),
                m.corr(),
                h.corr(),
                b.corr()
            );
        }
    }
    let noise: Vec<Sample> = (0..40).map(|_| label(&noise_clip(&mut eval_rng))).collect();
    let (m, b) = open_on_noise(&weights, &baseline, &noise);
    println!();
    println!(
        "Noise alone (40 clips): mouth open in {m:.1} % of frames (model) vs {b:.1} % (energy baseline)."
    );
    println!(
        "Baseline fitted on the training set: gate {} dB below the clip's peak, range {} dB, voiced viseme {}.",
        baseline.gate_db,
        baseline.range_db,
        Viseme::ALL[baseline.voiced].name()
    );
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f32());
    Ok(())
}
