//! The session manager: live sessions in a `DashMap`, each run by an actor
//! task with a bounded command queue and a cancellation token; admission
//! limits; closing by request, idle timeout, avatar deletion and server
//! shutdown.

use super::actor::Actor;
use super::admission::{Admission, Refusal};
use super::handle::{LiveSessions, SessionHandle};
use super::types::*;
use crate::config::{LabelConfig, VoiceConfig};
use crate::engines::Engines;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::pipeline::assembly::{self, Assembly};
use crate::store::{AuditEntry, AvatarState, Principal, SessionRecord, Store, now_ms};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

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
}

/// Removes a session from the live map however its actor ends (a panic
/// included), so a dead session never looks live.
struct RemoveOnDrop {
    live: Arc<LiveSessions>,
    id: String,
    finished: CancellationToken,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.live.remove(&self.id);
        self.finished.cancel();
    }
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

    /// Creates and starts a session for an avatar of the caller's tenant.
    pub async fn create(
        &self,
        who: &Principal,
        avatar_id: String,
        spec: SessionSpec,
    ) -> ApiResult<Arc<SessionHandle>> {
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(ApiError::Unavailable(
                "the server is shutting down and accepts no new sessions".into(),
            ));
        }
        let tenant = who.tenant_id.clone();
        let aid = avatar_id.clone();
        let avatar = self
            .inner
            .store
            .run(move |b| b.get_avatar(&tenant, &aid))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("avatar {avatar_id} not found")))?;
        if avatar.state != AvatarState::Ready {
            return Err(ApiError::FailedPrecondition(format!(
                "avatar {avatar_id} is {} and cannot start a session",
                avatar.state.as_str()
            )));
        }
        self.inner.capacity.admit().map_err(|full| {
            crate::metrics::METRICS
                .admission_rejections
                .with_label_values(&["capacity"])
                .inc();
            ApiError::ResourceExhausted(format!(
                "the server is at its measured capacity: its sessions ({} open, {} starting) use \
                 {:.2} of the {:.2} CPU cores it may use, and a session costs about {:.2}; \
                 starting another would make sessions fall behind real time. Close a session or \
                 try later",
                self.inner.sessions.len(),
                full.starting,
                full.load,
                full.budget,
                full.cost
            ))
        })?;
        let permit = self
            .inner
            .admission
            .admit(&who.tenant_id)
            .map_err(|r| {
                let limit = match r {
                    Refusal::ServerFull { .. } => "server",
                    Refusal::TenantFull { .. } => "tenant",
                };
                crate::metrics::METRICS
                    .admission_rejections
                    .with_label_values(&[limit])
                    .inc();
                r
            })
            .map_err(|r| match r {
                Refusal::ServerFull { max } => ApiError::ResourceExhausted(format!(
                    "the server is at its limit of {max} open sessions; close one or try later"
                )),
                Refusal::TenantFull { max } => ApiError::ResourceExhausted(format!(
                    "your tenant is at its limit of {max} open sessions; close one first"
                )),
            })?;
        let session_id = ids::new_id(ids::SESSION);
        let (media, playback_events) = assembly::assemble(
            &self.inner.store.files,
            &self.inner.engines,
            &Assembly {
                labels: &self.inner.config.labels,
                voice: &self.inner.config.voice,
                media: spec.media(),
                language: &spec.language,
            },
            &avatar,
            &session_id,
        )
        .await?;
        let record = SessionRecord {
            id: session_id,
            tenant_id: who.tenant_id.clone(),
            avatar_id,
            language: spec.language.clone(),
            voice_id: spec.voice_id.clone(),
            speed: spec.speed,
            width: spec.width,
            height: spec.height,
            fps: spec.fps,
            video_bitrate_kbps: spec.video_bitrate_kbps,
            audio_bitrate_kbps: spec.audio_bitrate_kbps,
            idle_timeout_secs: spec.idle_timeout.as_secs() as u32,
            labels: spec.labels.clone(),
            created_at: now_ms(),
            closed_at: None,
            close_reason: None,
            node_id: Some(self.inner.store.node_id().to_owned()),
        };
        let audit = AuditEntry::new(Some(who), "session.create", record.id.clone(), "ok");
        let rec = record.clone();
        self.inner
            .store
            .run(move |b| b.insert_session(&rec, &audit))
            .await?;

        let (cmd_tx, cmd_rx) = mpsc::channel(self.inner.config.queue_capacity);
        let (events, _) = broadcast::channel(self.inner.config.event_buffer);
        let (snap_tx, snap_rx) = watch::channel(Snapshot {
            state: SessionState::Starting,
            viewer_count: 0,
            closed_at: None,
            close_reason: None,
            last_seq: 0,
        });
        let cancel = self.inner.shutdown.child_token();
        let close_reason = Arc::new(std::sync::Mutex::new(None));
        let handle = Arc::new(SessionHandle {
            record: record.clone(),
            media: media.clone(),
            viewer_token: crate::util::generate_token(),
            cancel_token: cancel.clone(),
            viewers: DashMap::new(),
            finished: CancellationToken::new(),
            commands: cmd_tx,
            cancel: cancel.clone(),
            close_reason: close_reason.clone(),
            snapshot: snap_rx,
            events: events.clone(),
        });
        self.inner
            .sessions
            .insert(record.id.clone(), handle.clone());
        let actor = Actor {
            id: record.id.clone(),
            tenant_id: record.tenant_id.clone(),
            idle_timeout: spec.idle_timeout,
            commands: cmd_rx,
            cancel,
            close_reason,
            snapshot: snap_tx,
            events,
            store: self.inner.store.clone(),
            live: self.inner.sessions.clone(),
            permit: Some(permit),
            media,
            speech: self.inner.engines.speech.clone(),
            speed: spec.speed,
            language: record.language.clone(),
            voice_id: record.voice_id.clone(),
            playback_events,
            pending: Default::default(),
            in_flight: None,
            arrivals: Default::default(),
        };
        let span = tracing::info_span!("session", id = %record.id);
        let cleanup = RemoveOnDrop {
            live: self.inner.sessions.clone(),
            id: record.id.clone(),
            finished: handle.finished.clone(),
        };
        self.inner.tracker.spawn(
            async move {
                let _cleanup = cleanup;
                actor.run().await
            }
            .instrument(span),
        );
        Ok(handle)
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
