//! Prometheus metrics, served at `/metrics`. Gauges of things that exist
//! (sessions, viewers) are held by guards that decrement in `Drop`, so they
//! stay right however a session or viewer ends. Metrics carry no personal
//! data: no ids, no names, no addresses.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Metrics {
    pub registry: Registry,
    /// Open sessions (held by [`Gauged`] guards).
    pub sessions_open: IntGauge,
    /// Live sessions by state, refreshed at scrape time.
    pub sessions_by_state: IntGaugeVec,
    pub viewers: IntGauge,
    pub admission_rejections: IntCounterVec,
    /// Measured CPU load of the sessions and speech workers, cores.
    pub cpu_load_cores: prometheus::Gauge,
    /// CPU cores sessions may use (`limits.cpu_budget`).
    pub cpu_budget_cores: prometheus::Gauge,
    /// Measured mean cost of one session (TTS share included), cores.
    pub session_cost_cores: prometheus::Gauge,
    pub video_encode_seconds: Histogram,
    /// Face animation + rendering time per video frame.
    pub render_seconds: Histogram,
    pub audio_encode_seconds: Histogram,
    /// Clause text → its first audio chunk buffered (phonemes, encoder,
    /// durations, flow, first decoder window).
    pub tts_first_chunk_seconds: Histogram,
    /// Synthesis time per second of audio (real-time factor) per clause.
    pub tts_seconds_per_audio_second: Histogram,
    /// Speak requests to the first audio of their first clause on the
    /// session clock (TTS + queueing), seconds.
    pub speech_start_seconds: Histogram,
    /// Silence played inside utterances because synthesis fell behind.
    pub speech_underrun_seconds: prometheus::Counter,
    pub frames_late: IntCounter,
    pub keyframes: IntCounter,
    pub viewer_lag_events: IntCounter,
    /// Outputs running now, by kind.
    pub outputs: IntGaugeVec,
    /// Per output (`kind`, `output` id; each output's series go when its
    /// session closes): media bytes sent or written,
    pub output_bytes: IntCounterVec,
    /// frames skipped because the destination fell behind (WHIP: packets),
    pub output_dropped_frames: IntCounterVec,
    /// times the destination was lost or unreachable and tried again,
    pub output_reconnects: IntCounterVec,
    /// and the bitrate of the last seconds, in bits per second.
    pub output_bitrate: IntGaugeVec,
    /// Calls refused by the rate limits, by kind of call.
    pub rate_limited: IntCounterVec,
    /// Uploads being decoded (`running`) and waiting for their turn
    /// (`waiting`).
    pub enroll_decodes: IntGaugeVec,
    /// Commands waiting in session queues, refreshed at scrape time.
    pub session_queue_depth: IntGauge,
    /// CPU time of this process at 10 ms resolution (the standard
    /// `process_cpu_seconds_total` counts whole seconds), refreshed at scrape.
    pub cpu_seconds: prometheus::Gauge,
    /// The batched model workers, by stage, refreshed at scrape: batches
    /// run, requests they carried, the largest batch, batches whose stage
    /// failed.
    pub batch_runs: IntGaugeVec,
    pub batch_items: IntGaugeVec,
    pub batch_largest: IntGaugeVec,
    pub batch_failed: IntGaugeVec,
}

/// A per-stage gauge of the batched model workers (`stage` label).
fn batch_gauge(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["stage"]).unwrap()
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique and valid");
    c
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let buckets = vec![
        0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
    ];
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .expect("process collector registers once");
    Metrics {
        sessions_open: register(
            &r,
            IntGauge::new("huashen_sessions_open", "Open sessions").unwrap(),
        ),
        sessions_by_state: register(
            &r,
            IntGaugeVec::new(
                Opts::new("huashen_sessions", "Live sessions by state"),
                &["state"],
            )
            .unwrap(),
        ),
        viewers: register(
            &r,
            IntGauge::new("huashen_viewers", "Connected WebRTC viewers").unwrap(),
        ),
        admission_rejections: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "huashen_admission_rejections_total",
                    "CreateSession calls refused by a limit (server, tenant, capacity)",
                ),
                &["limit"],
            )
            .unwrap(),
        ),
        cpu_load_cores: register(
            &r,
            prometheus::Gauge::new(
                "huashen_cpu_load_cores",
                "Measured CPU load of sessions and speech workers, in cores",
            )
            .unwrap(),
        ),
        cpu_budget_cores: register(
            &r,
            prometheus::Gauge::new(
                "huashen_cpu_budget_cores",
                "CPU cores sessions may use before new ones are refused",
            )
            .unwrap(),
        ),
        session_cost_cores: register(
            &r,
            prometheus::Gauge::new(
                "huashen_session_cost_cores",
                "Measured mean CPU cost of one session, in cores",
            )
            .unwrap(),
        ),
        render_seconds: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "huashen_render_seconds",
                    "Face animation and rendering time per video frame",
                )
                .buckets(buckets.clone()),
            )
            .expect("valid histogram"),
        ),
        video_encode_seconds: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "huashen_video_encode_seconds",
                    "H.264 encode time per frame",
                )
                .buckets(buckets.clone()),
            )
            .unwrap(),
        ),
        audio_encode_seconds: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "huashen_audio_encode_seconds",
                    "Opus encode time per 20 ms frame",
                )
                .buckets(buckets),
            )
            .unwrap(),
        ),
        tts_first_chunk_seconds: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "huashen_tts_first_chunk_seconds",
                    "Time from a clause to its first synthesised audio chunk",
                )
                .buckets(vec![
                    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
                ]),
            )
            .unwrap(),
        ),
        tts_seconds_per_audio_second: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "huashen_tts_real_time_factor",
                    "Synthesis seconds per second of speech, per clause",
                )
                .buckets(vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0]),
            )
            .unwrap(),
        ),
        speech_start_seconds: register(
            &r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "huashen_speech_start_seconds",
                    "Time from a clause's arrival to its first audio on air",
                )
                .buckets(vec![0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0]),
            )
            .unwrap(),
        ),
        speech_underrun_seconds: register(
            &r,
            prometheus::Counter::new(
                "huashen_speech_underrun_seconds_total",
                "Silence played inside utterances because synthesis fell behind",
            )
            .unwrap(),
        ),
        frames_late: register(
            &r,
            IntCounter::new(
                "huashen_frames_late_total",
                "Video frames skipped because a media thread fell behind real time",
            )
            .unwrap(),
        ),
        keyframes: register(
            &r,
            IntCounter::new("huashen_keyframes_total", "Keyframes encoded").unwrap(),
        ),
        viewer_lag_events: register(
            &r,
            IntCounter::new(
                "huashen_viewer_lag_events_total",
                "Times a viewer fell behind and resumed at a keyframe",
            )
            .unwrap(),
        ),
        outputs: register(
            &r,
            IntGaugeVec::new(
                Opts::new("huashen_outputs", "Outputs running now, by kind"),
                &["kind"],
            )
            .unwrap(),
        ),
        output_bytes: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "huashen_output_bytes_total",
                    "Media bytes an output sent or wrote",
                ),
                &["kind", "output"],
            )
            .unwrap(),
        ),
        output_reconnects: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "huashen_output_reconnects_total",
                    "Times an output tried its destination again",
                ),
                &["kind", "output"],
            )
            .unwrap(),
        ),
        output_dropped_frames: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "huashen_output_dropped_frames_total",
                    "Encoded frames (WHIP: RTP packets) an output skipped because it fell behind",
                ),
                &["kind", "output"],
            )
            .unwrap(),
        ),
        output_bitrate: register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "huashen_output_bitrate_bits",
                    "What an output sent or wrote in the last seconds, in bits per second",
                ),
                &["kind", "output"],
            )
            .unwrap(),
        ),
        enroll_decodes: register(
            &r,
            IntGaugeVec::new(
                Opts::new(
                    "huashen_enroll_decodes",
                    "Uploads being decoded (state=running) or waiting for their turn (state=waiting)",
                ),
                &["state"],
            )
            .unwrap(),
        ),
        rate_limited: register(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "huashen_rate_limited_total",
                    "Calls refused by the rate limits (RESOURCE_EXHAUSTED / 429), by kind",
                ),
                &["call"],
            )
            .unwrap(),
        ),
        session_queue_depth: register(
            &r,
            IntGauge::new(
                "huashen_session_queue_depth",
                "Commands waiting in session queues",
            )
            .unwrap(),
        ),
        cpu_seconds: register(
            &r,
            prometheus::Gauge::new(
                "huashen_process_cpu_seconds_total",
                "User and system CPU time of the server process, 10 ms resolution",
            )
            .unwrap(),
        ),
        batch_runs: register(&r, batch_gauge("huashen_batch_runs_total", "Batches run")),
        batch_items: register(
            &r,
            batch_gauge("huashen_batch_items_total", "Requests run in batches"),
        ),
        batch_largest: register(
            &r,
            batch_gauge("huashen_batch_largest", "Largest batch run"),
        ),
        batch_failed: register(
            &r,
            batch_gauge(
                "huashen_batch_failed_total",
                "Batches whose stage failed (the worker gave their requests no result)",
            ),
        ),
        registry: r,
    }
});

/// User + system CPU seconds of this process, from /proc (Linux; USER_HZ
/// is 100 there).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// CPU time the calling thread has used, in microseconds.
pub use huashen_inference::batch::thread_cpu_us;

/// Shared CPU counters: a session's media thread stores its cumulative
/// thread time; TTS workers add what each job used.
#[derive(Debug, Default)]
pub struct CpuCounter(AtomicU64);

impl CpuCounter {
    pub fn set(&self, us: u64) {
        self.0.store(us, Ordering::Relaxed);
    }
    pub fn add(&self, us: u64) {
        self.0.fetch_add(us, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Increments a gauge now and decrements it when dropped.
pub struct Gauged(IntGauge);

impl Gauged {
    pub fn new(g: &IntGauge) -> Self {
        g.inc();
        Self(g.clone())
    }

    /// The same, for the series `label` of `v`.
    pub fn new_in(v: &IntGaugeVec, label: &str) -> Self {
        Self::new(&v.with_label_values(&[label]))
    }
}

impl Drop for Gauged {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    if let Some(s) = process_cpu_seconds() {
        METRICS.cpu_seconds.set(s);
    }
    let mut out = vec![];
    let families = METRICS.registry.gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}
