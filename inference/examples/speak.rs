//! Speaks a line to a 16-bit WAV file with the English voice:
//! `cargo run --release -p huashen-inference --example speak -- "Hello." out.wav`
use std::io::Write;
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
    let mut f = std::fs::File::create(&out)?;
    let data_len = (audio.len() * 2) as u32;
    f.write_all(b"RIFF")?;
    f.write_all(&(36 + data_len).to_le_bytes())?;
    f.write_all(b"WAVEfmt ")?;
    f.write_all(&16u32.to_le_bytes())?;
    f.write_all(&1u16.to_le_bytes())?;
    f.write_all(&1u16.to_le_bytes())?;
    f.write_all(&rate.to_le_bytes())?;
    f.write_all(&(rate * 2).to_le_bytes())?;
    f.write_all(&2u16.to_le_bytes())?;
    f.write_all(&16u16.to_le_bytes())?;
    f.write_all(b"data")?;
    f.write_all(&data_len.to_le_bytes())?;
    for s in audio {
        f.write_all(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())?;
    }
    Ok(())
}
