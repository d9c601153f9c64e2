//! Load generator for a running Huashen server (loopback only).
//!
//! Today it measures the control plane the way a control client sees it:
//! enrollment, session creation, the first event on a watch stream,
//! Interrupt round trips while N sessions are open, and closing. Media
//! measurements (time to first frame, fps, A/V offset over WebRTC) join when
//! the media pipeline lands.

pub mod http;
pub mod viewer;

use anyhow::{Context, bail};
use huashen_protos::v1;
use huashen_protos::v1::avatar_service_client::AvatarServiceClient;
use huashen_protos::v1::session_service_client::SessionServiceClient;
use serde::Serialize;
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
    /// Interrupt calls per second per session while open.
    pub rate: f64,
    /// Portrait to enroll (PNG or JPEG).
    pub image: Vec<u8>,
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
    pub close_session: Stats,
    pub errors: Vec<String>,
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
            ("CloseSession", &self.close_session),
        ] {
            s.push_str(&format!(
                "{:<20} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                name, st.count, st.p50_ms, st.p90_ms, st.p99_ms, st.max_ms
            ));
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
    let sessions: SessionServiceClient<Svc> = SessionServiceClient::with_interceptor(channel, key);
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

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..opts.sessions {
        let mut client = sessions.clone();
        let avatar_id = avatar_id.clone();
        let duration = opts.duration;
        let period = Duration::from_secs_f64(1.0 / opts.rate.max(0.01));
        tasks.spawn(async move { drive_session(&mut client, avatar_id, duration, period).await });
    }
    let (mut create, mut first, mut interrupt, mut close) = (vec![], vec![], vec![], vec![]);
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(one) => {
                create.extend(one.create);
                first.extend(one.first_event);
                interrupt.extend(one.interrupts);
                close.extend(one.close);
                report.errors.extend(one.errors);
            }
            Err(e) => report.errors.push(format!("session task failed: {e}")),
        }
    }
    report.create_session = Stats::from(create);
    report.first_watch_event = Stats::from(first);
    report.interrupt = Stats::from(interrupt);
    report.close_session = Stats::from(close);
    if let Err(e) = avatars
        .delete_avatar(v1::DeleteAvatarRequest { avatar_id })
        .await
    {
        report.errors.push(format!("DeleteAvatar: {}", e.message()));
    }
    Ok(report)
}

#[derive(Default)]
struct OneSession {
    create: Option<Duration>,
    first_event: Option<Duration>,
    interrupts: Vec<Duration>,
    close: Option<Duration>,
    errors: Vec<String>,
}

async fn drive_session(
    client: &mut SessionServiceClient<Svc>,
    avatar_id: String,
    duration: Duration,
    period: Duration,
) -> OneSession {
    let mut out = OneSession::default();
    let t = Instant::now();
    let session = match client
        .create_session(v1::CreateSessionRequest {
            avatar_id,
            ..Default::default()
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => {
            out.errors
                .push(format!("CreateSession: {:?} {}", e.code(), e.message()));
            return out;
        }
    };
    out.create = Some(t.elapsed());
    let id = session.session_id;
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
    let end = Instant::now() + duration;
    let mut tick = tokio::time::interval(period);
    while Instant::now() < end {
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

#[cfg(test)]
mod tests {
    use super::*;

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
