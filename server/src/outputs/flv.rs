//! FLV (Adobe Flash Video File Format, version 10.1) of a session's H.264
//! and AAC: the tag bodies an RTMP stream carries, and whole FLV files
//! (the same tags with headers) for checking them with ffmpeg's tools.

use super::fmp4;
use crate::pipeline::encode::AacEncoder;

/// FLV tag types.
pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;

/// The AVC sequence header: what decodes every following picture.
pub fn video_config(sps: &[u8], pps: &[u8]) -> Vec<u8> {
    let mut tag = vec![0x17, 0, 0, 0, 0];
    tag.extend(fmp4::avc_decoder_config(sps, pps));
    tag
}

/// One access unit (Annex B in, length-prefixed NAL units out).
pub fn video_frame(au: &[u8], keyframe: bool) -> Vec<u8> {
    let mut tag = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    tag.extend(fmp4::avcc_sample(au));
    tag
}

/// The AAC sequence header (AudioSpecificConfig).
pub fn audio_config() -> Vec<u8> {
    let mut tag = vec![0xAF, 0];
    tag.extend(AacEncoder::AUDIO_SPECIFIC_CONFIG);
    tag
}

/// One raw AAC frame.
pub fn audio_frame(raw: &[u8]) -> Vec<u8> {
    let mut tag = vec![0xAF, 1];
    tag.extend_from_slice(raw);
    tag
}

/// An FLV file's header (audio and video) and the first back-pointer.
pub fn file_header() -> Vec<u8> {
    vec![b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// One FLV tag of `kind` at `time_ms`, with its back-pointer.
pub fn file_tag(kind: u8, time_ms: u32, body: &[u8]) -> Vec<u8> {
    let size = body.len() as u32;
    let mut tag = vec![kind];
    tag.extend(&size.to_be_bytes()[1..]);
    tag.extend(&time_ms.to_be_bytes()[1..]);
    tag.push((time_ms >> 24) as u8);
    tag.extend([0, 0, 0]);
    tag.extend_from_slice(body);
    tag.extend((size + 11).to_be_bytes());
    tag
}

#[cfg(test)]
mod tests {
    use super::super::test_media::{ffprobe, pipeline};
    use super::*;
    use crate::pipeline::FrameKind;
    use std::time::Duration;

    /// A real pipeline's H.264 and AAC for 4 s as an FLV file: ffprobe sees
    /// both streams as they should be, and ffmpeg decodes it without an
    /// error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn h264_and_aac_make_an_flv_ffmpeg_reads() {
        let p = pipeline(320, 240);
        p.set_keyframe_interval(Some(Duration::from_secs(2)));
        p.want_aac(true);
        let mut rx = p.subscribe_frames();
        let mut file = file_header();
        let mut t0 = None;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(4) {
            let f = rx.recv().await.unwrap();
            let t0 = match t0 {
                Some(t) => t,
                None if f.kind == FrameKind::Video && f.keyframe => {
                    let (sps, pps) = fmp4::parameter_sets(&f.data).unwrap();
                    file.extend(file_tag(VIDEO, 0, &video_config(&sps, &pps)));
                    file.extend(file_tag(AUDIO, 0, &audio_config()));
                    *t0.insert(f.sample)
                }
                None => continue,
            };
            let Some(at) = f.sample.checked_sub(t0) else {
                continue;
            };
            let ms = (at / 48) as u32;
            match f.kind {
                FrameKind::Video => {
                    file.extend(file_tag(VIDEO, ms, &video_frame(&f.data, f.keyframe)))
                }
                FrameKind::Aac => file.extend(file_tag(AUDIO, ms, &audio_frame(&f.data))),
                FrameKind::Opus => {}
            }
        }
        p.want_aac(false);
        p.stop();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.flv");
        std::fs::write(&path, &file).unwrap();
        let probe = ffprobe(&path);
        let streams = probe["streams"].as_array().unwrap();
        let kind = |k: &str| {
            streams
                .iter()
                .find(|s| s["codec_type"] == k)
                .unwrap_or_else(|| panic!("{probe}"))
        };
        assert_eq!(kind("video")["codec_name"], "h264");
        assert_eq!(kind("video")["width"], 320);
        assert_eq!(kind("audio")["codec_name"], "aac");
        assert_eq!(kind("audio")["profile"], "LC");
        assert_eq!(kind("audio")["sample_rate"], "48000");
        assert_eq!(kind("audio")["channels"], 1);
        let decoded = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(decoded.status.success());
        let errors = String::from_utf8_lossy(&decoded.stderr);
        assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
        // (FLV has no index: the last frame's time is its length.)
        let duration = probe["packets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["pts_time"].as_str()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        assert!(duration > 3.0, "{duration}");
    }
}
