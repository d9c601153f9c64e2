//! The pipeline's picture type: one I420 (YUV 4:2:0, BT.601) frame in one
//! buffer, writable (for overlays) and readable by the encoder.

use image::RgbImage;
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I420 {
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl I420 {
    /// Converts an RGB picture (even width and height).
    pub fn from_rgb(rgb: &RgbImage) -> Self {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb.as_raw(), (w, h)));
        let mut data = Vec::with_capacity(w * h * 3 / 2);
        data.extend_from_slice(yuv.y());
        data.extend_from_slice(yuv.u());
        data.extend_from_slice(yuv.v());
        Self {
            width: w,
            height: h,
            data,
        }
    }

    /// A black frame (even width and height).
    pub fn black(width: usize, height: usize) -> Self {
        let mut data = vec![16u8; width * height * 3 / 2];
        data[width * height..].fill(128);
        Self {
            width,
            height,
            data,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The Y, U and V planes, writable (U and V are half size each way).
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let ys = self.width * self.height;
        let cs = ys / 4;
        let (y, uv) = self.data.split_at_mut(ys);
        let (u, v) = uv.split_at_mut(cs);
        (y, u, v)
    }

    /// Overwrites this frame with `other` (same size) without allocating.
    pub fn copy_from(&mut self, other: &I420) {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        self.data.copy_from_slice(&other.data);
    }
}

impl YUVSource for I420 {
    fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    fn strides(&self) -> (usize, usize, usize) {
        (self.width, self.width / 2, self.width / 2)
    }

    fn y(&self) -> &[u8] {
        &self.data[..self.width * self.height]
    }

    fn u(&self) -> &[u8] {
        let ys = self.width * self.height;
        &self.data[ys..ys + ys / 4]
    }

    fn v(&self) -> &[u8] {
        let ys = self.width * self.height;
        &self.data[ys + ys / 4..]
    }
}
