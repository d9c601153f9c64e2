//! The voice lane of a session: the host's live voice (already decoded to
//! 48 kHz mono by `ingest::voice`) in a bounded jitter buffer the media
//! thread plays from on the session clock, and what happens to text speech
//! while the host talks (barge-in).
//!
//! Bounds: the buffer holds at most `max_buffered` samples; a pushing client
//! waits (backpressure through gRPC flow control) until the media thread
//! has played enough to make room. Jitter: playback starts once `prebuffer`
//! samples are waiting (or the stream ended), and after an underrun waits
//! for that much again, so a client's uneven timing becomes short silences
//! rather than crackle. One PushAudio stream feeds a session at a time.

use crate::config::BargeIn;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Frames (20 ms) without voice before the host counts as silent again:
/// short gaps between pushes do not flip the session's state.
const HANGOVER_FRAMES: u32 = 15;

#[derive(Default)]
struct Lane {
    pcm: VecDeque<i16>,
    /// Draining the buffer (prebuffer reached, no underrun since).
    playing: bool,
    /// The host counts as talking (until `HANGOVER_FRAMES` of nothing).
    active: bool,
    quiet_frames: u32,
    /// The feeding stream ended: play what is left without prebuffering.
    ended: bool,
}

/// A change in whether the host is talking, reported by [`VoiceInput::fill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceChange {
    Started,
    Stopped,
}

/// One session's live-voice buffer.
pub struct VoiceInput {
    lane: Mutex<Lane>,
    space: tokio::sync::Notify,
    fed: AtomicBool,
    max_buffered: usize,
    prebuffer: usize,
    pub barge_in: BargeIn,
}

impl VoiceInput {
    /// `max_buffered` and `prebuffer` in 48 kHz samples.
    pub fn new(max_buffered: usize, prebuffer: usize, barge_in: BargeIn) -> Self {
        Self {
            lane: Mutex::new(Lane::default()),
            space: tokio::sync::Notify::new(),
            fed: AtomicBool::new(false),
            max_buffered: max_buffered.max(prebuffer * 2).max(960),
            prebuffer,
            barge_in,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lane> {
        self.lane.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the host is talking now (with the hangover).
    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    /// Takes the session's one feed, or `None` while another stream has it.
    pub fn feed(self: &Arc<Self>) -> Option<VoiceFeed> {
        if self.fed.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.lock().ended = false;
        Some(VoiceFeed {
            input: self.clone(),
        })
    }

    /// Plays the next 20 ms into `out` (silence where there is no voice).
    /// Returns whether any voice was played, and a change of talking state.
    pub fn fill(&self, out: &mut [i16]) -> (bool, Option<VoiceChange>) {
        out.fill(0);
        let mut lane = self.lock();
        if !lane.playing && !lane.pcm.is_empty() && (lane.pcm.len() >= self.prebuffer || lane.ended)
        {
            lane.playing = true;
        }
        let mut played = false;
        if lane.playing {
            let n = lane.pcm.len().min(out.len());
            for (o, v) in out.iter_mut().zip(lane.pcm.drain(..n)) {
                *o = v;
            }
            played = n > 0;
            if lane.pcm.is_empty() {
                // Underrun (or the end): wait for the prebuffer again.
                lane.playing = false;
            }
        }
        let change = if played {
            lane.quiet_frames = 0;
            (!std::mem::replace(&mut lane.active, true)).then_some(VoiceChange::Started)
        } else if lane.active {
            lane.quiet_frames += 1;
            (lane.quiet_frames >= HANGOVER_FRAMES).then(|| {
                lane.active = false;
                VoiceChange::Stopped
            })
        } else {
            None
        };
        drop(lane);
        if played {
            self.space.notify_waiters();
        }
        (played, change)
    }

    /// Drops buffered voice (the session is closing).
    pub fn clear(&self) {
        self.lock().pcm.clear();
        self.space.notify_waiters();
    }
}

/// The right to feed a session's voice; dropping it ends the stream (what
/// is buffered still plays).
pub struct VoiceFeed {
    input: Arc<VoiceInput>,
}

impl VoiceFeed {
    /// Appends 48 kHz mono samples, waiting while the buffer is full.
    /// Returns false when `closed` fires first.
    pub async fn push(
        &self,
        mut pcm: &[i16],
        closed: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let input = &self.input;
        while !pcm.is_empty() {
            // Register for a wake-up before looking, so none is missed.
            let notified = input.space.notified();
            let room = {
                let mut lane = input.lock();
                let room = input.max_buffered.saturating_sub(lane.pcm.len());
                let n = room.min(pcm.len());
                lane.pcm.extend(&pcm[..n]);
                pcm = &pcm[n..];
                n
            };
            if room == 0 || !pcm.is_empty() {
                tokio::select! {
                    _ = notified => {}
                    _ = closed.cancelled() => return false,
                    // The media thread stops draining when the session
                    // stops; never wait on it forever.
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                }
            }
        }
        true
    }
}

impl Drop for VoiceFeed {
    fn drop(&mut self) {
        self.input.lock().ended = true;
        self.input.fed.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jitter_buffer_prebuffers_plays_and_reports_talking() {
        let input = Arc::new(VoiceInput::new(48_000, 2880, BargeIn::Interrupt));
        let feed = input.feed().unwrap();
        assert!(input.feed().is_none(), "one feed at a time");
        let closed = tokio_util::sync::CancellationToken::new();
        let mut out = [0i16; 960];
        // 40 ms is below the 60 ms prebuffer: nothing plays yet.
        assert!(feed.push(&[100; 1920], &closed).await);
        assert_eq!(input.fill(&mut out), (false, None));
        assert!(feed.push(&[100; 1920], &closed).await);
        assert_eq!(input.fill(&mut out), (true, Some(VoiceChange::Started)));
        assert!(out.iter().all(|&v| v == 100));
        assert_eq!(input.fill(&mut out), (true, None));
        assert_eq!(input.fill(&mut out), (true, None));
        assert_eq!(input.fill(&mut out), (true, None));
        assert!(!input.fill(&mut out).0 && input.is_active());
        for _ in 1..HANGOVER_FRAMES - 1 {
            assert_eq!(input.fill(&mut out), (false, None));
        }
        assert_eq!(input.fill(&mut out), (false, Some(VoiceChange::Stopped)));
        assert!(!input.is_active());
        // After the stream ends, a short tail plays without prebuffering.
        assert!(feed.push(&[5; 480], &closed).await);
        drop(feed);
        assert_eq!(input.fill(&mut out), (true, Some(VoiceChange::Started)));
        assert!(input.feed().is_some(), "the feed is free again");
    }

    #[tokio::test]
    async fn a_full_buffer_makes_the_pusher_wait() {
        let input = Arc::new(VoiceInput::new(960 * 4, 960, BargeIn::Mix));
        let feed = input.feed().unwrap();
        let closed = tokio_util::sync::CancellationToken::new();
        let pushing = {
            let closed = closed.clone();
            tokio::spawn(async move { feed.push(&[1; 960 * 8], &closed).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pushing.is_finished(), "waits for room");
        let mut out = [0i16; 960];
        for _ in 0..8 {
            input.fill(&mut out);
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(pushing.await.unwrap());
        // A closing session releases a waiting pusher.
        let feed = input.feed().unwrap();
        closed.cancel();
        assert!(!feed.push(&[1; 960 * 8], &closed).await);
    }
}
