//! The RTMP / RTMPS push output (what Douyin, Kuaishou, Bilibili, Taobao
//! Live, YouTube and Twitch ingest): the session's own H.264 access units
//! and its sound as AAC-LC (encoded once by the pipeline while such an
//! output runs) in FLV tags, over the RTMP protocol (`rml_rtmp`, sans-IO)
//! on TCP, or TLS for `rtmps://`. Reconnects like the other outputs. The
//! stream key is a secret: it is sent to the server and nowhere else.

use super::acks::AckWatch;
use super::flv;
use super::fmp4;
use super::retry::{self, Backoff, Fault};
use super::state::{OutputState, StateTx};
use crate::config::Secret;
use crate::error::{ApiError, ApiResult};
use crate::pipeline::{EncodedFrame, FrameKind};
use crate::rtc::forward::{Ended, Sent};
use crate::session::SessionHandle;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// How long connecting (TCP, TLS, handshake, connect, publish) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the TLS handshake of `rtmps://` may take (a server that does
/// not speak TLS often just waits).
const TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the destination may take nothing (acknowledge no byte, or
/// leave a write blocked) before it counts as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to push: the server's URL (`rtmp[s]://host[:port]/app`) and the
/// stream key.
#[derive(Debug, Clone)]
pub struct RtmpTarget {
    pub url: String,
    host: String,
    port: u16,
    tls: bool,
    app: String,
    pub key: Secret,
}

/// Checks an RTMP destination from the API.
pub fn target(url: &str, key: &str) -> ApiResult<RtmpTarget> {
    let bad = |why: &str| ApiError::invalid(format!("rtmp.url {why}"));
    let url = url.trim();
    if url.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    let (tls, rest) = if let Some(r) = url.strip_prefix("rtmps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("rtmp://") {
        (false, r)
    } else {
        return Err(bad("must start with rtmp:// or rtmps://"));
    };
    let (authority, app) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad("has a bad port"))?),
        None => (authority, if tls { 443 } else { 1935 }),
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
    {
        return Err(bad("has no valid host name"));
    }
    let app = app.trim_end_matches('/');
    if app.is_empty() {
        return Err(bad("must name the application (rtmp://host/app)"));
    }
    if key.is_empty() {
        return Err(ApiError::invalid("rtmp.stream_key is required"));
    }
    if key.len() > 1024 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "rtmp.stream_key must be at most 1024 visible ASCII characters",
        ));
    }
    Ok(RtmpTarget {
        url: url.to_owned(),
        host: host.to_owned(),
        port,
        tls,
        app: app.to_owned(),
        key: Secret(key.to_owned()),
    })
}

/// What an RTMP output needs.
pub struct RtmpJob {
    pub id: String,
    pub target: RtmpTarget,
    pub session: Arc<SessionHandle>,
    pub backoff: Backoff,
    pub stop: CancellationToken,
    pub state: StateTx,
    pub counters: Sent,
}

/// Runs the output until it is stopped, its session ends, or it fails;
/// the session encodes AAC meanwhile.
pub async fn run(job: RtmpJob) {
    job.session.media.want_aac(true);
    retry::run(
        &job.id,
        &job.state,
        &job.stop,
        &job.counters,
        job.backoff,
        || once(&job),
    )
    .await;
    job.session.media.want_aac(false);
    tracing::info!(output = %job.id, "RTMP output ended");
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection: connect, publish, carry the session.
async fn once(job: &RtmpJob) -> Result<Ended, Fault> {
    let frames = job.session.media.subscribe_frames();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(&job.target)).await;
    let (mut io, mut session, acks) = match connected {
        Ok(r) => r?,
        Err(_) => {
            return Err(Fault::Retry(format!(
                "{} did not complete the RTMP connection within {CONNECT_TIMEOUT:?}",
                job.target.host
            )));
        }
    };
    job.state.set(OutputState::Live);
    job.session.media.request_keyframe();
    stream(job, &mut *io, &mut session, acks, frames).await
}

/// TCP (and TLS), the handshake, `connect` and `publish`.
async fn connect(t: &RtmpTarget) -> Result<(Box<dyn Stream>, ClientSession, AckWatch), Fault> {
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| Fault::Retry(unreachable(&t.host, &e)))?;
    let _ = tcp.set_nodelay(true);
    let acks = AckWatch::new(&tcp);
    let mut io: Box<dyn Stream> = if t.tls {
        let name = rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|_| Fault::Fatal(format!("{} is not a valid TLS server name", t.host)))?;
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(crate::util::tls_client_config()));
        let tls = tokio::time::timeout(TLS_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                Fault::Retry(format!(
                    "TLS error: {} did not complete a TLS handshake within {TLS_TIMEOUT:?} \
                     (is it an RTMPS server? rtmp:// if it is not)",
                    t.host
                ))
            })?
            .map_err(|e| tls_fault(&t.host, &e))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let rest = handshake(&mut *io, &t.host).await?;
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new())
        .map_err(|e| Fault::Retry(format!("RTMP session: {e:?}")))?;
    // Its chunk size first: the server reads every later chunk by it.
    send(&mut *io, initial).await?;
    let mut buf = rest;
    let connect = session
        .request_connection(t.app.clone())
        .map_err(|e| Fault::Retry(format!("RTMP connect: {e:?}")))?;
    send(&mut *io, vec![connect]).await?;
    await_event(&mut *io, &mut session, &mut buf, &t.host, |e| match e {
        ClientSessionEvent::ConnectionRequestAccepted => Some(Ok(())),
        ClientSessionEvent::ConnectionRequestRejected { description } => {
            Some(Err(Fault::Fatal(format!(
                "{} refused the application {:?}: {description}",
                t.host, t.app
            ))))
        }
        _ => None,
    })
    .await?;
    let publish = session
        .request_publishing(t.key.0.clone(), PublishRequestType::Live)
        .map_err(|e| Fault::Retry(format!("RTMP publish: {e:?}")))?;
    send(&mut *io, vec![publish]).await?;
    await_event(&mut *io, &mut session, &mut buf, &t.host, |e| match e {
        ClientSessionEvent::PublishRequestAccepted => Some(Ok(())),
        _ => None,
    })
    .await
    .map_err(|f| match f {
        // Servers close the connection on a key they refuse.
        Fault::Retry(_) => Fault::Fatal(format!("{} refused the stream key", t.host)),
        f => f,
    })?;
    Ok((io, session, acks))
}

/// Why TLS with `host` failed: a certificate that is not trusted only the
/// user (or the destination's operator) can fix.
pub(super) fn tls_fault(host: &str, e: &std::io::Error) -> Fault {
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(why)) => Fault::Fatal(format!(
            "TLS error: the certificate of {host} is not trusted ({why:?})"
        )),
        Some(why) => Fault::Retry(format!("TLS error with {host}: {why}")),
        None => Fault::Retry(format!("TLS error with {host}: {e}")),
    }
}

/// The RTMP handshake (client side); the bytes that followed it.
async fn handshake(io: &mut dyn Stream, host: &str) -> Result<Vec<u8>, Fault> {
    let lost = |e: std::io::Error| Fault::Retry(format!("{host} ended the RTMP handshake: {e}"));
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| Fault::Retry(format!("RTMP handshake: {e:?}")))?;
    io.write_all(&p0p1).await.map_err(lost)?;
    let mut buf = vec![0u8; 8192];
    loop {
        let n = io.read(&mut buf).await.map_err(lost)?;
        if n == 0 {
            return Err(Fault::Retry(format!(
                "{host} closed the connection during the RTMP handshake"
            )));
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| Fault::Retry(format!("{host}: bad RTMP handshake: {e:?}")))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await.map_err(lost)?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await.map_err(lost)?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// Writes the packets the session asked for, in order.
async fn send(io: &mut dyn Stream, results: Vec<ClientSessionResult>) -> Result<u64, Fault> {
    let mut sent = 0;
    for r in results {
        if let ClientSessionResult::OutboundResponse(packet) = r {
            io.write_all(&packet.bytes)
                .await
                .map_err(|e| Fault::Retry(format!("the connection was lost: {e}")))?;
            sent += packet.bytes.len() as u64;
        }
    }
    Ok(sent)
}

/// Reads from the server until `pick` accepts an event (answering what
/// the session must answer meanwhile).
async fn await_event(
    io: &mut dyn Stream,
    session: &mut ClientSession,
    pending: &mut Vec<u8>,
    host: &str,
    mut pick: impl FnMut(&ClientSessionEvent) -> Option<Result<(), Fault>>,
) -> Result<(), Fault> {
    let mut buf = vec![0u8; 8192];
    loop {
        if !pending.is_empty() {
            let results = session
                .handle_input(pending)
                .map_err(|e| Fault::Retry(format!("{host}: bad RTMP data: {e:?}")))?;
            pending.clear();
            // Every packet the session made goes out, in order, even past
            // the event looked for: later chunks' headers build on them.
            let mut out = Vec::new();
            let mut done = None;
            for r in results {
                match r {
                    ClientSessionResult::RaisedEvent(e) => {
                        if done.is_none() {
                            done = pick(&e);
                        }
                    }
                    other => out.push(other),
                }
            }
            send(io, out).await?;
            if let Some(done) = done {
                return done;
            }
        }
        let n = io
            .read(&mut buf)
            .await
            .map_err(|e| Fault::Retry(format!("{host}: {e}")))?;
        if n == 0 {
            return Err(Fault::Retry(format!("{host} closed the connection")));
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// Where the stream is.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for the first keyframe.
    Waiting,
    /// Stamping frames from session sample `t0`.
    Live { t0: u64 },
    /// Frames were lost: waiting for a keyframe, then on from `t0`.
    Resuming { t0: u64 },
}

/// Carries the session: from its next keyframe, the sequence headers, then
/// every access unit and AAC frame, stamped on the session clock.
async fn stream(
    job: &RtmpJob,
    io: &mut dyn Stream,
    session: &mut ClientSession,
    mut acks: AckWatch,
    mut frames: tokio::sync::broadcast::Receiver<Arc<EncodedFrame>>,
) -> Result<Ended, Fault> {
    let host = &job.target.host;
    let mut phase = Phase::Waiting;
    let mut buf = vec![0u8; 8192];
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        let frame = tokio::select! {
            _ = job.stop.cancelled() => return Ok(Ended::Cancelled),
            _ = check.tick() => {
                if acks.silent_for() >= STALL_TIMEOUT {
                    return Err(stalled(host));
                }
                continue;
            }
            n = io.read(&mut buf) => match n {
                Ok(0) => return Ok(Ended::Disconnected),
                Err(e) => return Err(Fault::Lost(format!("{host}: {e}"))),
                Ok(n) => {
                    // Acknowledgements, pings: answer what must be answered.
                    let results = session.handle_input(&buf[..n]).map_err(|e| {
                        Fault::Lost(format!("{host}: bad RTMP data: {e:?}"))
                    })?;
                    send_live(io, results, host).await?;
                    continue;
                }
            },
            f = frames.recv() => match f {
                Ok(f) => f,
                Err(RecvError::Lagged(n)) => {
                    // The destination is slower than real time: resume at
                    // the next keyframe.
                    job.counters.add_dropped(n);
                    if let Phase::Live { t0 } = phase {
                        phase = Phase::Resuming { t0 };
                    }
                    job.session.media.request_keyframe();
                    continue;
                }
                Err(RecvError::Closed) => return Ok(Ended::SessionEnded),
            },
        };
        let packets = tags(session, &mut phase, &frame)
            .map_err(|()| Fault::Lost("the stream could not be packed as RTMP".into()))?;
        let n = send_live(io, packets, host).await?;
        if n > 0 {
            acks.sent();
        }
        job.counters.add_bytes(n);
    }
}

/// [`send`] on a live stream: a destination that stops taking data for
/// [`STALL_TIMEOUT`] has stalled.
async fn send_live(
    io: &mut dyn Stream,
    packets: Vec<ClientSessionResult>,
    host: &str,
) -> Result<u64, Fault> {
    match tokio::time::timeout(STALL_TIMEOUT, send(io, packets)).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(Fault::Retry(why))) => Err(Fault::Lost(why)),
        Ok(Err(fault)) => Err(fault),
        Err(_) => Err(stalled(host)),
    }
}

fn stalled(host: &str) -> Fault {
    Fault::Lost(format!(
        "{host} stopped taking the stream (nothing taken for {STALL_TIMEOUT:?})"
    ))
}

/// The RTMP packets for one frame, as the stream's phase allows.
fn tags(
    session: &mut ClientSession,
    phase: &mut Phase,
    f: &EncodedFrame,
) -> Result<Vec<ClientSessionResult>, ()> {
    let mut out = Vec::new();
    let key = f.kind == FrameKind::Video && f.keyframe;
    let t0 = match *phase {
        Phase::Waiting if key => {
            let (sps, pps) = fmp4::parameter_sets(&f.data).ok_or(())?;
            let zero = RtmpTimestamp::new(0);
            let config = Bytes::from(flv::video_config(&sps, &pps));
            out.push(
                session
                    .publish_video_data(config, zero, false)
                    .map_err(|_| ())?,
            );
            let config = Bytes::from(flv::audio_config());
            out.push(
                session
                    .publish_audio_data(config, zero, false)
                    .map_err(|_| ())?,
            );
            *phase = Phase::Live { t0: f.sample };
            f.sample
        }
        Phase::Resuming { t0 } if key => {
            *phase = Phase::Live { t0 };
            t0
        }
        Phase::Waiting | Phase::Resuming { .. } => return Ok(out),
        Phase::Live { t0 } => t0,
    };
    let Some(at) = f.sample.checked_sub(t0) else {
        return Ok(out);
    };
    let ts = RtmpTimestamp::new((at / 48) as u32);
    let packet = match f.kind {
        FrameKind::Video => {
            let tag = Bytes::from(flv::video_frame(&f.data, f.keyframe));
            session.publish_video_data(tag, ts, false)
        }
        FrameKind::Aac => {
            session.publish_audio_data(Bytes::from(flv::audio_frame(&f.data)), ts, false)
        }
        FrameKind::Opus => return Ok(out),
    };
    out.push(packet.map_err(|_| ())?);
    Ok(out)
}

/// Why a host could not be reached, in words.
fn unreachable(host: &str, e: &std::io::Error) -> String {
    let why = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "the connection was refused".to_owned(),
        _ if e.to_string().contains("lookup") || e.to_string().contains("resolve") => {
            "its name does not resolve (DNS)".to_owned()
        }
        _ => e.to_string(),
    };
    format!("cannot reach {host}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked() {
        let t = target("rtmp://live.example.com/app", "key-1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls, t.app.as_str()),
            ("live.example.com", 1935, false, "app")
        );
        let t = target("rtmps://a.example:8443/live/sub/", "k").unwrap();
        assert_eq!((t.port, t.tls, t.app.as_str()), (8443, true, "live/sub"));
        for bad in [
            "http://x/app",
            "rtmp://",
            "rtmp://host",
            "rtmp://u:p@host/app",
            "rtmp://host:x/app",
        ] {
            let e = target(bad, "k").unwrap_err().to_string();
            assert!(e.starts_with("rtmp.url"), "{bad}: {e}");
        }
        assert!(target("rtmp://h/app", "").is_err());
        assert!(!format!("{:?}", target("rtmp://h/app", "s3cret").unwrap()).contains("s3cret"));
    }
}
