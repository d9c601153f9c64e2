//! Storage: records behind the [`Backend`] trait (embedded SQLite by
//! default, PostgreSQL when several servers share them), files in a data
//! directory written atomically ([`files::FileStore`]).
//!
//! Backend calls are blocking; [`Store::run`] moves them off the async
//! runtime.
//!
//! Every server process is a *node* with an id of its own. Sessions are
//! recorded with the node that runs them; a node marks itself alive
//! ([`Backend::heartbeat`]) and closes the sessions of nodes that stopped
//! doing so ([`Backend::close_sessions_of_dead_nodes`]) — with one SQLite
//! file that is only ever the previous run of this server.

#[cfg(test)]
pub(crate) mod conformance;
pub mod crypto;
pub mod files;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use files::FileStore;

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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database: {}", pg_message(.0))]
    Postgres(::postgres::Error),
    /// The database cannot be reached now; the call may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("file store: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("encryption: {0}")]
    Crypto(#[from] crypto::CryptoError),
}

impl From<::postgres::Error> for StoreError {
    /// A lost connection or a server that cannot serve now (SQLSTATE
    /// classes 08, 53, 57P) is [`StoreError::Unavailable`]; the rest is a
    /// database error.
    fn from(e: ::postgres::Error) -> Self {
        let unavailable = match e.code() {
            Some(code) => {
                let c = code.code();
                c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
            }
            None => {
                e.is_closed()
                    || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
            }
        };
        if unavailable {
            Self::Unavailable(pg_message(&e))
        } else {
            Self::Postgres(e)
        }
    }
}

/// The server's message for a database error (`Display` says only "db
/// error"), else the client's.
fn pg_message(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

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

fn labels_to_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

fn labels_from_json(s: &str) -> StoreResult<BTreeMap<String, String>> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))
}

const AVATAR_COLS: &str = "a.id, a.tenant_id, a.display_name, a.state, a.failure_reason, a.image_format, \
     a.image_bytes, a.image_sha256, a.labels, a.created_at, c.id, c.uploader, c.subject_name, \
     c.subject_consented, c.subject_is_minor, c.guardian_name, c.purpose, c.consented_at, \
     c.policy_version, c.recorded_at, a.original_kept, a.faces_found, a.face_score";

const SESSION_COLS: &str = "id, tenant_id, avatar_id, language, voice_id, speed, width, height, fps, \
     video_bitrate_kbps, audio_bitrate_kbps, idle_timeout_secs, labels, created_at, closed_at, close_reason";

/// Records storage. Every method is blocking; call through [`Store::run`].
pub trait Backend: Send + Sync + 'static {
    fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>>;
    fn count_tenants(&self) -> StoreResult<u64>;
    /// Stores a key by the SHA-256 of its secret.
    fn create_api_key(
        &self,
        key_id: &str,
        tenant_id: &str,
        key_hash: &[u8; 32],
        label: &str,
    ) -> StoreResult<()>;
    /// Resolves an unrevoked key by hash.
    fn principal_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Principal>>;

    /// Inserts the avatar with its consent and audit entry in one transaction.
    fn insert_avatar(&self, avatar: &Avatar, audit: &AuditEntry) -> StoreResult<()>;
    fn get_avatar(&self, tenant_id: &str, avatar_id: &str) -> StoreResult<Option<Avatar>>;
    /// Newest first; `before` is an exclusive upper bound on the id.
    fn list_avatars(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Avatar>>;
    /// Deletes the avatar row and its consent; true when it existed.
    fn delete_avatar(
        &self,
        tenant_id: &str,
        avatar_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool>;
    /// Every avatar id, for the startup sweep of orphaned files.
    fn all_avatar_ids(&self) -> StoreResult<Vec<String>>;
    /// Which of `ids` name avatars that exist (of any tenant).
    fn existing_avatar_ids(&self, ids: &[String]) -> StoreResult<Vec<String>>;

    fn insert_session(&self, session: &SessionRecord, audit: &AuditEntry) -> StoreResult<()>;
    fn close_session(
        &self,
        session_id: &str,
        closed_at: Millis,
        reason: i32,
        audit: &AuditEntry,
    ) -> StoreResult<()>;
    fn get_session(&self, tenant_id: &str, session_id: &str) -> StoreResult<Option<SessionRecord>>;
    fn list_sessions(
        &self,
        tenant_id: &str,
        include_closed: bool,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Every session record of a tenant, or of one avatar of it.
    fn sessions_of(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes closed session records of a tenant (or of one avatar).
    fn delete_closed_sessions(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<usize>;
    /// This server process's node id; sessions it inserts carry it.
    fn node_id(&self) -> &str;
    /// Records that this node is alive at `now`, reachable at `url` (empty:
    /// not advertised).
    fn heartbeat(&self, now: Millis, url: &str) -> StoreResult<()>;
    /// The node running the open session `session_id` (of any tenant) and
    /// that node's advertised URL (empty: none); `None` when the session is
    /// closed, unknown or older than nodes.
    fn session_location(&self, session_id: &str) -> StoreResult<Option<(String, String)>>;
    /// Marks open sessions of other nodes not alive since `dead_before`
    /// (or never recorded alive) as closed; returns how many. Forgets
    /// nodes that have been gone for a day.
    fn close_sessions_of_dead_nodes(
        &self,
        dead_before: Millis,
        closed_at: Millis,
        reason: i32,
    ) -> StoreResult<usize>;
    /// Forgets this node (a clean stop: its sessions are closed).
    fn leave(&self) -> StoreResult<()>;

    fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// Deletes audit entries older than `audit_before` and closed sessions
    /// closed before `sessions_before`; returns (audit, sessions) deleted.
    fn purge(&self, audit_before: Millis, sessions_before: Millis) -> StoreResult<(usize, usize)>;
    /// Audit entries of a tenant, oldest first.
    fn audit_for_tenant(&self, tenant_id: &str, limit: usize) -> StoreResult<Vec<AuditEntry>>;
    /// Audit entries of a tenant with their sequence numbers, newest first,
    /// below `before_seq`, optionally only about `target`.
    fn list_audit(
        &self,
        tenant_id: &str,
        target: Option<&str>,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
}

/// How long a node may go without marking itself alive, and whether other
/// servers share the records.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Other server processes may use the same records and files.
    pub shared: bool,
    /// A node not seen for this long is dead.
    pub node_ttl: std::time::Duration,
}

impl Liveness {
    pub const EMBEDDED: Self = Self {
        shared: false,
        node_ttl: std::time::Duration::from_secs(30),
    };
}

/// Files younger than this are left by the startup sweep when other
/// servers share the data directory (one of them may be writing them).
const SHARED_SWEEP_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Shared handle to records and files.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    pub files: FileStore,
    liveness: Liveness,
    /// Where clients reach this server (`server.advertise_url`).
    advertise_url: Arc<str>,
}

/// Where a session another server runs is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    pub node_id: String,
    /// That server's advertised base URL, when it has one.
    pub url: Option<String>,
}

impl Store {
    pub fn new(backend: Arc<dyn Backend>, files: FileStore, liveness: Liveness) -> Self {
        Self {
            backend,
            files,
            liveness,
            advertise_url: Arc::from(""),
        }
    }

    /// Sets the URL this server advertises to the others sharing the
    /// records (trailing `/` dropped).
    pub fn with_advertise_url(mut self, url: &str) -> Self {
        self.advertise_url = Arc::from(url.trim().trim_end_matches('/'));
        self
    }

    /// Where the open session `session_id` runs when that is another
    /// server sharing the records; `None` for this server's sessions,
    /// closed or unknown ones, and always with one embedded database.
    pub async fn session_elsewhere(&self, session_id: &str) -> StoreResult<Option<Elsewhere>> {
        if !self.liveness.shared {
            return Ok(None);
        }
        let id = session_id.to_owned();
        let own = self.node_id().to_owned();
        Ok(self
            .run(move |b| b.session_location(&id))
            .await?
            .filter(|(node, _)| *node != own)
            .map(|(node_id, url)| Elsewhere {
                node_id,
                url: (!url.is_empty()).then_some(url),
            }))
    }

    /// Opens the default embedded store (SQLite + encrypted files) under
    /// `data_dir`.
    pub fn open_embedded(data_dir: &std::path::Path, keys: crypto::Keyring) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir)?;
        let backend = sqlite::SqliteBackend::open(&data_dir.join("huashen.db"))?;
        let files = FileStore::open(data_dir, keys)?;
        Ok(Self::new(Arc::new(backend), files, Liveness::EMBEDDED))
    }

    /// Opens the configured store: PostgreSQL when `storage.database_url`
    /// is set (files still in `data_dir`), else the embedded one. Blocking.
    pub fn open(cfg: &crate::config::StorageConfig, keys: crypto::Keyring) -> StoreResult<Self> {
        if cfg.database_url.0.trim().is_empty() {
            return Self::open_embedded(&cfg.data_dir, keys);
        }
        std::fs::create_dir_all(&cfg.data_dir)?;
        let backend = postgres::PgBackend::connect(&postgres::PgOptions::from_config(cfg)?)?;
        let files = FileStore::open(&cfg.data_dir, keys)?;
        Ok(Self::new(
            Arc::new(backend),
            files,
            Liveness {
                shared: true,
                node_ttl: cfg.node_ttl,
            },
        ))
    }

    /// Which database holds the records, for logs.
    pub fn kind(&self) -> &'static str {
        if self.liveness.shared {
            "postgresql"
        } else {
            "sqlite"
        }
    }

    /// This server process's node id.
    pub fn node_id(&self) -> &str {
        self.backend.node_id()
    }

    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// Runs blocking backend work on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Backend) -> StoreResult<T> + Send + 'static,
    {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(&*backend))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Direct blocking access, for the CLI and startup.
    pub fn blocking(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Removes files no record points to (left by a crash mid-enrollment or
    /// mid-deletion) and closes sessions a crash left open. With shared
    /// records, only files older than an hour (another server may be
    /// writing newer ones) and sessions of nodes dead for `node_ttl`.
    pub fn recover(&self, session_close_reason: i32) -> StoreResult<RecoveryReport> {
        let now = now_ms();
        self.backend.heartbeat(now, &self.advertise_url)?;
        let ids = self.backend.all_avatar_ids()?;
        let min_age = if self.liveness.shared {
            SHARED_SWEEP_MIN_AGE
        } else {
            std::time::Duration::ZERO
        };
        let (tmp_removed, orphans_removed) = self.files.sweep(&ids, min_age)?;
        let sessions_closed = self.close_sessions_of_dead_nodes(now, session_close_reason)?;
        Ok(RecoveryReport {
            tmp_removed,
            orphans_removed,
            sessions_closed,
        })
    }

    /// Closes sessions of dead nodes: with one embedded database every
    /// other node is a previous run of this server; with shared records, a
    /// node not seen for `node_ttl`.
    fn close_sessions_of_dead_nodes(&self, now: Millis, reason: i32) -> StoreResult<usize> {
        let dead_before = if self.liveness.shared {
            now - self.liveness.node_ttl.as_millis() as Millis
        } else {
            now + 1
        };
        self.backend
            .close_sessions_of_dead_nodes(dead_before, now, reason)
    }

    /// Marks this node alive every third of `node_ttl` and closes the
    /// sessions of nodes that died, until `stop`; then forgets this node
    /// once `drained` resolves (its sessions are closed by then).
    pub async fn keep_alive(
        self,
        session_close_reason: i32,
        stop: tokio_util::sync::CancellationToken,
        drained: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(self.liveness.node_ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    let store = self.clone();
                    let r = self
                        .run(move |b| {
                            let now = now_ms();
                            b.heartbeat(now, &store.advertise_url)?;
                            store.close_sessions_of_dead_nodes(now, session_close_reason)
                        })
                        .await;
                    match r {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            sessions = n,
                            "closed sessions left open by a server that stopped"
                        ),
                        Err(e) => tracing::error!(error = %e, "cannot mark this server alive; will retry"),
                    }
                }
            }
        }
        drained.await;
        if let Err(e) = self.run(|b| b.leave()).await {
            tracing::warn!(error = %e, "cannot record this server's clean stop");
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub tmp_removed: usize,
    pub orphans_removed: usize,
    pub sessions_closed: usize,
}
