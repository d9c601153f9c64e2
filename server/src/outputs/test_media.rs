//! A real media pipeline for the outputs' tests, and ffprobe to check what
//! they write with a tool the project did not write.

use crate::config::BargeIn;
use crate::engines::lipsync::LipSyncEngine;
use crate::pipeline::frame::I420;
use crate::pipeline::playback::Playback;
use crate::pipeline::voice::VoiceInput;
use crate::pipeline::{AudioInput, Labels, MediaConfig, MediaPipeline, StillFrame};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A session pipeline showing the test portrait at `width`×`height`, 25 fps,
/// with the SEI label.
pub fn pipeline(width: u32, height: u32) -> MediaPipeline {
    let img = crate::engines::portrait::decode(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/astronaut.png"
        ))
        .unwrap(),
    )
    .unwrap();
    let still = I420::from_rgb(&crate::engines::portrait::letterbox(&img, width, height));
    let config = MediaConfig {
        width,
        height,
        fps: 25,
        video_bitrate_kbps: 400,
        audio_bitrate_kbps: 32,
    };
    let (events, _rx) = mpsc::channel(16);
    let audio_in = AudioInput {
        playback: Arc::new(Playback::new(48000)),
        voice: Arc::new(VoiceInput::new(48000, 2880, BargeIn::Interrupt)),
        events,
        lipsync: Arc::new(LipSyncEngine::unbatched()),
    };
    let labels = Labels {
        visible: None,
        sei_session: Some("se_0123456789abcdef0123456789abcdef".into()),
    };
    MediaPipeline::start(config, StillFrame(still), labels, audio_in, "test").unwrap()
}

/// `ffprobe`'s JSON for `path` (streams, format, packets).
pub fn ffprobe(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .args(["-show_packets"])
        .arg(path)
        .output()
        .expect("ffprobe (Debian package ffmpeg; scripts/setup.sh --test installs it)");
    assert!(
        out.status.success(),
        "ffprobe refused the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
