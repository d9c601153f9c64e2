//! `huashen.v1.OutputService` (outputs of live sessions) and
//! `huashen.v1.RecordingService` (the recordings kept); `outputs/` does the
//! work.

use super::auth::authenticate;
use super::validate;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::outputs::manager::{Output, OutputKind, OutputManager, OutputRequest};
use crate::outputs::{recordings, rtmp, whip};
use crate::session::{OutputState, SessionManager};
use crate::store::{Recording, Store, now_ms};
use futures::{Stream, StreamExt};
use huashen_protos::v1;
use huashen_protos::v1::output_service_server::OutputService;
use huashen_protos::v1::recording_service_server::RecordingService;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct OutputApi {
    pub store: Store,
    pub sessions: SessionManager,
    pub outputs: OutputManager,
}

fn output_to_proto(o: &Output) -> v1::Output {
    let (state, reason) = output_state_to_proto(&o.state());
    let (kind, recording_id) = match &o.kind {
        OutputKind::Recording { recording_id } => (
            v1::output::Kind::Recording(v1::RecordingOutput {}),
            recording_id.clone(),
        ),
        // The key is never returned, nor the URL's query values.
        OutputKind::Rtmp { url } => (
            v1::output::Kind::Rtmp(v1::RtmpOutput {
                url: crate::util::redact_query(url),
                stream_key: String::new(),
            }),
            String::new(),
        ),
        // The token is never returned, nor the URL's query values.
        OutputKind::Whip { url } => (
            v1::output::Kind::Whip(v1::WhipOutput {
                url: crate::util::redact_query(url),
                bearer_token: String::new(),
            }),
            String::new(),
        ),
    };
    v1::Output {
        output_id: o.id.clone(),
        session_id: o.session_id.clone(),
        state: state as i32,
        reason,
        started_at: Some(validate::timestamp(o.started_at)),
        kind: Some(kind),
        recording_id,
        bytes: o.counters.bytes.load(Ordering::Relaxed),
        bitrate_bps: o.counters.bitrate.load(Ordering::Relaxed),
        reconnects: o.counters.reconnects.load(Ordering::Relaxed),
        dropped_frames: o.counters.dropped.load(Ordering::Relaxed),
    }
}

fn recording_to_proto(r: &Recording) -> v1::Recording {
    v1::Recording {
        recording_id: r.id.clone(),
        session_id: r.session_id.clone(),
        avatar_id: r.avatar_id.clone(),
        started_at: Some(validate::timestamp(r.started_at)),
        ended_at: r.ended_at.map(validate::timestamp),
        bytes: r.bytes,
        duration_ms: r.duration_ms,
        download_path: String::new(),
    }
}

/// An output's state, and the reason when it failed.
pub fn output_state_to_proto(s: &OutputState) -> (v1::OutputState, String) {
    match s {
        OutputState::Starting => (v1::OutputState::Starting, String::new()),
        OutputState::Live => (v1::OutputState::Live, String::new()),
        OutputState::Reconnecting { attempt, reason } => (
            v1::OutputState::Reconnecting,
            format!("attempt {attempt}: {reason}"),
        ),
        OutputState::Stopped => (v1::OutputState::Stopped, String::new()),
        OutputState::Failed(why) => (v1::OutputState::Failed, why.clone()),
    }
}

/// What an AddOutput (or CreateSession's `outputs`) asks for, checked.
pub fn output_request(kind: Option<v1::add_output_request::Kind>) -> ApiResult<OutputRequest> {
    Ok(match kind {
        Some(v1::add_output_request::Kind::Recording(_)) => OutputRequest::Recording,
        Some(v1::add_output_request::Kind::Whip(w)) => {
            OutputRequest::Whip(whip::target(&w.url, &w.bearer_token)?)
        }
        Some(v1::add_output_request::Kind::Rtmp(r)) => {
            OutputRequest::Rtmp(rtmp::target(&r.url, &r.stream_key)?)
        }
        None => {
            return Err(ApiError::invalid(
                "kind is required: recording, rtmp or whip",
            ));
        }
    })
}

#[tonic::async_trait]
impl OutputService for OutputApi {
    async fn add_output(
        &self,
        request: Request<v1::AddOutputRequest>,
    ) -> Result<Response<v1::Output>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let req = request.into_inner();
        let kind = output_request(req.kind)?;
        let session = self.sessions.find_live(&who, &req.session_id).await?;
        let output = self.outputs.add(&who, &session, kind).await?;
        Ok(Response::new(output_to_proto(&output)))
    }

    async fn remove_output(
        &self,
        request: Request<v1::RemoveOutputRequest>,
    ) -> Result<Response<v1::Output>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let output = self
            .outputs
            .remove(&who, &request.get_ref().output_id)
            .await?;
        Ok(Response::new(output_to_proto(&output)))
    }

    async fn list_outputs(
        &self,
        request: Request<v1::ListOutputsRequest>,
    ) -> Result<Response<v1::ListOutputsResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let session = self
            .sessions
            .find_live(&who, &request.get_ref().session_id)
            .await?;
        let outputs = self.outputs.of_session(&session.record.id);
        Ok(Response::new(v1::ListOutputsResponse {
            outputs: outputs.iter().map(|o| output_to_proto(o)).collect(),
        }))
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<v1::RecordingChunk, Status>> + Send>>;

#[tonic::async_trait]
impl RecordingService for OutputApi {
    type DownloadRecordingStream = ChunkStream;

    async fn list_recordings(
        &self,
        request: Request<v1::ListRecordingsRequest>,
    ) -> Result<Response<v1::ListRecordingsResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let req = request.into_inner();
        let (size, before) = validate::page(req.page.as_ref(), ids::RECORDING)?;
        let avatar = match req.avatar_id.as_str() {
            "" => None,
            a => Some(ids::parse_id("avatar_id", ids::AVATAR, a)?),
        };
        let tenant = who.tenant_id.clone();
        let found = self
            .store
            .run(move |b| b.list_recordings(&tenant, avatar.as_deref(), before.as_deref(), size))
            .await
            .map_err(ApiError::from)?;
        let outcome = format!("{} recordings", found.len());
        recordings::audit(&self.store, &who, "recording.list", String::new(), outcome).await?;
        Ok(Response::new(v1::ListRecordingsResponse {
            next_page_token: validate::next_token(
                found.len(),
                size,
                found.last().map(|r| r.id.as_str()),
            ),
            recordings: found.iter().map(recording_to_proto).collect(),
        }))
    }

    async fn get_recording(
        &self,
        request: Request<v1::GetRecordingRequest>,
    ) -> Result<Response<v1::Recording>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let rec = recordings::get(&self.store, &who, &request.get_ref().recording_id).await?;
        recordings::audit(
            &self.store,
            &who,
            "recording.read",
            rec.id.clone(),
            "ok".into(),
        )
        .await?;
        let expires = now_ms() + recordings::DOWNLOAD_TOKEN_TTL_MS;
        let token = recordings::download_token(&self.store.files, &rec, expires);
        Ok(Response::new(v1::Recording {
            download_path: format!("/recordings/{}/file?token={token}", rec.id),
            ..recording_to_proto(&rec)
        }))
    }

    async fn download_recording(
        &self,
        request: Request<v1::DownloadRecordingRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let rec = recordings::get(&self.store, &who, &request.get_ref().recording_id).await?;
        recordings::audit(
            &self.store,
            &who,
            "recording.download",
            rec.id.clone(),
            "ok".into(),
        )
        .await?;
        let chunks = recordings::read(self.store.files.clone(), rec.id);
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks).map(
            |c| {
                c.map(|data| v1::RecordingChunk { data })
                    .map_err(Status::from)
            },
        ))))
    }

    async fn delete_recording(
        &self,
        request: Request<v1::DeleteRecordingRequest>,
    ) -> Result<Response<v1::DeleteRecordingResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        recordings::delete(
            &self.store,
            &self.outputs,
            &who,
            &request.get_ref().recording_id,
        )
        .await?;
        Ok(Response::new(v1::DeleteRecordingResponse {}))
    }
}
