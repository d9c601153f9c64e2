//! Options of the media side: models and where they run, speech, the
//! host's voice, faces, the AI label and WebRTC. Plain data; each section
//! checks its own values (`validate`), the layers that use them read them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What text speech does while the host's voice is on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BargeIn {
    /// The voice cuts off text being spoken and drops what was queued;
    /// text sent while the host talks waits until the voice stops.
    #[default]
    Interrupt,
    /// Text pauses (mid-word if need be) while the host talks and resumes
    /// after.
    Queue,
    /// Both play at once, mixed.
    Mix,
}

/// Where the visible AI label sits in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corner {
    TopLeft,
    TopRight,
    BottomLeft,
    BottomRight,
}

/// Where the models run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// `cpu`, `cuda:N` or `auto`: CUDA when this build has it (feature
    /// `cuda`) and the machine has a working NVIDIA driver, else the CPU.
    /// The speech models (TTS) run there; face analysis at enrollment, the
    /// renderer and the encoders run on the CPU. `serve --device` overrides.
    pub device: String,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            device: "auto".into(),
        }
    }
}

/// The host's live voice (PushAudio).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoiceConfig {
    /// What text speech does while the host talks: "interrupt" (cut it and
    /// drop what was queued), "queue" (pause it, resume after) or "mix".
    pub barge_in: BargeIn,
    /// Voice buffered before playback starts (and after an underrun),
    /// absorbing the client's timing jitter. Milliseconds, 20..1000.
    pub prebuffer_ms: u32,
    /// Most voice held waiting to play; a client pushing faster than real
    /// time waits. Milliseconds, at least twice `prebuffer_ms`, up to 10 s.
    pub max_buffer_ms: u32,
}

impl Default for VoiceConfig {
    fn default() -> Self {
        Self {
            barge_in: BargeIn::Interrupt,
            prebuffer_ms: 60,
            max_buffer_ms: 2000,
        }
    }
}

/// Text-to-speech (see docs/BENCHMARKS.md for its cost).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    /// Where `scripts/fetch-models.sh` put the model files.
    pub models_dir: PathBuf,
    /// Synthesis threads shared by all sessions (each clause runs on one).
    pub workers: usize,
    /// Output gain applied before a soft limiter (the voice peaks near 0.5).
    pub gain: f32,
    /// Each voice's vocoder runs on one batched worker: chunks of clauses
    /// being synthesised at the same time run together, at most this many
    /// (1 = no batching).
    pub batch_slots: usize,
    /// How long a chunk waits for others to share its batch (never when
    /// it is the only one in flight), milliseconds.
    pub batch_wait_ms: u64,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("models"),
            workers: 2,
            gain: 1.6,
            batch_slots: 8,
            batch_wait_ms: 3,
        }
    }
}

/// Face detection, landmarks and animation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaceConfig {
    /// Where `scripts/fetch-models.sh` put the model files (`face/` inside).
    pub models_dir: PathBuf,
}

impl Default for FaceConfig {
    fn default() -> Self {
        Self {
            models_dir: PathBuf::from("models"),
        }
    }
}

/// Labelling output as AI-generated (on by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelConfig {
    /// Burn a visible badge into every frame.
    pub visible: bool,
    /// Badge wording for Mandarin sessions and for the others.
    pub text_zh: String,
    pub text_en: String,
    /// Corner: top-left, top-right, bottom-left or bottom-right.
    pub corner: Corner,
    /// Put the machine-readable label (H.264 SEI user data) in the stream.
    pub sei: bool,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            visible: true,
            text_zh: "AI生成".into(),
            text_en: "AI-generated".into(),
            corner: Corner::TopRight,
            sei: true,
        }
    }
}

/// How viewers connect over WebRTC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    /// Local address for media (UDP). 127.0.0.1 serves browsers on this
    /// machine; use the LAN address, or 0.0.0.0 for every interface.
    pub bind_ip: std::net::IpAddr,
    /// UDP port range for viewer connections (one port each); 0 and 0 pick
    /// any free port.
    pub port_min: u16,
    pub port_max: u16,
    /// Public addresses to advertise instead of the local ones (1:1 NAT,
    /// e.g. a cloud VM's public IP).
    pub nat_1to1_ips: Vec<String>,
    /// STUN/TURN servers used by the server and offered to viewers.
    pub ice_servers: Vec<IceServerConfig>,
    /// Viewers one session serves at most.
    pub max_viewers_per_session: usize,
    /// A viewer whose connection is not up within this time is dropped.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            bind_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            port_min: 0,
            port_max: 0,
            nat_1to1_ips: vec![],
            ice_servers: vec![],
            max_viewers_per_session: 200,
            connect_timeout: Duration::from_secs(15),
        }
    }
}

/// A STUN or TURN server. TURN takes either a fixed `username` and
/// `credential`, or (better) the `shared_secret` of the TURN REST scheme
/// that coturn implements (`use-auth-secret`, `static-auth-secret`): each
/// viewer then gets credentials of its own that expire after
/// `credential_ttl`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceServerConfig {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: super::service::Secret,
    pub shared_secret: super::service::Secret,
    #[serde(with = "humantime_serde")]
    pub credential_ttl: Duration,
}

impl Default for IceServerConfig {
    fn default() -> Self {
        Self {
            urls: vec![],
            username: String::new(),
            credential: Default::default(),
            shared_secret: Default::default(),
            credential_ttl: Duration::from_secs(12 * 3600),
        }
    }
}

impl ModelsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        huashen_inference::device::parse(&self.device)
            .map_err(|e| format!("models.device: {e}"))?;
        Ok(())
    }
}

impl VoiceConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(20..=1000).contains(&self.prebuffer_ms) {
            return Err("voice.prebuffer_ms must be 20..1000".into());
        }
        if self.max_buffer_ms < 2 * self.prebuffer_ms || self.max_buffer_ms > 10_000 {
            return Err(
                "voice.max_buffer_ms must be at least twice voice.prebuffer_ms and at most 10000"
                    .into(),
            );
        }
        Ok(())
    }
}

impl SpeechConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !(1..=64).contains(&self.workers) {
            return Err("speech.workers must be 1..64".into());
        }
        if !(1..=64).contains(&self.batch_slots) {
            return Err("speech.batch_slots must be 1..64".into());
        }
        if self.batch_wait_ms > 50 {
            return Err("speech.batch_wait_ms must be at most 50 (it delays every chunk)".into());
        }
        if !(self.gain > 0.0 && self.gain <= 8.0) {
            return Err("speech.gain must be in (0, 8]".into());
        }
        Ok(())
    }
}

impl LabelConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.visible && (self.text_zh.trim().is_empty() || self.text_en.trim().is_empty()) {
            return Err(
                "label.text_zh and label.text_en must not be empty while label.visible is on"
                    .into(),
            );
        }
        if self.text_zh.chars().count() > 40 || self.text_en.chars().count() > 40 {
            return Err("label.text_zh and label.text_en are at most 40 characters".into());
        }
        Ok(())
    }
}

impl WebrtcConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if (self.port_min == 0) != (self.port_max == 0) || self.port_min > self.port_max {
            return Err(
                "webrtc.port_min and webrtc.port_max must both be 0, or form a range min <= max"
                    .into(),
            );
        }
        if self.max_viewers_per_session == 0 {
            return Err("webrtc.max_viewers_per_session must be at least 1".into());
        }
        for ip in &self.nat_1to1_ips {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("webrtc.nat_1to1_ips: {ip:?} is not an IP address"));
            }
        }
        for s in &self.ice_servers {
            let scheme_ok = |u: &String| {
                u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:")
            };
            if s.urls.is_empty() || !s.urls.iter().all(scheme_ok) {
                return Err(
                    "webrtc.ice_servers: every server needs urls starting with stun:, turn: or turns:"
                        .into(),
                );
            }
            if !s.shared_secret.0.is_empty() && !s.credential.0.is_empty() {
                return Err(
                    "webrtc.ice_servers: give a shared_secret or a credential, not both".into(),
                );
            }
            if s.credential_ttl < Duration::from_secs(60) {
                return Err("webrtc.ice_servers: credential_ttl must be at least 1m".into());
            }
        }
        Ok(())
    }
}
