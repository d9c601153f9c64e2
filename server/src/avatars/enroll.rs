//! Enrollment: receive the image (bounded, with progress), check it,
//! normalise the portrait and find the face in it, then store the portrait
//! and face record encrypted and the avatar with its consent record.

use crate::engines::face::{FaceEngine, FaceError, FaceRecord};
use crate::engines::portrait::{self, PortraitError};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::files::{FACE_FILE, PORTRAIT_FILE, Upload};
use crate::store::{
    AuditEntry, Avatar, AvatarState, Consent, FaceSummary, ImageFormat, Principal, Store,
    StoreError, now_ms,
};
use futures::{Stream, StreamExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Largest chunk of an upload accepted.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Everything checked before any byte is stored.
pub struct EnrollPlan {
    pub who: Principal,
    pub display_name: String,
    pub format: ImageFormat,
    /// Length the client announced, if it did.
    pub total: Option<u64>,
    /// The whole image, when sent with the request (no chunks then).
    pub inline: Vec<u8>,
    pub consent: Consent,
    pub labels: BTreeMap<String, String>,
    pub keep_original: bool,
}

/// Where an enrollment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Receiving,
    Validating,
    Detecting,
    Storing,
    Done,
}

/// Progress of an enrollment: its stage and the bytes received so far.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stage: Stage,
    pub received: u64,
    pub total: Option<u64>,
}

/// Where an enrollment reports its progress. Reports are advisory: a slow
/// reader misses some, never blocks the upload; only `Done` waits.
struct Reporter {
    tx: mpsc::Sender<Progress>,
    total: Option<u64>,
}

impl Reporter {
    fn report(&self, stage: Stage, received: u64) {
        let _ = self.tx.try_send(self.progress(stage, received));
    }

    async fn done(&self, received: u64) {
        let _ = self.tx.send(self.progress(Stage::Done, received)).await;
    }

    fn progress(&self, stage: Stage, received: u64) -> Progress {
        Progress {
            stage,
            received,
            total: self.total,
        }
    }
}

/// FAILED_PRECONDITION unless the face models are installed.
pub fn check_models(face: &FaceEngine) -> ApiResult<()> {
    face.available().map_err(|reason| {
        ApiError::FailedPrecondition(format!(
            "avatars cannot be enrolled: the face models are not installed ({reason})"
        ))
    })
}

/// Enrolls the avatar `plan` describes from `chunks` (after the inline
/// image, if any), at most `max_bytes` long, reporting on `progress`.
pub async fn enroll(
    store: Store,
    face: Arc<FaceEngine>,
    max_bytes: u64,
    plan: EnrollPlan,
    chunks: impl Stream<Item = ApiResult<Vec<u8>>> + Send,
    progress: mpsc::Sender<Progress>,
) -> ApiResult<Avatar> {
    let progress = Reporter {
        tx: progress,
        total: plan.total,
    };
    let upload = receive(&store, max_bytes, &plan, chunks, &progress).await?;
    progress.report(Stage::Validating, upload.len());
    check(&plan, &upload)?;
    let (upload, portrait, record) = analyse(upload, face, &progress).await?;
    progress.report(Stage::Storing, upload.len());
    let avatar = Avatar {
        id: ids::new_id(ids::AVATAR),
        tenant_id: plan.who.tenant_id.clone(),
        display_name: plan.display_name.clone(),
        state: AvatarState::Ready,
        failure_reason: String::new(),
        image_format: plan.format,
        image_bytes: upload.len(),
        image_sha256: upload.sha256_hex(),
        consent: plan.consent.clone(),
        labels: plan.labels.clone(),
        created_at: now_ms(),
        original_kept: plan.keep_original,
        face: FaceSummary {
            faces_found: record.faces_found,
            score: record.score,
        },
    };
    save(&store, &plan, &avatar, upload, &portrait, &record).await?;
    progress.done(avatar.image_bytes).await;
    tracing::info!(avatar = %avatar.id, bytes = avatar.image_bytes, "avatar enrolled");
    Ok(avatar)
}

/// Reads the upload into memory (it reaches the disk only if kept),
/// within the limits.
async fn receive(
    store: &Store,
    max_bytes: u64,
    plan: &EnrollPlan,
    chunks: impl Stream<Item = ApiResult<Vec<u8>>> + Send,
    progress: &Reporter,
) -> ApiResult<Upload> {
    let mut upload = store.files.begin_upload();
    let has_inline = !plan.inline.is_empty();
    upload.write(&plan.inline);
    progress.report(Stage::Receiving, upload.len());
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
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
        let len = upload.len() + chunk.len() as u64;
        if len > max_bytes {
            return Err(ApiError::ResourceExhausted(format!(
                "the image is larger than the server's limit of {max_bytes} bytes"
            )));
        }
        if let Some(t) = plan.total
            && len > t
        {
            return Err(ApiError::invalid(format!(
                "the upload is longer than start.total_bytes ({t})"
            )));
        }
        upload.write(&chunk);
        progress.report(Stage::Receiving, upload.len());
    }
    Ok(upload)
}

/// The upload is complete and of the declared format.
fn check(plan: &EnrollPlan, upload: &Upload) -> ApiResult<()> {
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
    Ok(())
}

/// Uploads decoded at once, at most: one per two cores (at least one, at
/// most four), each within [`portrait::MAX_PIXELS`].
static DECODES: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::sync::Semaphore::new((cores / 2).clamp(1, 4))
});

/// Decodes the image (within pixel limits), normalises the portrait that
/// is kept, and finds the face in it, as sessions will see it.
async fn analyse(
    upload: Upload,
    face: Arc<FaceEngine>,
    progress: &Reporter,
) -> ApiResult<(Upload, Vec<u8>, FaceRecord)> {
    let detecting = Reporter {
        tx: progress.tx.clone(),
        total: progress.total,
    };
    // Decoding takes up to a few hundred MB: a few at a time, the others
    // wait their turn.
    let decodes = &crate::metrics::METRICS.enroll_decodes;
    let waiting = crate::metrics::Gauged::new_in(decodes, "waiting");
    let _turn = DECODES
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
    drop(waiting);
    let _running = crate::metrics::Gauged::new_in(decodes, "running");
    tokio::task::spawn_blocking(move || {
        let limit = |e: PortraitError| match e {
            e @ PortraitError::TooLarge { .. } => ApiError::ResourceExhausted(e.to_string()),
            e => ApiError::invalid(e.to_string()),
        };
        let img = portrait::decode(upload.bytes()).map_err(limit)?;
        let normalised = portrait::normalise(&img).map_err(limit)?;
        detecting.report(Stage::Detecting, upload.len());
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
    .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Writes the avatar's files, then its record; on failure nothing of it
/// is left (or the next start's sweep removes it).
async fn save(
    store: &Store,
    plan: &EnrollPlan,
    avatar: &Avatar,
    upload: Upload,
    portrait: &[u8],
    record: &FaceRecord,
) -> ApiResult<()> {
    let files = &store.files;
    let stored = async {
        files
            .write_avatar_file(&avatar.id, PORTRAIT_FILE, portrait)
            .await?;
        files
            .write_avatar_file(&avatar.id, FACE_FILE, &record.to_json())
            .await?;
        if plan.keep_original {
            let name = format!("original.{}", plan.format.as_str());
            files.commit_upload(upload, &avatar.id, &name).await?;
        }
        // Otherwise the upload is dropped here: it never reached the disk.
        std::io::Result::Ok(())
    }
    .await;
    if let Err(e) = stored {
        let _ = files.remove_avatar(&avatar.id).await;
        return Err(StoreError::from(e).into());
    }
    let audit = AuditEntry::new(Some(&plan.who), "avatar.enroll", avatar.id.clone(), "ok");
    let rec = avatar.clone();
    if let Err(e) = store.run(move |b| b.insert_avatar(&rec, &audit)).await {
        // No record points to the file: remove it now (or at next start).
        let _ = files.remove_avatar(&avatar.id).await;
        return Err(e.into());
    }
    Ok(())
}
