//! Options of the service side: listener, storage, limits, sessions,
//! authentication and retention. Plain data; each section
//! checks its own values (`validate`), the layers that use them read them.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// TLS on the listener (gRPC over HTTP/2 and HTTP/1.1, ALPN): the
    /// certificate chain and its private key, PEM. Both or neither. The
    /// files are read again on SIGHUP and when they change (certificate
    /// renewal), without a restart; a bad new pair keeps the old one.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            shutdown_grace: Duration::from_secs(10),
            advertise_url: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
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
    /// A file with more keys, one `<id>=<base64>` per line (`#` comments):
    /// a secret mounted from outside the data directory (e.g.
    /// `/run/secrets/huashen-keys`), so the key never lives beside the data.
    pub encryption_key_file: Option<PathBuf>,
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
    /// With records shared by several servers: how long the records may be
    /// unreadable before this server closes its sessions, because it can no
    /// longer see a deletion or consent withdrawal made on another server
    /// (fail closed).
    #[serde(with = "humantime_serde")]
    pub avatar_check_grace: Duration,
    /// PEM file of extra certificate authorities for PostgreSQL over TLS
    /// (besides the public web roots), e.g. a cloud provider's CA.
    pub database_ca_file: Option<PathBuf>,
    /// A server that has not marked itself alive for this long is taken
    /// for dead by the others sharing the database, which then close the
    /// sessions it left open. It marks itself alive every third of this.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".huashen"),
            encryption_keys: Default::default(),
            encryption_key_file: None,
            active_key: String::new(),
            database_url: Secret(String::new()),
            database_pool: 8,
            database_timeout: Duration::from_secs(10),
            avatar_check_grace: Duration::from_secs(30),
            database_ca_file: None,
            node_ttl: Duration::from_secs(30),
        }
    }
}

/// A secret value from the config; never printed.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
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
    /// Outputs (recordings, …) one session may have at once.
    pub max_outputs_per_session: usize,
    /// While an output that needs them runs (a recording), the session's
    /// video has a keyframe at least this often.
    #[serde(with = "humantime_serde")]
    pub output_keyframe_interval: std::time::Duration,
    /// Tries in a row after an output (RTMP, WHIP) loses or cannot reach
    /// its destination, before it fails.
    pub output_reconnect_attempts: u32,
    /// The wait before an output's first try again; each next one doubles,
    /// up to `output_reconnect_max_delay`.
    #[serde(with = "humantime_serde")]
    pub output_reconnect_delay: std::time::Duration,
    #[serde(with = "humantime_serde")]
    pub output_reconnect_max_delay: std::time::Duration,
    /// A session makes at most one asked-for keyframe per this interval:
    /// viewers asking more often (PLI/FIR, falling behind) are served by
    /// the next one, never by a keyframe each (which would cost every
    /// viewer's bandwidth).
    #[serde(with = "humantime_serde")]
    pub keyframe_request_interval: std::time::Duration,
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
            max_outputs_per_session: 4,
            output_keyframe_interval: std::time::Duration::from_secs(2),
            output_reconnect_attempts: 10,
            output_reconnect_delay: std::time::Duration::from_millis(500),
            output_reconnect_max_delay: std::time::Duration::from_secs(30),
            keyframe_request_interval: std::time::Duration::from_millis(500),
        }
    }
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

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(600),
            max_idle_timeout: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// On a server with no tenant yet, create a `dev` tenant and key, keep the
    /// key in `<data_dir>/dev-api-key` (mode 0600) and print it at start.
    /// Turn off in production and create tenants with `huashen tenant create`.
    pub bootstrap_dev_tenant: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            bootstrap_dev_tenant: true,
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
    /// Recordings are deleted this long after they end; 0 (the default)
    /// keeps them until their owner deletes them.
    #[serde(with = "humantime_serde")]
    pub recordings: Duration,
    /// How often the purge runs.
    #[serde(with = "humantime_serde")]
    pub purge_interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            audit: Duration::from_secs(180 * 86_400),
            session_metadata: Duration::from_secs(30 * 86_400),
            recordings: Duration::ZERO,
            purge_interval: Duration::from_secs(3600),
        }
    }
}

impl ServerConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(
                "server.tls_cert_file and server.tls_key_file go together: give both or neither"
                    .into(),
            );
        }
        let adv = self.advertise_url.trim();
        if adv.is_empty() {
            return Ok(());
        }
        let ok = (adv.starts_with("http://") || adv.starts_with("https://"))
            && adv.parse::<http::Uri>().is_ok_and(|u| {
                u.host().is_some()
                    && u.query().is_none()
                    && u.path().trim_end_matches('/').is_empty()
            });
        if !ok {
            return Err(
                "server.advertise_url must be an http:// or https:// base URL without a path (http://10.0.0.5:8700)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Checks one configured encryption key (id → base64 of 32 bytes) and
/// returns its bytes; the error says why it is not a key.
pub fn decode_key(id: &str, b64: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    if id.is_empty() || id.len() > 64 {
        return Err("ids are 1..64 characters".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| "not base64".to_owned())?;
    if bytes.len() != 32 {
        return Err(format!("{} bytes; AES-256 needs 32", bytes.len()));
    }
    Ok(bytes)
}

impl StorageConfig {
    /// The configured encryption keys (id → base64): `encryption_keys` and
    /// those of `encryption_key_file`. Empty: the generated local key.
    pub fn configured_keys(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut keys: std::collections::BTreeMap<String, String> = self
            .encryption_keys
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        if let Some(path) = &self.encryption_key_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "storage.encryption_key_file {}: cannot read it: {e}",
                    path.display()
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                // A line may be a bare key (base64 ends in `=`): nothing of a
                // line is echoed until its id is known to be an id.
                let id_like = |id: &str| {
                    (1..=32).contains(&id.len())
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                };
                let Some((id, key)) = line
                    .split_once('=')
                    .map(|(id, key)| (id.trim(), key.trim()))
                    .filter(|(id, _)| id_like(id))
                else {
                    return Err(format!(
                        "storage.encryption_key_file {} line {}: expected <id>=<base64 key>, \
                         the id 1..32 letters, digits, '-' or '_'",
                        path.display(),
                        n + 1
                    ));
                };
                keys.insert(id.to_owned(), key.to_owned());
            }
        }
        Ok(keys)
    }

    /// Why this storage is not fit for production: the encryption key
    /// would live beside the data it protects.
    pub fn production_problems(&self) -> Vec<String> {
        let mut problems = vec![];
        match self.configured_keys() {
            Ok(keys) if keys.is_empty() => problems.push(
                "no encryption key is configured: one would be generated into the data \
                 directory (keys/local.key), beside the data it protects; set \
                 storage.encryption_key_file (outside storage.data_dir) or \
                 HUASHEN_STORAGE__ENCRYPTION_KEYS__<ID>, and storage.active_key"
                    .to_owned(),
            ),
            Ok(_) => {}
            Err(e) => problems.push(e),
        }
        if let Some(file) = &self.encryption_key_file {
            let abs = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or(p.to_path_buf());
            if abs(file).starts_with(abs(&self.data_dir)) {
                problems.push(format!(
                    "storage.encryption_key_file {} is inside storage.data_dir: keep the key \
                     apart from the data it protects",
                    file.display()
                ));
            }
        }
        problems
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let url = self.database_url.0.trim();
        if !url.is_empty() {
            if let Err(e) = url.parse::<postgres::Config>() {
                return Err(format!(
                    "storage.database_url is not PostgreSQL connection settings (postgres://user:password@host:5432/db, or host=… user=… dbname=…): {e}"
                ));
            }
            if self.database_pool == 0 {
                return Err("storage.database_pool must be at least 1".into());
            }
        }
        if self.node_ttl < Duration::from_secs(1) {
            return Err("storage.node_ttl must be at least 1s".into());
        }
        let keys = self.configured_keys()?;
        if !keys.is_empty() {
            if !keys.contains_key(&self.active_key) {
                return Err(
                    "storage.active_key must name one of storage.encryption_keys or of \
                     storage.encryption_key_file"
                        .into(),
                );
            }
            for (id, key) in &keys {
                decode_key(id, key).map_err(|why| {
                    format!("storage encryption: invalid encryption key {id:?}: {why}")
                })?;
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("storage.data_dir must not be empty".into());
        }
        Ok(())
    }
}

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let checks: [(bool, &str); 12] = [
            (
                self.cpu_budget >= 0.0 && self.cpu_budget <= 4096.0,
                "limits.cpu_budget must be 0 (auto) or a number of cores up to 4096",
            ),
            (
                self.session_cost > 0.0 && self.session_cost <= 64.0,
                "limits.session_cost must be more than 0 and at most 64 cores",
            ),
            (
                self.max_sessions > 0,
                "limits.max_sessions must be at least 1",
            ),
            (
                self.max_sessions_per_tenant > 0,
                "limits.max_sessions_per_tenant must be at least 1",
            ),
            (
                (1..=32).contains(&self.max_outputs_per_session),
                "limits.max_outputs_per_session must be 1..32",
            ),
            (
                self.output_reconnect_attempts <= 1000,
                "limits.output_reconnect_attempts must be at most 1000",
            ),
            (
                self.output_reconnect_delay >= std::time::Duration::from_millis(10)
                    && self.output_reconnect_delay <= self.output_reconnect_max_delay
                    && self.output_reconnect_max_delay <= std::time::Duration::from_secs(3600),
                "limits.output_reconnect_delay must be 10ms..output_reconnect_max_delay, \
                 and output_reconnect_max_delay at most 1h",
            ),
            (
                self.keyframe_request_interval <= std::time::Duration::from_secs(10),
                "limits.keyframe_request_interval must be at most 10s",
            ),
            (
                self.output_keyframe_interval >= std::time::Duration::from_millis(200)
                    && self.output_keyframe_interval <= std::time::Duration::from_secs(10),
                "limits.output_keyframe_interval must be 200ms..10s",
            ),
            (
                self.max_image_bytes >= 1024,
                "limits.max_image_bytes must be at least 1024",
            ),
            (
                self.max_speak_bytes >= 4096,
                "limits.max_speak_bytes must be at least 4096",
            ),
            (
                self.session_queue > 0 && self.event_buffer > 0,
                "limits.session_queue and limits.event_buffer must be at least 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err((*msg).to_owned()),
            None => Ok(()),
        }
    }
}

impl SessionsConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.idle_timeout.is_zero() {
            return Err("sessions.idle_timeout must be positive".into());
        }
        if self.max_idle_timeout < self.idle_timeout {
            return Err("sessions.max_idle_timeout must be at least sessions.idle_timeout".into());
        }
        Ok(())
    }
}

impl RetentionConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.audit.is_zero()
            || self.session_metadata.is_zero()
            || self.purge_interval < Duration::from_secs(1)
        {
            return Err(
                "retention periods must be positive and retention.purge_interval at least 1s"
                    .into(),
            );
        }
        Ok(())
    }
}
