//! `huashen.v1.AvatarService`: enrollment (streamed upload with consent and
//! progress), get, list, delete. The requests are checked here; `avatars/`
//! does the work.

use super::auth::authenticate;
use super::validate;
use crate::avatars::enroll::{self, EnrollPlan, Progress, Stage};
use crate::avatars::remove::remove;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::session::SessionManager;
use crate::store::{Avatar, AvatarState, ImageFormat, Principal, Store, now_ms};
use futures::{Stream, StreamExt};
use huashen_protos::v1;
use huashen_protos::v1::avatar_service_server::AvatarService;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct AvatarApi {
    pub store: Store,
    pub sessions: SessionManager,
    pub max_image_bytes: u64,
    pub limits: std::sync::Arc<super::ratelimit::RateLimits>,
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

fn progress_to_proto(p: Progress) -> v1::EnrollAvatarResponse {
    let fraction = match p.total {
        Some(t) if t > 0 => (p.received as f64 / t as f64).min(1.0) as f32,
        _ => 0.0,
    };
    let stage = match p.stage {
        Stage::Receiving => v1::EnrollStage::Receiving,
        Stage::Validating => v1::EnrollStage::Validating,
        Stage::Detecting => v1::EnrollStage::Detecting,
        Stage::Storing => v1::EnrollStage::Storing,
        Stage::Done => v1::EnrollStage::Done,
    };
    v1::EnrollAvatarResponse {
        event: Some(v1::enroll_avatar_response::Event::Progress(
            v1::EnrollProgress {
                stage: stage as i32,
                received_bytes: p.received,
                fraction,
            },
        )),
    }
}

/// The image bytes of a message after the first.
fn chunk_of(msg: Result<v1::EnrollAvatarRequest, Status>) -> ApiResult<Vec<u8>> {
    match msg?.payload {
        Some(v1::enroll_avatar_request::Payload::Chunk(c)) => Ok(c),
        Some(v1::enroll_avatar_request::Payload::Start(_)) => Err(ApiError::invalid(
            "`start` may only be sent in the first message",
        )),
        None => Err(ApiError::invalid(
            "a message after `start` must carry `chunk`",
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
        let peer = super::ratelimit::peer_of(&request);
        self.limits
            .check(super::ratelimit::Costly::Enroll, Some(&who.key_id), peer)?;
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
        enroll::check_models(&face)?;
        let (progress, reports) = mpsc::channel(16);
        let chunks = inbound.map(chunk_of);
        let enrolled = tokio::spawn(enroll::enroll(
            self.store.clone(),
            face,
            self.max_image_bytes,
            plan,
            chunks,
            progress,
        ));
        // Progress until the enrollment ends, then the avatar or the error.
        let last = futures::stream::once(async move {
            match enrolled.await {
                Ok(Ok(avatar)) => Ok(v1::EnrollAvatarResponse {
                    event: Some(v1::enroll_avatar_response::Event::Avatar(avatar_to_proto(
                        &avatar,
                    ))),
                }),
                Ok(Err(e)) => Err(Status::from(e)),
                Err(e) => Err(Status::internal(format!("enrollment failed: {e}"))),
            }
        });
        let reports = ReceiverStream::new(reports).map(|p| Ok(progress_to_proto(p)));
        Ok(Response::new(Box::pin(reports.chain(last))))
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
        let closed_session_ids =
            remove(&self.store, &self.sessions, &who, &id, "avatar.delete").await?;
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
        let closed_session_ids =
            remove(&self.store, &self.sessions, &who, &id, "consent.withdraw").await?;
        Ok(Response::new(v1::WithdrawConsentResponse {
            closed_session_ids,
            withdrawn_at: Some(validate::timestamp(now_ms())),
        }))
    }
}

impl AvatarApi {
    /// Records a read of personal data in the audit log.
    async fn audit_read(
        &self,
        who: &Principal,
        action: &str,
        target: String,
        outcome: String,
    ) -> ApiResult<()> {
        Ok(self.store.audit(who, action, target, &outcome).await?)
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
