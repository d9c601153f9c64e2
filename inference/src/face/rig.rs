//! The animation rig made from one enrolled portrait.
//!
//! Enrollment frames the face head-and-shoulders in the output picture
//! (eye line levelled, eyes at 40 % height), then builds a triangle mesh
//! over the whole frame: the 468 face-mesh points, two rings around the
//! face (hair, ears, neck), a coarse grid and the frame border. Every
//! vertex carries weights saying how jaw, lips, lids, brows and head move
//! it; [`Rig::pose`] turns [`FaceParams`] into vertex positions and the
//! renderer warps the portrait along the mesh. Far from the face the grid
//! and border have zero weight, so the background never moves.

use delaunator::{Point, triangulate};
use image::RgbImage;

use super::sample::{Affine, Edge, warp_rgb};

/// What one video frame asks of the face. Zero is the portrait at rest
/// (mouth closed, eyes open, looking ahead).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaceParams {
    /// 0 (closed) … 1 (wide open).
    pub jaw_open: f32,
    /// -1 (narrow) … 1 (wide, as in "ee").
    pub lip_spread: f32,
    /// 0 … 1: lips rounded and pushed out (as in "oo").
    pub lip_round: f32,
    /// 0 … 1: upper lip raised.
    pub upper_lip_raise: f32,
    /// 0 … 1: lower lip pressed up under the upper teeth (as in "f").
    pub lower_lip_raise: f32,
    /// 0 (open) … 1 (closed), image-left and image-right eye.
    pub blink_left: f32,
    pub blink_right: f32,
    /// -1 (frown) … 1 (raised).
    pub brow: f32,
    /// Head turn, nod and tilt, radians (small: ±0.15).
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    /// -1 … 1: breathing phase (chest and shoulders rise).
    pub breath: f32,
}

/// Why a portrait cannot be enrolled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaceCheck {
    #[error("no face was found in the photo")]
    NoFace,
    #[error(
        "the face is too small: the eyes are {iod:.0} pixels apart, at least {min:.0} are needed (use a closer or larger photo)"
    )]
    TooSmall { iod: f32, min: f32 },
    #[error(
        "the face is turned too far to the side (about {degrees:.0}°); use a photo looking into the camera"
    )]
    Turned { degrees: f32 },
}

/// Smallest accepted distance between the outer eye corners, source pixels.
pub const MIN_EYE_DISTANCE: f32 = 40.0;
/// Largest accepted head turn.
pub const MAX_YAW_DEGREES: f32 = 35.0;

// MediaPipe face-mesh indices, image-left to image-right.
const LIP_UPPER_OUTER: [usize; 11] = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291];
const LIP_LOWER_OUTER: [usize; 11] = [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291];
const LIP_UPPER_INNER: [usize; 11] = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308];
const LIP_LOWER_INNER: [usize; 11] = [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308];
/// Eye contours, outer/inner corner first, upper and lower paired by
/// position; then the skin ring above the upper lid.
const EYE_L_UPPER: [usize; 9] = [33, 246, 161, 160, 159, 158, 157, 173, 133];
const EYE_L_LOWER: [usize; 9] = [33, 7, 163, 144, 145, 153, 154, 155, 133];
const EYE_L_CREASE: [usize; 7] = [247, 30, 29, 27, 28, 56, 190];
const EYE_R_UPPER: [usize; 9] = [263, 466, 388, 387, 386, 385, 384, 398, 362];
const EYE_R_LOWER: [usize; 9] = [263, 249, 390, 373, 374, 380, 381, 382, 362];
const EYE_R_CREASE: [usize; 7] = [467, 260, 259, 257, 258, 286, 414];
const BROWS: [usize; 20] = [
    70, 63, 105, 66, 107, 46, 53, 52, 65, 55, 300, 293, 334, 296, 336, 276, 283, 282, 295, 285,
];
const FACE_OVAL: [usize; 36] = [
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
    148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
];

/// How the portrait sits in the output frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Framing {
    /// Output pixel → portrait pixel.
    pub map: Affine,
    pub width: u32,
    pub height: u32,
}

impl Framing {
    /// Head-and-shoulders framing for a face with mesh `points` (portrait
    /// pixels) in a `width`×`height` output: eye line level, eyes centred
    /// at 40 % height, eyes-to-chin 24 % of the shorter side.
    pub fn head_and_shoulders(points: &[[f32; 3]], width: u32, height: u32) -> Self {
        let eye = |a: usize, b: usize| {
            [
                (points[a][0] + points[b][0]) / 2.0,
                (points[a][1] + points[b][1]) / 2.0,
            ]
        };
        let (el, er) = (eye(33, 133), eye(263, 362));
        let centre = [(el[0] + er[0]) / 2.0, (el[1] + er[1]) / 2.0];
        let angle = (er[1] - el[1]).atan2(er[0] - el[0]);
        let chin = points[152];
        let eyes_to_chin = (chin[0] - centre[0]).hypot(chin[1] - centre[1]);
        let target = 0.24 * width.min(height) as f32;
        let s = eyes_to_chin / target;
        let (sin, cos) = angle.sin_cos();
        let ax = [cos * s, sin * s];
        let ay = [-sin * s, cos * s];
        let (u0, v0) = (width as f32 * 0.5, height as f32 * 0.4);
        Framing {
            map: Affine {
                origin: [
                    centre[0] - u0 * ax[0] - v0 * ay[0],
                    centre[1] - u0 * ax[1] - v0 * ay[1],
                ],
                ax,
                ay,
            },
            width,
            height,
        }
    }

    /// Portrait pixel → output pixel.
    pub fn to_output(&self, p: [f32; 2]) -> [f32; 2] {
        let m = &self.map;
        let (dx, dy) = (p[0] - m.origin[0], p[1] - m.origin[1]);
        let det = m.ax[0] * m.ay[1] - m.ax[1] * m.ay[0];
        [
            (dx * m.ay[1] - dy * m.ay[0]) / det,
            (m.ax[0] * dy - m.ax[1] * dx) / det,
        ]
    }
}

/// Checks a face is usable for an avatar (size and turn).
pub fn check_face(points: &[[f32; 3]]) -> Result<(), FaceCheck> {
    let d = |a: usize, b: usize| (points[a][0] - points[b][0]).hypot(points[a][1] - points[b][1]);
    let iod = d(33, 263);
    if iod < MIN_EYE_DISTANCE {
        return Err(FaceCheck::TooSmall {
            iod,
            min: MIN_EYE_DISTANCE,
        });
    }
    // Where the nose tip sits between the cheek edges, along the eye line:
    // 0.5 looking ahead, towards 0 or 1 turned away.
    let (l, r, n) = (points[234], points[454], points[1]);
    let axis = [r[0] - l[0], r[1] - l[1]];
    let len2 = axis[0] * axis[0] + axis[1] * axis[1];
    let t = ((n[0] - l[0]) * axis[0] + (n[1] - l[1]) * axis[1]) / len2.max(1e-6);
    let degrees = ((t - 0.5) * 2.0).clamp(-1.0, 1.0).asin().to_degrees();
    if degrees.abs() > MAX_YAW_DEGREES {
        return Err(FaceCheck::Turned {
            degrees: degrees.abs(),
        });
    }
    Ok(())
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Per-vertex motion weights.
#[derive(Clone, Copy, Debug, Default)]
struct Weights {
    jaw: f32,
    head: f32,
    brow: f32,
    /// Signed: -1 at the image-left mouth corner, +1 at the right.
    lip_x: f32,
    mouth: f32,
    /// +1 upper lip, -1 lower lip, 0 elsewhere.
    lip_side: f32,
    inner: bool,
    /// +1 upper lip band, -1 lower, 0 elsewhere (corners included).
    band: f32,
    body: f32,
    depth: f32,
}

/// The rig of one enrolled portrait at one output size.
pub struct Rig {
    pub width: u32,
    pub height: u32,
    /// The framed portrait, output size.
    pub texture: RgbImage,
    /// Vertex positions in the texture (what each vertex shows).
    pub source: Vec<[f32; 2]>,
    /// Vertex positions at rest (mouth closed).
    rest: Vec<[f32; 2]>,
    weights: Vec<Weights>,
    pub triangles: Vec<[u32; 3]>,
    /// Per triangle: inside the mouth opening (shaded, not warped).
    pub mouth: Vec<bool>,
    /// Per triangle: no vertex ever moves (never re-rendered).
    pub fixed: Vec<bool>,
    /// Landmark count at the start of the vertex list (468).
    pub landmarks: usize,
    /// Mouth geometry for the renderer.
    pub mouth_width: f32,
    /// Mean lip colour (RGB), for shading the mouth interior.
    pub lip_rgb: [f32; 3],
    /// Inter-ocular distance, output pixels.
    pub eye_distance: f32,
    /// Eye contours (upper, lower) per eye, vertex indices.
    pub eyes: [([usize; 9], [usize; 9]); 2],
    /// Inner lip contours (upper, lower), vertex indices.
    pub inner_lips: ([usize; 11], [usize; 11]),
    eye_crease: [[usize; 7]; 2],
    face_height: f32,
    neck_pivot: [f32; 2],
    face_half_width: f32,
}

impl Rig {
    /// Builds the rig from a portrait, its face mesh (portrait pixels) and
    /// the framing.
    pub fn new(portrait: &RgbImage, points: &[[f32; 3]], framing: &Framing) -> Self {
        let (w, h) = (framing.width, framing.height);
        let texture = warp_rgb(portrait, w, h, framing.map, Edge::Mirror);
        let scale = framing.map.ax[0].hypot(framing.map.ax[1]);
        let lm: Vec<[f32; 2]> = points
            .iter()
            .map(|p| framing.to_output([p[0], p[1]]))
            .collect();
        let depth: Vec<f32> = points.iter().map(|p| p[2] / scale).collect();
        let dist = |a: [f32; 2], b: [f32; 2]| (a[0] - b[0]).hypot(a[1] - b[1]);
        let mouth_width = dist(lm[61], lm[291]);
        let mc = [(lm[13][0] + lm[14][0]) / 2.0, (lm[13][1] + lm[14][1]) / 2.0];
        let chin = lm[152];
        let eyes_mid = [
            (lm[33][0] + lm[263][0]) / 2.0,
            (lm[33][1] + lm[263][1]) / 2.0,
        ];
        let face_height = dist(eyes_mid, chin);
        let face_half_width = dist(lm[234], lm[454]) / 2.0;
        let eye_distance = dist(lm[33], lm[263]);
        let g0 = (lm[14][1] - lm[13][1]).max(0.0);

        // Extra vertices: two rings around the face oval, a grid, the border.
        let oval_c = FACE_OVAL.iter().fold([0.0, 0.0], |a, &i| {
            [
                a[0] + lm[i][0] / FACE_OVAL.len() as f32,
                a[1] + lm[i][1] / FACE_OVAL.len() as f32,
            ]
        });
        let inside =
            |p: [f32; 2]| p[0] >= 0.0 && p[1] >= 0.0 && p[0] <= w as f32 && p[1] <= h as f32;
        let mut extra: Vec<([f32; 2], f32)> = Vec::new();
        // The third ring does not move: it bounds the region that does.
        for (k, scale) in [(0.85f32, 1.25f32), (0.3, 1.55), (0.0, 1.85)] {
            for &i in &FACE_OVAL {
                let p = [
                    oval_c[0] + (lm[i][0] - oval_c[0]) * scale,
                    oval_c[1] + (lm[i][1] - oval_c[1]) * scale,
                ];
                if inside(p) {
                    extra.push((p, k));
                }
            }
        }
        // The outer ring's extent: grid points inside it are left out.
        let ring_r = |p: [f32; 2]| {
            let (dx, dy) = (
                (p[0] - oval_c[0]) / (face_half_width * 1.85 * 1.2),
                (p[1] - oval_c[1]) / (face_height * 1.85 * 1.2),
            );
            dx * dx + dy * dy
        };
        let step = (w.max(h) as f32 / 8.0).max(32.0);
        let mut y = 0.0;
        while y <= h as f32 + 0.5 {
            let mut x = 0.0;
            while x <= w as f32 + 0.5 {
                let p = [x.min(w as f32), y.min(h as f32)];
                let border = p[0] == 0.0 || p[1] == 0.0 || p[0] == w as f32 || p[1] == h as f32;
                if border || ring_r(p) > 1.0 {
                    extra.push((p, 0.0));
                }
                x += step;
            }
            y += step;
        }
        // Border points between grid points so edges stay straight.
        for k in 0..=32 {
            let t = k as f32 / 32.0;
            for p in [
                [t * w as f32, 0.0],
                [t * w as f32, h as f32],
                [0.0, t * h as f32],
                [w as f32, t * h as f32],
            ] {
                extra.push((p, 0.0));
            }
        }
        let mut source = lm.clone();
        let mut head = vec![1.0f32; lm.len()];
        for (p, k) in &extra {
            if source.iter().any(|q| dist(*q, *p) < 2.0) {
                continue;
            }
            source.push(*p);
            head.push(*k);
        }

        // Weights.
        let in_set = |set: &[usize], i: usize| set.contains(&i);
        let corners = [61, 291, 78, 308];
        // Lip band: every mesh point inside the outer lip contour belongs to
        // the upper or the lower lip, split at the lips' midline.
        let outer_poly: Vec<[f32; 2]> = LIP_UPPER_OUTER
            .iter()
            .chain(LIP_LOWER_OUTER.iter().rev())
            .map(|&i| lm[i])
            .collect();
        let midline: Vec<[f32; 2]> = (0..LIP_UPPER_INNER.len())
            .map(|k| {
                let (a, b) = (lm[LIP_UPPER_INNER[k]], lm[LIP_LOWER_INNER[k]]);
                [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]
            })
            .collect();
        let mid_y = |x: f32| {
            for k in 1..midline.len() {
                let (a, b) = (midline[k - 1], midline[k]);
                if x <= b[0] || k == midline.len() - 1 {
                    let t = ((x - a[0]) / (b[0] - a[0]).max(1e-3)).clamp(0.0, 1.0);
                    return a[1] + (b[1] - a[1]) * t;
                }
            }
            mc[1]
        };
        let lip_band = |i: usize| {
            in_set(&LIP_UPPER_OUTER, i)
                || in_set(&LIP_LOWER_OUTER, i)
                || in_set(&LIP_UPPER_INNER, i)
                || in_set(&LIP_LOWER_INNER, i)
                || point_in_polygon(lm[i], &outer_poly)
        };
        let weights: Vec<Weights> = source
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let is_lm = i < lm.len();
                let band = is_lm && lip_band(i);
                let corner = is_lm
                    && (corners.contains(&i)
                        || (band && (p[0] - mc[0]).abs() > 0.45 * mouth_width));
                let lower = band
                    && (in_set(&LIP_LOWER_OUTER, i)
                        || in_set(&LIP_LOWER_INNER, i)
                        || (!in_set(&LIP_UPPER_OUTER, i)
                            && !in_set(&LIP_UPPER_INNER, i)
                            && p[1] > mid_y(p[0])));
                let upper = band && !lower;
                let fv = smoothstep(mc[1] - 0.05 * mouth_width, mc[1] + 0.35 * mouth_width, p[1]);
                let fh = 1.0
                    - smoothstep(
                        0.55 * face_half_width,
                        1.05 * face_half_width,
                        (p[0] - mc[0]).abs(),
                    );
                let fneck = 1.0
                    - smoothstep(
                        chin[1] + 0.05 * face_height,
                        chin[1] + 0.45 * face_height,
                        p[1],
                    );
                // The lower lip drops most at its middle: the opening is
                // an ellipse, not a box.
                let taper = (1.0 - ((p[0] - mc[0]) / (0.5 * mouth_width)).powi(2)).max(0.0);
                let jaw = if corner {
                    0.3
                } else if lower {
                    0.35 + 0.65 * taper.sqrt()
                } else if upper {
                    0.0
                } else {
                    fv * fh * fneck
                };
                let (dx, dy) = ((p[0] - mc[0]) / mouth_width, (p[1] - mc[1]) / mouth_width);
                let mouth = 1.0 - smoothstep(0.55, 1.1, (dx * dx + 4.0 * dy * dy).sqrt());
                let lip_x = (dx * 2.0).clamp(-1.0, 1.0);
                let brow = if is_lm && BROWS.contains(&i) {
                    1.0
                } else {
                    let near = BROWS
                        .iter()
                        .map(|&b| dist(lm[b], p))
                        .fold(f32::MAX, f32::min);
                    let above_eyes = p[1] < eyes_mid[1] - 0.1 * eye_distance;
                    if above_eyes {
                        1.0 - smoothstep(0.0, 0.45 * eye_distance, near)
                    } else {
                        0.0
                    }
                };
                let body = smoothstep(
                    chin[1] + 0.2 * face_height,
                    chin[1] + 0.9 * face_height,
                    p[1],
                );
                Weights {
                    jaw,
                    head: head[i],
                    brow,
                    lip_x,
                    mouth,
                    lip_side: if upper && !corner {
                        1.0
                    } else if lower && !corner {
                        -1.0
                    } else {
                        0.0
                    },
                    inner: is_lm && (in_set(&LIP_UPPER_INNER, i) || in_set(&LIP_LOWER_INNER, i)),
                    band: if lower {
                        -1.0
                    } else if upper {
                        1.0
                    } else {
                        0.0
                    },
                    // Breathing lifts the head and neck; the grid (body,
                    // background) stays put, so idle frames re-render
                    // only around the head.
                    body: if head[i] > 0.0 { body } else { 0.0 },
                    depth: if is_lm { depth[i] } else { 0.0 },
                }
            })
            .collect();
        let neck_pivot = [chin[0], chin[1] + 0.6 * face_height];

        let mut rig = Rig {
            width: w,
            height: h,
            texture,
            rest: Vec::new(),
            source,
            weights,
            triangles: Vec::new(),
            mouth: Vec::new(),
            fixed: Vec::new(),
            landmarks: lm.len(),
            mouth_width,
            lip_rgb: [0.0; 3],
            eye_distance,
            eyes: [(EYE_L_UPPER, EYE_L_LOWER), (EYE_R_UPPER, EYE_R_LOWER)],
            inner_lips: (LIP_UPPER_INNER, LIP_LOWER_INNER),
            eye_crease: [EYE_L_CREASE, EYE_R_CREASE],
            face_height,
            neck_pivot,
            face_half_width,
        };
        // Rest: the photo with the mouth closed.
        rig.rest = rig.source.clone();
        for (i, wt) in rig.weights.iter().enumerate() {
            rig.rest[i][1] -= g0 * wt.jaw;
        }
        for k in 1..10 {
            let (u, l) = (LIP_UPPER_INNER[k], LIP_LOWER_INNER[k]);
            rig.rest[l] = rig.rest[u];
        }
        // Topology from a wide-open pose, so the mouth opening is meshed
        // by triangles of inner-lip points only.
        let open = rig.pose(&FaceParams {
            jaw_open: 0.8,
            ..Default::default()
        });
        // Lip-band points sit a hair's breadth from the inner contours (and
        // may cross them in a smiling photo): for the topology only, keep
        // them clear of the opening.
        let contour_y = |set: &[usize; 11], x: f32| {
            let pts: Vec<[f32; 2]> = set.iter().map(|&i| open[i]).collect();
            let k = (1..pts.len())
                .find(|&k| x <= pts[k][0])
                .unwrap_or(pts.len() - 1);
            let (a, b) = (pts[k - 1], pts[k]);
            let t = ((x - a[0]) / (b[0] - a[0]).max(1e-3)).clamp(0.0, 1.0);
            a[1] + (b[1] - a[1]) * t
        };
        let topo: Vec<Point> = open
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let wt = rig.weights[i];
                let mut y = p[1];
                if !wt.inner && wt.band > 0.0 {
                    y = y.min(contour_y(&LIP_UPPER_INNER, p[0]) - 1.0);
                } else if !wt.inner && wt.band < 0.0 {
                    y = y.max(contour_y(&LIP_LOWER_INNER, p[0]) + 1.0);
                }
                Point {
                    x: p[0] as f64,
                    y: y as f64,
                }
            })
            .collect();
        let tri = triangulate(&topo);
        let mouth_poly: Vec<[f32; 2]> = LIP_UPPER_INNER
            .iter()
            .chain(LIP_LOWER_INNER.iter().rev())
            .map(|&i| open[i])
            .collect();
        for t in tri.triangles.chunks_exact(3) {
            let t = [t[0] as u32, t[1] as u32, t[2] as u32];
            let all_inner = t.iter().all(|&i| rig.weights[i as usize].inner);
            let c = [
                (open[t[0] as usize][0] + open[t[1] as usize][0] + open[t[2] as usize][0]) / 3.0,
                (open[t[0] as usize][1] + open[t[1] as usize][1] + open[t[2] as usize][1]) / 3.0,
            ];
            rig.mouth
                .push(all_inner && point_in_polygon(c, &mouth_poly));
            rig.fixed.push(
                t.iter()
                    .all(|&i| i as usize >= rig.landmarks && rig.weights[i as usize].head == 0.0)
                    && t.iter().all(|&i| {
                        let wt = rig.weights[i as usize];
                        wt.jaw == 0.0 && wt.brow == 0.0 && wt.body == 0.0
                    }),
            );
            rig.triangles.push(t);
        }
        // Mean lip colour, from the lip band between outer and inner contours.
        let mut acc = [0.0f32; 3];
        let mut n = 0.0;
        for k in 2..9 {
            for (a, b) in [
                (LIP_UPPER_OUTER[k], LIP_UPPER_INNER[k]),
                (LIP_LOWER_OUTER[k], LIP_LOWER_INNER[k]),
            ] {
                let (pa, pb) = (rig.source[a], rig.source[b]);
                let p = [(pa[0] + pb[0]) / 2.0, (pa[1] + pb[1]) / 2.0];
                let (x, y) = (p[0] as u32, p[1] as u32);
                if x < w && y < h {
                    let px = rig.texture.get_pixel(x, y);
                    for c in 0..3 {
                        acc[c] += px[c] as f32;
                    }
                    n += 1.0;
                }
            }
        }
        rig.lip_rgb = if n > 0.0 {
            acc.map(|v| v / n)
        } else {
            [150.0, 70.0, 70.0]
        };
        rig
    }

    pub fn vertex_count(&self) -> usize {
        self.source.len()
    }

    /// Vertex positions (output pixels) for `p`.
    pub fn pose(&self, p: &FaceParams) -> Vec<[f32; 2]> {
        let mw = self.mouth_width;
        let mut out = self.rest.clone();
        let jaw = p.jaw_open.clamp(0.0, 1.0) * 0.42 * mw + p.lip_round.clamp(0.0, 1.0) * 0.08 * mw;
        let spread =
            p.lip_spread.clamp(-1.0, 1.0) * 0.09 * mw - p.lip_round.clamp(0.0, 1.0) * 0.2 * mw;
        for (i, wt) in self.weights.iter().enumerate() {
            let o = &mut out[i];
            o[1] += jaw * wt.jaw;
            o[0] += spread * wt.lip_x * wt.mouth;
            if wt.lip_side > 0.0 {
                let inner_boost = if wt.inner { 1.0 } else { 0.7 };
                o[1] -= p.upper_lip_raise.clamp(0.0, 1.0) * 0.07 * mw * inner_boost;
                o[1] -= p.lip_round.clamp(0.0, 1.0) * 0.05 * mw * (1.0 - wt.lip_x.abs());
            } else if wt.lip_side < 0.0 {
                o[1] -= p.lower_lip_raise.clamp(0.0, 1.0) * 0.12 * mw;
                o[1] += p.lip_round.clamp(0.0, 1.0) * 0.04 * mw * (1.0 - wt.lip_x.abs());
            }
            o[1] -= p.brow.clamp(-1.0, 1.0) * 0.09 * self.eye_distance * wt.brow;
        }
        // Lids: the upper lid slides down to the lower one; the crease follows.
        for (eye, blink) in [(0, p.blink_left), (1, p.blink_right)] {
            let b = blink.clamp(0.0, 1.0);
            if b == 0.0 {
                continue;
            }
            let (upper, lower) = self.eyes[eye];
            for k in 1..8 {
                let (u, l) = (upper[k], lower[k]);
                let gap = [out[l][0] - out[u][0], out[l][1] - out[u][1]];
                out[u][0] += gap[0] * b * 0.92;
                out[u][1] += gap[1] * b * 0.92;
                out[l][1] -= gap[1].max(0.0) * b * 0.08;
            }
            for (k, &c) in self.eye_crease[eye].iter().enumerate() {
                let u = upper[k + 1];
                out[c][1] += (out[u][1] - self.rest[u][1]) * 0.75;
            }
        }
        // Head: roll about the neck, turn with parallax, nod, breathe.
        let (sin, cos) = p.roll.sin_cos();
        let breath = p.breath.clamp(-1.0, 1.0) * 0.006 * self.height as f32;
        for (i, wt) in self.weights.iter().enumerate() {
            let o = &mut out[i];
            let hw = wt.head;
            if hw > 0.0 {
                let (dx, dy) = (o[0] - self.neck_pivot[0], o[1] - self.neck_pivot[1]);
                let r = [
                    self.neck_pivot[0] + dx * cos - dy * sin,
                    self.neck_pivot[1] + dx * sin + dy * cos,
                ];
                let parallax = 1.0 - 0.8 * wt.depth / self.face_half_width;
                o[0] += (r[0] - o[0]) * hw + p.yaw * 0.5 * self.face_height * parallax * hw;
                o[1] += (r[1] - o[1]) * hw + p.pitch * 0.5 * self.face_height * hw;
            }
            o[1] -= breath * (wt.body + 0.5 * hw * (1.0 - wt.body));
        }
        out
    }
}

fn point_in_polygon(p: [f32; 2], poly: &[[f32; 2]]) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (a, b) = (poly[i], poly[j]);
        if (a[1] > p[1]) != (b[1] > p[1])
            && p[0] < (b[0] - a[0]) * (p[1] - a[1]) / (b[1] - a[1]) + a[0]
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}
