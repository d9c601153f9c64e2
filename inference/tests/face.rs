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
