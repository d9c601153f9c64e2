//! The session actor: one task per session that owns its state, reads its
//! bounded command queue, watches its idle deadline and cancellation token,
//! and publishes a snapshot and events. It is the only writer of session
//! state, so no locks are held across awaits.

use super::admission::Permit;
use super::handle::LiveSessions;
use super::types::*;
use crate::config::BargeIn;
use crate::engines::speech::{SpeechEngine, Utterance};
use crate::pipeline::clock::MediaClock;
use crate::pipeline::playback::PlaybackEvent;
use crate::store::{AuditEntry, Store, now_ms};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

pub(super) struct Actor {
    pub id: String,
    pub tenant_id: String,
    pub idle_timeout: std::time::Duration,
    pub commands: mpsc::Receiver<Command>,
    pub cancel: CancellationToken,
    /// Set by whoever cancels, read once the actor stops.
    pub close_reason: Arc<std::sync::Mutex<Option<CloseReason>>>,
    pub snapshot: watch::Sender<Snapshot>,
    pub events: broadcast::Sender<Event>,
    pub store: Store,
    /// The live sessions; the actor takes itself out when it closes.
    pub live: Arc<LiveSessions>,
    /// Held until the session is closed; `None` once released.
    pub permit: Option<Permit>,
    pub media: Arc<crate::pipeline::MediaPipeline>,
    pub speech: Arc<SpeechEngine>,
    pub speed: f32,
    /// The session's language and chosen voice (empty: the language's).
    pub language: String,
    pub voice_id: String,
    pub playback_events: mpsc::Receiver<PlaybackEvent>,
    /// Clauses waiting for synthesis, with their arrival time.
    pub pending: VecDeque<(Utterance, Instant)>,
    /// The clause being synthesised: fires when all its audio is buffered.
    pub in_flight: Option<oneshot::Receiver<Result<(), String>>>,
    /// Arrival times of clauses submitted and not yet on air.
    pub arrivals: VecDeque<(String, Instant)>,
}

impl Actor {
    fn emit(&mut self, kind: EventKind) {
        let mut seq = 0;
        self.snapshot.send_modify(|s| {
            s.last_seq += 1;
            seq = s.last_seq;
        });
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Event {
            seq,
            at: now_ms(),
            kind,
        });
    }

    fn set_state(&mut self, current: SessionState) {
        let previous = self.snapshot.borrow().state;
        if previous == current {
            return;
        }
        self.snapshot.send_modify(|s| s.state = current);
        self.emit(EventKind::StateChanged { previous, current });
    }

    /// Hands the next clause to the speech engine when none is in flight.
    fn pump(&mut self) {
        while self.in_flight.is_none() {
            let Some((utterance, arrived)) = self.pending.pop_front() else {
                return;
            };
            let id = utterance.id.clone();
            match self.speech.submit(
                utterance,
                &self.language,
                &self.voice_id,
                self.speed,
                self.media.playback.clone(),
            ) {
                Ok(rx) => {
                    self.arrivals.push_back((id, arrived));
                    self.in_flight = Some(rx);
                }
                Err(message) => {
                    self.emit(EventKind::Error {
                        code: "SPEECH_FAILED",
                        message: format!("an utterance was not spoken: {message}"),
                    });
                }
            }
        }
    }

    fn settle_state(&mut self) {
        if self.media.voice.is_active() {
            self.set_state(SessionState::Listening);
        } else if self.pending.is_empty()
            && self.in_flight.is_none()
            && !self.media.playback.is_active()
        {
            self.set_state(SessionState::Idle);
        }
    }

    /// Drops queued and in-flight text (the playback buffer is emptied by
    /// whoever calls this). Returns how many utterances were queued, and
    /// whether one was being synthesised (0 or 1).
    fn drop_text(&mut self) -> (u32, u32) {
        let queued = self.pending.len() as u32;
        self.pending.clear();
        self.arrivals.clear();
        // The clause in flight is dropped by its worker at its next chunk
        // (the playback generation moved on).
        (queued, u32::from(self.in_flight.take().is_some()))
    }

    fn on_playback(&mut self, ev: PlaybackEvent) {
        let ms = MediaClock::sample_ms;
        match ev {
            PlaybackEvent::Started {
                utterance_id,
                text,
                sample,
            } => {
                while let Some((id, arrived)) = self.arrivals.pop_front() {
                    if id == utterance_id {
                        crate::metrics::METRICS
                            .speech_start_seconds
                            .observe(arrived.elapsed().as_secs_f64());
                        break;
                    }
                }
                self.set_state(SessionState::Speaking);
                self.emit(EventKind::SpeechStarted {
                    utterance_id,
                    text,
                    clock_ms: ms(sample),
                });
            }
            PlaybackEvent::Word {
                utterance_id,
                word,
                start,
                end,
            } => self.emit(EventKind::Word {
                utterance_id,
                word,
                start_ms: ms(start),
                end_ms: ms(end),
            }),
            PlaybackEvent::Phoneme {
                utterance_id,
                phoneme,
                viseme,
                start,
                end,
            } => self.emit(EventKind::Phoneme {
                utterance_id,
                phoneme,
                viseme,
                start_ms: ms(start),
                end_ms: ms(end),
            }),
            PlaybackEvent::Finished {
                utterance_id,
                interrupted,
                sample,
            } => {
                self.emit(EventKind::SpeechFinished {
                    utterance_id,
                    interrupted,
                    clock_ms: ms(sample),
                });
                self.settle_state();
            }
            PlaybackEvent::VoiceStarted { .. } => {
                if self.media.voice.barge_in == BargeIn::Interrupt {
                    // The media thread already cut the audio playing.
                    self.drop_text();
                }
                self.set_state(SessionState::Listening);
            }
            PlaybackEvent::VoiceStopped { .. } => {
                if self.media.playback.is_active() {
                    // Held text resumes.
                    self.set_state(SessionState::Speaking);
                } else {
                    self.settle_state();
                }
            }
        }
    }

    /// Runs the session until it is closed (by request, idle timeout,
    /// cancellation or its handle going away).
    pub async fn run(mut self) {
        let _open = crate::metrics::Gauged::new(&crate::metrics::METRICS.sessions_open);
        tracing::info!("session started");
        // The media pipeline was started before the actor: the session is
        // on air (showing its idle presenter) from here.
        self.set_state(SessionState::Idle);
        let mut idle_deadline = Instant::now() + self.idle_timeout;
        let reason = loop {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    let set = self.close_reason.lock().unwrap_or_else(|p| p.into_inner()).take();
                    break set.unwrap_or(CloseReason::ServerShutdown);
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => {
                        idle_deadline = Instant::now() + self.idle_timeout;
                        self.on_command(cmd);
                    }
                    // Every sender is gone: the handle was dropped.
                    None => break CloseReason::Error,
                },
                Some(ev) = self.playback_events.recv() => {
                    idle_deadline = Instant::now() + self.idle_timeout;
                    self.on_playback(ev);
                }
                done = async {
                    match self.in_flight.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                } => self.on_synthesised(done),
                _ = sleep_until(idle_deadline) => {
                    if self.is_busy() || self.snapshot.borrow().viewer_count > 0 {
                        idle_deadline = Instant::now() + self.idle_timeout;
                        continue;
                    }
                    break CloseReason::IdleTimeout;
                }
            }
        };
        self.finish(reason).await;
    }

    /// Speech or the host's voice is playing, or a clause is being
    /// synthesised: the session is not idle, whatever its timer says.
    fn is_busy(&self) -> bool {
        self.media.playback.is_active() || self.in_flight.is_some() || self.media.voice.is_active()
    }

    /// The clause in flight is synthesised (or failed): the next may go.
    fn on_synthesised(&mut self, done: Result<Result<(), String>, oneshot::error::RecvError>) {
        self.in_flight = None;
        if let Ok(Err(message)) = done {
            self.emit(EventKind::Error {
                code: "SPEECH_FAILED",
                message: format!("an utterance could not be synthesised: {message}"),
            });
        }
        self.pump();
        self.settle_state();
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Interrupt { reply } => {
                let (queued, in_flight) = self.drop_text();
                let sample = self
                    .media
                    .stats
                    .clock_sample
                    .load(std::sync::atomic::Ordering::Relaxed);
                let mut events = Vec::new();
                let playing = self.media.playback.interrupt(sample, &mut events);
                for ev in events {
                    self.on_playback(ev);
                }
                let _ = reply.send(queued + in_flight.max(playing));
                self.set_state(SessionState::Idle);
                // The host's voice is not cut by Interrupt.
                self.settle_state();
            }
            Command::Speak { utterance, reply } => {
                if self.pending.len() >= MAX_PENDING_CLAUSES {
                    let _ = reply.send(Err(format!(
                        "the session already has {MAX_PENDING_CLAUSES} clauses waiting; \
                         wait for speech to catch up or Interrupt"
                    )));
                } else {
                    self.pending.push_back((utterance, Instant::now()));
                    let _ = reply.send(Ok(()));
                    self.pump();
                }
            }
            Command::Activity => {}
            Command::OutputChanged { output_id, state } => {
                self.emit(EventKind::OutputChanged { output_id, state })
            }
            Command::ViewerJoined { viewer_id } => {
                self.snapshot.send_modify(|s| s.viewer_count += 1);
                let viewer_count = self.snapshot.borrow().viewer_count;
                self.emit(EventKind::ViewerJoined {
                    viewer_id,
                    viewer_count,
                });
            }
            Command::ModerationBlocked { category } => self.emit(EventKind::Error {
                code: "MODERATION_BLOCKED",
                message: format!(
                    "a clause was not spoken: it matched the moderation rules ({category})"
                ),
            }),
            Command::ViewerLeft { viewer_id } => {
                self.snapshot
                    .send_modify(|s| s.viewer_count = s.viewer_count.saturating_sub(1));
                let viewer_count = self.snapshot.borrow().viewer_count;
                self.emit(EventKind::ViewerLeft {
                    viewer_id,
                    viewer_count,
                });
            }
        }
    }

    async fn finish(mut self, reason: CloseReason) {
        let closed_at = now_ms();
        // Stop encoding at once; viewers see their streams end. Drop queued
        // speech: a TTS worker waiting for room in this session's playback
        // buffer (which nobody drains any more) is released.
        self.media.stop();
        self.pending.clear();
        self.media.playback.interrupt(0, &mut Vec::new());
        self.media.voice.clear();
        // Free the admission slot before anyone can observe the closed state,
        // so a client that saw the close can open a new session at once.
        drop(self.permit.take());
        let previous = self.snapshot.borrow().state;
        self.snapshot.send_modify(|s| {
            s.state = SessionState::Closed;
            s.closed_at = Some(closed_at);
            s.close_reason = Some(reason);
        });
        self.emit(EventKind::StateChanged {
            previous,
            current: SessionState::Closed,
        });
        self.emit(EventKind::Closed { reason });
        let audit = AuditEntry {
            at: closed_at,
            tenant_id: Some(self.tenant_id.clone()),
            actor: "system".into(),
            action: "session.close".into(),
            target: self.id.clone(),
            outcome: reason.as_str().into(),
        };
        let id = self.id.clone();
        if let Err(e) = self
            .store
            .run(move |b| b.close_session(&id, closed_at, reason as i32, &audit))
            .await
        {
            // The row stays open; the next start closes it (Store::recover).
            tracing::error!(error = %e, "could not record session close");
        }
        self.live.remove(&self.id);
        tracing::info!(reason = reason.as_str(), "session closed");
    }
}
