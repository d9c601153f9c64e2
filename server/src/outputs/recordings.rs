//! The recordings a tenant keeps: listed, read back (decrypted as they
//! stream out, never whole in memory), deleted; every access audited.

use super::manager::{OutputKind, OutputManager};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::files::{FileStore, ReadError};
use crate::store::{AuditEntry, Principal, Recording, Store};
use base64::Engine;
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
    Ok(store.audit(who, action, target, &outcome).await?)
}

/// How long a download path from GetRecording works.
pub const DOWNLOAD_TOKEN_TTL_MS: i64 = 3600 * 1000;

/// The recording's file, decrypted, in chunks of at most [`CHUNK`] bytes
/// from a blocking thread (bounded channel: a slow reader slows the
/// reading). A recording being written yields what is written so far.
pub fn read(files: FileStore, recording_id: String) -> mpsc::Receiver<ApiResult<Vec<u8>>> {
    read_range(files, recording_id, 0, u64::MAX)
}

/// Bytes `start..end` of the recording's file (decrypted), as [`read`]
/// does; only the pieces the range touches are decrypted.
pub fn read_range(
    files: FileStore,
    recording_id: String,
    start: u64,
    end: u64,
) -> mpsc::Receiver<ApiResult<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = send_range(&files, &recording_id, start, end, &tx) {
            tracing::error!(recording = %recording_id, error = %e, "cannot read the recording");
            let _ = tx.blocking_send(Err(ApiError::Internal(
                "the recording could not be read".into(),
            )));
        }
    });
    rx
}

fn send_range(
    files: &FileStore,
    id: &str,
    start: u64,
    end: u64,
    tx: &mpsc::Sender<ApiResult<Vec<u8>>>,
) -> Result<(), ReadError> {
    // The piece holding `start`, and where it begins in the file's bytes.
    let mut at = 0u64;
    let mut first = (0u64, None);
    for (i, p) in files.recording_index(id)?.into_iter().enumerate() {
        if at + p.len > start {
            first = (i as u64, Some(p.offset));
            break;
        }
        at += p.len;
    }
    let (index, Some(offset)) = first else {
        return Ok(()); // past the end
    };
    let mut reader = files.read_recording_at(id, index, offset)?;
    while at < end {
        let Some(piece) = reader.next_piece()? else {
            return Ok(());
        };
        let from = start.saturating_sub(at) as usize;
        let to = (end - at).min(piece.len() as u64) as usize;
        at += piece.len() as u64;
        for chunk in piece[from.min(to)..to].chunks(CHUNK) {
            if tx.blocking_send(Ok(chunk.to_vec())).is_err() {
                return Ok(()); // the reader left
            }
        }
    }
    Ok(())
}

/// The length of the recording's file as it is now (blocking).
pub fn size(files: &FileStore, recording_id: &str) -> std::io::Result<u64> {
    Ok(files
        .recording_index(recording_id)?
        .iter()
        .map(|p| p.len)
        .sum())
}

/// A token that lets its holder download one recording until `expires`
/// (Unix ms) without an API key, for a browser `<video src>`: the tenant,
/// recording and expiry sealed by the storage keys (any server sharing
/// them accepts it), base64url.
pub fn download_token(files: &FileStore, r: &Recording, expires: i64) -> String {
    let payload = format!("{}|{}|{expires}", r.tenant_id, r.id);
    let sealed = files.keyring().seal(payload.as_bytes(), TOKEN_AAD);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
}

/// The caller a download token stands for and its recording, if the token
/// is genuine, for `recording_id` and not expired.
pub fn check_download_token(
    files: &FileStore,
    token: &str,
    recording_id: &str,
    now: i64,
) -> Option<Principal> {
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let payload = files.keyring().open(&sealed, TOKEN_AAD).ok()?;
    let payload = String::from_utf8(payload).ok()?;
    let mut parts = payload.split('|');
    let (tenant, id, expires) = (parts.next()?, parts.next()?, parts.next()?);
    let expires: i64 = expires.parse().ok()?;
    (id == recording_id && now < expires).then(|| Principal {
        tenant_id: tenant.to_owned(),
        key_id: "download-token".to_owned(),
    })
}

/// Associated data of download tokens (nothing else is sealed with it).
const TOKEN_AAD: &[u8] = b"recording-download-token";

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
/// stays encrypted on disk until the next start's sweep.
pub async fn remove(store: &Store, who: &Principal, id: &str, action: &str) -> ApiResult<bool> {
    let tenant = who.tenant_id.clone();
    let id2 = id.to_owned();
    let audit = AuditEntry::new(Some(who), action, id, "ok");
    let deleted = store
        .run(move |b| b.delete_recording(&tenant, &id2, &audit))
        .await?;
    store.files.remove_recordings(&[id.to_owned()]).await;
    Ok(deleted)
}
