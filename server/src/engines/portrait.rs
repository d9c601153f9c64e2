//! Portrait images: decoded with size limits (a decompression bomb fails
//! fast), normalised for storage, scaled to fit an output size and
//! letterboxed.

use image::{DynamicImage, ImageReader, Limits, RgbImage, imageops::FilterType};
use std::io::Cursor;

/// Largest decoded portrait, in pixels (a 50-megapixel phone photo; its
/// RGBA pixels take at most 200 MB while decoding).
pub const MAX_PIXELS: u64 = 50_000_000;

#[derive(Debug, thiserror::Error)]
pub enum PortraitError {
    #[error("the portrait could not be decoded: {0}")]
    Decode(String),
    #[error("the portrait is {width}×{height} pixels; at most {MAX_PIXELS} pixels are allowed")]
    TooLarge { width: u32, height: u32 },
    #[error("the portrait is truncated or corrupt ({0}); send the whole file again")]
    Truncated(String),
}

/// Whether a JPEG holds its whole picture: after the first scan starts
/// (SOS), an end-of-image marker must follow. Decoders fill what is missing
/// with grey; an upload cut short must be refused instead.
fn jpeg_complete(bytes: &[u8]) -> Result<(), PortraitError> {
    let cut = |why: &str| Err(PortraitError::Truncated(why.to_owned()));
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Ok(()); // not JPEG: its own decoder judges it
    }
    // Walk the marker segments up to the first scan.
    let mut i = 2;
    loop {
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1; // fill bytes
        }
        let Some(&marker) = bytes.get(i) else {
            return cut("the file ends before the picture data");
        };
        i += 1;
        if marker == 0xD9 {
            return cut("the picture ends before any picture data");
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            continue; // markers without a length
        }
        let Some(len) = bytes.get(i..i + 2) else {
            return cut("a header segment is cut short");
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 || i + len > bytes.len() {
            return cut("a header segment is cut short");
        }
        i += len;
        if marker == 0xDA {
            break;
        }
    }
    // Entropy-coded data, restart markers and later scans, then EOI.
    if bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        Ok(())
    } else {
        cut("the JPEG has no end-of-image marker")
    }
}

/// Decodes an image, refusing ones larger than [`MAX_PIXELS`] before
/// allocating their pixels.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, PortraitError> {
    jpeg_complete(bytes)?;
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PortraitError::Decode(e.to_string()))?;
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| PortraitError::Decode(e.to_string()))?;
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(PortraitError::TooLarge {
            width: w,
            height: h,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| PortraitError::Decode(e.to_string()))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_PIXELS * 4 + (64 << 20));
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| PortraitError::Decode(e.to_string()))?;
    // Phones store portraits sideways with an EXIF orientation tag.
    let orientation = image::ImageDecoder::orientation(&mut decoder)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| match e {
        // The file ran out, or its data does not add up.
        image::ImageError::Decoding(_) | image::ImageError::IoError(_) => {
            PortraitError::Truncated(e.to_string())
        }
        e => PortraitError::Decode(e.to_string()),
    })?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Longest side of the portrait kept after enrollment.
pub const NORMALISED_MAX_SIDE: u32 = 2048;

/// The portrait Huashen keeps: upright, at most [`NORMALISED_MAX_SIDE`]
/// pixels on its longest side, RGB, re-encoded as PNG — so nothing of the
/// upload's metadata (EXIF GPS position, camera, timestamps) survives.
pub fn normalise(img: &DynamicImage) -> Result<Vec<u8>, PortraitError> {
    let rgb = if img.width().max(img.height()) > NORMALISED_MAX_SIDE {
        img.resize(
            NORMALISED_MAX_SIDE,
            NORMALISED_MAX_SIDE,
            FilterType::Lanczos3,
        )
        .to_rgb8()
    } else {
        img.to_rgb8()
    };
    let mut out = Cursor::new(Vec::new());
    rgb.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| PortraitError::Decode(e.to_string()))?;
    Ok(out.into_inner())
}

/// Scales `img` to fit `width`×`height`, keeping its aspect ratio, centred
/// on black.
pub fn letterbox(img: &DynamicImage, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (img.width().max(1), img.height().max(1));
    let scale = f64::min(
        f64::from(width) / f64::from(iw),
        f64::from(height) / f64::from(ih),
    );
    let sw = ((f64::from(iw) * scale).round() as u32).clamp(1, width);
    let sh = ((f64::from(ih) * scale).round() as u32).clamp(1, height);
    let scaled = image::imageops::resize(&img.to_rgb8(), sw, sh, FilterType::Triangle);
    let mut canvas = RgbImage::new(width, height);
    let (x, y) = ((width - sw) / 2, (height - sh) / 2);
    image::imageops::replace(&mut canvas, &scaled, i64::from(x), i64::from(y));
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn astronaut() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/astronaut.png"
        ))
        .unwrap()
    }

    #[test]
    fn letterboxes_a_real_photo() {
        let img = decode(&astronaut()).unwrap();
        assert_eq!((img.width(), img.height()), (512, 512));
        let wide = letterbox(&img, 640, 360);
        assert_eq!(wide.dimensions(), (640, 360));
        // Bars left and right, picture in the middle.
        assert_eq!(wide.get_pixel(10, 180).0, [0, 0, 0]);
        assert_eq!(wide.get_pixel(630, 180).0, [0, 0, 0]);
        assert_ne!(wide.get_pixel(320, 180).0, [0, 0, 0]);
        let yuv = crate::pipeline::frame::I420::from_rgb(&wide);
        use openh264::formats::YUVSource;
        assert_eq!(yuv.dimensions(), (640, 360));
    }

    #[test]
    fn normalised_portrait_keeps_pixels_and_drops_metadata() {
        // A JPEG with an EXIF block (orientation 6: rotate 90° clockwise)
        // carrying a marker string where GPS data would be.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(40, 20, |x, _| {
            image::Rgb([if x < 20 { 250 } else { 5 }, 100, 100])
        }));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        let mut tiff = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x02".to_vec();
        // Orientation (0x0112), SHORT, 1, value 6.
        tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]);
        // ImageDescription (0x010e), ASCII, 16 bytes at offset 38.
        tiff.extend_from_slice(&[0x01, 0x0e, 0, 2, 0, 0, 0, 16, 0, 0, 0, 38]);
        tiff.extend_from_slice(&[0, 0, 0, 0]);
        tiff.extend_from_slice(b"GPS 31.23N 121.4");
        let mut with_exif = jpeg[..2].to_vec();
        with_exif.extend_from_slice(&[0xFF, 0xE1]);
        with_exif.extend_from_slice(&((tiff.len() + 2) as u16).to_be_bytes());
        with_exif.extend_from_slice(&tiff);
        with_exif.extend_from_slice(&jpeg[2..]);
        assert!(with_exif.windows(16).any(|w| w == b"GPS 31.23N 121.4"));
        let decoded = decode(&with_exif).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (20, 40),
            "EXIF rotation applied"
        );
        let kept = normalise(&decoded).unwrap();
        assert!(!kept.windows(3).any(|w| w == b"GPS"), "metadata dropped");
        let back = image::load_from_memory(&kept).unwrap();
        assert_eq!((back.width(), back.height()), (20, 40));
        let big = DynamicImage::ImageRgb8(image::RgbImage::new(4000, 1000));
        let small = image::load_from_memory(&normalise(&big).unwrap()).unwrap();
        assert_eq!((small.width(), small.height()), (2048, 512));
    }

    /// An upload cut short (here at 40 %) is refused as truncated, whatever
    /// its format; a whole one, even with bytes after its end, is taken.
    #[test]
    fn refuses_truncated_images() {
        let png = astronaut();
        let img = decode(&png).unwrap();
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        for (name, whole) in [("png", &png), ("jpeg", &jpeg)] {
            let cut = &whole[..whole.len() * 4 / 10];
            let e = decode(cut).expect_err(name);
            assert!(matches!(e, PortraitError::Truncated(_)), "{name}: {e:?}");
            assert!(e.to_string().contains("truncated or corrupt"), "{e}");
            assert!(decode(whole).is_ok(), "{name}");
        }
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailing bytes some cameras add");
        assert!(decode(&trailing).is_ok());
        // Cut inside the headers, before any picture data.
        assert!(matches!(
            decode(&jpeg[..40]),
            Err(PortraitError::Truncated(_))
        ));
    }

    #[test]
    fn rejects_garbage_and_bombs() {
        assert!(matches!(
            decode(b"not an image"),
            Err(PortraitError::Decode(_))
        ));
        // A PNG header claiming 100000 × 100000 pixels.
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&100_000u32.to_be_bytes());
        png.extend_from_slice(&[8, 2, 0, 0, 0]);
        let crc = crc32(&png[12..]);
        png.extend_from_slice(&crc.to_be_bytes());
        // An empty IDAT chunk: the decoder reads the header up to here.
        png.extend_from_slice(b"\0\0\0\0IDAT");
        png.extend_from_slice(&crc32(b"IDAT").to_be_bytes());
        assert!(
            matches!(decode(&png), Err(PortraitError::TooLarge { .. })),
            "{:?}",
            decode(&png).err()
        );
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
