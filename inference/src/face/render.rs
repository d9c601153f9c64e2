//! Renders a posed rig into an I420 frame.
//!
//! Each triangle whose vertices moved is warped from the framed portrait
//! (piecewise-affine, bilinear), straight into the Y plane and, at half
//! resolution, the U and V planes — no RGB frame, no colour conversion per
//! frame. Triangles inside the mouth opening are shaded instead: dark
//! cavity, upper and lower teeth, tongue, with the lip edge blended over
//! one pixel. Everything else is copied from the pre-converted portrait.

use super::rig::{FaceParams, Rig};

/// RGB → BT.601 limited-range YUV (the encoder's own conversion).
pub fn rgb_to_yuv(c: [f32; 3]) -> [f32; 3] {
    [
        0.2578125 * c[0] + 0.50390625 * c[1] + 0.09765625 * c[2] + 16.0,
        -0.1484375 * c[0] - 0.2890625 * c[1] + 0.4375 * c[2] + 128.0,
        0.4375 * c[0] - 0.3671875 * c[1] - 0.0703125 * c[2] + 128.0,
    ]
}

/// An I420 frame → RGB (for pictures of the output: tests, docs).
pub fn i420_to_rgb(w: usize, h: usize, y: &[u8], u: &[u8], v: &[u8]) -> image::RgbImage {
    image::RgbImage::from_fn(w as u32, h as u32, |x, yy| {
        let (x, yy) = (x as usize, yy as usize);
        let c = (w / 2) * (yy / 2) + x / 2;
        let yf = (y[yy * w + x] as f32 - 16.0) * 1.164;
        let (uf, vf) = (u[c] as f32 - 128.0, v[c] as f32 - 128.0);
        let px = [
            yf + 1.596 * vf,
            yf - 0.392 * uf - 0.813 * vf,
            yf + 2.017 * uf,
        ];
        image::Rgb(px.map(|c| c.round().clamp(0.0, 255.0) as u8))
    })
}

/// One 8-bit plane, stored with one extra column and row (copies of the
/// last) so bilinear sampling never reads past the edge.
struct Plane {
    w: usize,
    h: usize,
    stride: usize,
    data: Vec<u8>,
    /// The plane itself, unpadded (the frame's starting point).
    flat: Vec<u8>,
}

impl Plane {
    fn new(w: usize, h: usize, flat: Vec<u8>) -> Self {
        let stride = w + 1;
        let mut data = vec![0u8; stride * (h + 1)];
        for y in 0..=h {
            let src = &flat[y.min(h - 1) * w..y.min(h - 1) * w + w];
            data[y * stride..y * stride + w].copy_from_slice(src);
            data[y * stride + w] = src[w - 1];
        }
        Plane {
            w,
            h,
            stride,
            data,
            flat,
        }
    }

    /// Bilinear sample at (x, y), pixel centres at +0.5, clamped to the
    /// plane (the fixed-point sampler, for callers holding floats).
    #[inline]
    fn sample(&self, x: f32, y: f32) -> f32 {
        const ONE: f32 = 65536.0;
        f32::from(self.sample_fixed(((x - 0.5) * ONE) as i32, ((y - 0.5) * ONE) as i32))
    }

    /// Bilinear sample in 16.16 fixed point: `fx`, `fy` are the position
    /// minus half a pixel, times 65536. Rounds to 8 bits.
    #[inline(always)]
    fn sample_fixed(&self, fx: i32, fy: i32) -> u8 {
        let fx = fx.clamp(0, ((self.w - 1) as i32) << 16);
        let fy = fy.clamp(0, ((self.h - 1) as i32) << 16);
        let (x0, y0) = ((fx >> 16) as usize, (fy >> 16) as usize);
        let (tx, ty) = (((fx >> 8) & 255) as u32, ((fy >> 8) & 255) as u32);
        let i = y0 * self.stride + x0;
        let d = &self.data[i..i + self.stride + 2];
        let (a, b) = (d[0] as u32, d[1] as u32);
        let (c, e) = (d[self.stride] as u32, d[self.stride + 1] as u32);
        let top = a * (256 - tx) + b * tx;
        let bot = c * (256 - tx) + e * tx;
        ((top * (256 - ty) + bot * ty + 32768) >> 16) as u8
    }
}

/// floor/ceil without a libm call (the baseline x86-64 target has no
/// rounding instruction).
#[inline(always)]
fn floor(x: f32) -> f32 {
    let i = x as i32 as f32;
    if i > x { i - 1.0 } else { i }
}

#[inline(always)]
fn ceil(x: f32) -> f32 {
    let i = x as i32 as f32;
    if i < x { i + 1.0 } else { i }
}

/// Walks triangle `t` (pixel coordinates of a `plane_w`×`plane_h` plane)
/// row by row: `f(y, x0, x1, b, db)` gets each row's run of covered pixel
/// centres [x0, x1) with the barycentrics `b` at x0 and their step `db`
/// per pixel.
#[inline]
fn raster(
    t: [[f32; 2]; 3],
    plane_w: usize,
    plane_h: usize,
    mut f: impl FnMut(usize, usize, usize, [f32; 3], [f32; 3]),
) {
    let area =
        (t[1][0] - t[0][0]) * (t[2][1] - t[0][1]) - (t[2][0] - t[0][0]) * (t[1][1] - t[0][1]);
    if area.abs() < 1e-6 {
        return;
    }
    let inv = 1.0 / area;
    let ymin = floor(t.iter().map(|p| p[1]).fold(f32::MAX, f32::min)).max(0.0) as usize;
    let ymax =
        (ceil(t.iter().map(|p| p[1]).fold(f32::MIN, f32::max)).max(0.0) as usize).min(plane_h);
    let xmin = floor(t.iter().map(|p| p[0]).fold(f32::MAX, f32::min)).max(0.0);
    let xmax = ceil(t.iter().map(|p| p[0]).fold(f32::MIN, f32::max)).min(plane_w as f32);
    if xmax <= xmin {
        return;
    }
    // b_k = edge function of the edge opposite vertex k, normalised.
    let edge = |a: [f32; 2], b: [f32; 2], x: f32, y: f32| {
        ((b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0])) * inv
    };
    let db = [
        -(t[2][1] - t[1][1]) * inv,
        -(t[0][1] - t[2][1]) * inv,
        -(t[1][1] - t[0][1]) * inv,
    ];
    let eps = -1e-5f32;
    for y in ymin..ymax {
        let py = y as f32 + 0.5;
        let x0 = xmin + 0.5;
        let b = [
            edge(t[1], t[2], x0, py),
            edge(t[2], t[0], x0, py),
            edge(t[0], t[1], x0, py),
        ];
        // Solve b_k + db_k·i ≥ eps for the pixel steps i from xmin.
        let (mut lo, mut hi) = (0.0f32, xmax - xmin);
        for k in 0..3 {
            if db[k] > 0.0 {
                lo = lo.max(ceil((eps - b[k]) / db[k]));
            } else if db[k] < 0.0 {
                hi = hi.min(floor((eps - b[k]) / db[k]) + 1.0);
            } else if b[k] < eps {
                hi = lo;
            }
        }
        if hi <= lo {
            continue;
        }
        let start = [b[0] + db[0] * lo, b[1] + db[1] * lo, b[2] + db[2] * lo];
        f(y, (xmin + lo) as usize, (xmin + hi) as usize, start, db);
    }
}

/// Renders one rig, frame after frame.
pub struct Renderer {
    rig: Rig,
    planes: [Plane; 3],
    cavity: [f32; 3],
    teeth: [f32; 3],
    tongue: [f32; 3],
    /// Per vertex, mouth attributes this frame: (across 0..1, depth below
    /// the upper lip, opening), pixels.
    mouth_attr: Vec<[f32; 3]>,
}

impl Renderer {
    pub fn new(rig: Rig) -> Self {
        let (w, h) = (rig.width as usize, rig.height as usize);
        let mut y = vec![0u8; w * h];
        let mut u = vec![0u8; w * h / 4];
        let mut v = vec![0u8; w * h / 4];
        let tex = &rig.texture;
        for yy in 0..h {
            for xx in 0..w {
                let p = tex.get_pixel(xx as u32, yy as u32);
                let c = rgb_to_yuv([p[0] as f32, p[1] as f32, p[2] as f32]);
                y[yy * w + xx] = c[0].round().clamp(0.0, 255.0) as u8;
            }
        }
        for yy in 0..h / 2 {
            for xx in 0..w / 2 {
                let mut acc = [0.0f32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = tex.get_pixel((2 * xx + dx) as u32, (2 * yy + dy) as u32);
                    for c in 0..3 {
                        acc[c] += p[c] as f32 / 4.0;
                    }
                }
                let c = rgb_to_yuv(acc);
                u[yy * (w / 2) + xx] = c[1].round().clamp(0.0, 255.0) as u8;
                v[yy * (w / 2) + xx] = c[2].round().clamp(0.0, 255.0) as u8;
            }
        }
        let lip = rig.lip_rgb;
        let cavity = rgb_to_yuv([
            lip[0] * 0.28 + 8.0,
            lip[1] * 0.12 + 4.0,
            lip[2] * 0.14 + 5.0,
        ]);
        let teeth = rgb_to_yuv([222.0, 216.0, 200.0]);
        let tongue = rgb_to_yuv([
            lip[0] * 0.8 + 30.0,
            lip[1] * 0.55 + 10.0,
            lip[2] * 0.6 + 12.0,
        ]);
        let n = rig.vertex_count();
        Renderer {
            planes: [
                Plane::new(w, h, y),
                Plane::new(w / 2, h / 2, u),
                Plane::new(w / 2, h / 2, v),
            ],
            rig,
            cavity,
            teeth,
            tongue,
            mouth_attr: vec![[0.0; 3]; n],
        }
    }

    pub fn rig(&self) -> &Rig {
        &self.rig
    }

    pub fn width(&self) -> usize {
        self.rig.width as usize
    }

    pub fn height(&self) -> usize {
        self.rig.height as usize
    }

    /// Renders `params` into the three planes (Y full size, U and V half
    /// size each way).
    pub fn render(&mut self, params: &FaceParams, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
        let pose = self.rig.pose(params);
        self.render_pose(&pose, y, u, v);
    }

    /// Renders explicit vertex positions (see [`Rig::pose`]).
    pub fn render_pose(&mut self, pose: &[[f32; 2]], y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
        let out: [&mut [u8]; 3] = [y, u, v];
        for (o, p) in out.iter().zip(&self.planes) {
            assert_eq!(o.len(), p.flat.len(), "plane size");
        }
        let [y, u, v] = out;
        y.copy_from_slice(&self.planes[0].flat);
        u.copy_from_slice(&self.planes[1].flat);
        v.copy_from_slice(&self.planes[2].flat);
        // Mouth attributes per inner-lip vertex.
        let (upper, lower) = self.rig.inner_lips;
        for k in 0..upper.len() {
            let (a, b) = (pose[upper[k]], pose[lower[k]]);
            let gap = (b[1] - a[1]).max(0.0);
            let across = k as f32 / (upper.len() - 1) as f32;
            self.mouth_attr[upper[k]] = [across, 0.0, gap];
            self.mouth_attr[lower[k]] = [across, gap, gap];
        }
        let src = &self.rig.source;
        let mw = self.rig.mouth_width;
        for (ti, t) in self.rig.triangles.iter().enumerate() {
            if self.rig.fixed[ti] {
                continue;
            }
            let idx = t.map(|i| i as usize);
            let dst = idx.map(|i| pose[i]);
            let s = idx.map(|i| src[i]);
            // A mouth triangle squeezed to a sliver (closed lips) is drawn
            // as lip: its few pixels have no interior to show.
            let area2 = (dst[1][0] - dst[0][0]) * (dst[2][1] - dst[0][1])
                - (dst[2][0] - dst[0][0]) * (dst[1][1] - dst[0][1]);
            let mouth = self.rig.mouth[ti] && area2.abs() > 4.0;
            if !mouth
                && dst
                    .iter()
                    .zip(&s)
                    .all(|(a, b)| (a[0] - b[0]).abs() < 1e-3 && (a[1] - b[1]).abs() < 1e-3)
            {
                continue; // unmoved: the copy is already right
            }
            let attr = idx.map(|i| self.mouth_attr[i]);
            for (pi, plane_out) in [&mut *y, &mut *u, &mut *v].into_iter().enumerate() {
                let plane = &self.planes[pi];
                let scale = if pi == 0 { 1.0 } else { 0.5 };
                let d = dst.map(|p| [p[0] * scale, p[1] * scale]);
                let sv = s.map(|p| [p[0] * scale, p[1] * scale]);
                let pw = plane.w;
                if mouth {
                    let px_scale = 1.0 / scale;
                    let (cav, teeth, tongue) = (self.cavity[pi], self.teeth[pi], self.tongue[pi]);
                    let neutral = if pi == 0 { 0.0 } else { 128.0 };
                    raster(d, pw, plane.h, |yy, x0, x1, mut b, db| {
                        for x in x0..x1 {
                            let sx = b[0] * sv[0][0] + b[1] * sv[1][0] + b[2] * sv[2][0];
                            let sy = b[0] * sv[0][1] + b[1] * sv[1][1] + b[2] * sv[2][1];
                            let lip = plane.sample(sx, sy);
                            let across = b[0] * attr[0][0] + b[1] * attr[1][0] + b[2] * attr[2][0];
                            let gap = (b[0] * attr[0][2] + b[1] * attr[1][2] + b[2] * attr[2][2])
                                .max(0.0);
                            let depth = (b[0] * attr[0][1] + b[1] * attr[1][1] + b[2] * attr[2][1])
                                .clamp(0.0, gap);
                            let across = across.clamp(0.0, 1.0);
                            let colour =
                                mouth_colour(across, depth, gap, mw, cav, teeth, tongue, neutral);
                            // Blend into the lips over the last pixel of the edge.
                            let edge = depth.min(gap - depth) / px_scale;
                            let a = (edge + 0.5).clamp(0.0, 1.0);
                            let val = lip + (colour - lip) * a;
                            plane_out[yy * pw + x] = val.round().clamp(0.0, 255.0) as u8;
                            for k in 0..3 {
                                b[k] += db[k];
                            }
                        }
                    });
                } else {
                    // dst pixel → source position: affine within the
                    // triangle, so it steps by a constant along a row.
                    let dsx = |db: [f32; 3]| {
                        (
                            db[0] * sv[0][0] + db[1] * sv[1][0] + db[2] * sv[2][0],
                            db[0] * sv[0][1] + db[1] * sv[1][1] + db[2] * sv[2][1],
                        )
                    };
                    raster(d, pw, plane.h, |yy, x0, x1, b, db| {
                        let sx = b[0] * sv[0][0] + b[1] * sv[1][0] + b[2] * sv[2][0];
                        let sy = b[0] * sv[0][1] + b[1] * sv[1][1] + b[2] * sv[2][1];
                        let (ddx, ddy) = dsx(db);
                        let row = &mut plane_out[yy * pw + x0..yy * pw + x1];
                        const ONE: f32 = 65536.0;
                        let mut fx = ((sx - 0.5) * ONE) as i32;
                        let mut fy = ((sy - 0.5) * ONE) as i32;
                        let (dfx, dfy) = ((ddx * ONE) as i32, (ddy * ONE) as i32);
                        for o in row {
                            *o = plane.sample_fixed(fx, fy);
                            fx += dfx;
                            fy += dfy;
                        }
                    });
                }
            }
        }
    }
}

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// The mouth interior at a point `across` (0..1 corner to corner), `depth`
/// pixels below the upper lip, in an opening `gap` pixels tall.
#[inline]
#[allow(clippy::too_many_arguments)]
fn mouth_colour(
    across: f32,
    depth: f32,
    gap: f32,
    mw: f32,
    cav: f32,
    teeth: f32,
    tongue: f32,
    neutral: f32,
) -> f32 {
    let side = ((across - 0.5) / 0.5).abs(); // 0 centre … 1 corner
    // Darker towards the corners and the back of the mouth.
    let mut c = neutral + (cav - neutral) * (1.0 - 0.25 * side);
    // Tongue: the lower part of a wide opening.
    let from_bottom = gap - depth;
    let tongue_h = 0.35 * gap;
    let t = (1.0 - smoothstep(tongue_h * 0.6, tongue_h, from_bottom))
        * smoothstep(0.08 * mw, 0.2 * mw, gap);
    c += (tongue - c) * t * (1.0 - side * side);
    // Upper teeth hang from the upper lip; lower teeth show in wide openings.
    let across_fade = 1.0 - smoothstep(0.45, 0.8, side);
    let upper_h = 0.085 * mw * (1.0 - 0.6 * side * side);
    let up = (1.0 - smoothstep(upper_h - 0.6, upper_h + 0.6, depth)) * across_fade;
    let lower_h = 0.05 * mw * smoothstep(0.15 * mw, 0.3 * mw, gap);
    let low = (1.0 - smoothstep(lower_h - 0.6, lower_h + 0.6, from_bottom))
        * across_fade
        * smoothstep(0.15 * mw, 0.3 * mw, gap);
    // Teeth catch less light towards the corners and the gum line.
    let teeth_shade = neutral
        + (teeth - neutral)
            * (1.0 - 0.3 * side)
            * (0.92 + 0.08 * (depth / upper_h.max(1.0)).min(1.0));
    c += (teeth_shade - c) * up.max(low);
    c
}
