//! Per-frame cost of the media stages on the session's media thread:
//! H.264 encode (a still portrait, as an idle session shows now, and a
//! moving one, as an animated face will be), and Opus encode of 20 ms.
//! Run: cargo bench -p huashen --bench media

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use huashen::engines::portrait;
use huashen::pipeline::encode::{AudioEncoder, VideoEncoder};
use huashen::pipeline::frame::I420;

fn frames(w: u32, h: u32, n: u32) -> Vec<I420> {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/astronaut.png"
    ))
    .unwrap();
    let img = portrait::decode(&bytes).unwrap();
    let base = portrait::letterbox(&img, w, h);
    // Shift the picture a few pixels per frame: motion for the encoder.
    (0..n)
        .map(|i| {
            let mut moved = image::RgbImage::new(w, h);
            image::imageops::replace(&mut moved, &base, i64::from(i * 3), i64::from(i * 2));
            I420::from_rgb(&moved)
        })
        .collect()
}

fn video(c: &mut Criterion) {
    let mut g = c.benchmark_group("h264_encode_frame");
    for (w, h, kbps) in [(512, 512, 1200), (1280, 720, 2500)] {
        let moving = frames(w, h, 8);
        let mut enc = VideoEncoder::new(w, h, 25, kbps).unwrap();
        g.bench_function(BenchmarkId::new("still", format!("{w}x{h}")), |b| {
            b.iter(|| enc.encode(&moving[0], false).unwrap().data.len())
        });
        let mut enc = VideoEncoder::new(w, h, 25, kbps).unwrap();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("moving", format!("{w}x{h}")), |b| {
            b.iter(|| {
                i = (i + 1) % moving.len();
                enc.encode(&moving[i], false).unwrap().data.len()
            })
        });
        let mut enc = VideoEncoder::new(w, h, 25, kbps).unwrap();
        g.bench_function(BenchmarkId::new("keyframe", format!("{w}x{h}")), |b| {
            b.iter(|| enc.encode(&moving[0], true).unwrap().data.len())
        });
    }
    g.finish();
}

fn audio(c: &mut Criterion) {
    let mut enc = AudioEncoder::new(48).unwrap();
    let tone: Vec<i16> = (0..960)
        .map(|i| ((i as f32 * 0.0573).sin() * 8000.0) as i16)
        .collect();
    c.bench_function("opus_encode_20ms", |b| {
        b.iter(|| enc.encode(&tone).unwrap().len())
    });
}

/// Enrollment's compute for a 12-megapixel JPEG, as the EnrollAvatar
/// handler runs it: decode (size-limited, EXIF-aware), normalise to the kept
/// 2048 px PNG, decode that, detect + mesh + checks.
fn enroll(c: &mut Criterion) {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let engine = huashen::engines::face::FaceEngine::load(&models);
    if engine.available().is_err() {
        eprintln!("face models missing: run scripts/fetch-models.sh");
        return;
    }
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/astronaut.png"
    ))
    .unwrap();
    let img = portrait::decode(&bytes).unwrap().to_rgb8();
    let big = image::imageops::resize(&img, 4000, 3000, image::imageops::FilterType::Triangle);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&big)
        .unwrap();
    let mut g = c.benchmark_group("enroll");
    g.sample_size(10);
    g.bench_function("jpeg_12mp", |b| {
        b.iter(|| {
            let img = portrait::decode(&jpeg).unwrap();
            let kept = portrait::normalise(&img).unwrap();
            let rgb = portrait::decode(&kept).unwrap().to_rgb8();
            engine.analyze(&rgb).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, video, audio, enroll);
criterion_main!(benches);
