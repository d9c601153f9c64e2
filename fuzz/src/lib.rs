//! Fuzz targets: each takes arbitrary bytes the way Huashen takes them from
//! the outside and must return (with an error, if need be), never panic,
//! hang or allocate without bound. `src/bin/` wraps each for afl.rs
//! (`scripts/fuzz.sh`); `tests/replay.rs` runs every committed corpus file
//! and a quick mutation run through them in the test command.

use huashen::config::ModerationConfig;
use huashen::ingest::moderation::{Moderator, normalise};
use huashen::ingest::voice::{Encoding, VoiceDecoder};
use huashen_protos::v1;
use prost::Message;
use std::sync::LazyLock;

/// A fuzz target: takes any bytes, returns.
pub type Target = fn(&[u8]);

/// The targets by name (their corpus folders under `corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("image", image),
    ("sdp", sdp),
    ("tflite", tflite),
    ("proto", proto),
    ("moderation", moderation),
    ("audio", audio),
];

/// An uploaded portrait: decoded within the pixel limit, normalised as
/// enrollment keeps it (only when small enough to be quick).
pub fn image(data: &[u8]) {
    use huashen::engines::portrait;
    if let Ok(img) = portrait::decode(data)
        && u64::from(img.width()) * u64::from(img.height()) <= 1 << 20
    {
        let _ = portrait::normalise(&img);
    }
}

/// A WHEP/WHIP body: parsed as the SDP offer it claims to be.
pub fn sdp(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = rtc::peer_connection::sdp::RTCSessionDescription::offer(text.to_owned());
    }
}

/// A model file: the TFLite flatbuffer reader, every tensor read out.
pub fn tflite(data: &[u8]) {
    if let Ok(model) = huashen_inference::tflite::Model::parse(data) {
        for t in &model.tensors {
            let _ = t.to_f32();
            let _ = t.to_i32();
        }
    }
}

/// A gRPC message body, as each service's requests decode it.
pub fn proto(data: &[u8]) {
    let _ = v1::EnrollAvatarRequest::decode(data);
    let _ = v1::CreateSessionRequest::decode(data);
    let _ = v1::SpeakRequest::decode(data);
    let _ = v1::PushAudioRequest::decode(data);
    let _ = v1::AddOutputRequest::decode(data);
}

static MODERATOR: LazyLock<Moderator> =
    LazyLock::new(|| Moderator::new(&ModerationConfig::default()));

/// Text to be spoken, through the moderation normaliser and the rules.
pub fn moderation(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = normalise(&text);
    let _ = MODERATOR.check(&text);
}

/// Pushed audio: the first byte picks the encoding, channels, rate and
/// piece size; PCM is fed in pieces of that size, Opus as packets each
/// preceded by its length byte, as PushAudio would feed them.
pub fn audio(data: &[u8]) {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let encoding = if pick & 1 == 0 {
        Encoding::Pcm16
    } else {
        Encoding::Opus
    };
    let channels = u32::from(pick >> 1 & 1) + 1;
    let rate = [16_000, 24_000, 44_100, 48_000][usize::from(pick >> 2 & 3)];
    let Ok(mut decoder) = VoiceDecoder::new(encoding, rate, channels) else {
        return;
    };
    let mut pcm = Vec::new();
    let piece = usize::from(pick >> 4) * 97 + 1;
    while !rest.is_empty() {
        let (chunk, left) = match encoding {
            Encoding::Pcm16 => rest.split_at(piece.min(rest.len())),
            Encoding::Opus => {
                let n = usize::from(rest[0]).min(rest.len() - 1);
                (&rest[1..=n], &rest[1 + n..])
            }
        };
        rest = left;
        if decoder.decode(chunk, &mut pcm).is_err() {
            return;
        }
        if pcm.len() > 1 << 20 {
            pcm.clear();
        }
    }
    decoder.finish(&mut pcm);
}
