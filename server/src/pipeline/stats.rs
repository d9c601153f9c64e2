//! What a session's media thread counts, read by the session (its
//! snapshot, admission by capacity) and the metrics.

use std::sync::atomic::AtomicU64;

/// Counters a session reports.
#[derive(Debug, Default)]
pub struct MediaStats {
    pub audio_frames: AtomicU64,
    pub video_frames: AtomicU64,
    pub keyframes: AtomicU64,
    /// Video frames dropped because the thread fell behind real time.
    pub late_frames: AtomicU64,
    /// Total time spent encoding video, microseconds.
    pub video_encode_us: AtomicU64,
    /// Session-clock sample of the audio frame encoded last.
    pub clock_sample: AtomicU64,
    /// CPU time the media thread has used (admission by capacity).
    pub cpu: crate::metrics::CpuCounter,
}
