//! The AI-generated label, on by default, in two forms:
//!
//! * a visible badge burned into every frame (wording and corner
//!   configurable), drawn with GNU Unifont bitmaps so Chinese and English
//!   wording render alike;
//! * a machine-readable label in the H.264 stream: an SEI
//!   `user_data_unregistered` message (ITU-T H.264 D.1.7) with the UUID
//!   [`SEI_UUID`] and a small JSON (`ai_generated`, `generator`, `session`,
//!   `time_ms`), sent with every keyframe and once a second.

use super::frame::I420;
use crate::config::Corner;

/// UUID identifying Huashen's AI-generated label in SEI user data.
pub const SEI_UUID: [u8; 16] = [
    0x8f, 0x1d, 0x8e, 0x4a, 0x2b, 0x6c, 0x4f, 0x7e, 0x9a, 0x51, 0x48, 0x55, 0x41, 0x53, 0x48, 0x4e,
];

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

/// An Annex B SEI NAL unit carrying Huashen's label for `session_id` at
/// `time_ms` (Unix milliseconds).
pub fn sei_nal(session_id: &str, time_ms: i64) -> Vec<u8> {
    let json = format!(
        "{{\"ai_generated\":true,\"generator\":\"huashen/{}\",\"session\":\"{}\",\"time_ms\":{}}}",
        env!("CARGO_PKG_VERSION"),
        session_id,
        time_ms
    );
    let mut payload = SEI_UUID.to_vec();
    payload.extend_from_slice(json.as_bytes());
    // sei_message: payload type 5, size in 0xFF-prefixed bytes, payload.
    let mut rbsp = vec![5u8];
    let mut n = payload.len();
    while n >= 255 {
        rbsp.push(0xFF);
        n -= 255;
    }
    rbsp.push(n as u8);
    rbsp.extend_from_slice(&payload);
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut nal = vec![0, 0, 0, 1, 0x06];
    // Emulation prevention: no 00 00 0x (x <= 3) inside the NAL.
    let mut zeros = 0;
    for b in rbsp {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(b);
        zeros = if b == 0 { zeros + 1 } else { 0 };
    }
    nal
}

/// Inserts `sei` into an Annex B access unit before its first slice (after
/// SPS/PPS), as H.264 orders them.
pub fn insert_before_first_slice(au: &[u8], sei: &[u8]) -> Vec<u8> {
    let mut i = 0;
    while i + 3 < au.len() {
        let start = if au[i..].starts_with(&[0, 0, 0, 1]) {
            Some(4)
        } else if au[i..].starts_with(&[0, 0, 1]) {
            Some(3)
        } else {
            None
        };
        if let Some(sc) = start
            && let Some(&header) = au.get(i + sc)
            && matches!(header & 0x1F, 1 | 5)
        {
            let mut out = Vec::with_capacity(au.len() + sei.len());
            out.extend_from_slice(&au[..i]);
            out.extend_from_slice(sei);
            out.extend_from_slice(&au[i..]);
            return out;
        }
        i += 1;
    }
    let mut out = sei.to_vec();
    out.extend_from_slice(au);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sei_round_trips_through_an_access_unit() {
        let sei = sei_nal("se_0123456789abcdef0123456789abcdef", 1_795_000_000_000);
        let au = [
            &[0, 0, 0, 1, 0x67, 0x42, 0, 0x1f][..],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00],
        ]
        .concat();
        let with = insert_before_first_slice(&au, &sei);
        // SPS, PPS, then SEI, then the IDR slice.
        let sei_at = with.windows(5).position(|w| w == [0, 0, 0, 1, 6]).unwrap();
        let idr_at = with
            .windows(5)
            .position(|w| w == [0, 0, 0, 1, 0x65])
            .unwrap();
        assert!(sei_at > 8 && sei_at < idr_at);
        // Read back as a viewer does.
        let json = huashen_loadtest::viewer::find_ai_label(&with).unwrap();
        assert!(
            json.contains("\"ai_generated\":true") && json.contains("se_0123"),
            "{json}"
        );
        assert!(huashen_loadtest::viewer::find_ai_label(&au).is_none());
    }

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
