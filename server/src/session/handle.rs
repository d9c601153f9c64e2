//! A live session as the layers above see it: its record, its media
//! pipeline (encoded once for every viewer), its command queue, snapshot
//! and events.

use super::types::{CloseReason, Command, Event, SessionState, Snapshot};
use crate::error::{ApiError, ApiResult};
use crate::pipeline::MediaPipeline;
use crate::store::SessionRecord;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The live sessions of this server, by id.
pub type LiveSessions = DashMap<String, Arc<SessionHandle>>;

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
    pub(super) finished: CancellationToken,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) cancel: CancellationToken,
    pub(super) close_reason: Arc<std::sync::Mutex<Option<CloseReason>>>,
    pub(super) snapshot: watch::Receiver<Snapshot>,
    pub(super) events: broadcast::Sender<Event>,
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
        crate::util::secrets_equal(self.viewer_token.as_bytes(), token.as_bytes())
    }

    /// Queues a command without waiting; false when the queue is full or the
    /// session is gone.
    pub fn try_send(&self, cmd: Command) -> bool {
        self.commands.try_send(cmd).is_ok()
    }

    /// Asks the actor to stop with `reason` (the first reason given wins).
    pub(super) fn request_close(&self, reason: CloseReason) {
        self.close_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        self.cancel.cancel();
    }

    /// Waits until the actor has finished and returns its final snapshot.
    pub(super) async fn closed(&self) -> Snapshot {
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
