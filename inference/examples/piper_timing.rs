//! Times the stages of Piper synthesis on the CPU backend:
//! `cargo run --release -p huashen-inference --example piper_timing`.
use std::time::Instant;

use huashen_inference::Cpu;
use huashen_inference::speech::piper::{InferenceJson, PiperVoice};

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/piper/en_US-joe-medium.onnx");
    let t = Instant::now();
    let voice = PiperVoice::<Cpu>::load(&path, &Default::default()).unwrap();
    println!("load {:?}", t.elapsed());
    let ipa = "həlˈoʊ wˈɜːld, ðɪs ɪz hjˈuːæʃən spˈiːkɪŋ tə juː fɹʌm ðə bɜːn bˈækɛnd.";
    let (ids, _) = voice.phoneme_ids(ipa);
    let s = InferenceJson {
        noise_scale: 0.0,
        length_scale: 1.0,
        noise_w: 0.0,
    };
    for _ in 0..2 {
        let t = Instant::now();
        let p = voice.prepare(&ids, s, &mut || 0.0);
        let t_prep = t.elapsed();
        let t = Instant::now();
        let a = voice.decode(&p, 0, 32);
        let t_first = t.elapsed();
        let t = Instant::now();
        let all = voice.decode_all(&p);
        let t_dec = t.elapsed();
        let secs = all.len() as f64 / voice.sample_rate as f64;
        println!(
            "{} ids {} frames {secs:.2}s audio: prepare {t_prep:?}, first 32 frames {t_first:?} ({} samples), decode all {t_dec:?} RTF {:.3}",
            ids.len(),
            p.frames,
            a.len(),
            (t_prep + t_dec).as_secs_f64() / secs
        );
    }
}
