//! The burn face models against LiteRT's output for the same inputs, and
//! the whole detect → mesh pipeline on real photos (references made by
//! inference/scripts/face_reference.py; photos and licences in
//! tests/data/face/README.md).

use std::path::PathBuf;
use std::sync::OnceLock;

use huashen_inference::Cpu;
use huashen_inference::face::{FaceModels, MESH_FILE};

fn models_dir() -> PathBuf {
    std::env::var_os("HUASHEN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models"))
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/face")
        .join(name)
}

fn models() -> &'static FaceModels<Cpu> {
    static M: OnceLock<FaceModels<Cpu>> = OnceLock::new();
    M.get_or_init(|| {
        let dir = models_dir().join("face");
        assert!(
            dir.join(MESH_FILE).exists(),
            "{} is missing: run scripts/fetch-models.sh",
            dir.display()
        );
        FaceModels::open(&dir, &Default::default()).unwrap()
    })
}

fn reference() -> serde_json::Value {
    serde_json::from_str(include_str!("data/face_ref.json")).unwrap()
}

fn planar(path: &str, scale: f32, offset: f32) -> Vec<f32> {
    let img = image::open(data(path)).unwrap().to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0.0; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * w * h + i] = p[c] as f32 * scale + offset;
        }
    }
    out
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn detector_matches_litert() {
    let r = &reference()["blazeface"];
    let (boxes, scores) = models()
        .detector
        .raw(planar("blazeface_in.png", 1.0 / 127.5, -1.0))
        .unwrap();
    let top: Vec<usize> = serde_json::from_value(r["top_anchors"].clone()).unwrap();
    let (want_scores, want_boxes) = (floats(&r["scores"]), &r["boxes"]);
    let mut max_err = 0.0f32;
    for (k, &a) in top.iter().enumerate() {
        max_err = max_err.max((scores[a] - want_scores[k]).abs());
        for (j, w) in floats(&want_boxes[k]).iter().enumerate() {
            max_err = max_err.max((boxes[a * 16 + j] - w).abs());
        }
    }
    let elsewhere = r["max_score_elsewhere"].as_f64().unwrap() as f32;
    let mut rest: Vec<f32> = (0..896)
        .filter(|i| !top.contains(i))
        .map(|i| scores[i])
        .collect();
    rest.sort_by(f32::total_cmp);
    eprintln!("detector: max abs error {max_err:.2e} (logits and 128-px box units)");
    assert!(max_err < 2e-2, "max abs error {max_err}");
    assert!((rest[rest.len() - 1] - elsewhere).abs() < 2e-2);
}

#[test]
fn mesh_matches_litert() {
    let r = &reference()["mesh"];
    let (pts, flag) = models()
        .mesh
        .raw(planar("mesh_in.png", 1.0 / 255.0, 0.0))
        .unwrap();
    let want = floats(&r["landmarks"]);
    let max_err = pts
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("mesh: max abs error {max_err:.2e} px of 192");
    assert!(max_err < 0.05, "max abs error {max_err} px");
    assert!((flag - r["face_flag"].as_f64().unwrap() as f32).abs() < 0.05);
}

/// Hand-placed points (zoomed crops with a pixel grid): outer and inner
/// eye corners (mesh points 33, 133, 362, 263, image-left first) and mouth
/// corners (61, 291), per face, in source pixels.
struct Checked {
    points: &'static [(usize, [f32; 2])],
}

/// Each checked face is found, with every checked point within 12 % of
/// the inter-ocular distance and the mean error within 7 % (the usual
/// normalised-error yardstick for landmarks).
fn pipeline_matches(photo: &str, faces_expected: usize, checked: &[Checked]) {
    let img = image::open(data(photo)).unwrap().to_rgb8();
    let faces = models().find_faces(&img).unwrap();
    assert!(
        faces.len() >= faces_expected,
        "{photo}: {} faces",
        faces.len()
    );
    for (n, face) in faces.iter().enumerate() {
        eprintln!("{photo} face {n}: {:?}", face.detection.bbox);
    }
    for c in checked {
        let anchor = c.points[0].1;
        let face = faces
            .iter()
            .min_by(|a, b| {
                let d = |f: &huashen_inference::face::Face| {
                    let p = f.landmarks.points[c.points[0].0];
                    (p[0] - anchor[0]).hypot(p[1] - anchor[1])
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let lm = &face.landmarks;
        assert!(lm.face_score > 0.5, "{photo}: face score {}", lm.face_score);
        let iod = {
            let (a, b) = (lm.points[33], lm.points[263]);
            (a[0] - b[0]).hypot(a[1] - b[1])
        };
        let mut sum = 0.0;
        for &(idx, p) in c.points {
            let got = lm.points[idx];
            let err = (got[0] - p[0]).hypot(got[1] - p[1]);
            sum += err;
            eprintln!(
                "{photo} point {idx}: {got:?} vs {p:?}: {err:.1} px, {:.3} IOD",
                err / iod
            );
            assert!(
                err < 0.12 * iod,
                "{photo} point {idx}: {err:.1} px off (IOD {iod:.0})"
            );
        }
        let mean = sum / c.points.len() as f32 / iod;
        assert!(mean < 0.07, "{photo}: mean error {mean:.3} IOD");
    }
}

#[test]
fn astronaut_landmarks_land_on_the_face() {
    // 512×512 portrait, face ~95 px wide.
    pipeline_matches(
        "astronaut.png",
        1,
        &[Checked {
            points: &[
                (33, [193.0, 101.0]),
                (133, [211.0, 102.5]),
                (362, [236.0, 104.0]),
                (263, [256.0, 102.5]),
                (61, [202.0, 140.0]),
                (291, [245.0, 141.0]),
            ],
        }],
    );
}

#[test]
fn group_photo_landmarks_land_on_each_face() {
    // 1920×1280, three people: a level face, a face turned down and tilted
    // ~25° (eyes closed), and a far-tilted face the short-range detector
    // does not see.
    pipeline_matches(
        "sample1.jpg",
        2,
        &[
            Checked {
                points: &[
                    (33, [432.0, 452.0]),
                    (133, [457.0, 455.0]),
                    (362, [496.0, 462.0]),
                    (263, [540.0, 457.0]),
                    (61, [443.0, 537.0]),
                    (291, [526.0, 540.0]),
                ],
            },
            Checked {
                points: &[
                    (33, [857.0, 555.0]),
                    (133, [891.0, 546.0]),
                    (362, [921.0, 527.0]),
                    (61, [910.0, 612.0]),
                    (291, [982.0, 579.0]),
                ],
            },
        ],
    );
}

mod render {
    use super::{data, models};
    use huashen_inference::face::render::Renderer;
    use huashen_inference::face::rig::{FaceCheck, FaceParams, Framing, Rig, check_face};

    const W: usize = 512;

    fn renderer() -> Renderer {
        let img = image::open(data("astronaut.png")).unwrap().to_rgb8();
        let faces = models().find_faces(&img).unwrap();
        let pts = &faces[0].landmarks.points;
        check_face(pts).unwrap();
        let framing = Framing::head_and_shoulders(pts, W as u32, W as u32);
        Renderer::new(Rig::new(&img, pts, &framing))
    }

    fn render(r: &mut Renderer, p: FaceParams) -> Vec<u8> {
        let mut y = vec![0u8; W * W];
        let mut u = vec![0u8; W * W / 4];
        let mut v = vec![0u8; W * W / 4];
        r.render(&p, &mut y, &mut u, &mut v);
        y
    }

    /// Bounding box (x0, y0, x1, y1) of mesh points `idx` at rest, grown.
    fn region(r: &Renderer, idx: &[usize], grow: f32) -> [usize; 4] {
        let pose = r.rig().pose(&FaceParams::default());
        let xs = idx.iter().map(|&i| pose[i][0]);
        let ys = idx.iter().map(|&i| pose[i][1]);
        let (x0, x1) = (xs.clone().fold(f32::MAX, f32::min), xs.fold(0.0, f32::max));
        let (y0, y1) = (ys.clone().fold(f32::MAX, f32::min), ys.fold(0.0, f32::max));
        [
            (x0 - grow).max(0.0) as usize,
            (y0 - grow).max(0.0) as usize,
            (x1 + grow) as usize,
            (y1 + grow) as usize,
        ]
    }

    #[test]
    fn an_open_viseme_shows_more_mouth_interior_than_a_closed_one() {
        let mut r = renderer();
        let mw = r.rig().mouth_width;
        let b = region(&r, &[61, 291, 0, 17], 0.1 * mw);
        let dark = |y: &[u8]| {
            (b[1]..b[3])
                .flat_map(|yy| (b[0]..b[2]).map(move |x| (x, yy)))
                .filter(|&(x, yy)| y[yy * W + x] < 70)
                .count()
        };
        let closed = dark(&render(&mut r, FaceParams::default()));
        let open = dark(&render(
            &mut r,
            FaceParams {
                jaw_open: 0.9,
                ..Default::default()
            },
        ));
        eprintln!("dark mouth pixels: closed {closed}, open {open} (mouth {mw:.0} px wide)");
        assert!(
            open as f32 > closed as f32 + 0.03 * mw * mw,
            "closed {closed}, open {open}"
        );
    }

    #[test]
    fn blink_frames_have_closed_eyes() {
        let mut r = renderer();
        let eyes = r.rig().eyes;
        let iod = r.rig().eye_distance;
        let boxes: Vec<[usize; 4]> = eyes
            .iter()
            .map(|(upper, lower)| {
                // The middle of the eye opening (iris and pupil).
                region(&r, &[upper[3], upper[5], lower[3], lower[5]], 0.0)
            })
            .collect();
        // An open eye shows a dark iris as tall as the opening; a closed
        // one only its lash line. Measured: rows of the eye's middle with
        // dark pixels.
        let spread = |y: &[u8], b: [usize; 4]| {
            (b[1].saturating_sub(4)..=b[3] + 4)
                .filter(|&yy| (b[0]..=b[2]).filter(|&x| y[yy * W + x] < 80).count() >= 2)
                .count() as f32
        };
        let open = render(&mut r, FaceParams::default());
        let shut = render(
            &mut r,
            FaceParams {
                blink_left: 1.0,
                blink_right: 1.0,
                ..Default::default()
            },
        );
        for b in boxes {
            let (o, s) = (spread(&open, b), spread(&shut, b));
            eprintln!("dark eye rows: open {o}, blink {s} (IOD {iod:.0} px)");
            assert!(o >= 6.0 && s <= 0.5 * o, "open {o}, blink {s}");
        }
    }

    #[test]
    fn pixels_far_from_the_face_never_move() {
        let mut r = renderer();
        let rest = render(&mut r, FaceParams::default());
        let pose = r.rig().pose(&FaceParams::default());
        let chin_y = pose[152][1] as usize;
        let face_l = pose[234][0];
        let face_r = pose[454][0];
        let half = (face_r - face_l) / 2.0;
        // Background beside the head, above the chin, more than a face
        // width away from the face's side.
        let far = |x: usize, y: usize| {
            y < chin_y && ((x as f32) < face_l - 2.0 * half || (x as f32) > face_r + 2.0 * half)
        };
        let n_far = (0..W * W).filter(|&i| far(i % W, i / W)).count();
        assert!(n_far > 10_000, "{n_far} far pixels");
        for p in [
            FaceParams {
                jaw_open: 1.0,
                lip_spread: 1.0,
                blink_left: 1.0,
                brow: 1.0,
                ..Default::default()
            },
            FaceParams {
                yaw: 0.15,
                pitch: -0.1,
                roll: 0.12,
                breath: 1.0,
                ..Default::default()
            },
        ] {
            let y = render(&mut r, p);
            let moved = (0..W * W)
                .filter(|&i| far(i % W, i / W) && y[i] != rest[i])
                .count();
            assert_eq!(moved, 0, "{moved} far pixels changed");
            // ...while the face did move.
            assert!((0..W * W).filter(|&i| y[i] != rest[i]).count() > 500);
        }
    }

    #[test]
    fn unusable_faces_are_refused_with_reasons() {
        // No face: the astronaut's suit.
        let img = image::open(data("astronaut.png")).unwrap().to_rgb8();
        let suit = image::imageops::crop_imm(&img, 0, 300, 512, 212).to_image();
        assert!(models().find_faces(&suit).unwrap().is_empty());
        // Too small: the portrait shrunk to 96 px.
        let small = image::imageops::resize(&img, 96, 96, image::imageops::FilterType::Triangle);
        if let Some(f) = models().find_faces(&small).unwrap().first() {
            assert!(matches!(
                check_face(&f.landmarks.points),
                Err(FaceCheck::TooSmall { .. })
            ));
        }
    }
}

/// Other output sizes and aspect ratios: the face is framed inside them.
#[test]
fn wide_and_tall_outputs_frame_the_face() {
    use huashen_inference::face::render::Renderer;
    use huashen_inference::face::rig::{FaceParams, Framing, Rig};
    let img = image::open(data("astronaut.png")).unwrap().to_rgb8();
    let faces = models().find_faces(&img).unwrap();
    let pts = &faces[0].landmarks.points;
    for (w, h) in [(640u32, 360u32), (360, 640), (1280, 720)] {
        let framing = Framing::head_and_shoulders(pts, w, h);
        let mut r = Renderer::new(Rig::new(&img, pts, &framing));
        let (wu, hu) = (w as usize, h as usize);
        let (mut y, mut u, mut v) = (vec![0; wu * hu], vec![0; wu * hu / 4], vec![0; wu * hu / 4]);
        r.render(
            &FaceParams {
                jaw_open: 0.7,
                yaw: 0.1,
                ..Default::default()
            },
            &mut y,
            &mut u,
            &mut v,
        );
        let nose = framing.to_output([pts[1][0], pts[1][1]]);
        assert!(
            (nose[0] - w as f32 / 2.0).abs() < 0.1 * w as f32,
            "{w}x{h}: nose {nose:?}"
        );
        assert!(
            nose[1] > 0.3 * h as f32 && nose[1] < 0.6 * h as f32,
            "{w}x{h}: nose {nose:?}"
        );
    }
}

/// The same networks on the CUDA backend (feature `cuda`; skipped without
/// an NVIDIA driver).
#[cfg(feature = "cuda")]
#[test]
fn cuda_matches_litert() {
    if !huashen_inference::cuda_available() {
        eprintln!("skipped: no NVIDIA driver on this machine");
        return;
    }
    let dev = Default::default();
    let m = FaceModels::<huashen_inference::Gpu>::open(&models_dir().join("face"), &dev).unwrap();
    let r = reference();
    let (pts, _) = m.mesh.raw(planar("mesh_in.png", 1.0 / 255.0, 0.0)).unwrap();
    let want = floats(&r["mesh"]["landmarks"]);
    let err = pts
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err < 0.05, "cuda mesh error {err}");
    let (_, scores) = m
        .detector
        .raw(planar("blazeface_in.png", 1.0 / 127.5, -1.0))
        .unwrap();
    let top: Vec<usize> = serde_json::from_value(r["blazeface"]["top_anchors"].clone()).unwrap();
    let want = floats(&r["blazeface"]["scores"]);
    for (k, &a) in top.iter().enumerate() {
        assert!((scores[a] - want[k]).abs() < 2e-2);
    }
}
