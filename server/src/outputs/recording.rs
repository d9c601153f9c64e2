//! The recording output: the session's encoded frames as fragmented MP4,
//! sealed piece by piece into the file store as they come. A task takes
//! the frames (and the stop signal) and hands them over a bounded queue to
//! a thread of its own that writes (file writes block). Its record grows
//! as it goes and is closed when the output stops.

use super::fragments::FragmentWriter;
use super::state::{OutputState, StateTx};
use crate::pipeline::{EncodedFrame, FrameKind, MediaPipeline};
use crate::rtc::forward::Sent;
use crate::store::{Recording, Store, now_ms};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

/// How often the record learns the recording's size and length.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Frames queued for the writing thread (about 3 s of audio and video).
const QUEUE: usize = 256;

/// What the writing thread is handed.
enum Feed {
    Frame(Arc<EncodedFrame>),
    /// Frames were lost before this point (the writer fell behind).
    Gap(u64),
}

/// What a recording thread needs.
pub struct RecordingJob {
    pub store: Store,
    pub recording: Recording,
    pub media: Arc<MediaPipeline>,
    /// Opus look-ahead of the session's encoder, in 48 kHz samples.
    pub pre_skip: u16,
    pub stop: CancellationToken,
    pub state: StateTx,
    /// Bytes written and frames skipped, for `ListOutputs` and metrics.
    pub counters: Sent,
}

/// Starts writing; the thread ends when `stop` fires, when the session's
/// media ends, or at a write error (the state says which).
/// Blocking (it creates the file); call inside the runtime.
pub fn start(job: RecordingJob) -> std::io::Result<()> {
    let frames = job.media.subscribe_frames();
    let file = job.store.files.create_recording(&job.recording.id)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
    let stop = job.stop.clone();
    std::thread::Builder::new()
        .name(format!("rec-{}", &job.recording.id[3..11]))
        .spawn(move || run(job, rx, file))?;
    tokio::runtime::Handle::current().spawn(forward(frames, tx, stop));
    Ok(())
}

/// Hands the session's frames to the writing thread until `stop` fires or
/// the media ends; dropping `tx` then ends the thread.
async fn forward(
    mut frames: broadcast::Receiver<Arc<EncodedFrame>>,
    tx: std::sync::mpsc::SyncSender<Feed>,
    stop: CancellationToken,
) {
    let mut lost = 0u64;
    loop {
        let feed = tokio::select! {
            _ = stop.cancelled() => return,
            f = frames.recv() => match f {
                Ok(f) if lost > 0 => {
                    // Say what was lost first; the frame itself waits for
                    // the next keyframe anyway.
                    let gap = Feed::Gap(std::mem::take(&mut lost));
                    if tx.try_send(gap).is_err() {
                        lost += 1;
                        continue;
                    }
                    Feed::Frame(f)
                }
                Ok(f) => Feed::Frame(f),
                Err(RecvError::Lagged(n)) => {
                    lost += n;
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        match tx.try_send(feed) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(_)) => lost += 1,
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
        }
    }
}

fn run(
    job: RecordingJob,
    frames: std::sync::mpsc::Receiver<Feed>,
    mut file: crate::store::sealed_stream::SealedWriter,
) {
    let config = job.media.config;
    let mut writer = FragmentWriter::new(config.width, config.height, config.fps, job.pre_skip);
    let mut last_progress = Instant::now();
    let mut wait_keyframe = false;
    let mut failure = None;
    let mut on_disk = Duration::ZERO;
    job.media.request_keyframe();
    // Ends when the forwarding task stops (stop, or the media ended).
    while let Ok(feed) = frames.recv() {
        let frame = match feed {
            Feed::Frame(f) => f,
            Feed::Gap(missed) => {
                // The disk fell behind: skip to the next keyframe rather
                // than write pictures that reference lost ones.
                tracing::warn!(missed, "recording fell behind; resuming at a keyframe");
                job.counters.add_dropped(missed);
                wait_keyframe = true;
                job.media.request_keyframe();
                continue;
            }
        };
        if frame.kind == FrameKind::Video && wait_keyframe {
            if !frame.keyframe {
                continue;
            }
            wait_keyframe = false;
        }
        let Some(bytes) = writer.push(&frame) else {
            continue;
        };
        if let Err(e) = append(&job, &mut file, &bytes) {
            failure = Some(e);
            break;
        }
        on_disk = writer.duration();
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            progress(&job, on_disk, None);
        }
    }
    if failure.is_none()
        && let Some(bytes) = writer.finish()
    {
        match append(&job, &mut file, &bytes) {
            Ok(()) => on_disk = writer.duration(),
            Err(e) => failure = Some(e),
        }
    }
    // What is in the file: a fragment that could not be written is not.
    progress(&job, on_disk, Some(now_ms()));
    match failure {
        Some(e) => {
            tracing::error!(recording = %job.recording.id, error = %e, "recording failed");
            job.state.set(OutputState::Failed(format!(
                "the recording could not be written: {}",
                describe(&e)
            )));
        }
        None => job.state.set(OutputState::Stopped),
    }
}

fn append(
    job: &RecordingJob,
    file: &mut crate::store::sealed_stream::SealedWriter,
    bytes: &[u8],
) -> std::io::Result<()> {
    file.append(bytes)?;
    job.counters.add_bytes(bytes.len() as u64);
    job.state.set(OutputState::Live);
    Ok(())
}

/// Tells the record how far the recording got (blocking).
fn progress(job: &RecordingJob, on_disk: Duration, ended_at: Option<i64>) {
    let bytes = job.counters.bytes.load(Ordering::Relaxed);
    let ms = on_disk.as_millis() as u64;
    if let Err(e) = job
        .store
        .blocking()
        .update_recording(&job.recording.id, bytes, ms, ended_at)
    {
        tracing::warn!(recording = %job.recording.id, error = %e, "cannot record the recording's progress");
    }
}

/// A write error in words an operator can act on.
fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(28) => "the disk is full".into(),
        Some(122) => "the disk quota is exceeded".into(),
        _ => e.to_string(),
    }
}
