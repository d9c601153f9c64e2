//! The burn port of the Piper voice against onnxruntime's output for the
//! same input (reference made by inference/scripts/piper_reference.py).

use std::path::PathBuf;

use base64::Engine;
use huashen_inference::Cpu;
use huashen_inference::speech::piper::{InferenceJson, PiperVoice};

fn models_dir() -> PathBuf {
    std::env::var_os("HUASHEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

fn voice() -> PiperVoice<Cpu> {
    let path = models_dir().join("piper/en_US-joe-medium.onnx");
    assert!(
        path.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        path.display()
    );
    PiperVoice::load(&path, &Default::default()).expect("voice loads")
}

struct Reference {
    phonemes: String,
    ids: Vec<i64>,
    frames: Vec<usize>,
    audio: Vec<f32>,
}

fn reference() -> Reference {
    let text = include_str!("data/piper_ref.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    let audio = base64::engine::general_purpose::STANDARD
        .decode(v["audio_f32le_b64"].as_str().unwrap())
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Reference {
        phonemes: v["phonemes"].as_str().unwrap().to_string(),
        ids: serde_json::from_value(v["ids"].clone()).unwrap(),
        frames: serde_json::from_value(v["frames"].clone()).unwrap(),
        audio,
    }
}

const NO_NOISE: InferenceJson = InferenceJson {
    noise_scale: 0.0,
    length_scale: 1.0,
    noise_w: 0.0,
};

#[test]
fn matches_onnxruntime_reference() {
    let voice = voice();
    let r = reference();
    let (ids, _) = voice.phoneme_ids(&r.phonemes);
    assert_eq!(ids, r.ids, "phoneme ids");
    let p = voice.prepare(&ids, NO_NOISE, &mut || 0.0);
    assert_eq!(p.durations, r.frames, "durations (frames per id)");
    let audio = voice.decode_all(&p);
    assert_eq!(audio.len(), p.frames * voice.hop());
    assert_eq!(audio.len(), r.audio.len());
    let max_err = audio
        .iter()
        .zip(&r.audio)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let energy: f32 = r.audio.iter().map(|v| v * v).sum::<f32>() / r.audio.len() as f32;
    let err: f32 = audio
        .iter()
        .zip(&r.audio)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        / r.audio.len() as f32;
    let snr_db = 10.0 * (energy / err.max(1e-20)).log10();
    eprintln!("max abs error {max_err:.2e}, SNR {snr_db:.1} dB");
    assert!(max_err < 1e-3, "max abs error {max_err}");
    assert!(snr_db > 40.0, "SNR {snr_db} dB");
}

#[test]
fn chunked_decoding_equals_one_pass() {
    let voice = voice();
    let r = reference();
    let p = voice.prepare(&r.ids, NO_NOISE, &mut || 0.0);
    let whole = voice.decode_all(&p);
    let mut chunked = Vec::new();
    let mut start = 0;
    for size in [5, 11, 24, 100] {
        chunked.extend(voice.decode(&p, start, start + size));
        start += size;
    }
    assert_eq!(chunked.len(), whole.len());
    let max_err = chunked
        .iter()
        .zip(&whole)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_err < 1e-4, "chunk edges differ by {max_err}");
}

mod english {
    use super::models_dir;
    use huashen_inference::Cpu;
    use huashen_inference::speech::timeline::Viseme;
    use huashen_inference::speech::tts::EnglishTts;

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    #[test]
    fn sentence_audio_matches_its_timeline() {
        let tts = EnglishTts::<Cpu>::load(&models_dir(), &Default::default()).unwrap();
        let text = "Hello world, this is Huashen speaking to 42 viewers.";
        let (timeline, audio) = tts.synthesize(text, 1.0).unwrap();
        // Audio length is exactly the summed phoneme durations.
        assert_eq!(audio.len() as u64, timeline.samples);
        let secs = audio.len() as f32 / timeline.sample_rate as f32;
        assert!((1.5..8.0).contains(&secs), "{secs} s");
        let words: Vec<&str> = timeline.words.iter().map(|w| w.value.as_str()).collect();
        assert_eq!(
            words,
            [
                "Hello", "world", "this", "is", "Huashen", "speaking", "to", "42", "viewers"
            ]
        );
        assert!(timeline.words.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(timeline.visemes.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(timeline.visemes.last().unwrap().end, timeline.samples);
        // Intelligibility proxy: open vowels are loud, silences are quiet,
        // and the speech is mostly voiced.
        let span = |s: u64, e: u64| &audio[s as usize..e as usize];
        let vowel: Vec<f32> = timeline
            .visemes
            .iter()
            .filter(|v| matches!(v.value, Viseme::AA | Viseme::E | Viseme::OH))
            .flat_map(|v| span(v.start, v.end).to_vec())
            .collect();
        let silence: Vec<f32> = timeline
            .visemes
            .iter()
            .filter(|v| v.value == Viseme::Sil && v.end - v.start > 2000)
            .flat_map(|v| span(v.start + 500, v.end - 500).to_vec())
            .collect();
        assert!(!vowel.is_empty() && !silence.is_empty());
        assert!(
            rms(&vowel) > 5.0 * rms(&silence),
            "vowels {} vs silence {}",
            rms(&vowel),
            rms(&silence)
        );
        let frames: Vec<f32> = audio.chunks(441).map(rms).collect();
        let loud = frames.iter().filter(|&&r| r > 0.02).count() as f32 / frames.len() as f32;
        assert!((0.4..0.98).contains(&loud), "voiced fraction {loud}");
        assert!(audio.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
    }

    #[test]
    fn deterministic_and_speed_scales_length() {
        let tts = EnglishTts::<Cpu>::load(&models_dir(), &Default::default()).unwrap();
        let (_, a) = tts.synthesize("The same words twice.", 1.0).unwrap();
        let (_, b) = tts.synthesize("The same words twice.", 1.0).unwrap();
        assert_eq!(a, b);
        let (_, fast) = tts.synthesize("The same words twice.", 1.5).unwrap();
        let ratio = a.len() as f32 / fast.len() as f32;
        assert!((1.2..1.8).contains(&ratio), "{ratio}");
    }
}

/// The same reference on the CUDA backend (skipped without a GPU).
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_the_reference() {
    use huashen_inference::Gpu;
    if !huashen_inference::cuda_available() {
        eprintln!("no NVIDIA driver: skipped");
        return;
    }
    let path = models_dir().join("piper/en_US-joe-medium.onnx");
    let voice = PiperVoice::<Gpu>::load(&path, &Default::default()).expect("voice loads");
    let r = reference();
    let p = voice.prepare(&r.ids, NO_NOISE, &mut || 0.0);
    assert_eq!(p.durations, r.frames);
    let audio = voice.decode_all(&p);
    let err: f32 = audio
        .iter()
        .zip(&r.audio)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>();
    let energy: f32 = r.audio.iter().map(|v| v * v).sum();
    let snr_db = 10.0 * (energy / err.max(1e-20)).log10();
    eprintln!("CUDA SNR {snr_db:.1} dB");
    assert!(snr_db > 40.0, "SNR {snr_db} dB");
}
