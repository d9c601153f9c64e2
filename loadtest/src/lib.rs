//! Load generator for a running Huashen server (loopback only).
//!
//! It measures what a user sees, on the wire: enrollment, session creation,
//! the first event on a watch stream, Interrupt round trips while N sessions
//! are open, closing; and for M WebRTC viewers per session (WHEP), time to
//! first frame, received fps and frame-interval jitter, A/V offset from RTP
//! timestamps and RTCP sender reports, packet loss; and the server's CPU and
//! memory while it serves them, from its `/metrics`.

pub mod http;
pub mod viewer;

use anyhow::{Context, bail};
use huashen_protos::v1;
use huashen_protos::v1::avatar_service_client::AvatarServiceClient;
use huashen_protos::v1::output_service_client::OutputServiceClient;
use huashen_protos::v1::session_service_client::SessionServiceClient;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::service::Interceptor;
use tonic::transport::Channel;

#[derive(Debug, Clone)]
pub struct Options {
    /// Server URL, e.g. `http://127.0.0.1:8700`. Must be a loopback address.
    pub addr: String,
    pub api_key: String,
    /// Sessions open at the same time.
    pub sessions: usize,
    /// How long to keep them open and driven.
    pub duration: Duration,
    /// Interrupt calls (or, with `speak`, utterances) per second per
    /// session while open.
    pub rate: f64,
    /// Text each session speaks at `rate` (then interrupts after a second);
    /// `None`: only Interrupt calls.
    pub speak: Option<String>,
    /// Portrait to enroll (PNG or JPEG).
    pub image: Vec<u8>,
    /// WebRTC viewers per session.
    pub viewers: usize,
    /// Decode what viewers receive (H.264 + Opus) instead of only counting.
    pub decode: bool,
    /// Stream `speak` word by word at this many words per second (as an LLM
    /// would), one Speak call per pass over the text, back to back, never
    /// interrupted; `None`: whole-text utterances at `rate`.
    pub words_per_second: Option<f64>,
    /// Record every session (a recording output from its start).
    pub record: bool,
    /// Push every session to this WHIP endpoint (with `whip_token`).
    pub whip: Option<String>,
    pub whip_token: String,
    /// Push every session to this RTMP server URL (with `rtmp_key` and the
    /// session's number appended, so each has a stream of its own).
    pub rtmp: Option<String>,
    pub rtmp_key: String,
}

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

#[derive(Clone)]
struct Key(String);

impl Interceptor for Key {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let v = format!("Bearer {}", self.0)
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("API key is not valid ASCII"))?;
        req.metadata_mut().insert("authorization", v);
        Ok(req)
    }
}

type Svc = tonic::service::interceptor::InterceptedService<Channel, Key>;

/// Refuses anything but loopback targets: load goes nowhere else.
fn check_loopback(addr: &str) -> anyhow::Result<()> {
    let uri: http_uri::Uri = addr.parse().context("--addr is not a URL")?;
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let ok = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false);
    if !ok {
        bail!("--addr must be a loopback address (127.0.0.0/8, ::1 or localhost), got {host:?}");
    }
    Ok(())
}

mod http_uri {
    pub use tonic::codegen::http::Uri;
}

/// Runs the scenario and returns the report. Always closes what it opened.
pub async fn run(opts: Options) -> anyhow::Result<Report> {
    check_loopback(&opts.addr)?;
    let channel = Channel::from_shared(opts.addr.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", opts.addr))?;
    let key = Key(opts.api_key.clone());
    let mut avatars: AvatarServiceClient<Svc> =
        AvatarServiceClient::with_interceptor(channel.clone(), key.clone());
    let sessions: SessionServiceClient<Svc> =
        SessionServiceClient::with_interceptor(channel.clone(), key.clone());
    let outputs: OutputServiceClient<Svc> = OutputServiceClient::with_interceptor(channel, key);
    let mut report = Report {
        sessions: opts.sessions,
        duration_s: opts.duration.as_secs_f64(),
        ..Default::default()
    };

    let format = if opts.image.starts_with(&[0xFF, 0xD8, 0xFF]) {
        v1::ImageFormat::Jpeg
    } else {
        v1::ImageFormat::Png
    };
    let mut msgs = vec![v1::EnrollAvatarRequest {
        payload: Some(v1::enroll_avatar_request::Payload::Start(v1::EnrollStart {
            display_name: "loadtest".into(),
            consent: Some(v1::ConsentRecord {
                uploader: "huashen-loadtest".into(),
                subject_name: "test photo subject".into(),
                subject_consented: true,
                purpose: "load testing".into(),
                policy_version: "loadtest".into(),
                ..Default::default()
            }),
            image_format: format as i32,
            total_bytes: opts.image.len() as u64,
            ..Default::default()
        })),
    }];
    msgs.extend(
        opts.image
            .chunks(256 * 1024)
            .map(|c| v1::EnrollAvatarRequest {
                payload: Some(v1::enroll_avatar_request::Payload::Chunk(c.to_vec())),
            }),
    );
    let t = Instant::now();
    let mut stream = avatars
        .enroll_avatar(tokio_stream::iter(msgs))
        .await
        .context("EnrollAvatar")?
        .into_inner();
    let mut avatar_id = None;
    while let Some(ev) = stream.message().await.context("EnrollAvatar")? {
        if let Some(v1::enroll_avatar_response::Event::Avatar(a)) = ev.event {
            avatar_id = Some(a.avatar_id);
        }
    }
    let avatar_id = avatar_id.context("EnrollAvatar ended without an avatar")?;
    report.enroll = Stats::from(vec![t.elapsed()]);

    let whep_addr = socket_addr(&opts.addr)?;
    let barrier = Arc::new(tokio::sync::Barrier::new(opts.sessions + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..opts.sessions {
        let client = sessions.clone();
        let plan = SessionPlan {
            avatar_id: avatar_id.clone(),
            duration: opts.duration,
            period: Duration::from_secs_f64(1.0 / opts.rate.max(0.01)),
            speak: opts.speak.clone(),
            words_per_second: opts.words_per_second,
            viewers: opts.viewers,
            viewer_options: viewer::ViewerOptions {
                decode: opts.decode,
                ..Default::default()
            },
            whep_addr,
            barrier: barrier.clone(),
            record: opts.record.then(|| outputs.clone()),
            whip: opts
                .whip
                .clone()
                .map(|url| (outputs.clone(), url, opts.whip_token.clone())),
            rtmp: opts
                .rtmp
                .clone()
                .map(|url| (outputs.clone(), url, format!("{}{n}", opts.rtmp_key))),
        };
        tasks.spawn(drive_session(client, plan));
    }
    // Every session is up with its viewers connected: measure from here.
    barrier.wait().await;
    let before = metrics_sample(whep_addr).await;
    let (mut create, mut first, mut interrupt, mut close) = (vec![], vec![], vec![], vec![]);
    let (mut started, mut heard, mut to_idle, mut seen_frames) = (vec![], vec![], vec![], vec![]);
    let mut seen = vec![];
    let mut after = None;
    while let Some(r) = tasks.join_next().await {
        // The first session that ran to its end closes the measured window
        // (one the server refused ends at once and would leave a window of
        // milliseconds, read against a CPU counter of 10 ms ticks).
        if after.is_none() && r.as_ref().is_ok_and(|one| one.create.is_some()) {
            after = Some(metrics_sample(whep_addr).await);
        }
        match r {
            Ok(one) => {
                create.extend(one.create);
                first.extend(one.first_event);
                interrupt.extend(one.interrupts);
                started.extend(one.speech_started);
                heard.extend(one.speech_heard);
                seen_frames.extend(one.speech_seen);
                report.utterances_finished += one.finished;
                to_idle.extend(one.interrupt_to_idle);
                close.extend(one.close);
                seen.extend(one.seen);
                report.errors.extend(one.errors);
            }
            Err(e) => report.errors.push(format!("session task failed: {e}")),
        }
    }
    report.create_session = Stats::from(create);
    report.first_watch_event = Stats::from(first);
    report.interrupt = Stats::from(interrupt);
    report.speech_started = Stats::from(started);
    report.speech_heard = Stats::from(heard);
    report.speech_seen = Stats::from(seen_frames);
    report.interrupt_to_idle = Stats::from(to_idle);
    report.close_session = Stats::from(close);
    report.viewers = viewer_report(&seen);
    match (&before, &after) {
        (Ok(b), Some(Ok(a))) if a.at - b.at < 1.0 => report.errors.push(format!(
            "server metrics: the measured window was only {:.0} ms (no CPU figure)",
            (a.at - b.at) * 1000.0
        )),
        (Ok(b), Some(Ok(a))) => {
            report.server = Some(ServerUsage {
                cpu_percent: (a.cpu_s - b.cpu_s) / (a.at - b.at).max(1e-3) * 100.0,
                rss_mb_before: b.rss_mb,
                rss_mb_after: a.rss_mb,
                frames_late: a.frames_late - b.frames_late,
                batches: a
                    .batches
                    .iter()
                    .filter_map(|(stage, &(runs, items))| {
                        let (r0, i0) = b.batches.get(stage).copied().unwrap_or_default();
                        let (runs, items) = (runs - r0, items - i0);
                        (runs > 0.0).then(|| {
                            let mean = items / runs;
                            (stage.clone(), BatchUsage { runs, items, mean })
                        })
                    })
                    .collect(),
            })
        }
        (Err(e), _) | (_, Some(Err(e))) => report.errors.push(format!("server metrics: {e}")),
        _ => {}
    }
    if let Err(e) = avatars
        .delete_avatar(v1::DeleteAvatarRequest { avatar_id })
        .await
    {
        report.errors.push(format!("DeleteAvatar: {}", e.message()));
    }
    Ok(report)
}

/// The host and port of a loopback URL, as a socket address.
fn socket_addr(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let uri: http_uri::Uri = url.parse().context("--addr is not a URL")?;
    let host = match uri.host().unwrap_or_default().trim_matches(['[', ']']) {
        "localhost" => "127.0.0.1",
        h => h,
    };
    let port = uri.port_u16().unwrap_or(80);
    Ok(std::net::SocketAddr::new(host.parse()?, port))
}

#[derive(Clone)]
struct ProcSample {
    at: f64,
    cpu_s: f64,
    rss_mb: f64,
    frames_late: f64,
    /// (batches run, requests in them) by stage.
    batches: std::collections::BTreeMap<String, (f64, f64)>,
}

/// The server's CPU seconds and resident memory, from its `/metrics`.
async fn metrics_sample(addr: std::net::SocketAddr) -> anyhow::Result<ProcSample> {
    let r = http::request(addr, "GET", "/metrics", &[], b"", Duration::from_secs(5)).await?;
    anyhow::ensure!(r.status == 200, "/metrics answered {}", r.status);
    let scrape = parse_metrics(&r.text())?;
    let value = |name: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.is_empty())
            .and_then(|s| number(&s.value))
            .with_context(|| format!("{name} missing from /metrics"))
    };
    Ok(ProcSample {
        batches: batch_counters(&scrape),
        at: viewer::unix_now(),
        cpu_s: value("huashen_process_cpu_seconds_total")?,
        rss_mb: value("process_resident_memory_bytes")? / 1048576.0,
        frames_late: value("huashen_frames_late_total")?,
    })
}

/// Prometheus text exposition, parsed (by `prometheus-parse`).
fn parse_metrics(text: &str) -> anyhow::Result<prometheus_parse::Scrape> {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .context("/metrics is not Prometheus text")
}

/// A counter's, gauge's or untyped sample's number.
fn number(v: &prometheus_parse::Value) -> Option<f64> {
    use prometheus_parse::Value::*;
    match v {
        Counter(x) | Gauge(x) | Untyped(x) => Some(*x),
        Histogram(_) | Summary(_) => None,
    }
}

/// (batches run, requests in them) by stage, from the series
/// `huashen_batch_runs_total{stage="en_vocoder"}` and `…_items_total`.
fn batch_counters(
    scrape: &prometheus_parse::Scrape,
) -> std::collections::BTreeMap<String, (f64, f64)> {
    let mut batches = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for s in &scrape.samples {
        let which = match s.metric.as_str() {
            "huashen_batch_runs_total" => 0,
            "huashen_batch_items_total" => 1,
            _ => continue,
        };
        let (Some(stage), Some(v)) = (s.labels.get("stage"), number(&s.value)) else {
            continue;
        };
        let e = batches.entry(stage.to_owned()).or_default();
        if which == 0 {
            e.0 = v;
        } else {
            e.1 = v;
        }
    }
    batches
}

fn viewer_report(seen: &[viewer::Seen]) -> ViewerReport {
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

struct SessionPlan {
    avatar_id: String,
    duration: Duration,
    period: Duration,
    speak: Option<String>,
    words_per_second: Option<f64>,
    viewers: usize,
    viewer_options: viewer::ViewerOptions,
    whep_addr: std::net::SocketAddr,
    barrier: Arc<tokio::sync::Barrier>,
    /// Record the session, through this client.
    record: Option<OutputServiceClient<Svc>>,
    /// Push the session to this WHIP endpoint (URL, token).
    whip: Option<(OutputServiceClient<Svc>, String, String)>,
    /// Push the session to this RTMP server (URL, key).
    rtmp: Option<(OutputServiceClient<Svc>, String, String)>,
}

#[derive(Default)]
struct OneSession {
    create: Option<Duration>,
    first_event: Option<Duration>,
    interrupts: Vec<Duration>,
    speech_started: Vec<Duration>,
    speech_heard: Vec<Duration>,
    speech_seen: Vec<Duration>,
    finished: usize,
    interrupt_to_idle: Vec<Duration>,
    close: Option<Duration>,
    seen: Vec<viewer::Seen>,
    errors: Vec<String>,
}

/// Opens one session with its viewers, waits for every other session to be
/// ready too, drives it for the duration, then closes it.
async fn drive_session(mut client: SessionServiceClient<Svc>, plan: SessionPlan) -> OneSession {
    let mut out = OneSession::default();
    let setup = setup_session(&mut client, &plan, &mut out).await;
    plan.barrier.wait().await;
    let Some((id, viewers)) = setup else {
        return out;
    };
    let end = Instant::now() + plan.duration;
    let mut tick = tokio::time::interval(plan.period);
    if let Some(text) = &plan.speak {
        let mut watch = match client
            .watch_session(v1::WatchSessionRequest {
                session_id: id.clone(),
            })
            .await
        {
            Ok(w) => Some(w.into_inner()),
            Err(e) => {
                out.errors.push(format!("WatchSession: {}", e.message()));
                None
            }
        };
        while let Some(w) = watch.as_mut()
            && Instant::now() < end
        {
            match plan.words_per_second {
                Some(wps) => {
                    speak_streamed(&mut client, w, &id, text, wps, &viewers, &mut out).await
                }
                None => {
                    tick.tick().await;
                    speak_once(&mut client, w, &id, text, &viewers, &mut out).await;
                }
            }
        }
    }
    while plan.speak.is_none() && Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        match client
            .interrupt(v1::InterruptRequest {
                session_id: id.clone(),
            })
            .await
        {
            Ok(_) => out.interrupts.push(t.elapsed()),
            Err(e) => out.errors.push(format!("Interrupt: {}", e.message())),
        }
    }
    for v in viewers {
        out.seen.push(v.seen());
        if v.hang_up().await != 200 {
            out.errors.push("WHEP DELETE failed".into());
        }
    }
    let t = Instant::now();
    match client
        .close_session(v1::CloseSessionRequest { session_id: id })
        .await
    {
        Ok(_) => out.close = Some(t.elapsed()),
        Err(e) => out.errors.push(format!("CloseSession: {}", e.message())),
    }
    out
}

/// Waits for the first event `want` accepts (at most `timeout`).
async fn wait_event(
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    timeout: Duration,
    mut want: impl FnMut(&v1::session_event::Event) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while let Ok(Ok(Some(ev))) = tokio::time::timeout_at(end, watch.message()).await {
        if ev.event.as_ref().is_some_and(&mut want) {
            return true;
        }
    }
    false
}

/// One utterance: Speak, see it start (events) and be heard (viewers), let
/// it play a second, Interrupt, see the session idle.
async fn speak_once(
    client: &mut SessionServiceClient<Svc>,
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    id: &str,
    text: &str,
    viewers: &[viewer::Viewer],
    out: &mut OneSession,
) {
    use v1::session_event::Event as E;
    let t0 = Instant::now();
    let wall0 = viewer::unix_now();
    let req = v1::SpeakRequest {
        session_id: id.to_owned(),
        text: text.to_owned(),
        flush: true,
    };
    if let Err(e) = client.speak(tokio_stream::iter(vec![req])).await {
        out.errors
            .push(format!("Speak: {:?} {}", e.code(), e.message()));
        return;
    }
    if wait_event(watch, Duration::from_secs(20), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await
    {
        out.speech_started.push(t0.elapsed());
    } else {
        out.errors.push("no SpeechStarted within 20 s".into());
        return;
    }
    heard_and_seen(viewers, wall0, out).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t1 = Instant::now();
    if let Err(e) = client
        .interrupt(v1::InterruptRequest {
            session_id: id.to_owned(),
        })
        .await
    {
        out.errors.push(format!("Interrupt: {}", e.message()));
        return;
    }
    out.interrupts.push(t1.elapsed());
    if wait_event(
        watch,
        Duration::from_secs(5),
        |e| matches!(e, E::StateChanged(s) if s.current == v1::SessionState::Idle as i32),
    )
    .await
    {
        out.interrupt_to_idle.push(t1.elapsed());
    } else {
        // The utterance may have ended on its own before the Interrupt.
        out.interrupt_to_idle.push(t1.elapsed());
    }
}

/// Each viewer's first speech onset, and first frame with the mouth open,
/// after `wall0` (Unix seconds) — waiting at most 5 s.
async fn heard_and_seen(viewers: &[viewer::Viewer], wall0: f64, out: &mut OneSession) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut hearing: Vec<&viewer::Viewer> = viewers.iter().collect();
    let mut seeing: Vec<&viewer::Viewer> = viewers
        .iter()
        .filter(|v| v.watched_region().is_some())
        .collect();
    while !(hearing.is_empty() && seeing.is_empty()) && Instant::now() < deadline {
        hearing.retain(
            |v| match v.seen().speech_onsets.iter().find(|&&t| t >= wall0) {
                Some(&t) => {
                    out.speech_heard
                        .push(Duration::from_secs_f64((t - wall0).max(0.0)));
                    false
                }
                None => true,
            },
        );
        seeing.retain(|v| match v.seen().mouth_opened_after(wall0) {
            Some(t) => {
                out.speech_seen
                    .push(Duration::from_secs_f64((t - wall0).max(0.0)));
                false
            }
            None => true,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One pass over `text`, streamed word by word at `wps` in one Speak call
/// while the speech plays; returns when it has all been spoken.
async fn speak_streamed(
    client: &mut SessionServiceClient<Svc>,
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    id: &str,
    text: &str,
    wps: f64,
    viewers: &[viewer::Viewer],
    out: &mut OneSession,
) {
    use v1::session_event::Event as E;
    let words: Vec<String> = text.split_whitespace().map(|w| format!("{w} ")).collect();
    let n = words.len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let gap = Duration::from_secs_f64(1.0 / wps.max(0.1));
    let sid = id.to_owned();
    tokio::spawn(async move {
        for (i, w) in words.into_iter().enumerate() {
            let req = v1::SpeakRequest {
                session_id: sid.clone(),
                text: w,
                flush: i + 1 == n,
            };
            if tx.send(req).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let t0 = Instant::now();
    let wall0 = viewer::unix_now();
    let mut call_client = client.clone();
    let call = tokio::spawn(async move {
        call_client
            .speak(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    if wait_event(watch, Duration::from_secs(20), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await
    {
        out.speech_started.push(t0.elapsed());
    } else {
        out.errors.push("no SpeechStarted within 20 s".into());
    }
    heard_and_seen(viewers, wall0, out).await;
    let ids = match call.await {
        Ok(Ok(r)) => r.into_inner().utterance_ids,
        Ok(Err(e)) => {
            out.errors
                .push(format!("Speak: {:?} {}", e.code(), e.message()));
            return;
        }
        Err(e) => {
            out.errors.push(format!("Speak task: {e}"));
            return;
        }
    };
    // Played out: the last clause's SpeechFinished.
    let Some(last) = ids.last().cloned() else {
        return;
    };
    let budget = Duration::from_secs_f64(30.0 + n as f64 / wps.max(0.1));
    if wait_event(
        watch,
        budget,
        |e| matches!(e, E::SpeechFinished(f) if f.utterance_id == last),
    )
    .await
    {
        out.finished += 1;
    } else {
        out.errors.push("streamed speech did not finish".into());
    }
}

async fn setup_session(
    client: &mut SessionServiceClient<Svc>,
    plan: &SessionPlan,
    out: &mut OneSession,
) -> Option<(String, Vec<viewer::Viewer>)> {
    let t = Instant::now();
    let session = match client
        .create_session(v1::CreateSessionRequest {
            avatar_id: plan.avatar_id.clone(),
            ..Default::default()
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => {
            out.errors
                .push(format!("CreateSession: {:?} {}", e.code(), e.message()));
            return None;
        }
    };
    out.create = Some(t.elapsed());
    let id = session.session_id;
    if let Some(mut outputs) = plan.record.clone() {
        let recording = v1::AddOutputRequest {
            session_id: id.clone(),
            kind: Some(v1::add_output_request::Kind::Recording(
                v1::RecordingOutput {},
            )),
        };
        if let Err(e) = outputs.add_output(recording).await {
            out.errors
                .push(format!("AddOutput: {:?} {}", e.code(), e.message()));
        }
    }
    if let Some((mut outputs, url, bearer_token)) = plan.whip.clone() {
        let push = v1::AddOutputRequest {
            session_id: id.clone(),
            kind: Some(v1::add_output_request::Kind::Whip(v1::WhipOutput {
                url,
                bearer_token,
            })),
        };
        if let Err(e) = outputs.add_output(push).await {
            out.errors
                .push(format!("AddOutput (WHIP): {:?} {}", e.code(), e.message()));
        }
    }
    if let Some((mut outputs, url, stream_key)) = plan.rtmp.clone() {
        let push = v1::AddOutputRequest {
            session_id: id.clone(),
            kind: Some(v1::add_output_request::Kind::Rtmp(v1::RtmpOutput {
                url,
                stream_key,
            })),
        };
        if let Err(e) = outputs.add_output(push).await {
            out.errors
                .push(format!("AddOutput (RTMP): {:?} {}", e.code(), e.message()));
        }
    }
    let t = Instant::now();
    match client
        .watch_session(v1::WatchSessionRequest {
            session_id: id.clone(),
        })
        .await
    {
        Ok(s) => {
            let mut s = s.into_inner();
            match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                Ok(Ok(Some(_))) => out.first_event = Some(t.elapsed()),
                other => out
                    .errors
                    .push(format!("WatchSession: no first event ({other:?})")),
            }
        }
        Err(e) => out.errors.push(format!("WatchSession: {}", e.message())),
    }
    let mut viewers = vec![];
    let mut options = plan.viewer_options.clone();
    if options.decode {
        // 0 means the server's default size, 512.
        let size = |v: u32| if v == 0 { 512 } else { v as usize };
        let (w, h) = session
            .output
            .as_ref()
            .map_or((512, 512), |o| (size(o.width), size(o.height)));
        options.watch = Some(viewer::mouth_region(w, h));
    }
    for _ in 0..plan.viewers {
        match viewer::connect(plan.whep_addr, &id, &session.viewer_token, options.clone()).await {
            Ok(v) => viewers.push(v),
            Err(e) => out.errors.push(format!("viewer: {e}")),
        }
    }
    // Let the viewers' connections come up (and, decoding, show pictures)
    // before the window starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = |v: &viewer::Viewer| {
        let s = v.seen();
        s.connected && (!options.decode || s.frames_decoded >= 30)
    };
    while Instant::now() < deadline && !viewers.iter().all(ready) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((id, viewers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counters_are_read_by_stage() {
        let text = "# HELP huashen_batch_runs_total Batches run\n\
            huashen_batch_runs_total{stage=\"en_vocoder\"} 12\n\
            huashen_batch_items_total{stage=\"en_vocoder\"} 20\n\
            huashen_batch_items_total{stage=\"lipsync\"} 3\n\
            huashen_batch_largest{stage=\"en_vocoder\"} 4\n\
            huashen_batch_runs_totalx{stage=\"nope\"} 1\n\
            # TYPE huashen_process_cpu_seconds_total counter\n\
            huashen_process_cpu_seconds_total 1.5\n";
        let b = batch_counters(&parse_metrics(text).unwrap());
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b["en_vocoder"], (12.0, 20.0));
        assert_eq!(b["lipsync"], (0.0, 3.0));
        let m = parse_metrics(text).unwrap();
        let cpu = m
            .samples
            .iter()
            .find(|s| s.metric == "huashen_process_cpu_seconds_total");
        assert_eq!(number(&cpu.unwrap().value), Some(1.5));
    }

    #[test]
    fn percentiles() {
        let s = Stats::from((1..=100).map(Duration::from_millis).collect());
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 50.0).abs() <= 1.0);
        assert!((s.max_ms - 100.0).abs() < 1e-9);
        assert_eq!(Stats::from(vec![]).count, 0);
    }

    #[test]
    fn only_loopback_targets() {
        assert!(check_loopback("http://127.0.0.1:8700").is_ok());
        assert!(check_loopback("http://[::1]:8700").is_ok());
        assert!(check_loopback("http://localhost:1").is_ok());
        assert!(check_loopback("http://10.0.0.5:8700").is_err());
        assert!(check_loopback("http://example.com").is_err());
    }
}
