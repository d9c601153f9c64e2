//! BlazeFace short-range face detection (MediaPipe), on burn.
//!
//! The picture is letterboxed into the network's 128×128 input (pixels in
//! [-1, 1]); the network scores 896 SSD anchors and regresses a box and six
//! keypoints per anchor; boxes above the score threshold are merged by
//! MediaPipe's weighted non-maximum suppression. Port of
//! mediapipe/calculators/tflite/{ssd_anchors,tflite_tensors_to_detections}
//! as used by the short-range model.

use std::path::Path;

use burn::prelude::*;
use image::RgbImage;

use super::graph::{Graph, GraphError};
use super::sample::{Affine, warp_planar};

/// Detections scoring below this are dropped.
pub const MIN_SCORE: f32 = 0.5;
const NMS_IOU: f32 = 0.3;
const RAW_SCORE_LIMIT: f32 = 80.0;

/// One detected face, in source pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    pub score: f32,
    /// xmin, ymin, xmax, ymax.
    pub bbox: [f32; 4],
    /// Image-left eye, image-right eye, nose tip, mouth, left and right
    /// tragion.
    pub keypoints: [[f32; 2]; 6],
}

impl Detection {
    pub fn width(&self) -> f32 {
        self.bbox[2] - self.bbox[0]
    }
    pub fn height(&self) -> f32 {
        self.bbox[3] - self.bbox[1]
    }
    pub fn iou_with(&self, o: &Detection) -> f32 {
        let ix = (self.bbox[2].min(o.bbox[2]) - self.bbox[0].max(o.bbox[0])).max(0.0);
        let iy = (self.bbox[3].min(o.bbox[3]) - self.bbox[1].max(o.bbox[1])).max(0.0);
        let inter = ix * iy;
        let union = self.width() * self.height() + o.width() * o.height() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

pub struct FaceDetector<B: Backend> {
    graph: Graph<B>,
    anchors: Vec<[f32; 2]>,
    device: B::Device,
}

/// SSD anchor centres for the short-range model: strides 8, 16, 16, 16 on
/// a 128 input, two anchors per cell per layer (aspect-ratio interpolation
/// on): 16·16·2 + 8·8·6 = 896.
fn anchors(size: usize) -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(896);
    for (stride, repeats) in [(8, 2), (16, 6)] {
        let n = size / stride;
        for y in 0..n {
            for x in 0..n {
                let c = [(x as f32 + 0.5) / n as f32, (y as f32 + 0.5) / n as f32];
                out.extend(std::iter::repeat_n(c, repeats));
            }
        }
    }
    out
}

impl<B: Backend> FaceDetector<B> {
    /// Loads `face_detection_short_range.tflite`.
    pub fn open(path: &Path, device: &B::Device) -> Result<Self, GraphError> {
        let graph = Graph::open(path, device)?;
        let [h, w, _] = graph.input_shape;
        if h != 128 || w != 128 {
            return Err(GraphError::Unsupported(format!("detector input {h}×{w}")));
        }
        Ok(Self {
            graph,
            anchors: anchors(128),
            device: device.clone(),
        })
    }

    /// Raw network outputs for a prepared input (NCHW floats in [-1, 1]):
    /// regressors (896×16) and score logits (896).
    pub fn raw(&self, input: Vec<f32>) -> Result<(Vec<f32>, Vec<f32>), GraphError> {
        let x = Tensor::<B, 4>::from_data(TensorData::new(input, [1, 3, 128, 128]), &self.device);
        let outs = self.graph.run(x)?;
        let data = |t: &Tensor<B, 2>| t.to_data().to_vec::<f32>().expect("f32 output");
        let (boxes, scores) = (data(&outs[0]), data(&outs[1]));
        if boxes.len() != 896 * 16 || scores.len() != 896 {
            return Err(GraphError::Unsupported("detector output sizes".into()));
        }
        Ok((boxes, scores))
    }

    /// Faces in `img`, best first (the whole picture, letterboxed).
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, GraphError> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        let side = w.max(h);
        self.detect_in(img, [(w - side) / 2.0, (h - side) / 2.0], side)
    }

    /// Faces in the square of `img` at `origin` (top-left, pixels) with
    /// side `side`; parts outside the picture read as mid grey.
    pub fn detect_in(
        &self,
        img: &RgbImage,
        origin: [f32; 2],
        side: f32,
    ) -> Result<Vec<Detection>, GraphError> {
        let scale = side / 128.0;
        let map = Affine {
            origin,
            ax: [scale, 0.0],
            ay: [0.0, scale],
        };
        let mut input = warp_planar(img, 128, 128, map, [127.5; 3]);
        for v in &mut input {
            *v = *v / 127.5 - 1.0;
        }
        let (boxes, scores) = self.raw(input)?;
        let to_px = |p: [f32; 2]| map.apply(p[0] * 128.0, p[1] * 128.0);
        let mut cands = Vec::new();
        for (i, a) in self.anchors.iter().enumerate() {
            let s = 1.0 / (1.0 + (-scores[i].clamp(-RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)).exp());
            if s < MIN_SCORE {
                continue;
            }
            let r = &boxes[i * 16..i * 16 + 16];
            let (cx, cy) = (a[0] + r[0] / 128.0, a[1] + r[1] / 128.0);
            let (bw, bh) = (r[2] / 128.0, r[3] / 128.0);
            if bw <= 0.0 || bh <= 0.0 {
                continue;
            }
            let lo = to_px([cx - bw / 2.0, cy - bh / 2.0]);
            let hi = to_px([cx + bw / 2.0, cy + bh / 2.0]);
            let mut keypoints = [[0.0; 2]; 6];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                *kp = to_px([a[0] + r[4 + 2 * k] / 128.0, a[1] + r[5 + 2 * k] / 128.0]);
            }
            cands.push(Detection {
                score: s,
                bbox: [lo[0], lo[1], hi[0], hi[1]],
                keypoints,
            });
        }
        Ok(weighted_nms(cands))
    }
}

/// MediaPipe's weighted NMS: each cluster of overlapping boxes becomes one,
/// the score-weighted mean of its members, keeping the best score.
fn weighted_nms(mut cands: Vec<Detection>) -> Vec<Detection> {
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while !cands.is_empty() {
        let best = cands[0].clone();
        let (cluster, rest): (Vec<_>, Vec<_>) =
            cands.into_iter().partition(|c| c.iou_with(&best) > NMS_IOU);
        cands = rest;
        let total: f32 = cluster.iter().map(|c| c.score).sum();
        let mut merged = best.clone();
        merged.bbox = [0.0; 4];
        merged.keypoints = [[0.0; 2]; 6];
        for c in &cluster {
            let wgt = c.score / total;
            for k in 0..4 {
                merged.bbox[k] += c.bbox[k] * wgt;
            }
            for k in 0..6 {
                merged.keypoints[k][0] += c.keypoints[k][0] * wgt;
                merged.keypoints[k][1] += c.keypoints[k][1] * wgt;
            }
        }
        out.push(merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout_matches_mediapipe() {
        let a = anchors(128);
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], [1.5 / 8.0, 0.5 / 8.0]);
    }

    #[test]
    fn nms_merges_overlaps_and_keeps_separate_faces() {
        let d = |score, x: f32| Detection {
            score,
            bbox: [x, 0.0, x + 10.0, 10.0],
            keypoints: [[x, 0.0]; 6],
        };
        let out = weighted_nms(vec![d(0.6, 1.0), d(0.9, 0.0), d(0.8, 100.0)]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].score, 0.9);
        assert!((out[0].bbox[0] - 0.6 / 1.5).abs() < 1e-5);
        assert_eq!(out[1].bbox[0], 100.0);
    }
}
