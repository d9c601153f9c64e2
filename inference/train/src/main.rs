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

mod augment;
mod clips;
mod common;
mod evaluate;
mod fit;

use std::path::{Path, PathBuf};
use std::time::Instant;

use huashen_inference::Cpu;
use huashen_inference::face::lipsync::{LipNet, LipWeights};
use huashen_inference::speech::timeline::Viseme;
use huashen_inference::speech::voices::Voices;

use crate::augment::*;
use crate::clips::*;
use crate::common::*;
use crate::evaluate::*;
use crate::fit::*;

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
