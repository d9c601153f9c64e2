//! Typed configuration: a TOML file (optional) overlaid with environment
//! variables, with defaults that let `huashen serve` run with no file at all.
//!
//! Environment overrides use the prefix `HUASHEN_` and `__` between levels,
//! e.g. `HUASHEN_SERVER__LISTEN=0.0.0.0:8700` or
//! `HUASHEN_LIMITS__MAX_SESSIONS=200`. Values are parsed as TOML scalars
//! (numbers, booleans, quoted strings) and fall back to plain strings.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "HUASHEN_";

/// Environment variables with the prefix that are not config keys.
const ENV_NOT_CONFIG: &[&str] = &["HUASHEN_CONFIG", "HUASHEN_LOG", "HUASHEN_API_KEY"];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    pub sessions: SessionsConfig,
    pub auth: AuthConfig,
    pub webrtc: WebrtcConfig,
    pub label: LabelConfig,
    pub retention: RetentionConfig,
    pub moderation: ModerationConfig,
    pub speech: SpeechConfig,
    pub voice: VoiceConfig,
    pub face: FaceConfig,
    pub models: ModelsConfig,
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
    pub barge_in: crate::pipeline::voice::BargeIn,
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
            barge_in: crate::pipeline::voice::BargeIn::Interrupt,
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

/// Moderation of what sessions would speak (see `privacy::moderation`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    pub enabled: bool,
    /// Include the built-in blocklists (gambling, fraud, drugs, weapons).
    pub builtin: bool,
    /// More blocked terms by category, e.g. `brand = ["竞品店铺"]`.
    pub blocklist: std::collections::BTreeMap<String, Vec<String>>,
    /// Optional moderation service (`http://…`), asked about every clause
    /// that passes the blocklists: POST JSON `{"text", "language",
    /// "session_id"}`, answering `{"allow": bool, "category": "…"}`. Note
    /// that it receives the text to be spoken.
    pub webhook_url: String,
    /// How long to wait for the webhook.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Speak when the webhook cannot be reached (default: refuse).
    pub webhook_fail_open: bool,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            builtin: true,
            blocklist: Default::default(),
            webhook_url: String::new(),
            webhook_timeout: Duration::from_millis(800),
            webhook_fail_open: false,
        }
    }
}

/// How long personal data and records are kept (see docs/PRIVACY.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Audit log entries (operational records) are deleted after this.
    #[serde(with = "humantime_serde")]
    pub audit: Duration,
    /// Metadata of closed sessions is deleted this long after they close.
    #[serde(with = "humantime_serde")]
    pub session_metadata: Duration,
    /// How often the purge runs.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            audit: Duration::from_secs(180 * 86_400),
            session_metadata: Duration::from_secs(30 * 86_400),
            purge_interval: Duration::from_secs(3600),
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
    pub corner: crate::pipeline::label::Corner,
    /// Put the machine-readable label (H.264 SEI user data) in the stream.
    pub sei: bool,
}

impl Default for LabelConfig {
    fn default() -> Self {
        Self {
            visible: true,
            text_zh: "AI生成".into(),
            text_en: "AI-generated".into(),
            corner: crate::pipeline::label::Corner::TopRight,
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceServerConfig {
    pub urls: Vec<String>,
    pub username: String,
    pub credential: String,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address for gRPC, gRPC-Web and HTTP (one port). Port 0 picks a free
    /// port; the bound address is logged and printed.
    pub listen: SocketAddr,
    /// How long shutdown waits for sessions to drain before forcing them.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// With several servers on one database (`storage.database_url`): the
    /// base URL clients reach this server at (`http://10.0.0.5:8700`). The
    /// other servers redirect WHEP/WHIP offers for this server's sessions
    /// here and name it in their errors. Empty: they name the node only.
    pub advertise_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory holding the database and stored files. Created if missing.
    pub data_dir: PathBuf,
    /// Keys for encryption at rest, by id: base64 of 32 random bytes each
    /// (`openssl rand -base64 32`). Empty: a key is generated on first start
    /// and kept in `<data_dir>/keys/local.key` (mode 0600) — fine for one
    /// machine, but set keys here (or by environment) in production so the
    /// key does not live beside the data.
    pub encryption_keys: std::collections::BTreeMap<String, Secret>,
    /// Id of the key new objects are sealed with; old objects open with the
    /// key that sealed them (rotation: add a key, make it active, keep the
    /// old one).
    pub active_key: String,
    /// PostgreSQL for the records instead of the embedded SQLite, as a
    /// libpq-style URL (`postgres://user:password@host:5432/huashen`,
    /// `?sslmode=disable|prefer|require`). Empty: SQLite in `data_dir`.
    /// Several servers may share one database; they must then share
    /// `data_dir` (a shared volume) and `encryption_keys` too. Never printed.
    pub database_url: Secret,
    /// Connections this server keeps open to PostgreSQL, at most.
    pub database_pool: usize,
    /// How long a call waits for a free (or new) PostgreSQL connection
    /// before it fails with UNAVAILABLE.
    #[serde(with = "humantime_serde")]
    pub database_timeout: Duration,
    /// PEM file of extra certificate authorities for PostgreSQL over TLS
    /// (besides the public web roots), e.g. a cloud provider's CA.
    pub database_ca_file: Option<PathBuf>,
    /// A server that has not marked itself alive for this long is taken
    /// for dead by the others sharing the database, which then close the
    /// sessions it left open. It marks itself alive every third of this.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
}

/// A secret value from the config; never printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open sessions on this server at most.
    pub max_sessions: usize,
    /// Open sessions per tenant at most.
    pub max_sessions_per_tenant: usize,
    /// Largest accepted portrait upload, in bytes.
    pub max_image_bytes: u64,
    /// Largest text one Speak call may carry, in bytes.
    pub max_speak_bytes: u64,
    /// Commands queued per session before callers wait (backpressure).
    pub session_queue: usize,
    /// Events buffered per session for slow watchers before they lag.
    pub event_buffer: usize,
    /// CPU cores the sessions (media threads and speech workers, measured)
    /// may use; a new session that would not fit is refused with
    /// RESOURCE_EXHAUSTED. 0 = 85 % of the cores of this machine.
    pub cpu_budget: f64,
    /// What a session is assumed to cost until one has been measured, in
    /// cores.
    pub session_cost: f64,
}

impl LimitsConfig {
    /// `cpu_budget`, with 0 resolved to 85 % of this machine's cores.
    pub fn cpu_budget_cores(&self) -> f64 {
        if self.cpu_budget > 0.0 {
            self.cpu_budget
        } else {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            cores as f64 * 0.85
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// A session with no speech input and no viewers for this long closes.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest idle timeout a client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_idle_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// On a server with no tenant yet, create a `dev` tenant and key, keep the
    /// key in `<data_dir>/dev-api-key` (mode 0600) and print it at start.
    /// Turn off in production and create tenants with `huashen tenant create`.
    pub bootstrap_dev_tenant: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            shutdown_grace: Duration::from_secs(10),
            advertise_url: String::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".huashen"),
            encryption_keys: Default::default(),
            active_key: String::new(),
            database_url: Secret(String::new()),
            database_pool: 8,
            database_timeout: Duration::from_secs(10),
            database_ca_file: None,
            node_ttl: Duration::from_secs(30),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 64,
            max_sessions_per_tenant: 16,
            max_image_bytes: 20 * 1024 * 1024,
            max_speak_bytes: 1024 * 1024,
            session_queue: 64,
            event_buffer: 1024,
            cpu_budget: 0.0,
            session_cost: 0.25,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            max_idle_timeout: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            bootstrap_dev_tenant: true,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("environment variable {var}: {msg}")]
    Env { var: String, msg: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path` (if given) and applies environment overrides from `env`.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|source| ConfigError::Parse {
                        path: p.to_owned(),
                        source,
                    })?
            }
            None => toml::Table::new(),
        };
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&k.as_str()))
            .collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut table, &var, &value)?;
        }
        let cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The keyring for encryption at rest: the configured keys, or the
    /// generated local key when none are configured.
    pub fn keyring(&self) -> Result<crate::store::crypto::Keyring, ConfigError> {
        use crate::store::crypto::Keyring;
        let s = &self.storage;
        let r = if s.encryption_keys.is_empty() {
            Keyring::local(&s.data_dir)
        } else {
            let keys = s
                .encryption_keys
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            Keyring::new(&keys, &s.active_key)
        };
        r.map_err(|e| ConfigError::Invalid(format!("storage encryption: {e}")))
    }

    /// Checks relations between values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if let Err(e) = huashen_inference::device::parse(&self.models.device) {
            return bad(&format!("models.device: {e}"));
        }
        if !(20..=1000).contains(&self.voice.prebuffer_ms) {
            return bad("voice.prebuffer_ms must be 20..1000");
        }
        if self.voice.max_buffer_ms < 2 * self.voice.prebuffer_ms
            || self.voice.max_buffer_ms > 10_000
        {
            return bad(
                "voice.max_buffer_ms must be at least twice voice.prebuffer_ms and at most 10000",
            );
        }
        if !(1..=64).contains(&self.speech.workers) {
            return bad("speech.workers must be 1..64");
        }
        if !(1..=64).contains(&self.speech.batch_slots) {
            return bad("speech.batch_slots must be 1..64");
        }
        if self.speech.batch_wait_ms > 50 {
            return bad("speech.batch_wait_ms must be at most 50 (it delays every chunk)");
        }
        if !(self.speech.gain > 0.0 && self.speech.gain <= 8.0) {
            return bad("speech.gain must be in (0, 8]");
        }
        if !(self.limits.cpu_budget >= 0.0 && self.limits.cpu_budget <= 4096.0) {
            return bad("limits.cpu_budget must be 0 (auto) or a number of cores up to 4096");
        }
        if !(self.limits.session_cost > 0.0 && self.limits.session_cost <= 64.0) {
            return bad("limits.session_cost must be more than 0 and at most 64 cores");
        }
        if self.limits.max_sessions == 0 {
            return bad("limits.max_sessions must be at least 1");
        }
        if self.limits.max_sessions_per_tenant == 0 {
            return bad("limits.max_sessions_per_tenant must be at least 1");
        }
        if self.limits.max_image_bytes < 1024 {
            return bad("limits.max_image_bytes must be at least 1024");
        }
        if self.limits.max_speak_bytes < 4096 {
            return bad("limits.max_speak_bytes must be at least 4096");
        }
        if self.limits.session_queue == 0 || self.limits.event_buffer == 0 {
            return bad("limits.session_queue and limits.event_buffer must be at least 1");
        }
        if self.sessions.idle_timeout.is_zero() {
            return bad("sessions.idle_timeout must be positive");
        }
        if self.sessions.max_idle_timeout < self.sessions.idle_timeout {
            return bad("sessions.max_idle_timeout must be at least sessions.idle_timeout");
        }
        let w = &self.webrtc;
        if (w.port_min == 0) != (w.port_max == 0) || w.port_min > w.port_max {
            return bad(
                "webrtc.port_min and webrtc.port_max must both be 0, or form a range min <= max",
            );
        }
        if w.max_viewers_per_session == 0 {
            return bad("webrtc.max_viewers_per_session must be at least 1");
        }
        for ip in &w.nat_1to1_ips {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "webrtc.nat_1to1_ips: {ip:?} is not an IP address"
                )));
            }
        }
        for s in &w.ice_servers {
            if s.urls.is_empty()
                || s.urls.iter().any(|u| {
                    !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:"))
                })
            {
                return bad(
                    "webrtc.ice_servers: every server needs urls starting with stun:, turn: or turns:",
                );
            }
        }
        let url = self.storage.database_url.0.trim();
        if !url.is_empty() {
            if let Err(e) = url.parse::<postgres::Config>() {
                return Err(ConfigError::Invalid(format!(
                    "storage.database_url is not PostgreSQL connection settings (postgres://user:password@host:5432/db, or host=… user=… dbname=…): {e}"
                )));
            }
            if self.storage.database_pool == 0 {
                return bad("storage.database_pool must be at least 1");
            }
        }
        let adv = self.server.advertise_url.trim();
        if !adv.is_empty() {
            let ok = (adv.starts_with("http://") || adv.starts_with("https://"))
                && adv.parse::<http::Uri>().is_ok_and(|u| {
                    u.host().is_some()
                        && u.query().is_none()
                        && u.path().trim_end_matches('/').is_empty()
                });
            if !ok {
                return bad(
                    "server.advertise_url must be an http:// or https:// base URL without a path (http://10.0.0.5:8700)",
                );
            }
        }
        if self.storage.node_ttl < Duration::from_secs(1) {
            return bad("storage.node_ttl must be at least 1s");
        }
        if !self.storage.encryption_keys.is_empty() {
            if !self
                .storage
                .encryption_keys
                .contains_key(&self.storage.active_key)
            {
                return bad("storage.active_key must name one of storage.encryption_keys");
            }
            let keys = self
                .storage
                .encryption_keys
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect();
            crate::store::crypto::Keyring::new(&keys, &self.storage.active_key)
                .map_err(|e| ConfigError::Invalid(format!("storage encryption: {e}")))?;
        }
        if self.label.visible
            && (self.label.text_zh.trim().is_empty() || self.label.text_en.trim().is_empty())
        {
            return bad(
                "label.text_zh and label.text_en must not be empty while label.visible is on",
            );
        }
        if self.label.text_zh.chars().count() > 40 || self.label.text_en.chars().count() > 40 {
            return bad("label.text_zh and label.text_en are at most 40 characters");
        }
        if self.retention.audit.is_zero()
            || self.retention.session_metadata.is_zero()
            || self.retention.purge_interval < Duration::from_secs(1)
        {
            return bad(
                "retention periods must be positive and retention.purge_interval at least 1s",
            );
        }
        if !self.moderation.webhook_url.is_empty() {
            let ok = self
                .moderation
                .webhook_url
                .parse::<http::Uri>()
                .map(|u| u.scheme_str() == Some("http") && u.host().is_some())
                .unwrap_or(false);
            if !ok {
                return bad("moderation.webhook_url must be an http:// URL");
            }
        }
        for (cat, terms) in &self.moderation.blocklist {
            let ok_cat = !cat.is_empty()
                && cat.len() <= 32
                && cat
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok_cat {
                return Err(ConfigError::Invalid(format!(
                    "moderation.blocklist: category {cat:?} must be 1..32 of a-z, 0-9, _"
                )));
            }
            if terms
                .iter()
                .any(|t| crate::privacy::moderation::normalise(t).is_empty())
            {
                return Err(ConfigError::Invalid(format!(
                    "moderation.blocklist.{cat}: a term has no letters or digits"
                )));
            }
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return bad("storage.data_dir must not be empty");
        }
        Ok(())
    }
}

fn apply_env(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            msg: "expected HUASHEN_<SECTION>__<KEY>".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("path has at least one element");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.to_owned(),
            msg: format!("`{p}` is not a section"),
        })?;
    }
    cur.insert(last.clone(), parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.server.listen.port(), 8700);
        assert!(c.auth.bootstrap_dev_tenant);
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.toml");
        std::fs::write(
            &p,
            "[limits]\nmax_sessions = 5\n[sessions]\nidle_timeout = \"30s\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&p),
            env(&[
                ("HUASHEN_LIMITS__MAX_SESSIONS", "7"),
                ("HUASHEN_SERVER__LISTEN", "0.0.0.0:9000"),
                ("HUASHEN_LOG", "debug"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.max_sessions, 7);
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.server.listen.port(), 9000);
    }

    #[test]
    fn example_file_matches_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../huashen.example.toml");
        let c = Config::load(Some(&p), env(&[])).unwrap();
        let d = Config::default();
        assert_eq!(format!("{c:?}"), format!("{d:?}"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let e = Config::load(None, env(&[("HUASHEN_LIMITS__MAX_SESIONS", "7")])).unwrap_err();
        assert!(e.to_string().contains("max_sesions"), "{e}");
        let e = Config::load(None, env(&[("HUASHEN_LIMITS__MAX_SESSIONS", "0")])).unwrap_err();
        assert!(e.to_string().contains("at least 1"), "{e}");
        let e = Config::load(None, env(&[("HUASHEN_SERVER__LISTEN", "nope")])).unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
    }

    #[test]
    fn storage_and_advertise_settings_are_checked() {
        for bad in [
            "10.0.0.5:8700",
            "http://h:1/some/path",
            "ftp://h",
            "http://",
        ] {
            let e = Config::load(None, env(&[("HUASHEN_SERVER__ADVERTISE_URL", bad)])).unwrap_err();
            assert!(e.to_string().contains("advertise_url"), "{bad}: {e}");
        }
        for good in ["http://10.0.0.5:8700", "https://node-b.example.com/"] {
            Config::load(None, env(&[("HUASHEN_SERVER__ADVERTISE_URL", good)])).unwrap();
        }
        let e =
            Config::load(None, env(&[("HUASHEN_STORAGE__DATABASE_URL", "nonsense")])).unwrap_err();
        assert!(e.to_string().contains("storage.database_url"), "{e}");
        let url = "postgres://huashen:hunter2@db:5432/huashen?sslmode=require";
        let c = Config::load(None, env(&[("HUASHEN_STORAGE__DATABASE_URL", url)])).unwrap();
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "the URL is never printed"
        );
        let e = Config::load(
            None,
            env(&[
                ("HUASHEN_STORAGE__DATABASE_URL", url),
                ("HUASHEN_STORAGE__DATABASE_POOL", "0"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("database_pool"), "{e}");
    }
}
