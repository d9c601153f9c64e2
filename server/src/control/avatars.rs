//! `huashen.v1.AvatarService`: enrollment (streamed upload with consent and
//! progress), get, list, delete.

use super::auth::authenticate;
use super::validate;
use crate::engines::face::{FaceEngine, FaceError};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::session::SessionManager;
use crate::store::files::{FACE_FILE, PORTRAIT_FILE};
use crate::store::{AuditEntry, Avatar, AvatarState, ImageFormat, Principal, Store, now_ms};
use futures::Stream;
use huashen_protos::v1;
use huashen_protos::v1::avatar_service_server::AvatarService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest `chunk` message accepted.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

pub struct AvatarApi {
    pub store: Store,
    pub sessions: SessionManager,
    pub max_image_bytes: u64,
}

fn format_from_proto(v: i32) -> ApiResult<ImageFormat> {
    match v1::ImageFormat::try_from(v) {
        Ok(v1::ImageFormat::Jpeg) => Ok(ImageFormat::Jpeg),
        Ok(v1::ImageFormat::Png) => Ok(ImageFormat::Png),
        Ok(v1::ImageFormat::Webp) => Ok(ImageFormat::Webp),
        Ok(v1::ImageFormat::Unspecified) => Err(ApiError::invalid(
            "start.image_format is required: IMAGE_FORMAT_JPEG, IMAGE_FORMAT_PNG or IMAGE_FORMAT_WEBP",
        )),
        Err(_) => Err(ApiError::invalid(format!(
            "start.image_format {v} is not a known ImageFormat"
        ))),
    }
}

fn format_to_proto(f: ImageFormat) -> v1::ImageFormat {
    match f {
        ImageFormat::Jpeg => v1::ImageFormat::Jpeg,
        ImageFormat::Png => v1::ImageFormat::Png,
        ImageFormat::Webp => v1::ImageFormat::Webp,
    }
}

pub fn avatar_to_proto(a: &Avatar) -> v1::Avatar {
    let c = &a.consent;
    v1::Avatar {
        avatar_id: a.id.clone(),
        display_name: a.display_name.clone(),
        state: match a.state {
            AvatarState::Processing => v1::AvatarState::Processing,
            AvatarState::Ready => v1::AvatarState::Ready,
            AvatarState::Failed => v1::AvatarState::Failed,
        } as i32,
        failure_reason: a.failure_reason.clone(),
        image_format: format_to_proto(a.image_format) as i32,
        image_bytes: a.image_bytes,
        image_sha256: a.image_sha256.clone(),
        consent: Some(v1::ConsentRecord {
            uploader: c.uploader.clone(),
            subject_name: c.subject_name.clone(),
            subject_consented: c.subject_consented,
            subject_is_minor: c.subject_is_minor,
            guardian_name: c.guardian_name.clone(),
            purpose: c.purpose.clone(),
            consented_at: Some(validate::timestamp(c.consented_at)),
            policy_version: c.policy_version.clone(),
        }),
        created_at: Some(validate::timestamp(a.created_at)),
        labels: a.labels.clone().into_iter().collect(),
        original_kept: a.original_kept,
        face: Some(v1::FaceSummary {
            faces_found: a.face.faces_found,
            score: a.face.score,
        }),
    }
}

/// Everything checked in the first message, before any byte is stored.
struct EnrollPlan {
    who: Principal,
    display_name: String,
    format: ImageFormat,
    total: Option<u64>,
    inline: Vec<u8>,
    consent: crate::store::Consent,
    labels: std::collections::BTreeMap<String, String>,
    keep_original: bool,
}

type EventTx = mpsc::Sender<Result<v1::EnrollAvatarResponse, Status>>;

fn progress(stage: v1::EnrollStage, received: u64, total: Option<u64>) -> v1::EnrollAvatarResponse {
    let fraction = match total {
        Some(t) if t > 0 => (received as f64 / t as f64).min(1.0) as f32,
        _ => 0.0,
    };
    v1::EnrollAvatarResponse {
        event: Some(v1::enroll_avatar_response::Event::Progress(
            v1::EnrollProgress {
                stage: stage as i32,
                received_bytes: received,
                fraction,
            },
        )),
    }
}

impl AvatarApi {
    fn plan(
        &self,
        who: Principal,
        first: Option<v1::EnrollAvatarRequest>,
    ) -> ApiResult<EnrollPlan> {
        let first = first.ok_or_else(|| {
            ApiError::invalid("the upload stream is empty: the first message must carry `start`")
        })?;
        let start = match first.payload {
            Some(v1::enroll_avatar_request::Payload::Start(s)) => s,
            _ => {
                return Err(ApiError::invalid(
                    "the first message must carry `start` (name, consent, image format)",
                ));
            }
        };
        let consent = validate::consent(start.consent.as_ref())?;
        let display_name = validate::text("start.display_name", &start.display_name, 200)?;
        let format = format_from_proto(start.image_format)?;
        let labels = validate::labels("start.labels", &start.labels)?;
        let total = (start.total_bytes > 0).then_some(start.total_bytes);
        if let Some(t) = total
            && t > self.max_image_bytes
        {
            return Err(ApiError::ResourceExhausted(format!(
                "start.total_bytes is {t}; the server accepts images up to {} bytes",
                self.max_image_bytes
            )));
        }
        if start.inline_image.len() as u64 > self.max_image_bytes {
            return Err(ApiError::ResourceExhausted(format!(
                "start.inline_image is {} bytes; the server accepts images up to {} bytes",
                start.inline_image.len(),
                self.max_image_bytes
            )));
        }
        Ok(EnrollPlan {
            who,
            display_name,
            format,
            total,
            inline: start.inline_image,
            consent,
            labels,
            keep_original: start.keep_original,
        })
    }

    /// Receives the image, stores it and its records; sends progress on `tx`.
    async fn receive_and_store(
        store: Store,
        max: u64,
        plan: EnrollPlan,
        mut inbound: Streaming<v1::EnrollAvatarRequest>,
        tx: &EventTx,
        face: Arc<FaceEngine>,
    ) -> ApiResult<v1::Avatar> {
        let mut upload = store.files.begin_upload();
        let has_inline = !plan.inline.is_empty();
        if has_inline {
            upload.write(&plan.inline);
        }
        let _ = tx.try_send(Ok(progress(
            v1::EnrollStage::Receiving,
            upload.len(),
            plan.total,
        )));
        loop {
            let Some(msg) = inbound.message().await? else {
                break;
            };
            let chunk = match msg.payload {
                Some(v1::enroll_avatar_request::Payload::Chunk(c)) => c,
                Some(v1::enroll_avatar_request::Payload::Start(_)) => {
                    return Err(ApiError::invalid(
                        "`start` may only be sent in the first message",
                    ));
                }
                None => {
                    return Err(ApiError::invalid(
                        "a message after `start` must carry `chunk`",
                    ));
                }
            };
            if has_inline {
                return Err(ApiError::invalid(
                    "start.inline_image was set, so no `chunk` messages may follow",
                ));
            }
            if chunk.len() > MAX_CHUNK_BYTES {
                return Err(ApiError::invalid(format!(
                    "a chunk is {} bytes; at most {MAX_CHUNK_BYTES} per message",
                    chunk.len()
                )));
            }
            if upload.len() + chunk.len() as u64 > max {
                return Err(ApiError::ResourceExhausted(format!(
                    "the image is larger than the server's limit of {max} bytes"
                )));
            }
            if let Some(t) = plan.total
                && upload.len() + chunk.len() as u64 > t
            {
                return Err(ApiError::invalid(format!(
                    "the upload is longer than start.total_bytes ({t})"
                )));
            }
            upload.write(&chunk);
            // Progress is advisory: a slow reader misses some, never blocks us.
            let _ = tx.try_send(Ok(progress(
                v1::EnrollStage::Receiving,
                upload.len(),
                plan.total,
            )));
        }
        let _ = tx.try_send(Ok(progress(
            v1::EnrollStage::Validating,
            upload.len(),
            plan.total,
        )));
        if upload.is_empty() {
            return Err(ApiError::invalid("the upload contains no image bytes"));
        }
        if let Some(t) = plan.total
            && upload.len() != t
        {
            return Err(ApiError::invalid(format!(
                "the upload has {} bytes but start.total_bytes said {t}",
                upload.len()
            )));
        }
        if !plan.format.matches_magic(upload.head()) {
            return Err(ApiError::invalid(format!(
                "the uploaded bytes are not a {} image (declared in start.image_format)",
                plan.format.as_str().to_uppercase()
            )));
        }
        // It must decode (within pixel limits) to be a usable portrait; what
        // is kept is the normalised portrait derived from it, and the face
        // found in it.
        let detect_tx = tx.clone();
        let total = plan.total;
        let (upload, portrait, record) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
            use crate::engines::portrait::{self, PortraitError};
            let limit = |e: PortraitError| match e {
                e @ PortraitError::TooLarge { .. } => ApiError::ResourceExhausted(e.to_string()),
                e => ApiError::invalid(e.to_string()),
            };
            let img = portrait::decode(upload.bytes()).map_err(limit)?;
            let normalised = portrait::normalise(&img).map_err(limit)?;
            let _ = detect_tx.try_send(Ok(progress(
                v1::EnrollStage::Detecting,
                upload.len(),
                total,
            )));
            // Analysed exactly as sessions will see it: the normalised copy.
            let kept = portrait::decode(&normalised).map_err(limit)?.to_rgb8();
            let record = face.analyze(&kept).map_err(|e| match e {
                FaceError::Unusable(check) => {
                    ApiError::invalid(format!("this photo cannot be animated: {check}"))
                }
                FaceError::Unavailable(r) => ApiError::FailedPrecondition(r),
                e => ApiError::Unavailable(e.to_string()),
            })?;
            Ok((upload, normalised, record))
        })
        .await
        .map_err(|e| crate::store::StoreError::Task(e.to_string()))??;
        let _ = tx.try_send(Ok(progress(
            v1::EnrollStage::Storing,
            upload.len(),
            plan.total,
        )));
        let avatar = Avatar {
            id: ids::new_id(ids::AVATAR),
            tenant_id: plan.who.tenant_id.clone(),
            display_name: plan.display_name,
            state: AvatarState::Ready,
            failure_reason: String::new(),
            image_format: plan.format,
            image_bytes: upload.len(),
            image_sha256: upload.sha256_hex(),
            consent: plan.consent,
            labels: plan.labels,
            created_at: now_ms(),
            original_kept: plan.keep_original,
            face: crate::store::FaceSummary {
                faces_found: record.faces_found,
                score: record.score,
            },
        };
        let stored = async {
            store
                .files
                .write_avatar_file(&avatar.id, PORTRAIT_FILE, &portrait)
                .await?;
            store
                .files
                .write_avatar_file(&avatar.id, FACE_FILE, &record.to_json())
                .await?;
            if plan.keep_original {
                let name = format!("original.{}", plan.format.as_str());
                store.files.commit_upload(upload, &avatar.id, &name).await?;
            }
            // Otherwise the upload is dropped here: it never reached the disk.
            std::io::Result::Ok(())
        }
        .await;
        if let Err(e) = stored {
            let _ = store.files.remove_avatar(&avatar.id).await;
            return Err(crate::store::StoreError::from(e).into());
        }
        let audit = AuditEntry::new(Some(&plan.who), "avatar.enroll", avatar.id.clone(), "ok");
        let rec = avatar.clone();
        if let Err(e) = store.run(move |b| b.insert_avatar(&rec, &audit)).await {
            // No record points to the file: remove it now (or at next start).
            let _ = store.files.remove_avatar(&avatar.id).await;
            return Err(e.into());
        }
        let _ = tx
            .send(Ok(progress(
                v1::EnrollStage::Done,
                avatar.image_bytes,
                plan.total,
            )))
            .await;
        tracing::info!(avatar = %avatar.id, bytes = avatar.image_bytes, "avatar enrolled");
        Ok(avatar_to_proto(&avatar))
    }
}

type EnrollStream = Pin<Box<dyn Stream<Item = Result<v1::EnrollAvatarResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AvatarService for AvatarApi {
    type EnrollAvatarStream = EnrollStream;

    async fn enroll_avatar(
        &self,
        request: Request<Streaming<v1::EnrollAvatarRequest>>,
    ) -> Result<Response<EnrollStream>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await.map_err(|status| {
            // A first message over the decoder's limit is a whole image sent
            // inline (gRPC-Web) that is larger than the server accepts.
            if status.code() == tonic::Code::OutOfRange {
                Status::resource_exhausted(format!(
                    "the image is larger than the server's limit of {} bytes ({})",
                    self.max_image_bytes,
                    status.message()
                ))
            } else {
                status
            }
        })?;
        let plan = self.plan(who, first)?;
        let face = self.sessions.engines().face.clone();
        face.available().map_err(|reason| {
            ApiError::FailedPrecondition(format!(
                "avatars cannot be enrolled: the face models are not installed ({reason})"
            ))
        })?;
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        let max = self.max_image_bytes;
        tokio::spawn(async move {
            let result = AvatarApi::receive_and_store(store, max, plan, inbound, &tx, face).await;
            let last = match result {
                Ok(avatar) => Ok(v1::EnrollAvatarResponse {
                    event: Some(v1::enroll_avatar_response::Event::Avatar(avatar)),
                }),
                Err(e) => Err(Status::from(e)),
            };
            // A send error means the client left; the upload was dropped.
            let _ = tx.send(last).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_avatar(
        &self,
        request: Request<v1::GetAvatarRequest>,
    ) -> Result<Response<v1::Avatar>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let id = ids::parse_id("avatar_id", ids::AVATAR, &request.get_ref().avatar_id)?;
        let tenant = who.tenant_id.clone();
        let id2 = id.clone();
        let avatar = self
            .store
            .run(move |b| b.get_avatar(&tenant, &id2))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("avatar {id} not found")))?;
        self.audit_read(&who, "avatar.read", avatar.id.clone(), "ok".into())
            .await?;
        Ok(Response::new(avatar_to_proto(&avatar)))
    }

    async fn list_avatars(
        &self,
        request: Request<v1::ListAvatarsRequest>,
    ) -> Result<Response<v1::ListAvatarsResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let (size, before) = validate::page(request.get_ref().page.as_ref(), ids::AVATAR)?;
        let tenant = who.tenant_id.clone();
        let avatars = self
            .store
            .run(move |b| b.list_avatars(&tenant, before.as_deref(), size))
            .await
            .map_err(ApiError::from)?;
        let next_page_token =
            validate::next_token(avatars.len(), size, avatars.last().map(|a| a.id.as_str()));
        self.audit_read(
            &who,
            "avatar.list",
            String::new(),
            format!("{} avatars", avatars.len()),
        )
        .await?;
        Ok(Response::new(v1::ListAvatarsResponse {
            avatars: avatars.iter().map(avatar_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn delete_avatar(
        &self,
        request: Request<v1::DeleteAvatarRequest>,
    ) -> Result<Response<v1::DeleteAvatarResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let id = ids::parse_id("avatar_id", ids::AVATAR, &request.get_ref().avatar_id)?;
        let closed_session_ids = self.remove(&who, &id, "avatar.delete").await?;
        Ok(Response::new(v1::DeleteAvatarResponse {
            closed_session_ids,
        }))
    }

    async fn withdraw_consent(
        &self,
        request: Request<v1::WithdrawConsentRequest>,
    ) -> Result<Response<v1::WithdrawConsentResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let id = ids::parse_id("avatar_id", ids::AVATAR, &request.get_ref().avatar_id)?;
        let closed_session_ids = self.remove(&who, &id, "consent.withdraw").await?;
        Ok(Response::new(v1::WithdrawConsentResponse {
            closed_session_ids,
            withdrawn_at: Some(validate::timestamp(now_ms())),
        }))
    }
}

impl AvatarApi {
    /// Closes an avatar's sessions, then deletes its records (consent
    /// included) and files; `action` names why in the audit log. Returns the
    /// closed sessions.
    async fn remove(&self, who: &Principal, id: &str, action: &str) -> ApiResult<Vec<String>> {
        let tenant = who.tenant_id.clone();
        let id2 = id.to_owned();
        let exists = self
            .store
            .run(move |b| b.get_avatar(&tenant, &id2))
            .await?
            .is_some();
        if !exists {
            return Err(ApiError::not_found(format!("avatar {id} not found")));
        }
        // Sessions first, so nothing uses the files while they go.
        let mut closed = self.sessions.close_for_avatar(&who.tenant_id, id).await;
        let tenant = who.tenant_id.clone();
        let id2 = id.to_owned();
        let audit = AuditEntry::new(Some(who), action, id, "ok");
        let deleted = self
            .store
            .run(move |b| b.delete_avatar(&tenant, &id2, &audit))
            .await?;
        if !deleted {
            return Err(ApiError::not_found(format!("avatar {id} not found")));
        }
        // A session created while the row was still there closes too.
        closed.extend(self.sessions.close_for_avatar(&who.tenant_id, id).await);
        if let Err(e) = self.store.files.remove_avatar(id).await {
            // The record is gone; the startup sweep removes what is left.
            tracing::warn!(avatar = %id, error = %e, "could not remove avatar files now");
        }
        tracing::info!(avatar = %id, closed = closed.len(), action, "avatar removed");
        Ok(closed)
    }

    /// Records a read of personal data in the audit log.
    async fn audit_read(
        &self,
        who: &Principal,
        action: &str,
        target: String,
        outcome: String,
    ) -> ApiResult<()> {
        let entry = AuditEntry::new(Some(who), action, target, &outcome);
        self.store.run(move |b| b.append_audit(&entry)).await?;
        Ok(())
    }
}

/// Path of `EnrollAvatar`, the one call whose request can be large.
const ENROLL_PATH: &str = "/huashen.v1.AvatarService/EnrollAvatar";

/// Bytes of an oversize gRPC-Web upload read (and dropped) before the
/// refusal goes out; beyond this the connection is simply closed.
const DRAIN_LIMIT: u64 = 256 * 1024 * 1024;

/// Refuses a browser's (gRPC-Web) enrollment whose body is larger than
/// `message_limit` with RESOURCE_EXHAUSTED naming the image limit, *after*
/// reading the body. Answering while the browser is still uploading would
/// close an HTTP/1.1 connection under it, and the page would see only
/// "Failed to fetch" instead of the server's message. HTTP/2 (native gRPC)
/// resets just the stream, so tonic's own size check serves it.
pub async fn refuse_oversize_web_uploads(
    message_limit: usize,
    max_image_bytes: u64,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body_util::BodyExt;
    let web = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web"));
    let length = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(length) =
        length.filter(|&l| web && request.uri().path() == ENROLL_PATH && l > message_limit as u64)
    else {
        return next.run(request).await;
    };
    let content_type = request.headers()[http::header::CONTENT_TYPE].clone();
    if length <= DRAIN_LIMIT {
        let mut body = request.into_body();
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                break;
            }
        }
    }
    let status = Status::resource_exhausted(format!(
        "the image is larger than the server's limit of {max_image_bytes} bytes \
         (the upload was {length} bytes)"
    ));
    // A gRPC-Web "trailers-only" answer: the status in the headers.
    let mut response = axum::response::Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(http::header::CONTENT_TYPE, content_type);
    if status.add_header(headers).is_err() {
        tracing::warn!("cannot encode the oversize-upload status");
    }
    response
}
