//! Renders an avatar speaking a sentence: a PNG contact sheet, an animated
//! GIF and the WAV of the speech (what docs/ shows).
//!
//!     cargo run --release -p huashen-inference --example talking_head -- \
//!         PHOTO "Text to say." OUT_DIR
//!
//! The same stages as a live session, minus the network: English TTS →
//! viseme timeline → animator (coarticulation, idle blinks and motion) →
//! mesh-warp renderer (I420) → RGB.

use std::path::PathBuf;

use huashen_inference::Cpu;
use huashen_inference::face::FaceModels;
use huashen_inference::face::animate::{Animator, VisemeSpan};
use huashen_inference::face::render::{Renderer, i420_to_rgb};
use huashen_inference::face::rig::{Framing, Rig, check_face};
use huashen_inference::speech::tts::EnglishTts;
use image::{Delay, Frame, RgbImage, RgbaImage};

const SIDE: u32 = 320;
const FPS: f64 = 25.0;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let photo = args
        .next()
        .ok_or("usage: talking_head PHOTO TEXT OUT_DIR")?;
    let text = args
        .next()
        .unwrap_or_else(|| "Hello, I am your presenter.".into());
    let out = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&out)?;
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models");

    let img = image::open(&photo)?.to_rgb8();
    let face_models = FaceModels::<Cpu>::open(&models.join("face"), &Default::default())?;
    let faces = face_models.find_faces(&img)?;
    let face = faces.first().ok_or("no face in the photo")?;
    check_face(&face.landmarks.points)?;
    let pts = &face.landmarks.points;
    let mut renderer = Renderer::new(Rig::new(
        &img,
        pts,
        &Framing::head_and_shoulders(pts, SIDE, SIDE),
    ));

    let tts = EnglishTts::<Cpu>::load(&models, &Default::default())?;
    let (timeline, audio) = tts.synthesize(&text, 1.0)?;
    let rate = f64::from(timeline.sample_rate);
    // Speech starts half a second in; the clip ends half a second after.
    let lead = 0.5;
    let spans: Vec<VisemeSpan> = timeline
        .visemes
        .iter()
        .map(|v| VisemeSpan {
            viseme: v.value,
            start: lead + v.start as f64 / rate,
            end: lead + v.end as f64 / rate,
        })
        .collect();
    let duration = lead + audio.len() as f64 / rate + 0.5;
    let mut anim = Animator::new(3);
    let (w, h) = (SIDE as usize, SIDE as usize);
    let (mut y, mut u, mut v) = (vec![0; w * h], vec![0; w * h / 4], vec![0; w * h / 4]);
    let mut frames: Vec<RgbImage> = Vec::new();
    let n = (duration * FPS) as usize;
    for i in 0..n {
        let t = i as f64 / FPS;
        let near: Vec<VisemeSpan> = spans
            .iter()
            .filter(|s| s.end > t - 0.3 && s.start < t + 0.3)
            .copied()
            .collect();
        let p = anim.params(t, &near);
        renderer.render(&p, &mut y, &mut u, &mut v);
        frames.push(i420_to_rgb(w, h, &y, &u, &v));
    }

    // Pictures of the head: the upper middle of the head-and-shoulders frame.
    let head = |f: &RgbImage, side: u32| {
        let crop = image::imageops::crop_imm(f, SIDE / 5, SIDE / 20, SIDE * 3 / 5, SIDE * 3 / 5);
        image::imageops::resize(
            &crop.to_image(),
            side,
            side,
            image::imageops::FilterType::Triangle,
        )
    };
    // Contact sheet: 24 frames from the speaking part, 6 × 4.
    let (cols, rows) = (6u32, 4u32);
    let first = (lead * FPS) as usize;
    let last = ((lead + audio.len() as f64 / rate) * FPS) as usize;
    let thumb = 128;
    let mut sheet = RgbImage::new(cols * thumb, rows * thumb);
    for k in 0..(cols * rows) as usize {
        let idx = first + (last - first) * k / (cols * rows) as usize;
        let small = head(&frames[idx.min(frames.len() - 1)], thumb);
        let (cx, cy) = ((k as u32 % cols) * thumb, (k as u32 / cols) * thumb);
        image::imageops::replace(&mut sheet, &small, cx as i64, cy as i64);
    }
    sheet.save(out.join("talking-sheet.png"))?;

    // Animated GIF at 12.5 fps (every other frame).
    let gif = std::fs::File::create(out.join("talking.gif"))?;
    let mut enc = image::codecs::gif::GifEncoder::new_with_speed(gif, 10);
    enc.set_repeat(image::codecs::gif::Repeat::Infinite)?;
    for f in frames.iter().step_by(2) {
        let rgba: RgbaImage = image::DynamicImage::ImageRgb8(head(f, 160)).to_rgba8();
        enc.encode_frame(Frame::from_parts(
            rgba,
            0,
            0,
            Delay::from_numer_denom_ms(80, 1),
        ))?;
    }
    drop(enc);

    // The speech, with the same half-second lead.
    let mut pcm = vec![0.0f32; (lead * rate) as usize];
    pcm.extend_from_slice(&audio);
    huashen_inference::wav::write_pcm16(&out.join("talking.wav"), timeline.sample_rate, &pcm)?;
    eprintln!(
        "{} frames, {:.1} s, written to {}",
        frames.len(),
        duration,
        out.display()
    );
    Ok(())
}
