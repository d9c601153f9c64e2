//! Session assembly: everything a session's media pipeline is built from,
//! in one place. The avatar's stored files (the normalised portrait and
//! its face record, both encrypted) are read and decoded, the animation
//! rig is built, the AI labels are laid out, the playback buffer and voice
//! lane are made, and the media thread starts — blocking work, run off the
//! async runtime.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::animate::AnimatedFace;
use super::label::VisibleLabel;
use super::media::{AudioInput, Labels, MediaConfig, MediaPipeline};
use super::playback::{Playback, PlaybackEvent};
use super::voice::VoiceInput;
use crate::config::{LabelConfig, VoiceConfig};
use crate::engines::Engines;
use crate::engines::face::{FaceEngine, FaceError, FaceRecord};
use crate::engines::portrait;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::files::{FACE_FILE, FileStore, PORTRAIT_FILE, ReadError};
use crate::store::{Avatar, ImageFormat};

/// Up to 30 s of synthesised speech waits in the playback buffer.
const PLAYBACK_SAMPLES: usize = 30 * 48_000;
/// Playback events waiting for the session actor, at most.
const PLAYBACK_EVENTS: usize = 1024;

/// The settings a session's pipeline is assembled with.
pub struct Assembly<'a> {
    pub labels: &'a LabelConfig,
    pub voice: &'a VoiceConfig,
    pub media: MediaConfig,
    /// The session's language (the visible label's wording follows it).
    pub language: &'a str,
}

/// Builds and starts the media pipeline of session `session_id` showing
/// `avatar`; returns it with the receiver of its playback events.
pub async fn assemble(
    files: &FileStore,
    engines: &Engines,
    settings: &Assembly<'_>,
    avatar: &Avatar,
    session_id: &str,
) -> ApiResult<(Arc<MediaPipeline>, mpsc::Receiver<PlaybackEvent>)> {
    let config = settings.media;
    let labels = labels(settings, session_id);
    let playback = Arc::new(Playback::new(PLAYBACK_SAMPLES));
    let (events, playback_events) = mpsc::channel(PLAYBACK_EVENTS);
    let ms = |ms: u32| ms as usize * 48;
    let audio_in = AudioInput {
        playback: playback.clone(),
        voice: Arc::new(VoiceInput::new(
            ms(settings.voice.max_buffer_ms),
            ms(settings.voice.prebuffer_ms),
            settings.voice.barge_in,
        )),
        events,
        lipsync: engines.lipsync.clone(),
    };
    let name = session_id[ids::SESSION.len()..][..8].to_owned();
    let seed = seed_of(session_id);
    let files = files.clone();
    let face = engines.face.clone();
    let (avatar_id, format) = (avatar.id.clone(), avatar.image_format);
    let started = tokio::task::spawn_blocking(move || -> ApiResult<MediaPipeline> {
        let (rgb, record) = load_face(&files, &face, &avatar_id, format)?;
        let rig = record.rig(&rgb, config.width, config.height);
        let frames = AnimatedFace::new(rig, playback, seed);
        MediaPipeline::start(config, frames, labels, audio_in, &name).map_err(|e| {
            tracing::error!(error = %e, "cannot start media");
            ApiError::Unavailable(format!("the media pipeline could not start: {e}"))
        })
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the media pipeline could not start: {e}")))??;
    Ok((Arc::new(started), playback_events))
}

/// The session's AI labels: the visible badge in its language (when on and
/// when it fits the frame) and the SEI label.
fn labels(settings: &Assembly<'_>, session_id: &str) -> Labels {
    let lc = settings.labels;
    let (width, height) = (settings.media.width, settings.media.height);
    let visible = lc.visible.then(|| {
        let text = if settings.language == "zh-CN" {
            &lc.text_zh
        } else {
            &lc.text_en
        };
        let badge = VisibleLabel::new(text, lc.corner, width as usize, height as usize);
        if badge.is_none() {
            tracing::warn!("the AI label does not fit a {width}x{height} frame");
        }
        badge
    });
    Labels {
        visible: visible.flatten(),
        sei_session: lc.sei.then(|| session_id.to_owned()),
    }
}

/// A session's idle motion differs from every other's: seeded by its id
/// (FNV-1a).
fn seed_of(session_id: &str) -> u64 {
    session_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The avatar's portrait (decoded) and its face record. Blocking.
fn load_face(
    files: &FileStore,
    face: &FaceEngine,
    avatar_id: &str,
    format: ImageFormat,
) -> ApiResult<(image::RgbImage, FaceRecord)> {
    // Avatars enrolled before minimisation have only their original.
    let fallback = format!("original.{}", format.as_str());
    let bytes = match files.read_avatar_file(avatar_id, PORTRAIT_FILE) {
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            files.read_avatar_file(avatar_id, &fallback)
        }
        other => other,
    };
    let bytes = bytes.map_err(|e| {
        tracing::error!(avatar = %avatar_id, error = %e, "cannot read portrait");
        match e {
            ReadError::Crypto(e) => ApiError::FailedPrecondition(format!(
                "the portrait of avatar {avatar_id} cannot be decrypted ({e})"
            )),
            ReadError::Io(_) => ApiError::FailedPrecondition(format!(
                "the portrait of avatar {avatar_id} is missing from storage; enroll it again"
            )),
        }
    })?;
    let img = portrait::decode(&bytes).map_err(|e| {
        ApiError::FailedPrecondition(format!("avatar {avatar_id}: {e}; enroll it again"))
    })?;
    let rgb = img.to_rgb8();
    // The face found at enrollment; avatars enrolled before face analysis
    // existed are analysed now.
    let record = match files.read_avatar_file(avatar_id, FACE_FILE) {
        Ok(bytes) => FaceRecord::from_json(&bytes),
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => face.analyze(&rgb),
        Err(e) => Err(FaceError::Record(e.to_string())),
    }
    .map_err(|e| {
        ApiError::FailedPrecondition(format!(
            "avatar {avatar_id} cannot be animated: {e}; enroll it again"
        ))
    })?;
    Ok((rgb, record))
}
