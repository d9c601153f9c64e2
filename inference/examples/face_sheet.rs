//! Renders an enrolled portrait in a few poses to a PNG contact sheet.
//!
//!     cargo run --release -p huashen-inference --example face_sheet -- PHOTO OUT.png

use std::path::PathBuf;

use huashen_inference::Cpu;
use huashen_inference::face::FaceModels;
use huashen_inference::face::render::{Renderer, i420_to_rgb};
use huashen_inference::face::rig::{FaceParams, Framing, Rig, check_face};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let photo = args.get(1).expect("usage: face_sheet PHOTO OUT.png");
    let out = args.get(2).map(String::as_str).unwrap_or("sheet.png");
    let img = image::open(photo).expect("photo").to_rgb8();
    let models_dir = std::env::var_os("HUASHEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
        .join("face");
    let models = FaceModels::<Cpu>::open(&models_dir, &Default::default()).expect("models");
    let faces = models.find_faces(&img).expect("detect");
    let face = faces.first().expect("a face");
    check_face(&face.landmarks.points).expect("usable face");
    let side: u32 = std::env::var("SIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let (w, h) = (side, side);
    let framing = Framing::head_and_shoulders(&face.landmarks.points, w, h);
    let mut r = Renderer::new(Rig::new(&img, &face.landmarks.points, &framing));
    let poses: Vec<(&str, FaceParams)> = vec![
        ("rest", FaceParams::default()),
        (
            "aa",
            FaceParams {
                jaw_open: 0.9,
                ..Default::default()
            },
        ),
        (
            "ee",
            FaceParams {
                jaw_open: 0.35,
                lip_spread: 1.0,
                ..Default::default()
            },
        ),
        (
            "oo",
            FaceParams {
                jaw_open: 0.3,
                lip_round: 1.0,
                ..Default::default()
            },
        ),
        (
            "ff",
            FaceParams {
                jaw_open: 0.15,
                lower_lip_raise: 1.0,
                ..Default::default()
            },
        ),
        (
            "blink",
            FaceParams {
                blink_left: 1.0,
                blink_right: 1.0,
                ..Default::default()
            },
        ),
        (
            "brow",
            FaceParams {
                brow: 1.0,
                jaw_open: 0.5,
                ..Default::default()
            },
        ),
        (
            "turn",
            FaceParams {
                yaw: 0.12,
                roll: 0.08,
                pitch: 0.05,
                ..Default::default()
            },
        ),
    ];
    let mut sheet = image::RgbImage::new(w * 4, h * 2);
    let (mut y, mut u, mut v) = (
        vec![0u8; (w * h) as usize],
        vec![0u8; (w * h / 4) as usize],
        vec![0u8; (w * h / 4) as usize],
    );
    for (k, (name, p)) in poses.iter().enumerate() {
        r.render(p, &mut y, &mut u, &mut v);
        let rgb = i420_to_rgb(w as usize, h as usize, &y, &u, &v);
        image::imageops::replace(
            &mut sheet,
            &rgb,
            (k as u32 % 4 * w) as i64,
            (k as u32 / 4 * h) as i64,
        );
        eprintln!("{name}");
    }
    sheet.save(out).expect("save");
}
