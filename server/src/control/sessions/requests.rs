//! CreateSession, Speak and PushAudio requests checked and turned into what
//! the session layer takes.

use crate::control::validate;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ingest::voice::Encoding;
use crate::session::SessionSpec;
use crate::session::speak::TextPiece;
use crate::session::voice::VoiceFormat;
use huashen_protos::v1;
use std::time::Duration;

/// Languages the API accepts (BCP-47).
pub const LANGUAGES: &[&str] = &["en-US", "zh-CN"];
/// Largest `text` in one Speak message, in bytes.
pub const MAX_SPEAK_CHUNK: usize = 4096;
/// Largest `data` in one PushAudio message, in bytes.
pub const MAX_AUDIO_CHUNK: usize = 64 * 1024;

pub(super) fn ranged(field: &str, v: u32, default: u32, lo: u32, hi: u32) -> ApiResult<u32> {
    match v {
        0 => Ok(default),
        v if (lo..=hi).contains(&v) => Ok(v),
        v => Err(ApiError::invalid(format!(
            "{field} is {v}; allowed are {lo}..{hi} (0 for the default {default})"
        ))),
    }
}

pub(super) fn check_speak_chunk(m: &v1::SpeakRequest) -> ApiResult<()> {
    if m.text.len() > MAX_SPEAK_CHUNK {
        return Err(ApiError::invalid(format!(
            "text is {} bytes in one message; send at most {MAX_SPEAK_CHUNK} bytes per message",
            m.text.len()
        )));
    }
    Ok(())
}

/// The voice options checked: the language (one of [`LANGUAGES`]) and the
/// speaking rate.
fn voice_spec(voice: &v1::VoiceOptions) -> ApiResult<(String, f32)> {
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
    Ok((language, speed))
}

/// The session a CreateSession request asks for, checked, defaults filled
/// in (`idle_timeout` when it names none, at most `max_idle_timeout`).
pub(super) fn spec(
    req: &v1::CreateSessionRequest,
    default_idle_timeout: Duration,
    max_idle_timeout: Duration,
) -> ApiResult<SessionSpec> {
    let voice = req.voice.clone().unwrap_or_default();
    let (language, speed) = voice_spec(&voice)?;
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
        0 => default_idle_timeout,
        s if u64::from(s) <= max_idle_timeout.as_secs() => Duration::from_secs(s.into()),
        s => {
            return Err(ApiError::invalid(format!(
                "idle_timeout_seconds is {s}; this server allows at most {}",
                max_idle_timeout.as_secs()
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

/// A Speak message as a piece of text for `session_id`.
pub(super) fn speak_piece(m: v1::SpeakRequest, session_id: &str) -> ApiResult<TextPiece> {
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
pub(super) fn audio_start(first: v1::PushAudioRequest) -> ApiResult<(String, VoiceFormat)> {
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
pub(super) fn audio_data(m: v1::PushAudioRequest) -> ApiResult<Vec<u8>> {
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

/// CreateSession's `outputs`, checked before anything starts.
pub(super) fn outputs(
    outputs: Vec<v1::AddOutputRequest>,
) -> ApiResult<Vec<crate::outputs::manager::OutputRequest>> {
    if outputs.len() > 32 {
        return Err(ApiError::invalid(
            "at most 32 outputs may start with a session",
        ));
    }
    outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            if !o.session_id.is_empty() {
                return Err(ApiError::invalid(format!(
                    "outputs[{i}].session_id must be empty: the session does not exist yet"
                )));
            }
            crate::control::outputs::output_request(o.kind).map_err(|e| match e {
                ApiError::InvalidArgument(m) => ApiError::invalid(format!("outputs[{i}]: {m}")),
                e => e,
            })
        })
        .collect()
}
