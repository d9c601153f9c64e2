//! Face benches: enrollment (detect + mesh + rig) and one 512×512 frame.
//!
//!     cargo bench -p huashen-inference --bench face

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use huashen_inference::Cpu;
use huashen_inference::face::FaceModels;
use huashen_inference::face::animate::{Animator, VisemeSpan};
use huashen_inference::face::render::Renderer;
use huashen_inference::face::rig::{Framing, Rig};
use huashen_inference::speech::timeline::Viseme;

fn bench(c: &mut Criterion) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let models = FaceModels::<Cpu>::open(&root.join("../models/face"), &Default::default())
        .expect("models (run scripts/fetch-models.sh)");
    let img = image::open(root.join("tests/data/face/astronaut.png"))
        .unwrap()
        .to_rgb8();
    // A 12-megapixel portrait: the astronaut scaled up to 4000×3000.
    let big = image::imageops::resize(&img, 4000, 3000, image::imageops::FilterType::Triangle);

    let mut g = c.benchmark_group("face");
    g.sample_size(10);
    g.bench_function("find_faces_512px", |b| {
        b.iter(|| models.find_faces(&img).unwrap())
    });
    g.bench_function("find_faces_12mp", |b| {
        b.iter(|| models.find_faces(&big).unwrap())
    });
    let faces = models.find_faces(&img).unwrap();
    let pts = &faces[0].landmarks.points;
    g.bench_function("rig_512", |b| {
        b.iter(|| Rig::new(&img, pts, &Framing::head_and_shoulders(pts, 512, 512)))
    });
    g.finish();

    let mut r = Renderer::new(Rig::new(
        &img,
        pts,
        &Framing::head_and_shoulders(pts, 512, 512),
    ));
    let (mut y, mut u, mut v) = (
        vec![0u8; 512 * 512],
        vec![0u8; 256 * 256],
        vec![0u8; 256 * 256],
    );
    let spans: Vec<VisemeSpan> = (0..200)
        .map(|k| VisemeSpan {
            viseme: Viseme::ALL[1 + k % 14],
            start: k as f64 * 0.09,
            end: (k + 1) as f64 * 0.09,
        })
        .collect();
    let mut anim = Animator::new(7);
    let mut frame = 0u64;
    c.bench_function("render_512_speaking", |b| {
        b.iter(|| {
            frame += 1;
            let t = (frame % 400) as f64 / 25.0;
            let p = anim.params(t, &spans);
            r.render(&p, &mut y, &mut u, &mut v);
        })
    });
    let mut idle = Animator::new(9);
    c.bench_function("render_512_idle", |b| {
        b.iter(|| {
            frame += 1;
            let p = idle.params(frame as f64 / 25.0, &[]);
            r.render(&p, &mut y, &mut u, &mut v);
        })
    });
}

/// The live-voice lip-sync model as the media thread runs it: 20 ms of
/// 16 kHz audio per call (two frames out).
fn lipsync(c: &mut Criterion) {
    use huashen_inference::face::lipsync::{LipSync, LipWeights};
    let device = Default::default();
    let mut sync = LipSync::<huashen_inference::Cpu>::new(LipWeights::embedded(&device), device);
    let audio: Vec<f32> = (0..320 * 500)
        .map(|i| (i as f32 * 0.03).sin() * (i as f32 * 0.0007).sin() * 0.3)
        .collect();
    let mut at = 0;
    let mut out = Vec::new();
    c.bench_function("lipsync_20ms", |b| {
        b.iter(|| {
            out.clear();
            sync.push(&audio[at..at + 320], &mut out);
            at = (at + 320) % (audio.len() - 320);
        })
    });
}

criterion_group!(benches, bench, lipsync);
criterion_main!(benches);
