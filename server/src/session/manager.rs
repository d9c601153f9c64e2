//! The session manager: live sessions in a `DashMap`, each run by an actor
//! task with a bounded command queue and a cancellation token; admission
//! limits; closing by request, idle timeout, avatar deletion and server
//! shutdown.

use super::admission::Admission;
use super::handle::{LiveSessions, SessionHandle};
use super::types::*;
use crate::config::{LabelConfig, VoiceConfig};
use crate::engines::Engines;
use crate::store::{Principal, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits the manager enforces.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub max_sessions: usize,
    pub max_sessions_per_tenant: usize,
    pub queue_capacity: usize,
    pub event_buffer: usize,
    pub labels: LabelConfig,
    pub voice: VoiceConfig,
    /// CPU cores sessions may use (measured), and the assumed cost of a
    /// session not measured yet.
    pub cpu_budget: f64,
    pub session_cost: f64,
    /// Keyframes asked for (viewers' PLI/FIR, lagging peers, outputs) are
    /// made at most once per this interval (`limits.keyframe_request_interval`).
    pub keyframe_request_interval: std::time::Duration,
    /// Shared records unreadable this long close the sessions
    /// (`storage.avatar_check_grace`).
    pub avatar_check_grace: std::time::Duration,
}

pub(super) struct Inner {
    pub(super) sessions: Arc<LiveSessions>,
    pub(super) admission: Arc<Admission>,
    pub(super) capacity: super::capacity::Capacity,
    pub(super) store: Store,
    pub(super) config: ManagerConfig,
    pub(super) shutdown: CancellationToken,
    pub(super) tracker: TaskTracker,
    pub(super) accepting: AtomicBool,
    pub(super) engines: Engines,
}

#[derive(Clone)]
pub struct SessionManager {
    pub(super) inner: Arc<Inner>,
}

impl SessionManager {
    pub fn new(store: Store, config: ManagerConfig, engines: Engines) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: Default::default(),
                admission: Admission::new(config.max_sessions, config.max_sessions_per_tenant),
                capacity: super::capacity::Capacity::new(config.cpu_budget, config.session_cost),
                store,
                config,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                accepting: AtomicBool::new(true),
                engines,
            }),
        }
    }

    /// The engines sessions run on (enrollment analyses portraits with the
    /// face engine).
    pub fn engines(&self) -> &Engines {
        &self.inner.engines
    }

    /// The records and files sessions are kept in.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Open sessions on the server.
    pub fn live_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// A live session by id alone, for viewers (who hold a viewer token,
    /// not an API key).
    pub fn live_by_id(&self, session_id: &str) -> Option<Arc<SessionHandle>> {
        self.inner.sessions.get(session_id).map(|h| h.clone())
    }

    /// Runs a task that shutdown waits for (viewer connections).
    pub fn spawn_tracked<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tracker.spawn(fut);
    }

    /// A live session of the caller's tenant. Sessions of other tenants are
    /// indistinguishable from missing ones.
    pub fn live(&self, who: &Principal, session_id: &str) -> Option<Arc<SessionHandle>> {
        self.inner
            .sessions
            .get(session_id)
            .filter(|h| h.record.tenant_id == who.tenant_id)
            .map(|h| h.clone())
    }

    /// Closes a live session and waits for it to stop. `None` when no live
    /// session of the caller has that id.
    pub async fn close(
        &self,
        who: &Principal,
        session_id: &str,
        reason: CloseReason,
    ) -> Option<(Arc<SessionHandle>, Snapshot)> {
        let handle = self.live(who, session_id)?;
        handle.request_close(reason);
        let snap = handle.closed().await;
        Some((handle, snap))
    }

    /// Closes every live session of an avatar; returns their ids.
    pub async fn close_for_avatar(&self, tenant_id: &str, avatar_id: &str) -> Vec<String> {
        let handles: Vec<Arc<SessionHandle>> = self
            .inner
            .sessions
            .iter()
            .filter(|h| h.record.tenant_id == tenant_id && h.record.avatar_id == avatar_id)
            .map(|h| h.clone())
            .collect();
        for h in &handles {
            h.request_close(CloseReason::AvatarDeleted);
        }
        let mut ids = Vec::with_capacity(handles.len());
        for h in handles {
            h.closed().await;
            ids.push(h.record.id.clone());
        }
        ids
    }

    /// Stops accepting sessions, closes every live one and waits up to
    /// `grace` for them to finish. Returns true when all drained in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let n = self.inner.sessions.len();
        tracing::info!(sessions = n, "draining sessions");
        for h in self.inner.sessions.iter() {
            h.request_close(CloseReason::ServerShutdown);
        }
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let drained = tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok();
        if drained {
            tracing::info!(sessions = n, "all sessions drained");
        } else {
            tracing::warn!(
                remaining = self.inner.sessions.len(),
                "sessions did not drain within the grace period"
            );
        }
        drained
    }
}
