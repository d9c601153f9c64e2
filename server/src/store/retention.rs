//! Retention: a purge job deletes what is past its keeping period. The
//! clock is a parameter, so tests can run it "in the future".

use crate::config::RetentionConfig;
use crate::store::{AuditEntry, Millis, Store, StoreResult, now_ms};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one purge deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub audit_entries: usize,
    pub sessions: usize,
    pub recordings: usize,
}

/// Recordings deleted per batch of a purge.
const RECORDING_BATCH: usize = 100;

/// Deletes everything past its retention period as of `now`.
pub async fn purge(store: &Store, retention: &RetentionConfig, now: Millis) -> StoreResult<Purged> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let audit_before = now.saturating_sub(ms(retention.audit));
    let sessions_before = now.saturating_sub(ms(retention.session_metadata));
    let (audit_entries, sessions) = store
        .run(move |b| {
            let r = b.purge(audit_before, sessions_before)?;
            // The purge itself is on record (and kept for the audit period).
            b.append_audit(&AuditEntry {
                at: now,
                tenant_id: None,
                actor: "system".into(),
                action: "retention.purge".into(),
                target: String::new(),
                outcome: format!("{} audit entries, {} sessions", r.0, r.1),
            })?;
            Ok(r)
        })
        .await?;
    let recordings = if retention.recordings.is_zero() {
        0
    } else {
        purge_recordings(store, now.saturating_sub(ms(retention.recordings)), now).await?
    };
    Ok(Purged {
        audit_entries,
        sessions,
        recordings,
    })
}

/// Deletes recordings that ended before `before` (records, then files);
/// returns how many.
async fn purge_recordings(store: &Store, before: Millis, now: Millis) -> StoreResult<usize> {
    let mut deleted = 0;
    loop {
        let ids = store
            .run(move |b| {
                let mut ids = Vec::new();
                for r in b.recordings_ended_before(before, RECORDING_BATCH)? {
                    let audit = AuditEntry {
                        at: now,
                        tenant_id: Some(r.tenant_id.clone()),
                        actor: "system".into(),
                        action: "retention.purge".into(),
                        target: r.id.clone(),
                        outcome: "recording deleted".into(),
                    };
                    if b.delete_recording(&r.tenant_id, &r.id, &audit)? {
                        ids.push(r.id);
                    }
                }
                Ok(ids)
            })
            .await?;
        store.files.remove_recordings(&ids).await;
        deleted += ids.len();
        if ids.len() < RECORDING_BATCH {
            return Ok(deleted);
        }
    }
}

/// Runs [`purge`] every `retention.purge_interval` until `stop`.
pub async fn run(store: Store, retention: RetentionConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(retention.purge_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => match purge(&store, &retention, now_ms()).await {
                Ok(p) if p != Purged::default() => tracing::info!(?p, "retention purge"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "retention purge failed; will retry"),
            },
        }
    }
}
