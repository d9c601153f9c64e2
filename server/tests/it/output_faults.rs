//! Outputs meeting faults of their destinations, as a studio would meet
//! them: an RTMP server that stops taking the stream (stalls) or resets the
//! connection, an RTMPS server whose certificate is not trusted (OpenSSL's
//! `s_server`), a server that does not speak TLS, and a disk that fills up
//! while recording (a small tmpfs). Each ends in an output state with a
//! reason a user can act on; nothing else in the session notices.

use crate::common::*;
use crate::rtmp::Nginx;
use huashen_protos::v1;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy does to the connections through it.
const PASS: u8 = 0;
/// Stops reading from the client (the destination stalls).
const STALL: u8 = 1;
/// Resets the client's connection (TCP RST).
const RESET: u8 = 2;

/// A TCP proxy in front of `target` whose connections can be made to stall
/// or be reset; its receive buffer is small, so a stall shows soon.
struct FaultyProxy {
    port: u16,
    mode: Arc<AtomicU8>,
}

impl FaultyProxy {
    fn start(target: u16) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(PASS));
        let m = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                tokio::spawn(carry(client, server, m.clone()));
            }
        });
        Self { port, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn url(&self) -> String {
        format!("rtmp://127.0.0.1:{}/live", self.port)
    }
}

/// Carries one connection both ways, as the mode says.
async fn carry(client: tokio::net::TcpStream, server: tokio::net::TcpStream, mode: Arc<AtomicU8>) {
    // Closing it sends a reset (RST), not a FIN.
    #[allow(deprecated)]
    client.set_linger(Some(Duration::ZERO)).unwrap();
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let back = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        // Held until the connection ends, so that ending it resets it.
        std::future::pending::<()>().await;
        drop(to_client);
    });
    let mut buf = vec![0u8; 4096];
    loop {
        match mode.load(Ordering::SeqCst) {
            STALL => {
                // Hold the connection, take nothing.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            RESET => break,
            _ => {}
        }
        match from_client.read(&mut buf).await {
            Ok(n) if n > 0 && to_server.write_all(&buf[..n]).await.is_ok() => {}
            _ => break,
        }
    }
    back.abort();
}

async fn wait_state(
    c: &mut Client,
    session_id: &str,
    output_id: &str,
    want: v1::OutputState,
    within: Duration,
) -> v1::Output {
    let mut last = None;
    let reached = eventually(within, async || {
        let o = output_of(c, session_id, output_id).await;
        let done = o.state == want as i32;
        last = Some(o);
        done
    })
    .await;
    let last = last.unwrap();
    assert!(reached, "not {want:?} within {within:?}: {last:?}");
    last
}

/// Puts the proxy in `mode` until the output is reconnecting, then lets the
/// stream through until it is live again; the reconnecting state (with its
/// reason).
async fn fault_then_back(
    c: &mut Client,
    proxy: &FaultyProxy,
    (sid, id): (&str, &str),
    mode: u8,
) -> v1::Output {
    proxy.set(mode);
    let within = Duration::from_secs(60);
    let faulted = wait_state(c, sid, id, v1::OutputState::Reconnecting, within).await;
    proxy.set(PASS);
    wait_state(c, sid, id, v1::OutputState::Live, Duration::from_secs(20)).await;
    faulted
}

/// A destination that stops taking the stream, then one that resets the
/// connection: the RTMP output says so, reconnects and is live again, while
/// a WebRTC viewer keeps its 25 fps and the session's recording loses no
/// frame. Each output's figures show at `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_reset_rtmp_destination_reconnects_and_nothing_else_notices() {
    let Some(nginx) = Nginx::start() else { return };
    let proxy = FaultyProxy::start(nginx.port);
    let server = TestServer::start_with(|c| {
        c.limits.output_reconnect_delay = Duration::from_millis(200);
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let sid = s.session_id.clone();
    let rec = c
        .outputs
        .add_output(crate::recordings::recording_output(&sid))
        .await
        .unwrap()
        .into_inner();
    let out = c
        .outputs
        .add_output(crate::rtmp::rtmp(&sid, &proxy.url(), "stall-key-1"))
        .await
        .unwrap()
        .into_inner();
    let id = out.output_id.clone();
    wait_state(
        &mut c,
        &sid,
        &id,
        v1::OutputState::Live,
        Duration::from_secs(15),
    )
    .await;
    let viewer =
        huashen_loadtest::viewer::connect(server.addr, &sid, &s.viewer_token, Default::default())
            .await
            .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let live = output_of(&mut c, &sid, &id).await;
    assert!(live.bitrate_bps > 10_000, "{live:?}");
    let frames0 = viewer.seen().video_ts.len();
    let t0 = Instant::now();

    let stalled = fault_then_back(&mut c, &proxy, (&sid, &id), STALL).await;
    assert!(
        stalled.reason.contains("stopped taking the stream"),
        "{stalled:?}"
    );
    let reset = fault_then_back(&mut c, &proxy, (&sid, &id), RESET).await;
    assert!(
        reset.reason.contains("reset") || reset.reason.contains("closed"),
        "{reset:?}"
    );
    let back = output_of(&mut c, &sid, &id).await;
    assert!(back.reconnects >= 2, "{back:?}");
    assert!(!format!("{stalled:?}{reset:?}").contains("stall-key-1"));

    let secs = t0.elapsed().as_secs_f64();
    let frames = viewer.seen().video_ts.len() - frames0;
    assert!(
        frames as f64 >= 24.0 * secs,
        "the viewer got {frames} frames in {secs:.1} s"
    );
    let recording = output_of(&mut c, &sid, &rec.output_id).await;
    assert_eq!(
        recording.state,
        v1::OutputState::Live as i32,
        "{recording:?}"
    );
    assert_eq!(recording.dropped_frames, 0, "{recording:?}");

    let metrics = http(server.addr, "GET", "/metrics", &[], b"").await.text();
    for name in [
        "huashen_output_bytes_total",
        "huashen_output_bitrate_bits",
        "huashen_output_reconnects_total",
        "huashen_output_dropped_frames_total",
    ] {
        let series = format!("{name}{{kind=\"rtmp\",output=\"{id}\"}} ");
        assert!(metrics.contains(&series), "no {series} in /metrics");
    }
    server.stop().await;
}

/// Pushes the session to the RTMP(S) server `url` until the output fails;
/// its last state (the key never in it).
async fn push_until_failed(c: &mut Client, sid: &str, url: &str, within: Duration) -> v1::Output {
    let key = "a-stream-key-5f2";
    let out = c
        .outputs
        .add_output(crate::rtmp::rtmp(sid, url, key))
        .await
        .unwrap()
        .into_inner();
    let failed = wait_state(c, sid, &out.output_id, v1::OutputState::Failed, within).await;
    assert!(!format!("{failed:?}").contains(key), "{failed:?}");
    failed
}

/// OpenSSL's `s_server` with a self-signed certificate on a free port.
pub(crate) struct UntrustedTls {
    child: std::process::Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for UntrustedTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl UntrustedTls {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let made = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl (Debian package openssl; scripts/setup.sh --test installs it)");
        assert!(made.status.success(), "{made:?}");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

/// RTMPS to a server whose certificate nobody vouches for fails at once
/// (only its operator can fix that); RTMPS to a server that does not speak
/// TLS is tried again, then fails; both name TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_that_cannot_be_secured_fails_with_a_tls_error() {
    let Some(nginx) = Nginx::start() else { return };
    let tls = UntrustedTls::start();
    let server = TestServer::start_with(|c| {
        c.limits.output_reconnect_attempts = 1;
        c.limits.output_reconnect_delay = Duration::from_millis(100);
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let sid = s.session_id.clone();

    let url = format!("rtmps://localhost:{}/live", tls.port);
    let failed = push_until_failed(&mut c, &sid, &url, Duration::from_secs(15)).await;
    assert!(
        failed.reason.starts_with("TLS error") && failed.reason.contains("not trusted"),
        "{failed:?}"
    );
    assert_eq!(failed.reconnects, 0, "a certificate is not tried again");

    let url = format!("rtmps://127.0.0.1:{}/live", nginx.port);
    let failed = push_until_failed(&mut c, &sid, &url, Duration::from_secs(30)).await;
    assert!(
        failed
            .reason
            .contains("gave up after 1 attempts: TLS error"),
        "{failed:?}"
    );
    let session = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.state, v1::SessionState::Idle as i32, "{session:?}");
    server.stop().await;
}

/// A disk that fills up while recording: the server runs in a mount
/// namespace of its own (`unshare`, util-linux) where the recordings'
/// folder is a 384 KiB tmpfs. The recording fails saying the disk is full,
/// keeps what was written (a file ffprobe accepts, as long as its record
/// says), and the session and the server go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_recording_and_keeps_what_was_written() {
    use crate::process::{client, huashen, serve_command};
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("blobs").join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let server = huashen(dir.path());
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg("mount -t tmpfs -o size=384k tmpfs \"$0\" && exec \"$@\" serve")
        .arg(&recordings)
        .arg(server.get_program());
    for (k, v) in server.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let (mut child, addr, key) = serve_command(cmd, true);
    let mut c = client(&addr, &key.expect("dev key")).await;
    let avatar = c.enroll("Host on a small disk").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let sid = s.session_id.clone();
    let out = c
        .outputs
        .add_output(crate::recordings::recording_output(&sid))
        .await
        .unwrap()
        .into_inner();
    c.say(
        &sid,
        "This recording will not fit on the disk it is written to.",
    )
    .await;
    let failed = wait_state(
        &mut c,
        &sid,
        &out.output_id,
        v1::OutputState::Failed,
        Duration::from_secs(60),
    )
    .await;
    assert!(failed.reason.contains("the disk is full"), "{failed:?}");

    // The session goes on.
    assert!(child.try_wait().unwrap().is_none(), "the server exited");
    let session = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        session.state,
        v1::SessionState::Closed as i32,
        "{session:?}"
    );
    c.say(&sid, "Still on air.").await;

    // What was written is kept, whole.
    let rec = c
        .recordings
        .get_recording(v1::GetRecordingRequest {
            recording_id: out.recording_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rec.ended_at.is_some() && rec.duration_ms >= 1000, "{rec:?}");
    let file = crate::recordings::download(&mut c, &out.recording_id).await;
    assert_eq!(file.len() as u64, rec.bytes);
    let path = dir.path().join("kept.mp4");
    std::fs::write(&path, &file).unwrap();
    let probe = crate::recordings::ffprobe(&path);
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - rec.duration_ms as f64 / 1000.0).abs() <= 0.04,
        "ffprobe {duration} s, record {} ms",
        rec.duration_ms
    );
    child.kill().unwrap();
    let _ = child.wait();
}
