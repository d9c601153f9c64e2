//! `huashen.v1.SessionService`: create, get, list, close, speak, push audio,
//! interrupt, watch.

use super::validate;
use crate::auth::authenticate;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::pipeline::speech::Utterance;
use crate::pipeline::voice::{Encoding, VoiceDecoder};
use crate::privacy::moderation::Verdict;
use crate::session::{
    CloseReason, Command, Event, EventKind, SessionHandle, SessionManager, SessionSpec,
    SessionState, Snapshot,
};
use crate::store::{Principal, SessionRecord, Store};
use futures::Stream;
use huashen_inference::speech::clauses::ClauseSplitter;
use huashen_protos::v1;
use huashen_protos::v1::session_service_server::SessionService;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Languages the API accepts (BCP-47).
pub const LANGUAGES: &[&str] = &["en-US", "zh-CN"];
/// Largest `text` in one Speak message, in bytes.
pub const MAX_SPEAK_CHUNK: usize = 4096;
/// Largest `data` in one PushAudio message, in bytes.
pub const MAX_AUDIO_CHUNK: usize = 64 * 1024;

pub struct SessionApi {
    pub store: Store,
    pub sessions: SessionManager,
    pub moderator: Arc<crate::privacy::moderation::Moderator>,
    pub max_speak_bytes: u64,
    pub default_idle_timeout: Duration,
    pub max_idle_timeout: Duration,
}

fn state_to_proto(s: SessionState) -> i32 {
    s as i32
}

fn record_to_proto(r: &SessionRecord, snap: Option<&Snapshot>) -> v1::Session {
    let (state, viewers, closed_at, reason) = match snap {
        Some(s) => (
            state_to_proto(s.state),
            s.viewer_count,
            s.closed_at.or(r.closed_at),
            s.close_reason.map(|c| c as i32).or(r.close_reason),
        ),
        // Not live: the record is all there is, and it is closed.
        None => (SessionState::Closed as i32, 0, r.closed_at, r.close_reason),
    };
    v1::Session {
        session_id: r.id.clone(),
        avatar_id: r.avatar_id.clone(),
        state,
        voice: Some(v1::VoiceOptions {
            language: r.language.clone(),
            voice_id: r.voice_id.clone(),
            speed: r.speed,
        }),
        output: Some(v1::OutputOptions {
            width: r.width,
            height: r.height,
            fps: r.fps,
            video_bitrate_kbps: r.video_bitrate_kbps,
            audio_bitrate_kbps: r.audio_bitrate_kbps,
        }),
        created_at: Some(validate::timestamp(r.created_at)),
        closed_at: closed_at.map(validate::timestamp),
        close_reason: reason.unwrap_or(0),
        viewer_count: viewers,
        idle_timeout_seconds: r.idle_timeout_secs,
        labels: r.labels.clone().into_iter().collect(),
        viewer_token: String::new(),
        whep_path: String::new(),
    }
}

fn handle_to_proto(h: &SessionHandle) -> v1::Session {
    let mut s = record_to_proto(&h.record, Some(&h.snapshot()));
    if s.state != SessionState::Closed as i32 {
        s.viewer_token = h.viewer_token.clone();
        s.whep_path = format!("/whep/sessions/{}", h.record.id);
    }
    s
}

fn ranged(field: &str, v: u32, default: u32, lo: u32, hi: u32) -> ApiResult<u32> {
    match v {
        0 => Ok(default),
        v if (lo..=hi).contains(&v) => Ok(v),
        v => Err(ApiError::invalid(format!(
            "{field} is {v}; allowed are {lo}..{hi} (0 for the default {default})"
        ))),
    }
}

fn check_speak_chunk(m: &v1::SpeakRequest) -> ApiResult<()> {
    if m.text.len() > MAX_SPEAK_CHUNK {
        return Err(ApiError::invalid(format!(
            "text is {} bytes in one message; send at most {MAX_SPEAK_CHUNK} bytes per message",
            m.text.len()
        )));
    }
    Ok(())
}

impl SessionApi {
    /// Checks one clause before it may be spoken. A refused clause is
    /// reported to the session's watchers and audited (without its text).
    /// Returns whether it may be spoken.
    async fn moderate(
        &self,
        who: &Principal,
        handle: &SessionHandle,
        clause: &str,
    ) -> ApiResult<bool> {
        match self
            .moderator
            .review(clause, &handle.record.language, &handle.record.id)
            .await
        {
            Verdict::Allow => Ok(true),
            Verdict::Block { category } => {
                let entry = crate::store::AuditEntry::new(
                    Some(who),
                    "moderation.block",
                    handle.record.id.clone(),
                    &category,
                );
                self.store.run(move |b| b.append_audit(&entry)).await?;
                handle.send(Command::ModerationBlocked { category }).await?;
                Ok(false)
            }
        }
    }

    /// Moderates one clause and, when allowed, queues it on the session.
    async fn queue_clause(
        &self,
        who: &Principal,
        handle: &Arc<SessionHandle>,
        clause: String,
        queued: &mut Queued,
    ) -> ApiResult<()> {
        if !self.moderate(who, handle, &clause).await? {
            return Ok(());
        }
        let chars = clause.chars().count() as u64;
        let utterance = Utterance {
            id: ids::new_id(ids::UTTERANCE),
            text: clause,
        };
        let id = utterance.id.clone();
        let (reply, rx) = oneshot::channel();
        handle.send(Command::Speak { utterance, reply }).await?;
        rx.await
            .map_err(|_| {
                ApiError::FailedPrecondition(format!("session {} closed", handle.record.id))
            })?
            .map_err(ApiError::ResourceExhausted)?;
        queued.chars += chars;
        queued.ids.push(id);
        Ok(())
    }

    fn spec(&self, req: &v1::CreateSessionRequest) -> ApiResult<SessionSpec> {
        let voice = req.voice.clone().unwrap_or_default();
        let language = if voice.language.is_empty() {
            "en-US".to_owned()
        } else if let Some(l) = LANGUAGES
            .iter()
            .find(|l| l.eq_ignore_ascii_case(&voice.language))
        {
            (*l).to_owned()
        } else {
            return Err(ApiError::invalid(format!(
                "voice.language {:?} is not supported; use one of {}",
                ids::truncate(&voice.language, 40),
                LANGUAGES.join(", ")
            )));
        };
        let voice_ok = voice.voice_id.len() <= 64
            && voice
                .voice_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !voice_ok {
            return Err(ApiError::invalid(
                "voice.voice_id must be at most 64 characters of A-Z, a-z, 0-9, '_', '.', '-'",
            ));
        }
        let speed = if voice.speed == 0.0 { 1.0 } else { voice.speed };
        if !(0.5..=2.0).contains(&speed) {
            return Err(ApiError::invalid(format!(
                "voice.speed is {}; allowed are 0.5..2.0 (0 for 1.0)",
                voice.speed
            )));
        }
        let out = req.output.unwrap_or_default();
        let width = ranged("output.width", out.width, 512, 128, 1920)?;
        let height = ranged("output.height", out.height, 512, 128, 1080)?;
        if width % 2 != 0 || height % 2 != 0 {
            return Err(ApiError::invalid(format!(
                "output size {width}x{height} must have even width and height (H.264 4:2:0)"
            )));
        }
        let fps = ranged("output.fps", out.fps, 25, 5, 60)?;
        let video_bitrate_kbps = ranged(
            "output.video_bitrate_kbps",
            out.video_bitrate_kbps,
            1200,
            100,
            20000,
        )?;
        let audio_bitrate_kbps = ranged(
            "output.audio_bitrate_kbps",
            out.audio_bitrate_kbps,
            48,
            16,
            256,
        )?;
        let idle_timeout = match req.idle_timeout_seconds {
            0 => self.default_idle_timeout,
            s if u64::from(s) <= self.max_idle_timeout.as_secs() => Duration::from_secs(s.into()),
            s => {
                return Err(ApiError::invalid(format!(
                    "idle_timeout_seconds is {s}; this server allows at most {}",
                    self.max_idle_timeout.as_secs()
                )));
            }
        };
        Ok(SessionSpec {
            language,
            voice_id: voice.voice_id,
            speed,
            width,
            height,
            fps,
            video_bitrate_kbps,
            audio_bitrate_kbps,
            idle_timeout,
            labels: validate::labels("labels", &req.labels)?,
        })
    }

    /// The caller's session, live or closed; NOT_FOUND otherwise.
    async fn find(&self, who: &Principal, session_id: &str) -> ApiResult<Found> {
        let id = ids::parse_id("session_id", ids::SESSION, session_id)?;
        if let Some(h) = self.sessions.live(who, &id) {
            return Ok(Found::Live(h));
        }
        let tenant = who.tenant_id.clone();
        let id2 = id.clone();
        let record = self
            .store
            .run(move |b| b.get_session(&tenant, &id2))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
        Ok(if runs_elsewhere(&record, self.store.node_id()) {
            // Its server's address, for the caller to go there.
            let url = match self.store.session_elsewhere(&record.id).await {
                Ok(at) => at.and_then(|e| e.url),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up where a session runs");
                    None
                }
            };
            Found::Elsewhere(record, url)
        } else {
            Found::Closed(record)
        })
    }

    /// The caller's live session; FAILED_PRECONDITION if it is closed.
    async fn find_live(&self, who: &Principal, session_id: &str) -> ApiResult<Arc<SessionHandle>> {
        match self.find(who, session_id).await? {
            Found::Live(h) => Ok(h),
            Found::Closed(r) => Err(ApiError::FailedPrecondition(format!(
                "session {} is closed; create a new session",
                r.id
            ))),
            Found::Elsewhere(r, url) => Err(elsewhere(&r, url.as_deref())),
        }
    }
}

enum Found {
    Live(Arc<SessionHandle>),
    Closed(SessionRecord),
    /// Open, run by another server sharing the database (reachable at the
    /// URL it advertises, if any).
    Elsewhere(SessionRecord, Option<String>),
}

/// An open record of a session another server (node) runs: with shared
/// records, sessions are driven on the server that created them.
fn runs_elsewhere(r: &SessionRecord, own_node: &str) -> bool {
    r.closed_at.is_none() && r.node_id.as_deref().is_some_and(|n| n != own_node)
}

fn elsewhere(r: &SessionRecord, url: Option<&str>) -> ApiError {
    let node = r.node_id.as_deref().unwrap_or("?");
    let message = match url {
        Some(url) => format!(
            "session {} runs on another server of this deployment (node {node}, at {url}); send calls for it there",
            r.id
        ),
        None => format!(
            "session {} runs on another server of this deployment (node {node}, which advertises no address: server.advertise_url); send calls for it to the server that created it",
            r.id
        ),
    };
    ApiError::Elsewhere {
        message,
        url: url.map(str::to_owned),
    }
}

/// A session another server runs: its record, with the state unknown here.
fn elsewhere_to_proto(r: &SessionRecord) -> v1::Session {
    v1::Session {
        state: v1::SessionState::Unspecified as i32,
        ..record_to_proto(r, None)
    }
}

fn event_to_proto(e: &Event) -> v1::SessionEvent {
    use v1::session_event::Event as E;
    let event = match &e.kind {
        EventKind::StateChanged { previous, current } => E::StateChanged(v1::StateChanged {
            previous: state_to_proto(*previous),
            current: state_to_proto(*current),
        }),
        EventKind::ViewerJoined {
            viewer_id,
            viewer_count,
        } => E::ViewerJoined(v1::ViewerChanged {
            viewer_id: viewer_id.clone(),
            viewer_count: *viewer_count,
        }),
        EventKind::ViewerLeft {
            viewer_id,
            viewer_count,
        } => E::ViewerLeft(v1::ViewerChanged {
            viewer_id: viewer_id.clone(),
            viewer_count: *viewer_count,
        }),
        EventKind::Error { code, message } => E::Error(v1::SessionError {
            code: (*code).to_owned(),
            message: message.clone(),
        }),
        EventKind::SpeechStarted {
            utterance_id,
            text,
            clock_ms,
        } => E::SpeechStarted(v1::SpeechStarted {
            utterance_id: utterance_id.clone(),
            text: text.clone(),
            clock_ms: *clock_ms,
        }),
        EventKind::SpeechFinished {
            utterance_id,
            interrupted,
            clock_ms,
        } => E::SpeechFinished(v1::SpeechFinished {
            utterance_id: utterance_id.clone(),
            interrupted: *interrupted,
            clock_ms: *clock_ms,
        }),
        EventKind::Word {
            utterance_id,
            word,
            start_ms,
            end_ms,
        } => E::Word(v1::WordTiming {
            utterance_id: utterance_id.clone(),
            word: word.clone(),
            start_ms: *start_ms,
            end_ms: *end_ms,
        }),
        EventKind::Phoneme {
            utterance_id,
            phoneme,
            viseme,
            start_ms,
            end_ms,
        } => E::Phoneme(v1::PhonemeTiming {
            utterance_id: utterance_id.clone(),
            phoneme: phoneme.clone(),
            viseme: (*viseme).to_string(),
            start_ms: *start_ms,
            end_ms: *end_ms,
        }),
        EventKind::Closed { reason } => E::Closed(v1::SessionClosed {
            reason: *reason as i32,
        }),
    };
    v1::SessionEvent {
        seq: e.seq,
        time: Some(validate::timestamp(e.at)),
        event: Some(event),
    }
}

fn closed_events(r: &SessionRecord) -> Vec<Result<v1::SessionEvent, Status>> {
    let at = r.closed_at.unwrap_or(r.created_at);
    let reason = r
        .close_reason
        .and_then(CloseReason::from_i32)
        .unwrap_or(CloseReason::Error);
    [
        EventKind::StateChanged {
            previous: SessionState::Closed,
            current: SessionState::Closed,
        },
        EventKind::Closed { reason },
    ]
    .into_iter()
    .map(|kind| Ok(event_to_proto(&Event { seq: 0, at, kind })))
    .collect()
}

/// Forwards a session's events to one watcher until the session closes or
/// the watcher leaves. A slow watcher gets a `lagged` event, never blocks
/// the session.
async fn forward_events(
    snap: Snapshot,
    mut rx: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Result<v1::SessionEvent, Status>>,
) {
    let first = Event {
        seq: snap.last_seq,
        at: crate::store::now_ms(),
        kind: EventKind::StateChanged {
            previous: snap.state,
            current: snap.state,
        },
    };
    if tx.send(Ok(event_to_proto(&first))).await.is_err() {
        return;
    }
    if snap.state == SessionState::Closed {
        if let Some(reason) = snap.close_reason {
            let closed = Event {
                seq: snap.last_seq,
                at: first.at,
                kind: EventKind::Closed { reason },
            };
            let _ = tx.send(Ok(event_to_proto(&closed))).await;
        }
        return;
    }
    loop {
        let msg = match rx.recv().await {
            Ok(ev) if ev.seq <= snap.last_seq => continue,
            Ok(ev) => event_to_proto(&ev),
            Err(broadcast::error::RecvError::Lagged(missed)) => v1::SessionEvent {
                seq: 0,
                time: Some(validate::timestamp(crate::store::now_ms())),
                event: Some(v1::session_event::Event::Lagged(v1::Lagged { missed })),
            },
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let last = matches!(msg.event, Some(v1::session_event::Event::Closed(_)));
        tokio::select! {
            sent = tx.send(Ok(msg)) => if sent.is_err() { return },
            // The watcher stopped reading; do not wait on it forever.
            _ = tx.closed() => return,
        }
        if last {
            return;
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::SessionEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let req = request.into_inner();
        let avatar_id = ids::parse_id("avatar_id", ids::AVATAR, &req.avatar_id)?;
        let spec = self.spec(&req)?;
        let handle = self.sessions.create(&who, avatar_id, spec).await?;
        Ok(Response::new(handle_to_proto(&handle)))
    }

    async fn get_session(
        &self,
        request: Request<v1::GetSessionRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        Ok(Response::new(
            match self.find(&who, &request.get_ref().session_id).await? {
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
                None if runs_elsewhere(r, self.store.node_id()) => elsewhere_to_proto(r),
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
        match self.find(&who, &id).await? {
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
        let handle = self.find_live(&who, &first.session_id).await?;
        handle.send(Command::Activity).await?;
        self.sessions
            .speech()
            .check_voice(&handle.record.language, &handle.record.voice_id)
            .map_err(ApiError::FailedPrecondition)?;
        let mut splitter = ClauseSplitter::default();
        let mut total = 0u64;
        let mut queued = Queued::default();
        let mut next = Some(first);
        while let Some(msg) = next {
            check_speak_chunk(&msg)?;
            if !msg.session_id.is_empty() && msg.session_id != handle.record.id {
                return Err(
                    ApiError::invalid("session_id must not change within a Speak stream").into(),
                );
            }
            total += msg.text.len() as u64;
            if total > self.max_speak_bytes {
                return Err(ApiError::ResourceExhausted(format!(
                    "one Speak call carries at most {} bytes of text; start another call",
                    self.max_speak_bytes
                ))
                .into());
            }
            let mut clauses = splitter.push(&msg.text);
            if msg.flush {
                clauses.extend(splitter.flush());
            }
            for clause in clauses {
                self.queue_clause(&who, &handle, clause, &mut queued)
                    .await?;
            }
            next = inbound.message().await?;
        }
        if let Some(clause) = splitter.flush() {
            self.queue_clause(&who, &handle, clause, &mut queued)
                .await?;
        }
        // Clauses refused by moderation are not spoken and not counted;
        // the session's watchers got an error event for each.
        Ok(Response::new(v1::SpeakResponse {
            accepted_chars: queued.chars,
            utterance_ids: queued.ids,
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
        let start = match first.payload {
            Some(v1::push_audio_request::Payload::Start(s)) => s,
            _ => {
                return Err(ApiError::invalid(
                    "the first PushAudio message must carry `start` (session_id and format)",
                )
                .into());
            }
        };
        let format = start
            .format
            .ok_or_else(|| ApiError::invalid("start.format is required"))?;
        match v1::AudioEncoding::try_from(format.encoding) {
            Ok(v1::AudioEncoding::PcmS16le) | Ok(v1::AudioEncoding::Opus) => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "start.format.encoding {} is not supported; use AUDIO_ENCODING_PCM_S16LE or AUDIO_ENCODING_OPUS",
                    format.encoding
                ))
                .into());
            }
        }
        if ![8000, 16000, 24000, 48000].contains(&format.sample_rate_hz) {
            return Err(ApiError::invalid(format!(
                "start.format.sample_rate_hz {} is not supported; use 8000, 16000, 24000 or 48000",
                format.sample_rate_hz
            ))
            .into());
        }
        if !(1..=2).contains(&format.channels) {
            return Err(ApiError::invalid(format!(
                "start.format.channels is {}; use 1 or 2",
                format.channels
            ))
            .into());
        }
        let handle = self.find_live(&who, &start.session_id).await?;
        let encoding = if format.encoding == v1::AudioEncoding::Opus as i32 {
            Encoding::Opus
        } else {
            Encoding::Pcm16
        };
        let mut decoder = VoiceDecoder::new(encoding, format.sample_rate_hz, format.channels)
            .map_err(ApiError::Unavailable)?;
        let feed = handle.media.voice.feed().ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "another PushAudio stream is feeding session {}; end it first",
                handle.record.id
            ))
        })?;
        handle.send(Command::Activity).await?;
        let closed = handle.cancel_token.clone();
        let mut pcm = Vec::new();
        let mut last_activity = std::time::Instant::now();
        loop {
            let msg = tokio::select! {
                m = inbound.message() => m?,
                _ = closed.cancelled() => None,
            };
            let Some(msg) = msg else { break };
            let data = match msg.payload {
                Some(v1::push_audio_request::Payload::Data(d)) => d,
                Some(v1::push_audio_request::Payload::Start(_)) => {
                    return Err(
                        ApiError::invalid("`start` may only be sent in the first message").into(),
                    );
                }
                None => {
                    return Err(
                        ApiError::invalid("a message after `start` must carry `data`").into(),
                    );
                }
            };
            if data.len() > MAX_AUDIO_CHUNK {
                return Err(ApiError::invalid(format!(
                    "a data message is {} bytes; at most {MAX_AUDIO_CHUNK}",
                    data.len()
                ))
                .into());
            }
            pcm.clear();
            decoder.decode(&data, &mut pcm).map_err(ApiError::invalid)?;
            if !feed.push(&pcm, &closed).await {
                break;
            }
            // Keep the session from idling out while the host talks.
            if last_activity.elapsed() >= std::time::Duration::from_secs(1) {
                last_activity = std::time::Instant::now();
                handle.send(Command::Activity).await?;
            }
        }
        pcm.clear();
        decoder.finish(&mut pcm);
        feed.push(&pcm, &closed).await;
        if closed.is_cancelled() {
            return Err(ApiError::FailedPrecondition(format!(
                "session {} closed while audio was being pushed",
                handle.record.id
            ))
            .into());
        }
        Ok(Response::new(v1::PushAudioResponse {
            accepted_ms: decoder.decoded_ms(),
        }))
    }

    async fn interrupt(
        &self,
        request: Request<v1::InterruptRequest>,
    ) -> Result<Response<v1::InterruptResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let handle = self.find_live(&who, &request.get_ref().session_id).await?;
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
            .speech()
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
        match self.find(&who, &request.get_ref().session_id).await? {
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

/// What one Speak call queued.
#[derive(Default)]
struct Queued {
    chars: u64,
    ids: Vec<String>,
}
