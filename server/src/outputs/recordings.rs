//! The recordings a tenant keeps: listed, read back (decrypted as they
//! stream out, never whole in memory), deleted; every access audited.

use super::manager::{OutputKind, OutputManager};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::files::FileStore;
use crate::store::{AuditEntry, Principal, Recording, Store};
use tokio::sync::mpsc;

/// Largest chunk of a download.
pub const CHUNK: usize = 64 * 1024;

/// The caller's recording `recording_id`; NOT_FOUND otherwise.
pub async fn get(store: &Store, who: &Principal, recording_id: &str) -> ApiResult<Recording> {
    let id = ids::parse_id("recording_id", ids::RECORDING, recording_id)?;
    let tenant = who.tenant_id.clone();
    let id2 = id.clone();
    store
        .run(move |b| b.get_recording(&tenant, &id2))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("recording {id} not found")))
}

/// Records an access to recordings (personal data) in the audit log.
pub async fn audit(
    store: &Store,
    who: &Principal,
    action: &str,
    target: String,
    outcome: String,
) -> ApiResult<()> {
    let entry = AuditEntry::new(Some(who), action, target, &outcome);
    store.run(move |b| b.append_audit(&entry)).await?;
    Ok(())
}

/// The recording's file, decrypted, in chunks of at most [`CHUNK`] bytes
/// from a blocking thread (bounded channel: a slow reader slows the
/// reading). A recording being written yields what is written so far.
pub fn read(files: FileStore, recording_id: String) -> mpsc::Receiver<ApiResult<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let failed = |e: &dyn std::fmt::Display| {
            tracing::error!(recording = %recording_id, error = %e, "cannot read the recording");
            ApiError::Internal("the recording could not be read".into())
        };
        let mut reader = match files.read_recording(&recording_id) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.blocking_send(Err(failed(&e)));
                return;
            }
        };
        loop {
            match reader.next_piece() {
                Ok(Some(piece)) => {
                    for chunk in piece.chunks(CHUNK) {
                        if tx.blocking_send(Ok(chunk.to_vec())).is_err() {
                            return; // the reader left
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.blocking_send(Err(failed(&e)));
                    return;
                }
            }
        }
    });
    rx
}

/// Deletes a recording (record, then file). FAILED_PRECONDITION while an
/// output is writing it.
pub async fn delete(
    store: &Store,
    outputs: &OutputManager,
    who: &Principal,
    recording_id: &str,
) -> ApiResult<()> {
    let rec = get(store, who, recording_id).await?;
    let writing = outputs.of_session(&rec.session_id).iter().any(|o| {
        !o.state().ended()
            && o.kind
                == OutputKind::Recording {
                    recording_id: rec.id.clone(),
                }
    });
    if writing {
        return Err(ApiError::FailedPrecondition(format!(
            "recording {} is being written; remove its output first",
            rec.id
        )));
    }
    remove(store, who, &rec.id, "recording.delete").await?;
    Ok(())
}

/// Deletes a recording's record (audited as `action`) and then its file;
/// false when there was no such record. A file a failure leaves behind
/// stays encrypted on disk and is logged (the startup sweep covers avatar
/// files only so far).
pub async fn remove(store: &Store, who: &Principal, id: &str, action: &str) -> ApiResult<bool> {
    let tenant = who.tenant_id.clone();
    let id2 = id.to_owned();
    let audit = AuditEntry::new(Some(who), action, id, "ok");
    let deleted = store
        .run(move |b| b.delete_recording(&tenant, &id2, &audit))
        .await?;
    let files = store.files.clone();
    let id2 = id.to_owned();
    match tokio::task::spawn_blocking(move || files.remove_recording(&id2)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(recording = %id, error = %e, "recording file left on disk"),
        Err(e) => tracing::warn!(recording = %id, error = %e, "recording file left on disk"),
    }
    Ok(deleted)
}
