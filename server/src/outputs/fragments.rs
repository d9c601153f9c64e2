//! A session's encoded frames as fragmented MP4, as they come: nothing
//! until the first keyframe (its parameter sets make the init segment),
//! then a fragment at every keyframe and at least every second, so what
//! has been written is always a playable file.

use super::fmp4::{self, AUDIO_TIMESCALE, Run, Sample, Tracks, VIDEO_TIMESCALE};
use crate::pipeline::{EncodedFrame, FrameKind};
use std::time::Duration;

/// Samples of the session clock per second.
const CLOCK_RATE: u64 = 48_000;
/// Samples of one Opus frame (20 ms at 48 kHz).
const OPUS_FRAME: u32 = 960;
/// Longest fragment: what a crash may lose.
const MAX_FRAGMENT: Duration = Duration::from_secs(1);

/// Turns encoded frames into fMP4 bytes.
pub struct FragmentWriter {
    width: u32,
    height: u32,
    /// Nominal duration of a video frame, in the video timescale.
    frame_ticks: u32,
    /// Opus look-ahead, for the init segment.
    pre_skip: u16,
    /// Session-clock sample the file starts at (the first keyframe).
    t0: Option<u64>,
    /// The last video frame, waiting for the next one to know its length.
    pending: Option<(u64, Sample)>,
    video: Run,
    audio: Run,
    sequence: u32,
    /// Media time written so far, in session-clock samples.
    written: u64,
}

impl FragmentWriter {
    pub fn new(width: u32, height: u32, fps: u32, pre_skip: u16) -> Self {
        Self {
            width,
            height,
            frame_ticks: VIDEO_TIMESCALE / fps.max(1),
            pre_skip,
            t0: None,
            pending: None,
            video: Run::default(),
            audio: Run::default(),
            sequence: 0,
            written: 0,
        }
    }

    /// Media time in the file so far.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.written * 1_000_000 / CLOCK_RATE)
    }

    /// Takes one frame; returns the bytes to append to the file, if any.
    pub fn push(&mut self, frame: &EncodedFrame) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let t0 = match self.t0 {
            Some(t0) => t0,
            None => {
                if frame.kind != FrameKind::Video || !frame.keyframe {
                    return None;
                }
                let (sps, pps) = fmp4::parameter_sets(&frame.data)?;
                out = fmp4::init_segment(&Tracks {
                    width: self.width,
                    height: self.height,
                    sps,
                    pps,
                    channels: 1,
                    pre_skip: self.pre_skip,
                });
                self.t0 = Some(frame.sample);
                frame.sample
            }
        };
        if frame.sample < t0 {
            return None;
        }
        let at = frame.sample - t0;
        match frame.kind {
            // Recordings keep the Opus track.
            FrameKind::Aac => {}
            FrameKind::Opus => {
                if self.audio.samples.is_empty() {
                    self.audio.start = at;
                }
                self.audio.samples.push(Sample {
                    data: frame.data.to_vec(),
                    duration: OPUS_FRAME,
                    keyframe: true,
                });
            }
            FrameKind::Video => {
                let ticks = at * u64::from(VIDEO_TIMESCALE) / CLOCK_RATE;
                if let Some((start, mut last)) = self.pending.take() {
                    last.duration = (ticks - start) as u32;
                    if self.video.samples.is_empty() {
                        self.video.start = start;
                    }
                    self.video.samples.push(last);
                }
                let long = self.video.samples.len() as u64 * u64::from(self.frame_ticks)
                    >= MAX_FRAGMENT.as_secs() * u64::from(VIDEO_TIMESCALE);
                if frame.keyframe || long {
                    out.extend(self.flush(at));
                }
                self.pending = Some((
                    ticks,
                    Sample {
                        data: fmp4::avcc_sample(&frame.data),
                        duration: self.frame_ticks,
                        keyframe: frame.keyframe,
                    },
                ));
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// What is left, as a last fragment (the last frame at its nominal
    /// length).
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let (start, last) = self.pending.take()?;
        if self.video.samples.is_empty() {
            self.video.start = start;
        }
        let end = (start + u64::from(last.duration)) * CLOCK_RATE / u64::from(VIDEO_TIMESCALE);
        self.video.samples.push(last);
        let bytes = self.flush(end);
        (!bytes.is_empty()).then_some(bytes)
    }

    /// A fragment of the finished video samples and the audio so far;
    /// `until` (session-clock samples since `t0`) is where it ends.
    fn flush(&mut self, until: u64) -> Vec<u8> {
        if self.video.samples.is_empty() && self.audio.samples.is_empty() {
            return Vec::new();
        }
        self.sequence += 1;
        let bytes = fmp4::fragment(self.sequence, &self.video, &self.audio);
        let audio_end = self.audio.start + self.audio.samples.len() as u64 * u64::from(OPUS_FRAME);
        self.written = self
            .written
            .max(until)
            .max(if self.audio.samples.is_empty() {
                0
            } else {
                audio_end * CLOCK_RATE / u64::from(AUDIO_TIMESCALE)
            });
        self.video.samples.clear();
        self.audio.samples.clear();
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_media::ffprobe;
    use super::*;

    /// A real pipeline's frames for `seconds`, written as fMP4 (and the
    /// file cut after its last complete fragment when `cut`).
    async fn record(seconds: f64) -> (Vec<u8>, Duration) {
        let p = super::super::test_media::pipeline(320, 240);
        p.set_keyframe_interval(Some(Duration::from_secs(2)));
        let mut rx = p.subscribe_frames();
        let mut w = FragmentWriter::new(320, 240, 25, 120);
        let mut file = Vec::new();
        let t = std::time::Instant::now();
        while t.elapsed().as_secs_f64() < seconds {
            let f = rx.recv().await.unwrap();
            if let Some(bytes) = w.push(&f) {
                file.extend(bytes);
            }
        }
        file.extend(w.finish().unwrap_or_default());
        p.stop();
        (file, w.duration())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recording_is_valid_fragmented_mp4_with_both_tracks() {
        let (file, duration) = record(5.0).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rec.mp4");
        std::fs::write(&path, &file).unwrap();
        let probe = ffprobe(&path);
        let streams = probe["streams"].as_array().unwrap();
        let codec = |kind: &str| {
            streams
                .iter()
                .find(|s| s["codec_type"] == kind)
                .unwrap_or_else(|| panic!("no {kind} stream: {probe}"))
        };
        assert_eq!(codec("video")["codec_name"], "h264");
        assert_eq!(codec("video")["width"], 320);
        assert_eq!(codec("video")["avg_frame_rate"], "25/1");
        assert_eq!(codec("audio")["codec_name"], "opus");
        // The file's length is the media time written, within one frame.
        let probed: f64 = probe["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (probed - duration.as_secs_f64()).abs() <= 0.04,
            "ffprobe {probed} s, written {duration:?}"
        );
        assert!(probed > 4.0, "{probed}");
        // Audio and video start together and last as long, within a frame.
        let secs =
            |s: &serde_json::Value, k: &str| -> f64 { s[k].as_str().unwrap().parse().unwrap() };
        let (v, a) = (codec("video"), codec("audio"));
        assert!(
            (secs(v, "start_time") - secs(a, "start_time")).abs() <= 0.04,
            "{probe}"
        );
        assert!(
            (secs(v, "duration") - secs(a, "duration")).abs() <= 0.04,
            "{probe}"
        );
        // Keyframes at least every 2 s.
        let keys: Vec<f64> = probe["packets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["codec_type"] == "video" && p["flags"].as_str().unwrap().starts_with('K'))
            .map(|p| p["pts_time"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(keys.first() == Some(&0.0) && keys.len() >= 3, "{keys:?}");
        assert!(
            keys.windows(2).all(|k| k[1] - k[0] <= 2.0 + 1e-6),
            "{keys:?}"
        );
        // The AI label travels in the recorded access units.
        assert!(
            file.windows(16)
                .any(|w| w == huashen_protos::sei::AI_LABEL_UUID),
            "no SEI label"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recording_cut_after_any_fragment_still_plays() {
        let (file, _) = record(2.5).await;
        // Cut at each `moof` boundary: every prefix is a valid file.
        let cuts: Vec<usize> = file
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == b"moof")
            .map(|(i, _)| i - 4)
            .skip(1)
            .collect();
        assert!(cuts.len() >= 2, "{} fragments", cuts.len() + 1);
        let dir = tempfile::tempdir().unwrap();
        for cut in cuts {
            let path = dir.path().join(format!("cut{cut}.mp4"));
            std::fs::write(&path, &file[..cut]).unwrap();
            let probe = ffprobe(&path);
            assert_eq!(
                probe["streams"].as_array().unwrap().len(),
                2,
                "cut at {cut}"
            );
        }
    }
}
