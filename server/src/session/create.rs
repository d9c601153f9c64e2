//! Creating a session: the avatar must be ready, admission by measured
//! capacity and by count, the media assembled, the record stored, then the
//! actor started.

use super::actor::Actor;
use super::admission::{Permit, Refusal};
use super::handle::{LiveSessions, SessionHandle};
use super::manager::SessionManager;
use super::types::*;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::pipeline::MediaPipeline;
use crate::pipeline::assembly::{self, Assembly};
use crate::pipeline::playback::PlaybackEvent;
use crate::store::{AuditEntry, Avatar, AvatarState, Principal, SessionRecord, now_ms};
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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

impl SessionManager {
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
        let avatar = self.ready_avatar(who, &avatar_id).await?;
        let permit = self.admit(who)?;
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
        media.set_keyframe_request_interval(self.inner.config.keyframe_request_interval);
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
        Ok(self.launch(record, &spec, media, playback_events, permit))
    }

    /// The caller's avatar `avatar_id`, if it is ready to animate.
    async fn ready_avatar(&self, who: &Principal, avatar_id: &str) -> ApiResult<Avatar> {
        let tenant = who.tenant_id.clone();
        let aid = avatar_id.to_owned();
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
        Ok(avatar)
    }

    /// A place for one more session: within the measured CPU budget, and
    /// within the server's and the tenant's session limits.
    fn admit(&self, who: &Principal) -> ApiResult<Permit> {
        let refused = |limit: &str| {
            crate::metrics::METRICS
                .admission_rejections
                .with_label_values(&[limit])
                .inc();
        };
        self.inner.capacity.admit().map_err(|full| {
            refused("capacity");
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
        self.inner
            .admission
            .admit(&who.tenant_id)
            .map_err(|r| match r {
                Refusal::ServerFull { max } => {
                    refused("server");
                    ApiError::ResourceExhausted(format!(
                        "the server is at its limit of {max} open sessions; close one or try later"
                    ))
                }
                Refusal::TenantFull { max } => {
                    refused("tenant");
                    ApiError::ResourceExhausted(format!(
                        "your tenant is at its limit of {max} open sessions; close one first"
                    ))
                }
            })
    }

    /// Makes the session live: its handle in the live map, its actor
    /// running (tracked, so shutdown waits for it).
    fn launch(
        &self,
        record: SessionRecord,
        spec: &SessionSpec,
        media: Arc<MediaPipeline>,
        playback_events: mpsc::Receiver<PlaybackEvent>,
        permit: Permit,
    ) -> Arc<SessionHandle> {
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
            viewer_token: super::viewer_token::issue(self.inner.store.files.keyring(), &record.id),
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
        handle
    }
}
