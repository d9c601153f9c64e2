//! The AI-generated label, on by default, in two forms:
//!
//! * a visible badge burned into every frame (wording and corner
//!   configurable), drawn with GNU Unifont bitmaps so Chinese and English
//!   wording render alike;
//! * a machine-readable label in the H.264 stream, sent with every keyframe
//!   and once a second: its format ([`huashen_protos::sei`]) is shared with
//!   the clients that read it.

use super::frame::I420;
use crate::config::Corner;

/// A badge ready to blend onto frames of one size.
#[derive(Debug, Clone)]
pub struct VisibleLabel {
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    /// Per pixel of the box: true where text is.
    text: Vec<bool>,
}

impl VisibleLabel {
    /// Lays out `text` for frames of `width`×`height`, in `corner`.
    /// Characters Unifont lacks are skipped. `None` when nothing fits.
    pub fn new(text: &str, corner: Corner, width: usize, height: usize) -> Option<Self> {
        let glyphs: Vec<&unifont::Glyph> = text.chars().filter_map(unifont::get_glyph).collect();
        if glyphs.is_empty() {
            return None;
        }
        // 16 px glyphs at 1x up to 360 px high, 2x to 720, 3x above.
        let scale = (height / 360 + 1).min(3);
        let pad = 4 * scale;
        let text_w: usize = glyphs.iter().map(|g| g.get_width()).sum::<usize>() * scale;
        let (w, h) = (text_w + 2 * pad, 16 * scale + 2 * pad);
        let margin = (height / 40).max(4);
        if w + 2 * margin > width || h + 2 * margin > height {
            return None;
        }
        let mut mask = vec![false; w * h];
        let mut gx = pad;
        for g in &glyphs {
            for row in 0..16 {
                for col in 0..g.get_width() {
                    if g.get_pixel(col, row) {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                mask[(pad + row * scale + dy) * w + gx + col * scale + dx] = true;
                            }
                        }
                    }
                }
            }
            gx += g.get_width() * scale;
        }
        let x = match corner {
            Corner::TopLeft | Corner::BottomLeft => margin,
            Corner::TopRight | Corner::BottomRight => width - w - margin,
        };
        let y = match corner {
            Corner::TopLeft | Corner::TopRight => margin,
            Corner::BottomLeft | Corner::BottomRight => height - h - margin,
        };
        // Chroma is subsampled 2x2: keep the box on even coordinates.
        Some(Self {
            x: x & !1,
            y: y & !1,
            w,
            h,
            text: mask,
        })
    }

    /// The badge's box in the frame: (x, y, width, height).
    pub fn rect(&self) -> (usize, usize, usize, usize) {
        (self.x, self.y, self.w, self.h)
    }

    /// Draws the badge: a darkened, desaturated box with white text.
    pub fn apply(&self, frame: &mut I420) {
        let fw = frame.width();
        let (y, u, v) = frame.planes_mut();
        for row in 0..self.h {
            let line = (self.y + row) * fw + self.x;
            for col in 0..self.w {
                let p = &mut y[line + col];
                *p = if self.text[row * self.w + col] {
                    235
                } else {
                    16 + ((u32::from(*p) - 16.min(u32::from(*p))) * 35 / 100) as u8
                };
            }
        }
        let cw = fw / 2;
        for row in 0..self.h / 2 {
            let line = (self.y / 2 + row) * cw + self.x / 2;
            for col in 0..self.w / 2 {
                for plane in [&mut *u, &mut *v] {
                    let p = &mut plane[line + col];
                    *p = (128 + (i32::from(*p) - 128) / 4) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badge_renders_chinese_and_english() {
        let rgb = image::RgbImage::from_pixel(640, 360, image::Rgb([200, 120, 60]));
        let base = I420::from_rgb(&rgb);
        for text in ["AI生成", "AI-generated"] {
            let l = VisibleLabel::new(text, Corner::TopRight, 640, 360).unwrap();
            let (x, y, w, h) = l.rect();
            assert!(x + w <= 640 && y + h <= 360 && x > 320);
            let mut f = base.clone();
            l.apply(&mut f);
            use openh264::formats::YUVSource;
            let ys = f.y();
            let inside: Vec<u8> = (y..y + h)
                .flat_map(|r| ys[r * 640 + x..r * 640 + x + w].to_vec())
                .collect();
            let white = inside.iter().filter(|&&p| p == 235).count();
            assert!(white > 50, "{text}: {white} text pixels");
            assert_eq!(f.y()[0], base.y()[0], "outside the badge is untouched");
        }
        assert!(VisibleLabel::new("AI生成", Corner::TopLeft, 40, 40).is_none());
    }
}
