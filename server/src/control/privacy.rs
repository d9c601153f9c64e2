//! `huashen.v1.PrivacyService`: data-subject export and deletion
//! (`privacy/` does the work).

use super::auth::authenticate;
use crate::error::ApiError;
use crate::privacy::{erase, export};
use crate::session::SessionManager;
use crate::store::Store;
use futures::{Stream, StreamExt};
use huashen_protos::v1;
use huashen_protos::v1::privacy_service_server::PrivacyService;
use std::pin::Pin;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct PrivacyApi {
    pub store: Store,
    pub sessions: SessionManager,
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
        let archive = export::prepare(&self.store, &who, &avatar_id).await?;
        let chunks = export::stream(archive, self.store.files.clone());
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks).map(
            |chunk| {
                chunk
                    .map(|data| v1::ExportChunk { data })
                    .map_err(Status::from)
            },
        ))))
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
        let erased = erase::erase(&self.store, &self.sessions, &who, &req.avatar_id).await?;
        Ok(Response::new(v1::DeleteSubjectDataResponse {
            closed_session_ids: erased.closed_session_ids,
            deleted_avatar_ids: erased.deleted_avatar_ids,
            deleted_session_records: erased.deleted_session_records,
            deleted_files: erased.deleted_files,
            deleted_recordings: erased.deleted_recordings,
        }))
    }
}
