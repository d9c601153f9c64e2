//! Face models: detection (BlazeFace) and the 468-point mesh, both MediaPipe
//! networks read from their `.tflite` files and run on burn.

pub mod animate;
pub mod detect;
pub mod graph;
pub mod lipsync;
pub mod logmel;
pub mod mesh;
pub mod render;
pub mod rig;
pub mod sample;

pub use detect::{Detection, FaceDetector};
pub use graph::GraphError;
pub use mesh::{FaceMesh, Landmarks, NUM_LANDMARKS, Roi};

/// File names inside the models directory (`models/face/`).
pub const DETECTOR_FILE: &str = "face_detection_short_range.tflite";
pub const MESH_FILE: &str = "face_landmark.tflite";

use std::path::Path;

use burn::prelude::*;
use image::RgbImage;

/// One face found in a picture.
#[derive(Clone, Debug)]
pub struct Face {
    pub detection: Detection,
    pub landmarks: Landmarks,
}

/// Detector and mesh together: the enrollment pipeline's eyes.
pub struct FaceModels<B: Backend> {
    pub detector: FaceDetector<B>,
    pub mesh: FaceMesh<B>,
}

/// Mesh passes per face: the first from the detector's box, then each from
/// the previous mesh (the detector's keypoints are coarse on small faces).
const MESH_PASSES: usize = 3;

impl<B: Backend> FaceModels<B> {
    /// Loads both networks from `dir` (the `models/face` directory).
    pub fn open(dir: &Path, device: &B::Device) -> Result<Self, GraphError> {
        Ok(Self {
            detector: FaceDetector::open(&dir.join(DETECTOR_FILE), device)?,
            mesh: FaceMesh::open(&dir.join(MESH_FILE), device)?,
        })
    }

    /// Every face in `img` with its mesh, largest first. Each detection is
    /// refined by detecting again in a square around it (so the face fills
    /// the detector's input), then meshed in [`MESH_PASSES`] passes.
    pub fn find_faces(&self, img: &RgbImage) -> Result<Vec<Face>, GraphError> {
        let mut faces = Vec::new();
        for coarse in self.detector.detect(img)? {
            let side = coarse.width().max(coarse.height()) * 2.5;
            let c = [
                (coarse.bbox[0] + coarse.bbox[2]) / 2.0,
                (coarse.bbox[1] + coarse.bbox[3]) / 2.0,
            ];
            let fine = self
                .detector
                .detect_in(img, [c[0] - side / 2.0, c[1] - side / 2.0], side)?
                .into_iter()
                .min_by(|a, b| {
                    let d = |x: &Detection| {
                        ((x.bbox[0] + x.bbox[2]) / 2.0 - c[0])
                            .hypot((x.bbox[1] + x.bbox[3]) / 2.0 - c[1])
                    };
                    d(a).total_cmp(&d(b))
                })
                .filter(|f| f.iou_with(&coarse) > 0.3)
                .unwrap_or(coarse);
            let mut landmarks = self.mesh.landmarks(img, &Roi::from_detection(&fine))?;
            for _ in 1..MESH_PASSES {
                if landmarks.face_score < 0.5 {
                    break;
                }
                landmarks = self
                    .mesh
                    .landmarks(img, &Roi::from_landmarks(&landmarks.points))?;
            }
            faces.push(Face {
                detection: fine,
                landmarks,
            });
        }
        faces.sort_by(|a, b| {
            (b.detection.width() * b.detection.height())
                .total_cmp(&(a.detection.width() * a.detection.height()))
        });
        Ok(faces)
    }
}
