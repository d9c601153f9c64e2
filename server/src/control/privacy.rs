//! `huashen.v1.PrivacyService`: data-subject export and deletion.

use super::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::session::SessionManager;
use crate::store::files::PORTRAIT_FILE;
use crate::store::{AuditEntry, Avatar, Principal, SessionRecord, Store, now_ms};
use futures::Stream;
use huashen_protos::v1;
use huashen_protos::v1::privacy_service_server::PrivacyService;
use serde_json::json;
use std::collections::HashSet;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Size of one streamed archive chunk.
const CHUNK: usize = 64 * 1024;

pub struct PrivacyApi {
    pub store: Store,
    pub sessions: SessionManager,
}

impl PrivacyApi {
    /// The avatars in scope: one (NOT_FOUND if not the caller's) or all.
    async fn scope(&self, who: &Principal, avatar_id: &str) -> ApiResult<Vec<Avatar>> {
        let tenant = who.tenant_id.clone();
        if !avatar_id.is_empty() {
            let id = ids::parse_id("avatar_id", ids::AVATAR, avatar_id)?;
            let id2 = id.clone();
            return self
                .store
                .run(move |b| b.get_avatar(&tenant, &id2))
                .await?
                .map(|a| vec![a])
                .ok_or_else(|| ApiError::not_found(format!("avatar {id} not found")));
        }
        Ok(self
            .store
            .run(move |b| {
                let mut all = vec![];
                let mut before: Option<String> = None;
                loop {
                    let page = b.list_avatars(&tenant, before.as_deref(), 500)?;
                    let done = page.len() < 500;
                    before = page.last().map(|a| a.id.clone());
                    all.extend(page);
                    if done {
                        return Ok(all);
                    }
                }
            })
            .await?)
    }
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

/// `std::io::Write` that sends what is written, in chunks, down a channel.
struct ChunkWriter {
    tx: mpsc::Sender<Result<v1::ExportChunk, Status>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(v1::ExportChunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl std::io::Write for ChunkWriter {
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

fn add_file(tar: &mut tar::Builder<ChunkWriter>, path: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime((now_ms() / 1000) as u64);
    h.set_cksum();
    tar.append_data(&mut h, path, data)
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<v1::ExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl PrivacyService for PrivacyApi {
    type ExportSubjectDataStream = ExportStream;

    async fn export_subject_data(
        &self,
        request: Request<v1::ExportSubjectDataRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let avatar_id = request.into_inner().avatar_id;
        let avatars = self.scope(&who, &avatar_id).await?;
        let tenant = who.tenant_id.clone();
        let only = (!avatar_id.is_empty()).then(|| avatar_id.clone());
        let (sessions, audit) = self
            .store
            .run(move |b| {
                let sessions = b.sessions_of(&tenant, only.as_deref())?;
                let audit = b.audit_for_tenant(&tenant, 1_000_000)?;
                Ok((sessions, audit))
            })
            .await
            .map_err(ApiError::from)?;
        // Avatar scope: only the entries about its objects.
        let objects: HashSet<&str> = avatars
            .iter()
            .map(|a| a.id.as_str())
            .chain(sessions.iter().map(|s| s.id.as_str()))
            .collect();
        let audit: Vec<serde_json::Value> = audit
            .iter()
            .filter(|e| avatar_id.is_empty() || objects.contains(e.target.as_str()))
            .map(|e| {
                json!({"time_ms": e.at, "actor": e.actor, "action": e.action, "target": e.target, "outcome": e.outcome})
            })
            .collect();
        let sessions: Vec<serde_json::Value> = sessions.iter().map(session_json).collect();
        let target = if avatar_id.is_empty() {
            "tenant".to_owned()
        } else {
            avatar_id.clone()
        };
        let entry = AuditEntry::new(Some(&who), "subject.export", target.clone(), "ok");
        self.store
            .run(move |b| b.append_audit(&entry))
            .await
            .map_err(ApiError::from)?;

        let (tx, rx) = mpsc::channel(4);
        let files = self.store.files.clone();
        let err_tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = (|| -> std::io::Result<()> {
                let mut tar = tar::Builder::new(ChunkWriter {
                    tx,
                    buf: Vec::with_capacity(CHUNK),
                });
                let manifest = json!({
                    "generator": format!("huashen/{}", env!("CARGO_PKG_VERSION")),
                    "generated_at_ms": now_ms(),
                    "scope": target,
                    "avatars": avatars.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
                    "contents": ["avatars/<id>/avatar.json", "avatars/<id>/portrait.png",
                                 "avatars/<id>/original.* (when kept)", "sessions.json",
                                 "audit.json", "recordings.json"],
                });
                add_file(
                    &mut tar,
                    "manifest.json",
                    &serde_json::to_vec_pretty(&manifest)?,
                )?;
                for a in &avatars {
                    let dir = format!("avatars/{}", a.id);
                    add_file(
                        &mut tar,
                        &format!("{dir}/avatar.json"),
                        &serde_json::to_vec_pretty(&avatar_json(a))?,
                    )?;
                    let mut names = vec![PORTRAIT_FILE.to_owned()];
                    if a.original_kept {
                        names.push(format!("original.{}", a.image_format.as_str()));
                    }
                    for name in names {
                        match files.read_avatar_file(&a.id, &name) {
                            Ok(bytes) => add_file(&mut tar, &format!("{dir}/{name}"), &bytes)?,
                            Err(e) => {
                                tracing::warn!(avatar = %a.id, error = %e, "file missing from export")
                            }
                        }
                    }
                }
                add_file(
                    &mut tar,
                    "sessions.json",
                    &serde_json::to_vec_pretty(&sessions)?,
                )?;
                add_file(&mut tar, "audit.json", &serde_json::to_vec_pretty(&audit)?)?;
                // Huashen records nothing yet; the list is here so the archive
                // always says so.
                add_file(&mut tar, "recordings.json", b"[]")?;
                let mut w = tar.into_inner()?;
                std::io::Write::flush(&mut w)
            })();
            if let Err(e) = result
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                tracing::error!(error = %e, "export failed");
                let _ = err_tx
                    .blocking_send(Err(Status::internal("the export could not be completed")));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delete_subject_data(
        &self,
        request: Request<v1::DeleteSubjectDataRequest>,
    ) -> Result<Response<v1::DeleteSubjectDataResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let req = request.into_inner();
        if !req.confirm {
            return Err(ApiError::invalid(
                "confirm must be true: DeleteSubjectData deletes the data for good",
            )
            .into());
        }
        let avatars = self.scope(&who, &req.avatar_id).await?;
        let mut out = v1::DeleteSubjectDataResponse::default();
        for a in avatars {
            out.closed_session_ids
                .extend(self.sessions.close_for_avatar(&who.tenant_id, &a.id).await);
            let tenant = who.tenant_id.clone();
            let id = a.id.clone();
            let audit = AuditEntry::new(Some(&who), "subject.delete", a.id.clone(), "ok");
            // Records first: a crash after this leaves only files no record
            // points to, which the next start removes.
            let sessions = self
                .store
                .run(move |b| {
                    b.delete_avatar(&tenant, &id, &audit)?;
                    b.delete_closed_sessions(&tenant, Some(&id))
                })
                .await
                .map_err(ApiError::from)?;
            out.deleted_session_records += sessions as u32;
            match self.store.files.remove_avatar(&a.id).await {
                Ok(n) => out.deleted_files += n as u32,
                Err(e) => {
                    tracing::warn!(avatar = %a.id, error = %e, "files left for the startup sweep")
                }
            }
            out.deleted_avatar_ids.push(a.id);
        }
        Ok(Response::new(out))
    }
}
