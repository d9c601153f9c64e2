//! Domain types of a live session. The gRPC layer converts to and from the
//! `huashen.v1` messages.

use crate::engines::speech::Utterance;
use crate::store::Millis;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::oneshot;

/// What a session was created with, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    pub language: String,
    pub voice_id: String,
    pub speed: f32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    pub idle_timeout: Duration,
    pub labels: BTreeMap<String, String>,
}

impl SessionSpec {
    /// What the media pipeline encodes.
    pub fn media(&self) -> crate::pipeline::MediaConfig {
        crate::pipeline::MediaConfig {
            width: self.width,
            height: self.height,
            fps: self.fps,
            video_bitrate_kbps: self.video_bitrate_kbps,
            audio_bitrate_kbps: self.audio_bitrate_kbps,
        }
    }
}

/// Numbers match `huashen.v1.SessionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    Starting = 1,
    Idle = 2,
    Speaking = 3,
    Listening = 4,
    Closed = 5,
}

/// Numbers match `huashen.v1.CloseReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientRequest = 1,
    IdleTimeout = 2,
    AvatarDeleted = 3,
    ServerShutdown = 4,
    Error = 5,
    RecordsUnavailable = 6,
}

impl CloseReason {
    pub fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            1 => Self::ClientRequest,
            2 => Self::IdleTimeout,
            3 => Self::AvatarDeleted,
            4 => Self::ServerShutdown,
            5 => Self::Error,
            6 => Self::RecordsUnavailable,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientRequest => "client_request",
            Self::IdleTimeout => "idle_timeout",
            Self::AvatarDeleted => "avatar_deleted",
            Self::ServerShutdown => "server_shutdown",
            Self::Error => "error",
            Self::RecordsUnavailable => "records_unavailable",
        }
    }
}

/// Current state of a live session, published by its actor.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: SessionState,
    pub viewer_count: u32,
    pub closed_at: Option<Millis>,
    pub close_reason: Option<CloseReason>,
    /// Sequence number of the last event emitted.
    pub last_seq: u64,
}

/// One event of a session, in the order the actor emitted it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub at: Millis,
    pub kind: EventKind,
}

/// What state an output of the session (a recording, …) is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputState {
    /// Waiting for the first keyframe, or connecting.
    Starting,
    Live,
    /// Lost its destination; trying again (`attempt` counts from 1).
    Reconnecting {
        attempt: u32,
        reason: String,
    },
    /// Ended by request or by the session closing.
    Stopped,
    /// Ended by a fault, with a reason a user can act on.
    Failed(String),
}

impl OutputState {
    pub fn ended(&self) -> bool {
        matches!(self, Self::Stopped | Self::Failed(_))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    StateChanged {
        previous: SessionState,
        current: SessionState,
    },
    ViewerJoined {
        viewer_id: String,
        viewer_count: u32,
    },
    ViewerLeft {
        viewer_id: String,
        viewer_count: u32,
    },
    Error {
        code: &'static str,
        message: String,
    },
    Closed {
        reason: CloseReason,
    },
    OutputChanged {
        output_id: String,
        state: OutputState,
    },
    /// Times are on the session clock, in milliseconds.
    SpeechStarted {
        utterance_id: String,
        text: String,
        clock_ms: u64,
    },
    SpeechFinished {
        utterance_id: String,
        interrupted: bool,
        clock_ms: u64,
    },
    Word {
        utterance_id: String,
        word: String,
        start_ms: u64,
        end_ms: u64,
    },
    Phoneme {
        utterance_id: String,
        phoneme: String,
        viseme: &'static str,
        start_ms: u64,
        end_ms: u64,
    },
}

/// Requests from the control plane to a session.
#[derive(Debug)]
pub enum Command {
    /// Cancel queued and in-flight speech; replies with how many utterances
    /// were cancelled.
    Interrupt { reply: oneshot::Sender<u32> },
    /// Input arrived for the session (resets the idle timer).
    Activity,
    /// A viewer's media connection is up.
    ViewerJoined { viewer_id: String },
    /// A viewer left (hung up, failed, or was removed).
    ViewerLeft { viewer_id: String },
    /// An output of the session changed state.
    OutputChanged {
        output_id: String,
        state: OutputState,
    },
    /// Moderation refused a clause (it is not spoken).
    ModerationBlocked { category: String },
    /// A clause to speak after those queued; the reply says whether it was
    /// queued (the queue is bounded).
    Speak {
        utterance: Utterance,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Clauses a session may have waiting for synthesis.
pub const MAX_PENDING_CLAUSES: usize = 256;
