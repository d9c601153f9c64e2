//! `huashen.v1.SessionService`: create, get, list, close, speak, push audio,
//! interrupt, watch. Requests are checked in `requests.rs`, answers built
//! in `convert.rs`, watchers fed by `watch.rs`.

mod convert;
mod requests;
mod watch;

use convert::{closed_events, elsewhere_to_proto, handle_to_proto, record_to_proto};
use requests::{audio_data, audio_start, check_speak_chunk, speak_piece};
use watch::forward_events;

use super::auth::authenticate;
use super::validate;
use crate::error::ApiError;
use crate::ids;
use crate::ingest::text::TextIngest;
use crate::outputs::manager::OutputManager;
use crate::session::lookup::{Found, elsewhere};
use crate::session::speak;
use crate::session::voice;
use crate::session::{CloseReason, Command, SessionManager, SessionState};
use crate::store::Store;
use futures::{Stream, StreamExt};
use huashen_protos::v1;
use huashen_protos::v1::session_service_server::SessionService;
pub use requests::{LANGUAGES, MAX_AUDIO_CHUNK, MAX_SPEAK_CHUNK};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub struct SessionApi {
    pub store: Store,
    pub sessions: SessionManager,
    /// Text intake (clauses, moderation) for Speak.
    pub text: TextIngest,
    /// Starts the outputs a CreateSession asks for.
    pub outputs: OutputManager,
    pub default_idle_timeout: Duration,
    pub max_idle_timeout: Duration,
    pub limits: std::sync::Arc<super::ratelimit::RateLimits>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::SessionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let peer = super::ratelimit::peer_of(&request);
        self.limits.check(
            super::ratelimit::Costly::CreateSession,
            Some(&who.key_id),
            peer,
        )?;
        let req = request.into_inner();
        let avatar_id = ids::parse_id("avatar_id", ids::AVATAR, &req.avatar_id)?;
        let spec = requests::spec(&req, self.default_idle_timeout, self.max_idle_timeout)?;
        let outputs = requests::outputs(req.outputs)?;
        let handle = self.sessions.create(&who, avatar_id, spec).await?;
        for output in outputs {
            if let Err(e) = self.outputs.add(&who, &handle, output).await {
                // No half-started session: it closes again.
                let reason = CloseReason::Error;
                self.sessions.close(&who, &handle.record.id, reason).await;
                return Err(e.into());
            }
        }
        Ok(Response::new(handle_to_proto(&handle)))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        Ok(Response::new(
            match self
                .sessions
                .find(&who, &request.get_ref().session_id)
                .await?
            {
                Found::Live(h) => handle_to_proto(&h),
                Found::Closed(r) => record_to_proto(&r, None),
                Found::Elsewhere(r, _) => elsewhere_to_proto(&r),
            },
        ))
    }

    async fn list_sessions(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let req = request.get_ref();
        let (size, before) = validate::page(req.page.as_ref(), ids::SESSION)?;
        let include_closed = req.include_closed;
        let tenant = who.tenant_id.clone();
        let records = self
            .store
            .run(move |b| b.list_sessions(&tenant, include_closed, before.as_deref(), size))
            .await
            .map_err(ApiError::from)?;
        let next_page_token =
            validate::next_token(records.len(), size, records.last().map(|r| r.id.as_str()));
        let sessions = records
            .iter()
            .map(|r| match self.sessions.live(&who, &r.id) {
                Some(h) => handle_to_proto(&h),
                None if self.sessions.runs_elsewhere(r) => elsewhere_to_proto(r),
                None if r.closed_at.is_none() => {
                    // Closing right now: its row is about to be updated.
                    let mut s = record_to_proto(r, None);
                    s.state = SessionState::Closed as i32;
                    s
                }
                None => record_to_proto(r, None),
            })
            .collect();
        Ok(Response::new(v1::ListSessionsResponse {
            sessions,
            next_page_token,
        }))
    }

    async fn close_session(
        &self,
        request: Request<v1::CloseSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let id = ids::parse_id("session_id", ids::SESSION, &request.get_ref().session_id)?;
        if let Some((h, snap)) = self
            .sessions
            .close(&who, &id, CloseReason::ClientRequest)
            .await
        {
            return Ok(Response::new(record_to_proto(&h.record, Some(&snap))));
        }
        // Already closed (closing is idempotent) or unknown.
        match self.sessions.find(&who, &id).await? {
            Found::Closed(r) => Ok(Response::new(record_to_proto(&r, None))),
            Found::Live(h) => Ok(Response::new(handle_to_proto(&h))),
            Found::Elsewhere(r, url) => Err(elsewhere(&r, url.as_deref()).into()),
        }
    }

    async fn speak(
        &self,
        request: Request<Streaming<v1::SpeakRequest>>,
    ) -> Result<Response<v1::SpeakResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            ApiError::invalid("the Speak stream is empty: the first message must name session_id")
        })?;
        check_speak_chunk(&first)?;
        let handle = self.sessions.find_live(&who, &first.session_id).await?;
        self.sessions
            .engines()
            .speech
            .check_voice(&handle.record.language, &handle.record.voice_id)
            .map_err(ApiError::FailedPrecondition)?;
        let session_id = handle.record.id.clone();
        let pieces = futures::stream::once(async { Ok(first) })
            .chain(inbound.map(|m| m.map_err(ApiError::from)))
            .map(move |m| speak_piece(m?, &session_id));
        let queued = speak::speak(&self.text, &who, &handle, Box::pin(pieces)).await?;
        Ok(Response::new(v1::SpeakResponse {
            accepted_chars: queued.chars,
            utterance_ids: queued.utterance_ids,
        }))
    }

    async fn push_audio(
        &self,
        request: Request<Streaming<v1::PushAudioRequest>>,
    ) -> Result<Response<v1::PushAudioResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            ApiError::invalid("the PushAudio stream is empty: the first message must carry `start`")
        })?;
        let (session_id, format) = audio_start(first)?;
        let handle = self.sessions.find_live(&who, &session_id).await?;
        let packets = inbound.map(|m| audio_data(m.map_err(ApiError::from)?));
        let accepted_ms = voice::push_voice(&handle, format, Box::pin(packets)).await?;
        Ok(Response::new(v1::PushAudioResponse { accepted_ms }))
    }

    async fn interrupt(
        &self,
        request: Request<v1::InterruptRequest>,
    ) -> Result<Response<v1::InterruptResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let handle = self
            .sessions
            .find_live(&who, &request.get_ref().session_id)
            .await?;
        let (reply, rx) = oneshot::channel();
        handle.send(Command::Interrupt { reply }).await?;
        let cancelled_utterances = rx.await.map_err(|_| {
            ApiError::FailedPrecondition(format!("session {} closed", handle.record.id))
        })?;
        Ok(Response::new(v1::InterruptResponse {
            cancelled_utterances,
        }))
    }

    async fn list_voices(
        &self,
        request: Request<v1::ListVoicesRequest>,
    ) -> Result<Response<v1::ListVoicesResponse>, Status> {
        authenticate(&self.store, request.metadata()).await?;
        let voices = self
            .sessions
            .engines()
            .speech
            .voices()
            .into_iter()
            .map(|v| v1::Voice {
                voice_id: v.id,
                language: v.language,
                display_name: v.display_name,
                sample_rate_hz: v.sample_rate,
                model: v.model,
                license: v.license,
            })
            .collect();
        Ok(Response::new(v1::ListVoicesResponse { voices }))
    }

    type WatchSessionStream = EventStream;

    async fn watch_session(
        &self,
        request: Request<v1::WatchSessionRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        match self
            .sessions
            .find(&who, &request.get_ref().session_id)
            .await?
        {
            Found::Live(h) => {
                let (snap, rx) = h.subscribe();
                let (tx, out) = mpsc::channel(64);
                tokio::spawn(forward_events(snap, rx, tx));
                Ok(Response::new(Box::pin(ReceiverStream::new(out))))
            }
            Found::Closed(r) => Ok(Response::new(Box::pin(tokio_stream::iter(closed_events(
                &r,
            ))))),
            Found::Elsewhere(r, url) => Err(elsewhere(&r, url.as_deref()).into()),
        }
    }
}
