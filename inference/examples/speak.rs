//! Speaks a line to a 16-bit WAV file with the English voice:
//! `cargo run --release -p huashen-inference --example speak -- "Hello." out.wav`
use std::time::Instant;

use huashen_inference::Cpu;
use huashen_inference::speech::tts::EnglishTts;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let text = args.next().unwrap_or_else(|| "Hello from Huashen.".into());
    let out = args.next().unwrap_or_else(|| "speech.wav".into());
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let tts = EnglishTts::<Cpu>::load(&models, &Default::default())?;
    let t = Instant::now();
    let (timeline, audio) = tts.synthesize(&text, 1.0)?;
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
