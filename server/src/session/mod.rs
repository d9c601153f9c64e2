//! Session manager: live sessions in a `DashMap`, each run by an actor task
//! with a bounded command queue and a cancellation token; admission limits;
//! closing by request, idle timeout, avatar deletion and server shutdown.

mod actor;
pub mod admission;
pub mod capacity;
pub mod types;

pub use actor::Command;
pub use types::*;

use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::pipeline::face::{AnimatedFace, FACE_FILE, FaceEngine, FaceRecord};
use crate::pipeline::label::VisibleLabel;
use crate::pipeline::speech::{Playback, PlaybackEvent, SpeechEngine};
use crate::pipeline::{AudioInput, Labels, MediaConfig, MediaPipeline, portrait};
use crate::store::{AuditEntry, Avatar, AvatarState, Principal, SessionRecord, Store, now_ms};
use admission::{Admission, Refusal};
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
    pub labels: crate::config::LabelConfig,
    pub voice: crate::config::VoiceConfig,
    /// CPU cores sessions may use (measured), and the assumed cost of a
    /// session not measured yet.
    pub cpu_budget: f64,
    pub session_cost: f64,
}

/// A live session as the control plane sees it.
pub struct SessionHandle {
    pub record: SessionRecord,
    /// Encodes the session once for every viewer.
    pub media: Arc<MediaPipeline>,
    /// What viewers present to watch (see `Session.viewer_token`).
    pub viewer_token: String,
    /// Cancelled when the session closes; viewers hang their own tokens
    /// below it.
    pub cancel_token: CancellationToken,
    /// Connected and connecting viewers, by id; cancelling one ends it.
    pub viewers: DashMap<String, CancellationToken>,
    /// Cancelled when the actor has finished: closed state published, the
    /// record updated, the slot freed.
    finished: CancellationToken,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    close_reason: Arc<std::sync::Mutex<Option<CloseReason>>>,
    snapshot: watch::Receiver<Snapshot>,
    events: broadcast::Sender<Event>,
}

impl SessionHandle {
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.borrow().clone()
    }

    /// Subscribes to events from now on, with the snapshot at subscription.
    pub fn subscribe(&self) -> (Snapshot, broadcast::Receiver<Event>) {
        // Subscribe first so no event falls between the snapshot and the
        // receiver; the watcher skips events with seq <= snapshot.last_seq.
        let rx = self.events.subscribe();
        (self.snapshot(), rx)
    }

    /// Queues a command, waiting while the queue is full (backpressure).
    pub async fn send(&self, cmd: Command) -> ApiResult<()> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| ApiError::not_found(format!("session {} is closed", self.record.id)))
    }

    /// True when `token` is this session's viewer token (constant time).
    pub fn viewer_token_matches(&self, token: &str) -> bool {
        let (a, b) = (self.viewer_token.as_bytes(), token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Queues a command without waiting; false when the queue is full or the
    /// session is gone.
    pub fn try_send(&self, cmd: Command) -> bool {
        self.commands.try_send(cmd).is_ok()
    }

    /// Asks the actor to stop with `reason` (the first reason given wins).
    fn request_close(&self, reason: CloseReason) {
        self.close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Waits until the actor has finished and returns its final snapshot.
    async fn closed(&self) -> Snapshot {
        self.finished.cancelled().await;
        let mut rx = self.snapshot.clone();
        let waited = rx
            .wait_for(|s| s.state == SessionState::Closed)
            .await
            .map(|s| s.clone());
        // On error the actor is gone; its last snapshot is final.
        waited.unwrap_or_else(|_| rx.borrow().clone())
    }
}

/// Removes a session from the live map however its actor ends (a panic
/// included), so a dead session never looks live.
struct RemoveOnDrop {
    inner: Arc<Inner>,
    id: String,
    finished: CancellationToken,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.inner.sessions.remove(&self.id);
        self.finished.cancel();
    }
}

pub(crate) struct Inner {
    sessions: DashMap<String, Arc<SessionHandle>>,
    admission: Arc<Admission>,
    capacity: capacity::Capacity,
    store: Store,
    config: ManagerConfig,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    accepting: AtomicBool,
    speech: Arc<SpeechEngine>,
    face: Arc<FaceEngine>,
}

#[derive(Clone)]
pub struct SessionManager {
    inner: Arc<Inner>,
}

impl SessionManager {
    pub fn new(
        store: Store,
        config: ManagerConfig,
        speech: Arc<SpeechEngine>,
        face: Arc<FaceEngine>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                sessions: DashMap::new(),
                admission: Admission::new(config.max_sessions, config.max_sessions_per_tenant),
                capacity: capacity::Capacity::new(config.cpu_budget, config.session_cost),
                store,
                config,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                accepting: AtomicBool::new(true),
                speech,
                face,
            }),
        }
    }

    /// Measures what sessions cost once a second (for admission and
    /// metrics) until `stop` fires.
    pub fn spawn_capacity_sampler(&self, stop: CancellationToken) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut sampler = capacity::Sampler::default();
            let mut tick = tokio::time::interval(capacity::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let sessions = inner
                    .sessions
                    .iter()
                    .map(|h| (h.key().clone(), h.media.stats.cpu.get()))
                    .collect::<Vec<_>>();
                sampler.sample(
                    &inner.capacity,
                    sessions.into_iter(),
                    inner.speech.cpu_us() + crate::pipeline::lips::worker_cpu_us(),
                    std::time::Instant::now(),
                );
                let (load, budget, cost) = inner.capacity.snapshot();
                let m = &crate::metrics::METRICS;
                m.cpu_load_cores.set(load);
                m.cpu_budget_cores.set(budget);
                m.session_cost_cores.set(cost);
            }
        });
    }

    /// With records shared by several servers: once a second, closes the
    /// live sessions whose avatar another server deleted (a deletion or a
    /// consent withdrawal there closes the sessions here too), until
    /// `stop`. Nothing to do with one server: its own deletions close its
    /// sessions directly.
    pub fn spawn_avatar_watch(&self, stop: CancellationToken) {
        if !self.inner.store.liveness().shared {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let mut avatars: Vec<String> = inner
                    .sessions
                    .iter()
                    .map(|h| h.record.avatar_id.clone())
                    .collect();
                if avatars.is_empty() {
                    continue;
                }
                avatars.sort();
                avatars.dedup();
                let asked = avatars.clone();
                let present = match inner
                    .store
                    .run(move |b| b.existing_avatar_ids(&asked))
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check for avatars deleted elsewhere");
                        continue;
                    }
                };
                let gone: std::collections::HashSet<&String> =
                    avatars.iter().filter(|a| !present.contains(*a)).collect();
                for h in inner.sessions.iter() {
                    if gone.contains(&h.record.avatar_id) {
                        tracing::info!(
                            session = %h.record.id,
                            avatar = %h.record.avatar_id,
                            "closing a session whose avatar another server deleted"
                        );
                        h.request_close(CloseReason::AvatarDeleted);
                    }
                }
            }
        });
    }

    /// The face models (enrollment analyses portraits with them).
    pub fn face(&self) -> &Arc<FaceEngine> {
        &self.inner.face
    }

    /// The text-to-speech engine sessions speak with.
    pub fn speech(&self) -> &Arc<SpeechEngine> {
        &self.inner.speech
    }

    /// Open sessions on the server.
    pub fn live_count(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Refreshes the metrics that are computed from live state.
    pub fn refresh_metrics(&self) {
        let m = &crate::metrics::METRICS;
        let mut counts = std::collections::HashMap::new();
        let mut queued = 0;
        for h in self.inner.sessions.iter() {
            *counts.entry(h.snapshot().state).or_insert(0i64) += 1;
            queued += h.commands.max_capacity() - h.commands.capacity();
        }
        for (state, name) in [
            (SessionState::Starting, "starting"),
            (SessionState::Idle, "idle"),
            (SessionState::Speaking, "speaking"),
            (SessionState::Listening, "listening"),
        ] {
            m.sessions_by_state
                .with_label_values(&[name])
                .set(counts.get(&state).copied().unwrap_or(0));
        }
        m.session_queue_depth.set(queued as i64);
        let lips = crate::pipeline::lips::worker_stats().map(|s| ("lipsync", s));
        for (stage, stats) in self.inner.speech.batch_stats().iter().cloned().chain(lips) {
            let get = |c: &std::sync::atomic::AtomicU64| {
                c.load(std::sync::atomic::Ordering::Relaxed) as i64
            };
            m.batch_runs
                .with_label_values(&[stage])
                .set(get(&stats.batches));
            m.batch_items
                .with_label_values(&[stage])
                .set(get(&stats.items));
            m.batch_largest
                .with_label_values(&[stage])
                .set(get(&stats.largest));
            m.batch_failed
                .with_label_values(&[stage])
                .set(get(&stats.failed));
        }
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
        let (media, playback_events) = self.start_media(&avatar, &spec, &session_id).await?;
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
            viewer_token: crate::auth::generate_token(),
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
        let actor = actor::Actor {
            id: record.id.clone(),
            tenant_id: record.tenant_id.clone(),
            idle_timeout: spec.idle_timeout,
            commands: cmd_rx,
            cancel,
            close_reason,
            snapshot: snap_tx,
            events,
            inner: self.inner.clone(),
            permit: Some(permit),
            media,
            speech: self.inner.speech.clone(),
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
            inner: self.inner.clone(),
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

    /// Decodes the avatar's portrait and starts the session's media thread
    /// (blocking work, off the runtime).
    async fn start_media(
        &self,
        avatar: &Avatar,
        spec: &SessionSpec,
        session_id: &str,
    ) -> ApiResult<(Arc<MediaPipeline>, mpsc::Receiver<PlaybackEvent>)> {
        let files = self.inner.store.files.clone();
        // Avatars enrolled before minimisation have only their original.
        let fallback = format!("original.{}", avatar.image_format.as_str());
        let config = MediaConfig {
            width: spec.width,
            height: spec.height,
            fps: spec.fps,
            video_bitrate_kbps: spec.video_bitrate_kbps,
            audio_bitrate_kbps: spec.audio_bitrate_kbps,
        };
        let name = session_id[ids::SESSION.len()..][..8].to_owned();
        let lc = &self.inner.config.labels;
        let labels = Labels {
            visible: if lc.visible {
                let text = if spec.language == "zh-CN" {
                    &lc.text_zh
                } else {
                    &lc.text_en
                };
                let badge =
                    VisibleLabel::new(text, lc.corner, spec.width as usize, spec.height as usize);
                if badge.is_none() {
                    tracing::warn!(
                        "the AI label does not fit a {}x{} frame",
                        spec.width,
                        spec.height
                    );
                }
                badge
            } else {
                None
            },
            sei_session: lc.sei.then(|| session_id.to_owned()),
        };
        let avatar_id = avatar.id.clone();
        // Up to 30 s of synthesised speech waits in the playback buffer.
        let playback = Arc::new(Playback::new(30 * 48_000));
        let (events, playback_events) = mpsc::channel(1024);
        let vc = &self.inner.config.voice;
        let ms = |ms: u32| ms as usize * 48;
        let audio_in = AudioInput {
            playback: playback.clone(),
            voice: Arc::new(crate::pipeline::voice::VoiceInput::new(
                ms(vc.max_buffer_ms),
                ms(vc.prebuffer_ms),
                vc.barge_in,
            )),
            events,
        };
        let face = self.inner.face.clone();
        let seed = session_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let started = tokio::task::spawn_blocking(move || -> ApiResult<MediaPipeline> {
            let file = crate::control::avatars::PORTRAIT_FILE;
            let bytes = match files.read_avatar_file(&avatar_id, file) {
                Err(crate::store::files::ReadError::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound =>
                {
                    files.read_avatar_file(&avatar_id, &fallback)
                }
                other => other,
            };
            let bytes = bytes.map_err(|e| {
                tracing::error!(avatar = %avatar_id, error = %e, "cannot read portrait");
                match e {
                    crate::store::files::ReadError::Crypto(e) => ApiError::FailedPrecondition(format!(
                        "the portrait of avatar {avatar_id} cannot be decrypted ({e})"
                    )),
                    crate::store::files::ReadError::Io(_) => ApiError::FailedPrecondition(format!(
                        "the portrait of avatar {avatar_id} is missing from storage; enroll it again"
                    )),
                }
            })?;
            let img = portrait::decode(&bytes).map_err(|e| {
                ApiError::FailedPrecondition(format!("avatar {avatar_id}: {e}; enroll it again"))
            })?;
            let rgb = img.to_rgb8();
            // The face found at enrollment; avatars enrolled before face
            // analysis existed are analysed now.
            let record = match files.read_avatar_file(&avatar_id, FACE_FILE) {
                Ok(bytes) => FaceRecord::from_json(&bytes),
                Err(crate::store::files::ReadError::Io(e))
                    if e.kind() == std::io::ErrorKind::NotFound =>
                {
                    face.analyze(&rgb)
                }
                Err(e) => Err(crate::pipeline::face::FaceError::Record(e.to_string())),
            }
            .map_err(|e| {
                ApiError::FailedPrecondition(format!(
                    "avatar {avatar_id} cannot be animated: {e}; enroll it again"
                ))
            })?;
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
