//! The face engine, one per process: the face models (detection, 468-point
//! mesh) that analyse a portrait at enrollment, and the stored record of
//! what they found, from which a session builds its animation rig.

use std::path::Path;
use std::sync::Mutex;

use huashen_inference::Cpu;
use huashen_inference::face::render::{Renderer, i420_to_rgb};
use huashen_inference::face::rig::{FaceCheck, FaceParams, Framing, Rig, check_face};
use huashen_inference::face::{FaceModels, NUM_LANDMARKS};
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// The stored result of face analysis (encrypted at rest: it is biometric
/// geometry). Coordinates are pixels of the normalised portrait.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FaceRecord {
    pub version: u32,
    pub faces_found: u32,
    pub score: f32,
    /// xmin, ymin, xmax, ymax of the chosen face.
    pub bbox: [f32; 4],
    /// 468 × (x, y, z).
    pub landmarks: Vec<[f32; 3]>,
}

#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// The photo cannot make an avatar (the message says why).
    #[error("{0}")]
    Unusable(#[from] FaceCheck),
    #[error("face models are not available: {0}")]
    Unavailable(String),
    #[error("face analysis failed: {0}")]
    Model(String),
    #[error("the stored face record is damaged: {0}")]
    Record(String),
}

/// Face models shared by the server (one analysis at a time: enrollment is
/// rare, and this bounds the memory a burst of uploads can take).
pub struct FaceEngine {
    models: Result<Mutex<FaceModels<Cpu>>, String>,
}

impl FaceEngine {
    /// Loads the models from `models_dir/face`; when they are missing the
    /// engine answers every request with the reason.
    pub fn load(models_dir: &Path) -> Self {
        let dir = models_dir.join("face");
        let models = match FaceModels::<Cpu>::open(&dir, &Default::default()) {
            Ok(m) => {
                tracing::info!(dir = %dir.display(), "face models loaded");
                Ok(Mutex::new(m))
            }
            Err(e) => {
                let reason = format!(
                    "{} could not be loaded ({e}); run scripts/fetch-models.sh",
                    dir.display()
                );
                tracing::warn!("{reason}");
                Err(reason)
            }
        };
        Self { models }
    }

    pub fn available(&self) -> Result<(), String> {
        self.models.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// Finds the largest face, checks it can be animated, returns its
    /// record. Blocking (tens of milliseconds): call off the async runtime.
    pub fn analyze(&self, img: &RgbImage) -> Result<FaceRecord, FaceError> {
        let models = self
            .models
            .as_ref()
            .map_err(|r| FaceError::Unavailable(r.clone()))?;
        let faces = models
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .find_faces(img)
            .map_err(|e| FaceError::Model(e.to_string()))?;
        let usable: Vec<_> = faces
            .iter()
            .filter(|f| f.landmarks.face_score > 0.5)
            .collect();
        let face = usable.first().ok_or(FaceCheck::NoFace)?;
        check_face(&face.landmarks.points)?;
        Ok(FaceRecord {
            version: 1,
            faces_found: usable.len() as u32,
            score: face.detection.score,
            bbox: face.detection.bbox,
            landmarks: face.landmarks.points.clone(),
        })
    }
}

impl FaceRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialisable")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, FaceError> {
        let r: FaceRecord =
            serde_json::from_slice(bytes).map_err(|e| FaceError::Record(e.to_string()))?;
        if r.landmarks.len() != NUM_LANDMARKS
            || r.landmarks.iter().flatten().any(|v| !v.is_finite())
        {
            return Err(FaceError::Record("wrong landmark data".into()));
        }
        Ok(r)
    }

    /// The animation rig for a `width`×`height` output.
    pub fn rig(&self, portrait: &RgbImage, width: u32, height: u32) -> Rig {
        let framing = Framing::head_and_shoulders(&self.landmarks, width, height);
        Rig::new(portrait, &self.landmarks, &framing)
    }
}

/// The rest pose of an avatar as an RGB picture (what a still frame of the
/// session looks like, less the idle motion).
pub fn rest_frame(portrait: &RgbImage, record: &FaceRecord, width: u32, height: u32) -> RgbImage {
    let mut r = Renderer::new(record.rig(portrait, width, height));
    let (w, h) = (width as usize, height as usize);
    let (mut y, mut u, mut v) = (vec![0; w * h], vec![0; w * h / 4], vec![0; w * h / 4]);
    r.render(&FaceParams::default(), &mut y, &mut u, &mut v);
    i420_to_rgb(w, h, &y, &u, &v)
}
