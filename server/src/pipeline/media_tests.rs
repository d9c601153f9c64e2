//! The media pipeline's own tests (real time, real encoders).

use super::*;

/// A 256×256 still-picture session's media (and where its playback events
/// go).
fn still_pipeline() -> (MediaPipeline, mpsc::Receiver<PlaybackEvent>) {
    use crate::engines::portrait;
    let img = portrait::decode(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/astronaut.png"
        ))
        .unwrap(),
    )
    .unwrap();
    let still = I420::from_rgb(&portrait::letterbox(&img, 256, 256));
    let config = MediaConfig {
        width: 256,
        height: 256,
        fps: 25,
        video_bitrate_kbps: 500,
        audio_bitrate_kbps: 32,
    };
    let (events, rx) = mpsc::channel(16);
    let audio_in = AudioInput {
        playback: Arc::new(Playback::new(48000)),
        voice: Arc::new(VoiceInput::new(48000, 2880, BargeIn::Interrupt)),
        events,
        lipsync: Arc::new(LipSyncEngine::unbatched()),
    };
    let p = MediaPipeline::start(
        config,
        StillFrame(still),
        Labels::default(),
        audio_in,
        "test",
    )
    .unwrap();
    (p, rx)
}

#[tokio::test]
async fn real_time_packets_in_lockstep() {
    let (p, _events) = still_pipeline();
    p.set_keyframe_request_interval(Duration::ZERO);
    let mut rx = p.subscribe();
    // The first frames may have gone out before the subscription: a new
    // viewer asks for a keyframe, and gets one.
    p.request_keyframe();
    let (a0, v0) = p.clock.bases();
    let mut audio_ts = vec![];
    let mut video_ts = vec![];
    let mut keyframe_starts = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(600) {
        let pkt = rx.recv().await.unwrap();
        match pkt.kind {
            MediaKind::Audio => audio_ts.push(pkt.packet.header.timestamp.wrapping_sub(a0)),
            MediaKind::Video => {
                keyframe_starts += usize::from(pkt.keyframe_start);
                if pkt.packet.header.marker {
                    video_ts.push(pkt.packet.header.timestamp.wrapping_sub(v0));
                }
            }
        }
    }
    // ~0.6 s of media: 20 ms audio steps, 40 ms video steps.
    assert!(audio_ts.len() >= 20, "{}", audio_ts.len());
    assert!(audio_ts.windows(2).all(|w| w[1] - w[0] == 960));
    // Video stays on the clock: a frame the thread was too late for, or
    // the encoder's rate control dropped, is skipped, never shifted.
    let skipped: u32 = video_ts
        .windows(2)
        .map(|w| {
            let step = w[1] - w[0];
            assert!(step > 0 && step % 3600 == 0, "{video_ts:?}");
            step / 3600 - 1
        })
        .sum();
    assert!(skipped <= 3, "{skipped} frames skipped: {video_ts:?}");
    assert!(keyframe_starts >= 1, "no keyframe reached the subscriber");
    assert!(p.stats.keyframes.load(Ordering::Relaxed) >= 1);
}

/// A peer asking for a keyframe at every frame (PLI flood) gets one per
/// `keyframe_request_interval`, not one per request.
#[tokio::test]
async fn keyframe_requests_are_throttled() {
    let (p, _events) = still_pipeline();
    p.set_keyframe_request_interval(Duration::from_millis(500));
    let t = Instant::now();
    let mut requests = 0;
    while t.elapsed() < Duration::from_secs(2) {
        p.request_keyframe();
        requests += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let keyframes = p.stats.keyframes.load(Ordering::Relaxed);
    // 2 s at one per 0.5 s, plus the first frame's.
    assert!(
        requests > 100 && keyframes <= 6,
        "{keyframes} keyframes for {requests} requests"
    );
    assert!(
        keyframes >= 3,
        "requests were not served at all: {keyframes}"
    );
}
