//! The session media clock. Audio samples at 48 kHz are the master: audio
//! frame k covers samples [k·960, (k+1)·960); video frame n is due at audio
//! sample n·48000/fps. RTP timestamps of both tracks are computed from these
//! counters with integer arithmetic, so they cannot drift apart however long
//! a session runs.

/// Opus/WebRTC audio clock rate.
pub const AUDIO_RATE: u32 = 48_000;
/// Samples in one 20 ms audio frame.
pub const AUDIO_FRAME: u32 = 960;
/// RTP clock rate of video.
pub const VIDEO_RATE: u32 = 90_000;

#[derive(Debug, Clone, Copy)]
pub struct MediaClock {
    fps: u32,
    audio_base: u32,
    video_base: u32,
}

impl MediaClock {
    /// A clock for `fps` frames per second with random RTP timestamp bases
    /// (RFC 3550 §5.1).
    pub fn new(fps: u32) -> Self {
        Self::with_bases(fps, rand::random(), rand::random())
    }

    pub fn with_bases(fps: u32, audio_base: u32, video_base: u32) -> Self {
        assert!(fps > 0, "fps is validated at session creation");
        Self {
            fps,
            audio_base,
            video_base,
        }
    }

    pub fn fps(&self) -> u32 {
        self.fps
    }

    /// Audio sample at which video frame `n` is due.
    pub fn frame_due_sample(&self, n: u64) -> u64 {
        n * u64::from(AUDIO_RATE) / u64::from(self.fps)
    }

    /// RTP timestamp of the audio frame starting at `sample`.
    pub fn audio_rtp(&self, sample: u64) -> u32 {
        self.audio_base.wrapping_add(sample as u32)
    }

    /// RTP timestamp of video frame `n`.
    pub fn video_rtp(&self, n: u64) -> u32 {
        let ticks = n * u64::from(VIDEO_RATE) / u64::from(self.fps);
        self.video_base.wrapping_add(ticks as u32)
    }

    /// Session time of audio sample `sample`, in milliseconds.
    pub fn sample_ms(sample: u64) -> u64 {
        sample * 1000 / u64::from(AUDIO_RATE)
    }

    pub fn bases(&self) -> (u32, u32) {
        (self.audio_base, self.video_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_stay_in_lockstep_for_a_day() {
        for fps in [25u32, 30, 24, 7, 60] {
            let c = MediaClock::with_bases(fps, u32::MAX - 10, u32::MAX - 3);
            let f = u64::from(fps);
            for n in [0, 1, 12_345, f * 86_400, f * 86_400 + 1] {
                let sample = c.frame_due_sample(n);
                let video_s = (n * 90_000 / f) as f64 / 90_000.0;
                let audio_s = sample as f64 / 48_000.0;
                assert!(
                    (video_s - audio_s).abs() < 2.0 / 48_000.0,
                    "fps {fps} frame {n}"
                );
                // RTP timestamps advance by one frame's ticks, across wrap-around.
                let step = c.video_rtp(n + 1).wrapping_sub(c.video_rtp(n));
                assert!(step == 90_000 / fps || step == 90_000 / fps + 1, "{step}");
                let a = c.audio_rtp(sample + 960).wrapping_sub(c.audio_rtp(sample));
                assert_eq!(a, 960);
            }
        }
    }

    #[test]
    fn frame_schedule_at_25_fps() {
        let c = MediaClock::with_bases(25, 0, 0);
        assert_eq!(c.frame_due_sample(1), 1920);
        assert_eq!(c.video_rtp(1), 3600);
        assert_eq!(c.audio_rtp(960), 960);
        assert_eq!(MediaClock::sample_ms(48_000), 1000);
    }
}
