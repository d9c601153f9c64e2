//! The subject-data archive: a tar of the avatars' records, portraits (and
//! originals when kept), face records, session records and audit entries, streamed in
//! chunks as it is written.

use super::scope;
use crate::error::{ApiError, ApiResult};
use crate::store::files::{FACE_FILE, FileStore, PORTRAIT_FILE};
use crate::store::{AuditEntry, Avatar, Principal, Recording, SessionRecord, Store, now_ms};
use serde_json::json;
use std::collections::HashSet;
use std::io::Write;
use tokio::sync::mpsc;

/// Size of one streamed archive chunk.
const CHUNK: usize = 64 * 1024;
/// Audit entries read for one export, at most.
const MAX_AUDIT: usize = 1_000_000;
/// Recordings read for one export, at most.
const MAX_RECORDINGS: usize = 100_000;

/// What one archive holds, read from the records.
pub struct Export {
    /// `tenant`, or the avatar's id.
    scope: String,
    avatars: Vec<Avatar>,
    sessions: Vec<SessionRecord>,
    recordings: Vec<Recording>,
    audit: Vec<AuditEntry>,
}

/// Reads what an export of `avatar_id` (empty: the whole tenant) holds, and
/// records the export in the audit log.
pub async fn prepare(store: &Store, who: &Principal, avatar_id: &str) -> ApiResult<Export> {
    let avatars = scope::avatars(store, who, avatar_id).await?;
    let tenant = who.tenant_id.clone();
    let only = (!avatar_id.is_empty()).then(|| avatar_id.to_owned());
    let (sessions, recordings, mut audit) = store
        .run(move |b| {
            let sessions = b.sessions_of(&tenant, only.as_deref())?;
            let recordings = b.list_recordings(&tenant, only.as_deref(), None, MAX_RECORDINGS)?;
            let audit = b.audit_for_tenant(&tenant, MAX_AUDIT)?;
            Ok((sessions, recordings, audit))
        })
        .await?;
    if !avatar_id.is_empty() {
        // Avatar scope: only the entries about its objects.
        let objects: HashSet<&str> = avatars
            .iter()
            .map(|a| a.id.as_str())
            .chain(sessions.iter().map(|s| s.id.as_str()))
            .chain(recordings.iter().map(|r| r.id.as_str()))
            .collect();
        audit.retain(|e| objects.contains(e.target.as_str()));
    }
    let scope = if avatar_id.is_empty() {
        "tenant".to_owned()
    } else {
        avatar_id.to_owned()
    };
    let entry = AuditEntry::new(Some(who), "subject.export", scope.clone(), "ok");
    store.run(move |b| b.append_audit(&entry)).await?;
    Ok(Export {
        scope,
        avatars,
        sessions,
        recordings,
        audit,
    })
}

/// Writes the archive on a blocking thread; its chunks come out of the
/// returned channel (bounded: a slow reader slows the writer). A failure
/// ends the stream with an error; a reader that leaves stops the writer.
pub fn stream(export: Export, files: FileStore) -> mpsc::Receiver<ApiResult<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = write_archive(&export, &files, &mut out)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::error!(error = %e, "export failed");
            let _ = tx.blocking_send(Err(ApiError::Internal(
                "the export could not be completed".into(),
            )));
        }
    });
    rx
}

fn write_archive(export: &Export, files: &FileStore, out: &mut impl Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    let manifest = json!({
        "generator": format!("huashen/{}", env!("CARGO_PKG_VERSION")),
        "generated_at_ms": now_ms(),
        "scope": export.scope,
        "avatars": export.avatars.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        "contents": ["avatars/<id>/avatar.json", "avatars/<id>/portrait.png",
                     "avatars/<id>/face.json (the face record: landmarks found at enrollment)",
                     "avatars/<id>/original.* (when kept)", "sessions.json",
                     "audit.json", "recordings.json", "recordings/<id>.mp4"],
    });
    add_json(&mut tar, "manifest.json", &manifest)?;
    for a in &export.avatars {
        let dir = format!("avatars/{}", a.id);
        add_json(&mut tar, &format!("{dir}/avatar.json"), &avatar_json(a))?;
        // The face record is biometric data about the subject: it is theirs
        // to see as much as the portrait.
        let mut names = vec![PORTRAIT_FILE.to_owned(), FACE_FILE.to_owned()];
        if a.original_kept {
            names.push(format!("original.{}", a.image_format.as_str()));
        }
        for name in names {
            match files.read_avatar_file(&a.id, &name) {
                Ok(bytes) => add_file(&mut tar, &format!("{dir}/{name}"), &bytes)?,
                Err(e) => tracing::warn!(avatar = %a.id, error = %e, "file missing from export"),
            }
        }
    }
    let sessions: Vec<serde_json::Value> = export.sessions.iter().map(session_json).collect();
    add_json(&mut tar, "sessions.json", &sessions)?;
    let audit: Vec<serde_json::Value> = export.audit.iter().map(audit_json).collect();
    add_json(&mut tar, "audit.json", &audit)?;
    let recordings: Vec<serde_json::Value> = export.recordings.iter().map(recording_json).collect();
    add_json(&mut tar, "recordings.json", &recordings)?;
    for r in &export.recordings {
        add_recording(&mut tar, files, r)?;
    }
    tar.into_inner()?.flush()
}

fn add_json<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    add_file(tar, path, &serde_json::to_vec_pretty(value)?)
}

fn add_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime((now_ms() / 1000) as u64);
    h.set_cksum();
    tar.append_data(&mut h, path, data)
}

/// A recording's file, decrypted as it goes into the archive (its size,
/// which the tar header needs first, by a first pass).
fn add_recording<W: Write>(
    tar: &mut tar::Builder<W>,
    files: &FileStore,
    r: &Recording,
) -> std::io::Result<()> {
    let failed = |e: crate::store::files::ReadError| std::io::Error::other(e.to_string());
    let mut size = 0u64;
    let mut reader = files.read_recording(&r.id).map_err(failed)?;
    while let Some(piece) = reader.next_piece().map_err(failed)? {
        size += piece.len() as u64;
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime((now_ms() / 1000) as u64);
    h.set_cksum();
    let reader = files.read_recording(&r.id).map_err(failed)?;
    let pieces = Pieces {
        reader,
        piece: Vec::new(),
        at: 0,
        left: size,
    };
    tar.append_data(&mut h, format!("recordings/{}.mp4", r.id), pieces)
}

/// A recording's pieces as one `Read`, cut at the size the header says.
struct Pieces {
    reader: crate::store::sealed_stream::SealedReader,
    piece: Vec<u8>,
    at: usize,
    left: u64,
}

impl std::io::Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.piece.len() {
            if self.left == 0 {
                return Ok(0);
            }
            match self.reader.next_piece() {
                Ok(Some(p)) => (self.piece, self.at) = (p, 0),
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        let n = buf
            .len()
            .min(self.piece.len() - self.at)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        self.left -= n as u64;
        Ok(n)
    }
}

fn recording_json(r: &Recording) -> serde_json::Value {
    json!({
        "recording_id": r.id,
        "session_id": r.session_id,
        "avatar_id": r.avatar_id,
        "started_at_ms": r.started_at,
        "ended_at_ms": r.ended_at,
        "bytes": r.bytes,
        "duration_ms": r.duration_ms,
        "file": format!("recordings/{}.mp4", r.id),
    })
}

fn avatar_json(a: &Avatar) -> serde_json::Value {
    let c = &a.consent;
    json!({
        "avatar_id": a.id,
        "display_name": a.display_name,
        "state": a.state.as_str(),
        "image_format": a.image_format.as_str(),
        "image_bytes": a.image_bytes,
        "image_sha256": a.image_sha256,
        "labels": a.labels,
        "original_kept": a.original_kept,
        "faces_found": a.face.faces_found,
        "face_score": a.face.score,
        "created_at_ms": a.created_at,
        "consent": {
            "uploader": c.uploader,
            "subject_name": c.subject_name,
            "subject_consented": c.subject_consented,
            "subject_is_minor": c.subject_is_minor,
            "guardian_name": c.guardian_name,
            "purpose": c.purpose,
            "consented_at_ms": c.consented_at,
            "policy_version": c.policy_version,
            "recorded_at_ms": c.recorded_at,
        },
    })
}

fn session_json(s: &SessionRecord) -> serde_json::Value {
    json!({
        "session_id": s.id,
        "avatar_id": s.avatar_id,
        "language": s.language,
        "voice_id": s.voice_id,
        "output": {"width": s.width, "height": s.height, "fps": s.fps},
        "labels": s.labels,
        "created_at_ms": s.created_at,
        "closed_at_ms": s.closed_at,
        "close_reason": s.close_reason,
    })
}

fn audit_json(e: &AuditEntry) -> serde_json::Value {
    json!({"time_ms": e.at, "actor": e.actor, "action": e.action, "target": e.target, "outcome": e.outcome})
}

/// `std::io::Write` that sends what is written, in chunks, down a channel.
struct ChunkWriter {
    tx: mpsc::Sender<ApiResult<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
