//! Sessions and their events as the API shows them.

use crate::control::outputs::output_state_to_proto;
use crate::control::validate;
use crate::session::{CloseReason, Event, EventKind, SessionHandle, SessionState, Snapshot};
use crate::store::SessionRecord;
use huashen_protos::v1;
use tonic::Status;

pub(super) fn state_to_proto(s: SessionState) -> i32 {
    s as i32
}

pub(super) fn record_to_proto(r: &SessionRecord, snap: Option<&Snapshot>) -> v1::Session {
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

pub(super) fn handle_to_proto(h: &SessionHandle) -> v1::Session {
    let mut s = record_to_proto(&h.record, Some(&h.snapshot()));
    if s.state != SessionState::Closed as i32 {
        s.viewer_token = h.viewer_token.clone();
        s.whep_path = format!("/whep/sessions/{}", h.record.id);
    }
    s
}

/// A session another server runs: its record, in the state `REMOTE`.
pub(super) fn elsewhere_to_proto(r: &SessionRecord) -> v1::Session {
    v1::Session {
        state: v1::SessionState::Remote as i32,
        ..record_to_proto(r, None)
    }
}

pub(super) fn event_to_proto(e: &Event) -> v1::SessionEvent {
    use v1::session_event::Event as E;
    let event = match &e.kind {
        EventKind::StateChanged { previous, current } => E::StateChanged(v1::StateChanged {
            previous: state_to_proto(*previous),
            current: state_to_proto(*current),
        }),
        EventKind::OutputChanged { output_id, state } => {
            let (state, reason) = output_state_to_proto(state);
            E::OutputChanged(v1::OutputChanged {
                output_id: output_id.clone(),
                state: state as i32,
                reason,
            })
        }
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
        EventKind::SpeechStarted { .. }
        | EventKind::SpeechFinished { .. }
        | EventKind::Word { .. }
        | EventKind::Phoneme { .. } => speech_event_to_proto(&e.kind),
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

pub(super) fn closed_events(r: &SessionRecord) -> Vec<Result<v1::SessionEvent, Status>> {
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

/// The speech events (utterances, words, phonemes).
fn speech_event_to_proto(kind: &EventKind) -> v1::session_event::Event {
    use v1::session_event::Event as E;
    match kind {
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
        _ => unreachable!("only speech events come here"),
    }
}
