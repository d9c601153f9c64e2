//! What a run reports: timing statistics, viewers, the server's usage.

use super::viewer;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    pub fn from(mut xs: Vec<Duration>) -> Self {
        if xs.is_empty() {
            return Self::default();
        }
        xs.sort();
        let q = |p: f64| {
            let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
            xs[i].as_secs_f64() * 1e3
        };
        Self {
            count: xs.len(),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: q(1.0),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub sessions: usize,
    pub duration_s: f64,
    pub enroll: Stats,
    pub create_session: Stats,
    pub first_watch_event: Stats,
    pub interrupt: Stats,
    /// Speak call → the utterance's first audio on the session clock
    /// (`SpeechStarted` event).
    pub speech_started: Stats,
    /// Speak call → the first speech audio heard by a viewer (decoded Opus
    /// louder than silence; needs `decode`).
    pub speech_heard: Stats,
    /// Speak call → the first decoded video frame whose mouth region shows
    /// the mouth opening (needs `decode`).
    pub speech_seen: Stats,
    /// Utterances (Speak calls) that finished playing (streamed mode).
    pub utterances_finished: usize,
    /// Interrupt call while speaking → the session reports idle.
    pub interrupt_to_idle: Stats,
    pub close_session: Stats,
    pub viewers: ViewerReport,
    pub server: Option<ServerUsage>,
    pub errors: Vec<String>,
}

/// What the viewers saw, over all sessions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ViewerReport {
    pub connected: usize,
    /// From the WHEP offer to the first complete video frame.
    pub time_to_first_frame: Stats,
    /// From the WHEP offer to the first audio packet.
    pub time_to_first_audio: Stats,
    /// Frames per second each viewer received over the measured window.
    pub fps_min: f64,
    pub fps_mean: f64,
    /// Standard deviation of frame arrival gaps, ms (worst viewer).
    pub frame_jitter_ms_max: f64,
    /// Audio minus video presentation offset from sender reports, ms.
    pub av_offset_ms_median: f64,
    pub av_offset_ms_max_abs: f64,
    /// Packet loss, percent (worst viewer, worst track).
    pub loss_percent_max: f64,
}

/// The server process while the load ran (from its `/metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUsage {
    /// CPU time over wall time in the measured window; 100 = one core.
    pub cpu_percent: f64,
    pub rss_mb_before: f64,
    pub rss_mb_after: f64,
    /// Video frames the server skipped because it fell behind real time.
    pub frames_late: f64,
    /// The batched model workers in the window, by stage (those that ran).
    pub batches: std::collections::BTreeMap<String, BatchUsage>,
}

/// One batched model stage while the load ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchUsage {
    /// Batches run.
    pub runs: f64,
    /// Requests they carried.
    pub items: f64,
    /// Requests per batch.
    pub mean: f64,
}

impl Report {
    /// A table for people.
    pub fn table(&self) -> String {
        let mut s = format!(
            "huashen-loadtest: {} sessions for {:.1} s\n{:<20} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            self.sessions,
            self.duration_s,
            "operation",
            "count",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        );
        for (name, st) in [
            ("EnrollAvatar", &self.enroll),
            ("CreateSession", &self.create_session),
            ("first watch event", &self.first_watch_event),
            ("Interrupt", &self.interrupt),
            ("Speak→on air", &self.speech_started),
            ("Speak→heard", &self.speech_heard),
            ("Speak→mouth moves", &self.speech_seen),
            ("Interrupt→idle", &self.interrupt_to_idle),
            ("CloseSession", &self.close_session),
        ] {
            s.push_str(&format!(
                "{:<20} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                name, st.count, st.p50_ms, st.p90_ms, st.p99_ms, st.max_ms
            ));
        }
        let v = &self.viewers;
        if v.connected > 0 {
            s.push_str(&format!(
                "{:<20} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n{:<20} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                "first video frame", v.time_to_first_frame.count, v.time_to_first_frame.p50_ms,
                v.time_to_first_frame.p90_ms, v.time_to_first_frame.p99_ms, v.time_to_first_frame.max_ms,
                "first audio packet", v.time_to_first_audio.count, v.time_to_first_audio.p50_ms,
                v.time_to_first_audio.p90_ms, v.time_to_first_audio.p99_ms, v.time_to_first_audio.max_ms,
            ));
            s.push_str(&format!(
                "viewers: {} connected; fps mean {:.1}, min {:.1}; frame jitter max {:.1} ms; \
                 A/V offset median {:.1} ms, max |{:.1}| ms; loss max {:.2} %\n",
                v.connected,
                v.fps_mean,
                v.fps_min,
                v.frame_jitter_ms_max,
                v.av_offset_ms_median,
                v.av_offset_ms_max_abs,
                v.loss_percent_max
            ));
        }
        if let Some(u) = &self.server {
            s.push_str(&format!(
                "server: CPU {:.1} % of one core; RSS {:.1} MB before, {:.1} MB after; {} frames late\n",
                u.cpu_percent, u.rss_mb_before, u.rss_mb_after, u.frames_late
            ));
            if !u.batches.is_empty() {
                let parts: Vec<String> = u
                    .batches
                    .iter()
                    .map(|(stage, b)| {
                        format!("{stage} {} in {} (mean {:.2})", b.items, b.runs, b.mean)
                    })
                    .collect();
                s.push_str(&format!(
                    "batches (requests in batches): {}\n",
                    parts.join("; ")
                ));
            }
        }
        s.push_str(&format!("errors: {}\n", self.errors.len()));
        for e in self.errors.iter().take(10) {
            s.push_str(&format!("  {e}\n"));
        }
        s
    }
}

pub(crate) fn viewer_report(seen: &[viewer::Seen]) -> ViewerReport {
    let connected: Vec<&viewer::Seen> = seen.iter().filter(|s| s.connected).collect();
    if connected.is_empty() {
        return ViewerReport::default();
    }
    let secs = |a: f64, b: f64| Duration::from_secs_f64((b - a).max(0.0));
    let ttff = connected
        .iter()
        .filter_map(|s| s.first_frame_at.map(|t| secs(s.started_at, t)))
        .collect();
    let ttfa = connected
        .iter()
        .filter_map(|s| s.first_audio_at.map(|t| secs(s.started_at, t)))
        .collect();
    let fps: Vec<f64> = connected
        .iter()
        .map(|s| match (s.video_ts.first(), s.video_ts.last()) {
            (Some(a), Some(b)) if b.1 > a.1 => (s.video_ts.len() - 1) as f64 / (b.1 - a.1),
            _ => 0.0,
        })
        .collect();
    let mut offsets: Vec<f64> = connected.iter().filter_map(|s| s.av_offset()).collect();
    offsets.sort_by(|a, b| a.total_cmp(b));
    ViewerReport {
        connected: connected.len(),
        time_to_first_frame: Stats::from(ttff),
        time_to_first_audio: Stats::from(ttfa),
        fps_min: fps.iter().copied().fold(f64::INFINITY, f64::min),
        fps_mean: fps.iter().sum::<f64>() / fps.len() as f64,
        frame_jitter_ms_max: connected
            .iter()
            .map(|s| s.frame_interval_jitter() * 1e3)
            .fold(0.0, f64::max),
        av_offset_ms_median: offsets.get(offsets.len() / 2).map_or(0.0, |o| o * 1e3),
        av_offset_ms_max_abs: offsets.iter().map(|o| o.abs() * 1e3).fold(0.0, f64::max),
        loss_percent_max: connected
            .iter()
            .map(|s| s.video_seq.loss().max(s.audio_seq.loss()) * 100.0)
            .fold(0.0, f64::max),
    }
}
