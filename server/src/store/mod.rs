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

mod backend;
#[cfg(test)]
pub(crate) mod conformance;
pub mod crypto;
mod error;
pub mod files;
pub mod postgres;
mod records;
pub mod retention;
pub mod sealed_stream;
pub mod sqlite;
pub mod tenants;

use std::sync::Arc;

pub use backend::{Backend, Liveness};
pub use error::{StoreError, StoreResult};
pub use files::FileStore;
pub use records::*;

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
    /// Records `who`'s access (`action` on `target`) in the audit log.
    pub async fn audit(
        &self,
        who: &Principal,
        action: &str,
        target: String,
        outcome: &str,
    ) -> StoreResult<()> {
        let entry = AuditEntry::new(Some(who), action, target, outcome);
        self.run(move |b| b.append_audit(&entry)).await
    }

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
        let recordings = self.backend.all_recording_ids()?;
        let recordings_removed = self.files.sweep_recordings(&recordings, min_age)?;
        let sessions_closed = self.close_sessions_of_dead_nodes(now, session_close_reason)?;
        Ok(RecoveryReport {
            tmp_removed,
            orphans_removed,
            recordings_removed,
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
        let closed = self
            .backend
            .close_sessions_of_dead_nodes(dead_before, now, reason)?;
        // Their recordings' writers died with them; what they wrote stays
        // a playable file.
        let ended = self.backend.end_orphaned_recordings(now)?;
        if ended > 0 {
            tracing::warn!(recordings = ended, "ended recordings of a stopped server");
        }
        Ok(closed)
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
    /// Recording files no record points to (a crash mid-deletion).
    pub recordings_removed: usize,
    pub sessions_closed: usize,
}
