//! The outputs of this server's live sessions: starting them within the
//! limits, listing and stopping them, and ending them with their session.

use super::meter::Meter;
use super::recording::{self, RecordingJob};
use super::retry::Backoff;
use super::rtmp::{self, RtmpTarget};
use super::state::{OutputState, StateTx};
use super::whip::{self, WhipTarget};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::rtc::RtcSettings;
use crate::rtc::forward::Sent;
use crate::session::{Command, SessionHandle};
use crate::store::{AuditEntry, Principal, Recording, Store, now_ms};
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What an output does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// Writes the recording with this id.
    Recording { recording_id: String },
    /// Pushes to this WHIP endpoint (its token is not kept here).
    Whip { url: String },
    /// Pushes to this RTMP server (its stream key is not kept here).
    Rtmp { url: String },
}

impl OutputKind {
    /// For metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Recording { .. } => "recording",
            Self::Whip { .. } => "whip",
            Self::Rtmp { .. } => "rtmp",
        }
    }

    /// Whether the session must send keyframes every
    /// `keyframe_interval` for it (files and platforms; WebRTC peers ask).
    fn wants_keyframes(&self) -> bool {
        matches!(self, Self::Recording { .. } | Self::Rtmp { .. })
    }
}

/// What is asked for in AddOutput.
#[derive(Debug, Clone)]
pub enum OutputRequest {
    Recording,
    Whip(WhipTarget),
    Rtmp(RtmpTarget),
}

/// One output of a live session.
pub struct Output {
    pub id: String,
    pub session_id: String,
    pub tenant_id: String,
    pub kind: OutputKind,
    pub started_at: i64,
    pub state: watch::Receiver<OutputState>,
    /// What its task counted (bytes, dropped frames, reconnects, bitrate).
    pub counters: Sent,
    stop: CancellationToken,
}

impl Output {
    pub fn state(&self) -> OutputState {
        self.state.borrow().clone()
    }
}

/// A new output of `session` (stopped with it), and the state its task
/// sets.
fn new_output(
    who: &Principal,
    session: &SessionHandle,
    kind: OutputKind,
) -> (Arc<Output>, StateTx) {
    let (state, state_rx) = StateTx::new();
    let output = Arc::new(Output {
        id: ids::new_id(ids::OUTPUT),
        session_id: session.record.id.clone(),
        tenant_id: who.tenant_id.clone(),
        kind,
        started_at: now_ms(),
        state: state_rx,
        counters: Default::default(),
        stop: session.cancel_token.child_token(),
    });
    (output, state)
}

/// Settings of the outputs.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub max_per_session: usize,
    pub keyframe_interval: Duration,
    /// How a lost or unreachable destination is tried again.
    pub backoff: Backoff,
}

#[derive(Clone)]
pub struct OutputManager {
    store: Store,
    limits: OutputLimits,
    rtc: Arc<RtcSettings>,
    http: whip::HttpClient,
    live: Arc<DashMap<String, Arc<Output>>>,
}

impl OutputManager {
    pub fn new(store: Store, limits: OutputLimits, rtc: Arc<RtcSettings>) -> Self {
        Self {
            store,
            limits,
            rtc,
            http: whip::http_client(),
            live: Default::default(),
        }
    }

    /// Starts an output of `session` (the caller's, live here).
    pub async fn add(
        &self,
        who: &Principal,
        session: &Arc<SessionHandle>,
        request: OutputRequest,
    ) -> ApiResult<Arc<Output>> {
        let session_id = &session.record.id;
        let mine = self.of_session(session_id);
        let running: Vec<_> = mine.iter().filter(|o| !o.state().ended()).collect();
        if running.len() >= self.limits.max_per_session {
            return Err(ApiError::ResourceExhausted(format!(
                "session {session_id} already has {} outputs, the limit \
                 (limits.max_outputs_per_session); remove one first",
                running.len()
            )));
        }
        match request {
            OutputRequest::Recording => {
                if running
                    .iter()
                    .any(|o| matches!(o.kind, OutputKind::Recording { .. }))
                {
                    return Err(ApiError::AlreadyExists(format!(
                        "session {session_id} is already being recorded"
                    )));
                }
                self.start_recording(who, session).await
            }
            OutputRequest::Whip(target) => {
                let url = target.url.to_string();
                let same = |o: &&Arc<Output>| o.kind == OutputKind::Whip { url: url.clone() };
                if running.iter().any(same) {
                    return Err(ApiError::AlreadyExists(format!(
                        "session {session_id} is already pushed to this WHIP endpoint"
                    )));
                }
                Ok(self.start_whip(who, session, target))
            }
            OutputRequest::Rtmp(target) => {
                // The same server and key twice would push one stream twice.
                let same = |o: &&Arc<Output>| {
                    o.kind
                        == OutputKind::Rtmp {
                            url: target.url.clone(),
                        }
                };
                if running.iter().any(same) {
                    return Err(ApiError::AlreadyExists(format!(
                        "session {session_id} is already pushed to this RTMP server"
                    )));
                }
                Ok(self.start_rtmp(who, session, target))
            }
        }
    }

    fn start_rtmp(
        &self,
        who: &Principal,
        session: &Arc<SessionHandle>,
        target: RtmpTarget,
    ) -> Arc<Output> {
        let (output, state) = new_output(
            who,
            session,
            OutputKind::Rtmp {
                url: target.url.clone(),
            },
        );
        let job = rtmp::RtmpJob {
            id: output.id.clone(),
            target,
            session: session.clone(),
            backoff: self.limits.backoff,
            stop: output.stop.clone(),
            state,
            counters: output.counters.clone(),
        };
        tokio::spawn(rtmp::run(job));
        self.track(session, output.clone());
        tracing::info!(output = %output.id, "RTMP output started");
        output
    }

    fn start_whip(
        &self,
        who: &Principal,
        session: &Arc<SessionHandle>,
        target: WhipTarget,
    ) -> Arc<Output> {
        let url = target.url.to_string();
        let (output, state) = new_output(who, session, OutputKind::Whip { url });
        let job = whip::WhipJob {
            id: output.id.clone(),
            target,
            session: session.clone(),
            settings: self.rtc.clone(),
            http: self.http.clone(),
            backoff: self.limits.backoff,
            stop: output.stop.clone(),
            state,
            counters: output.counters.clone(),
        };
        tokio::spawn(whip::run(job));
        self.track(session, output.clone());
        tracing::info!(output = %output.id, "WHIP output started");
        output
    }

    async fn start_recording(
        &self,
        who: &Principal,
        session: &Arc<SessionHandle>,
    ) -> ApiResult<Arc<Output>> {
        let recording = Recording {
            id: ids::new_id(ids::RECORDING),
            tenant_id: who.tenant_id.clone(),
            session_id: session.record.id.clone(),
            avatar_id: session.record.avatar_id.clone(),
            started_at: now_ms(),
            ended_at: None,
            bytes: 0,
            duration_ms: 0,
        };
        let audit = AuditEntry::new(Some(who), "recording.start", recording.id.clone(), "ok");
        let rec = recording.clone();
        self.store
            .run(move |b| b.insert_recording(&rec, &audit))
            .await?;
        let (state, state_rx) = StateTx::new();
        let output = Arc::new(Output {
            id: ids::new_id(ids::OUTPUT),
            session_id: session.record.id.clone(),
            tenant_id: who.tenant_id.clone(),
            kind: OutputKind::Recording {
                recording_id: recording.id.clone(),
            },
            started_at: recording.started_at,
            state: state_rx,
            counters: Default::default(),
            stop: session.cancel_token.child_token(),
        });
        let job = RecordingJob {
            store: self.store.clone(),
            recording: recording.clone(),
            media: session.media.clone(),
            pre_skip: session.media.audio_pre_skip(),
            stop: output.stop.clone(),
            state,
            counters: output.counters.clone(),
        };
        let id = recording.id.clone();
        let started = tokio::task::spawn_blocking(move || recording::start(job))
            .await
            .map_err(|e| ApiError::Internal(format!("the recording could not start: {e}")))?;
        if let Err(e) = started {
            tracing::error!(recording = %id, error = %e, "cannot create the recording file");
            let end = now_ms();
            let _ = self
                .store
                .run(move |b| b.update_recording(&id, 0, 0, Some(end)))
                .await;
            return Err(ApiError::Unavailable(
                "the recording file could not be created; see the server log".into(),
            ));
        }
        self.track(session, output.clone());
        tracing::info!(output = %output.id, recording = %recording.id, "recording started");
        Ok(output)
    }

    /// Keeps `output` listed while its session lives; keyframes come at
    /// least every `keyframe_interval` while any output of it runs.
    fn track(&self, session: &Arc<SessionHandle>, output: Arc<Output>) {
        let kind = output.kind.name();
        crate::metrics::METRICS
            .outputs
            .with_label_values(&[kind])
            .inc();
        session
            .media
            .set_keyframe_interval(Some(self.limits.keyframe_interval));
        self.live.insert(output.id.clone(), output.clone());
        let live = self.live.clone();
        let session = session.clone();
        let mut state = output.state.clone();
        tokio::spawn(async move {
            let mut meter = Meter::new(kind, &output.id, output.counters.clone());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // Every state it takes, as an event of the session, until it
            // ends; its figures published meanwhile.
            'states: loop {
                let now = state.borrow_and_update().clone();
                let ended = now.ended();
                let _ = session
                    .send(Command::OutputChanged {
                        output_id: output.id.clone(),
                        state: now,
                    })
                    .await;
                if ended {
                    break;
                }
                loop {
                    tokio::select! {
                        _ = tick.tick() => meter.tick(),
                        changed = state.changed() => match changed {
                            Ok(()) => break,
                            Err(_) => break 'states,
                        },
                    }
                }
            }
            meter.end();
            crate::metrics::METRICS
                .outputs
                .with_label_values(&[kind])
                .dec();
            let others = live.iter().any(|o| {
                o.session_id == output.session_id && !o.state().ended() && o.kind.wants_keyframes()
            });
            if !others {
                session.media.set_keyframe_interval(None);
            }
            // Listed (in its final state) until the session closes.
            session.cancel_token.cancelled().await;
            live.remove(&output.id);
            drop(meter);
        });
    }

    /// The outputs of a session (running and ended), oldest first.
    pub fn of_session(&self, session_id: &str) -> Vec<Arc<Output>> {
        let mut outputs: Vec<_> = self
            .live
            .iter()
            .filter(|o| o.session_id == session_id)
            .map(|o| o.clone())
            .collect();
        outputs.sort_by(|a, b| a.id.cmp(&b.id));
        outputs
    }

    /// The caller's output; NOT_FOUND for another tenant's.
    pub fn get(&self, who: &Principal, output_id: &str) -> ApiResult<Arc<Output>> {
        let id = ids::parse_id("output_id", ids::OUTPUT, output_id)?;
        self.live
            .get(&id)
            .filter(|o| o.tenant_id == who.tenant_id)
            .map(|o| o.clone())
            .ok_or_else(|| ApiError::not_found(format!("output {id} not found")))
    }

    /// Stops an output and waits (briefly) for it to end.
    pub async fn remove(&self, who: &Principal, output_id: &str) -> ApiResult<Arc<Output>> {
        let output = self.get(who, output_id)?;
        output.stop.cancel();
        let mut state = output.state.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), state.wait_for(OutputState::ended)).await;
        Ok(output)
    }
}
