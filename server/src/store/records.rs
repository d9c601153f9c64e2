//! What the records hold: tenants, callers, avatars with their consent,
//! sessions and audit entries, as plain types shared by every backend.

use super::error::{StoreError, StoreResult};
use std::collections::BTreeMap;

/// A node gone this long is forgotten (its sessions were closed long ago).
pub const NODE_FORGET_MS: Millis = 24 * 3600 * 1000;

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

/// Who is calling: resolved from an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant_id: String,
    pub key_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
        }
    }
    pub fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "jpeg" => Ok(Self::Jpeg),
            "png" => Ok(Self::Png),
            "webp" => Ok(Self::Webp),
            o => Err(StoreError::Corrupt(format!("unknown image format {o:?}"))),
        }
    }
    /// True when `head` (the first bytes of a file) has this format's magic.
    pub fn matches_magic(self, head: &[u8]) -> bool {
        match self {
            Self::Jpeg => head.starts_with(&[0xFF, 0xD8, 0xFF]),
            Self::Png => head.starts_with(b"\x89PNG\r\n\x1a\n"),
            Self::Webp => head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvatarState {
    Processing,
    Ready,
    Failed,
}

impl AvatarState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "processing" => Ok(Self::Processing),
            "ready" => Ok(Self::Ready),
            "failed" => Ok(Self::Failed),
            o => Err(StoreError::Corrupt(format!("unknown avatar state {o:?}"))),
        }
    }
}

/// A consent record, validated at the API edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub id: String,
    pub uploader: String,
    pub subject_name: String,
    pub subject_consented: bool,
    pub subject_is_minor: bool,
    pub guardian_name: String,
    pub purpose: String,
    pub consented_at: Millis,
    pub policy_version: String,
    pub recorded_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Avatar {
    pub id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub state: AvatarState,
    pub failure_reason: String,
    pub image_format: ImageFormat,
    pub image_bytes: u64,
    pub image_sha256: String,
    pub consent: Consent,
    pub labels: BTreeMap<String, String>,
    pub created_at: Millis,
    /// The uploaded file was kept beside the normalised portrait.
    pub original_kept: bool,
    pub face: FaceSummary,
}

/// What face detection found at enrollment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaceSummary {
    /// Faces in the photo (the largest is the avatar's).
    pub faces_found: u32,
    /// The detector's confidence in the chosen face (0..1).
    pub score: f32,
}

/// Persisted metadata of a session (live state lives in the session actor).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: String,
    pub tenant_id: String,
    pub avatar_id: String,
    pub language: String,
    pub voice_id: String,
    pub speed: f32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    pub idle_timeout_secs: u32,
    pub labels: BTreeMap<String, String>,
    pub created_at: Millis,
    pub closed_at: Option<Millis>,
    /// `huashen.v1.CloseReason` number, once closed.
    pub close_reason: Option<i32>,
    /// The server process (node) that runs it. Set by the backend that
    /// inserts it (its own node); `None` for records older than nodes.
    pub node_id: Option<String>,
}

/// A recording of a live session; its media is an encrypted file of the
/// file store, written as it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    pub tenant_id: String,
    pub session_id: String,
    /// The avatar (the depicted person) the session animated.
    pub avatar_id: String,
    pub started_at: Millis,
    /// When it stopped; `None` while it is being written.
    pub ended_at: Option<Millis>,
    /// Media bytes and media time written so far (updated as it grows).
    pub bytes: u64,
    pub duration_ms: u64,
}

/// One append-only audit entry. Carries identifiers, never personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Millis,
    pub tenant_id: Option<String>,
    /// API key id, or `system` / `cli`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

impl AuditEntry {
    pub fn new(
        principal: Option<&Principal>,
        action: &str,
        target: impl Into<String>,
        outcome: &str,
    ) -> Self {
        Self {
            at: now_ms(),
            tenant_id: principal.map(|p| p.tenant_id.clone()),
            actor: principal
                .map(|p| p.key_id.clone())
                .unwrap_or_else(|| "system".into()),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
        }
    }
}

// What the SQL backends share: labels stored as JSON text, and the column
// lists of the avatar (joined with its consent) and session reads.

pub(super) fn labels_to_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

pub(super) fn labels_from_json(s: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))
}

pub(super) const AVATAR_COLS: &str = "a.id, a.tenant_id, a.display_name, a.state, a.failure_reason, a.image_format, \
     a.image_bytes, a.image_sha256, a.labels, a.created_at, c.id, c.uploader, c.subject_name, \
     c.subject_consented, c.subject_is_minor, c.guardian_name, c.purpose, c.consented_at, \
     c.policy_version, c.recorded_at, a.original_kept, a.faces_found, a.face_score";

pub(super) const SESSION_COLS: &str = "id, tenant_id, avatar_id, language, voice_id, speed, width, height, fps, \
     video_bitrate_kbps, audio_bitrate_kbps, idle_timeout_secs, labels, created_at, closed_at, close_reason";
