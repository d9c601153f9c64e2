//! Speaks a line to a 16-bit WAV file:
//! `cargo run --release -p huashen-inference --example speak -- "Hello." out.wav [voice]`
//! (voices: `en-US-joe`, the default, and `zh-CN-baker`; words in the other
//! script go to the other voice).
use std::time::Instant;

use huashen_inference::Cpu;
use huashen_inference::speech::voices::Voices;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let text = args.next().unwrap_or_else(|| "Hello from Huashen.".into());
    let out = args.next().unwrap_or_else(|| "speech.wav".into());
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let voice = args.next().unwrap_or_else(|| "en-US-joe".into());
    let (voices, errors) = Voices::<Cpu>::load(&models, &Default::default());
    for e in errors {
        eprintln!("not loaded: {e}");
    }
    let t = Instant::now();
    let mut clause = voices.begin(&voice, &text, 1.0)?;
    let mut audio = Vec::new();
    while let Some(chunk) = voices.next_chunk(&mut clause) {
        audio.extend(chunk);
    }
    let timeline = clause.timeline;
    let rate = timeline.sample_rate;
    eprintln!(
        "{:.2} s of audio in {:.2} s; words: {}",
        audio.len() as f32 / rate as f32,
        t.elapsed().as_secs_f32(),
        timeline
            .words
            .iter()
            .map(|w| format!("{}@{:.2}", w.value, w.start as f32 / rate as f32))
            .collect::<Vec<_>>()
            .join(" ")
    );
    huashen_inference::wav::write_pcm16(std::path::Path::new(&out), rate, &audio)?;
    Ok(())
}
