//! `huashen.v1.SessionService`: create, get, list, close, speak, push audio,
//! interrupt, watch.

use super::auth::authenticate;
use super::validate;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ingest::text::TextIngest;
use crate::ingest::voice::Encoding;
use crate::session::lookup::{Found, elsewhere};
use crate::session::speak::{self, TextPiece};
use crate::session::voice::{self, VoiceFormat};
use crate::session::{
    CloseReason, Command, Event, EventKind, SessionHandle, SessionManager, SessionSpec,
    SessionState, Snapshot,
};
use crate::store::{SessionRecord, Store};
use futures::{Stream, StreamExt};
use huashen_protos::v1;
use huashen_protos::v1::session_service_server::SessionService;
use std::pin::Pin;
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
    /// Text intake (clauses, moderation) for Speak.
    pub text: TextIngest,
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

/// A Speak message as a piece of text for `session_id`.
fn speak_piece(m: v1::SpeakRequest, session_id: &str) -> ApiResult<TextPiece> {
    check_speak_chunk(&m)?;
    if !m.session_id.is_empty() && m.session_id != session_id {
        return Err(ApiError::invalid(
            "session_id must not change within a Speak stream",
        ));
    }
    Ok(TextPiece {
        text: m.text,
        flush: m.flush,
    })
}

/// The first PushAudio message: the session and the audio format.
fn audio_start(first: v1::PushAudioRequest) -> ApiResult<(String, VoiceFormat)> {
    let start = match first.payload {
        Some(v1::push_audio_request::Payload::Start(s)) => s,
        _ => {
            return Err(ApiError::invalid(
                "the first PushAudio message must carry `start` (session_id and format)",
            ));
        }
    };
    let format = start
        .format
        .ok_or_else(|| ApiError::invalid("start.format is required"))?;
    let encoding = match v1::AudioEncoding::try_from(format.encoding) {
        Ok(v1::AudioEncoding::PcmS16le) => Encoding::Pcm16,
        Ok(v1::AudioEncoding::Opus) => Encoding::Opus,
        _ => {
            return Err(ApiError::invalid(format!(
                "start.format.encoding {} is not supported; use AUDIO_ENCODING_PCM_S16LE or AUDIO_ENCODING_OPUS",
                format.encoding
            )));
        }
    };
    if ![8000, 16000, 24000, 48000].contains(&format.sample_rate_hz) {
        return Err(ApiError::invalid(format!(
            "start.format.sample_rate_hz {} is not supported; use 8000, 16000, 24000 or 48000",
            format.sample_rate_hz
        )));
    }
    if !(1..=2).contains(&format.channels) {
        return Err(ApiError::invalid(format!(
            "start.format.channels is {}; use 1 or 2",
            format.channels
        )));
    }
    let format = VoiceFormat {
        encoding,
        sample_rate: format.sample_rate_hz,
        channels: format.channels,
    };
    Ok((start.session_id, format))
}

/// A PushAudio message after `start`: its audio bytes.
fn audio_data(m: v1::PushAudioRequest) -> ApiResult<Vec<u8>> {
    let data = match m.payload {
        Some(v1::push_audio_request::Payload::Data(d)) => d,
        Some(v1::push_audio_request::Payload::Start(_)) => {
            return Err(ApiError::invalid(
                "`start` may only be sent in the first message",
            ));
        }
        None => {
            return Err(ApiError::invalid(
                "a message after `start` must carry `data`",
            ));
        }
    };
    if data.len() > MAX_AUDIO_CHUNK {
        return Err(ApiError::invalid(format!(
            "a data message is {} bytes; at most {MAX_AUDIO_CHUNK}",
            data.len()
        )));
    }
    Ok(data)
}
