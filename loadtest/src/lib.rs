//! Load generator for a running Huashen server (loopback only).
//!
//! It measures what a user sees, on the wire: enrollment, session creation,
//! the first event on a watch stream, Interrupt round trips while N sessions
//! are open, closing; and for M WebRTC viewers per session (WHEP), time to
//! first frame, received fps and frame-interval jitter, A/V offset from RTP
//! timestamps and RTCP sender reports, packet loss; and the server's CPU and
//! memory while it serves them, from its `/metrics`.

mod client;
pub mod http;
mod report;
mod server_metrics;
mod session;
pub mod viewer;

use client::{Key, Svc};
use report::viewer_report;
pub use report::{BatchUsage, Report, ServerUsage, Stats, ViewerReport};
use server_metrics::metrics_sample;
use session::{SessionPlan, drive_session};

use anyhow::{Context, bail};
use huashen_protos::v1;
use huashen_protos::v1::avatar_service_client::AvatarServiceClient;
use huashen_protos::v1::output_service_client::OutputServiceClient;
use huashen_protos::v1::session_service_client::SessionServiceClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
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

#[cfg(test)]
mod tests {
    use super::server_metrics::{batch_counters, number, parse_metrics};
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
