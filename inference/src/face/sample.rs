//! Resampling an RGB picture into a network input: an affine map from the
//! output grid into the source, with supersampling when it shrinks (a face
//! 1000 pixels wide cut down to 192 would alias badly with one tap).

use image::RgbImage;

/// Maps output pixel centres to source coordinates: `src = o + u·ax + v·ay`
/// where (u, v) is the output pixel centre.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affine {
    pub origin: [f32; 2],
    pub ax: [f32; 2],
    pub ay: [f32; 2],
}

impl Affine {
    pub fn apply(&self, u: f32, v: f32) -> [f32; 2] {
        [
            self.origin[0] + u * self.ax[0] + v * self.ay[0],
            self.origin[1] + u * self.ax[1] + v * self.ay[1],
        ]
    }

    /// Source pixels per output pixel (the larger axis).
    fn scale(&self) -> f32 {
        self.ax[0]
            .hypot(self.ax[1])
            .max(self.ay[0].hypot(self.ay[1]))
    }
}

/// What sampling outside the source picture reads.
#[derive(Clone, Copy, Debug)]
pub enum Edge {
    Fill([f32; 3]),
    /// The nearest edge pixel (extends the border outwards).
    Clamp,
    /// The picture reflected at its edges (no streaks where a frame
    /// reaches past the photo).
    Mirror,
}

/// Reflects `i` into 0..n (…, 1, 0 | 0, 1, …, n-1 | n-1, n-2, …).
fn mirror(i: i64, n: i64) -> i64 {
    let period = 2 * n;
    let m = i.rem_euclid(period);
    if m < n { m } else { period - 1 - m }
}

/// Bilinear sample at a source position (pixel centres at +0.5).
fn bilinear(img: &RgbImage, x: f32, y: f32, edge: Edge) -> [f32; 3] {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (fx, fy) = (x - 0.5, y - 0.5);
    let (x0, y0) = (fx.floor() as i64, fy.floor() as i64);
    let (tx, ty) = (fx - x0 as f32, fy - y0 as f32);
    let raw = img.as_raw();
    let px = |xx: i64, yy: i64| -> [f32; 3] {
        let (xx, yy) = match edge {
            Edge::Fill(fill) if xx < 0 || yy < 0 || xx >= w || yy >= h => return fill,
            Edge::Fill(_) => (xx, yy),
            Edge::Clamp => (xx.clamp(0, w - 1), yy.clamp(0, h - 1)),
            Edge::Mirror => (mirror(xx, w), mirror(yy, h)),
        };
        let i = ((yy * w + xx) * 3) as usize;
        [raw[i] as f32, raw[i + 1] as f32, raw[i + 2] as f32]
    };
    let (a, b, c, d) = (
        px(x0, y0),
        px(x0 + 1, y0),
        px(x0, y0 + 1),
        px(x0 + 1, y0 + 1),
    );
    let mut out = [0.0; 3];
    for k in 0..3 {
        let top = a[k] + (b[k] - a[k]) * tx;
        let bot = c[k] + (d[k] - c[k]) * tx;
        out[k] = top + (bot - top) * ty;
    }
    out
}

/// Samples a `w`×`h` picture through `map`, calling `put(u, v, rgb)` per
/// output pixel (supersampled when the map shrinks).
fn warp_with(
    img: &RgbImage,
    w: usize,
    h: usize,
    map: Affine,
    edge: Edge,
    mut put: impl FnMut(usize, usize, [f32; 3]),
) {
    let k = (map.scale().ceil() as usize).clamp(1, 8);
    let inv = 1.0 / (k * k) as f32;
    for v in 0..h {
        for u in 0..w {
            let mut acc = [0.0f32; 3];
            for sy in 0..k {
                for sx in 0..k {
                    let uu = u as f32 + (sx as f32 + 0.5) / k as f32;
                    let vv = v as f32 + (sy as f32 + 0.5) / k as f32;
                    let [x, y] = map.apply(uu, vv);
                    let p = bilinear(img, x, y, edge);
                    for c in 0..3 {
                        acc[c] += p[c];
                    }
                }
            }
            put(u, v, acc.map(|a| a * inv));
        }
    }
}

/// Samples a `w`×`h` RGB picture (channel-planar floats, 0..255) through
/// `map`; points outside the source are `fill`.
pub fn warp_planar(img: &RgbImage, w: usize, h: usize, map: Affine, fill: [f32; 3]) -> Vec<f32> {
    let mut out = vec![0.0f32; 3 * w * h];
    warp_with(img, w, h, map, Edge::Fill(fill), |u, v, p| {
        for c in 0..3 {
            out[c * w * h + v * w + u] = p[c];
        }
    });
    out
}

/// Samples a `w`×`h` RGB picture through `map`.
pub fn warp_rgb(img: &RgbImage, w: u32, h: u32, map: Affine, edge: Edge) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    warp_with(img, w as usize, h as usize, map, edge, |u, v, p| {
        out.put_pixel(
            u as u32,
            v as u32,
            image::Rgb(p.map(|c| c.round().clamp(0.0, 255.0) as u8)),
        );
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_map_reproduces_the_picture() {
        let img = RgbImage::from_fn(8, 6, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let id = Affine {
            origin: [0.0, 0.0],
            ax: [1.0, 0.0],
            ay: [0.0, 1.0],
        };
        let out = warp_planar(&img, 8, 6, id, [0.0; 3]);
        for y in 0..6 {
            for x in 0..8 {
                let i = y * 8 + x;
                assert!((out[i] - (x * 10) as f32).abs() < 1e-3);
                assert!((out[48 + i] - (y * 20) as f32).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn shrinking_averages_instead_of_aliasing() {
        // A one-pixel checkerboard shrunk 4× is mid grey, not black/white.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            let on = (x + y) % 2 == 0;
            image::Rgb([if on { 255 } else { 0 }; 3])
        });
        let map = Affine {
            origin: [0.0, 0.0],
            ax: [4.0, 0.0],
            ay: [0.0, 4.0],
        };
        let out = warp_planar(&img, 16, 16, map, [0.0; 3]);
        for v in &out[..256] {
            assert!((v - 127.5).abs() < 20.0, "{v}");
        }
    }

    #[test]
    fn mirror_reflects_at_both_edges() {
        let got: Vec<i64> = (-3..7).map(|i| mirror(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
    }
}
