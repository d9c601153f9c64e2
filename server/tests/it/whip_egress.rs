//! WHIP egress: Huashen pushes a live session into a WHIP endpoint built on
//! another WebRTC implementation (aiortc, `tests/whip_receiver.py`, in the
//! test virtualenv `scripts/setup.sh --test` makes), which decodes the
//! H.264 and Opus it receives.

use crate::common::*;
use huashen_protos::v1;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The test virtualenv's Python, with aiortc.
fn python() -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "target/test-venv is missing: scripts/setup.sh --test makes it (aiortc)"
    );
    eprintln!("skipped: target/test-venv is missing (scripts/setup.sh --test makes it)");
    None
}

struct Receiver {
    child: Child,
    port: u16,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(python: &std::path::Path, token: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/whip_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .arg(token)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/whip", self.port)
    }

    async fn stats(&self) -> Value {
        let addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let r = http(addr, "GET", "/stats", &[], b"").await;
        serde_json::from_slice(&r.body).unwrap()
    }
}

fn whip(session_id: &str, url: &str, token: &str) -> v1::AddOutputRequest {
    v1::AddOutputRequest {
        session_id: session_id.into(),
        kind: Some(v1::add_output_request::Kind::Whip(v1::WhipOutput {
            url: url.into(),
            bearer_token: token.into(),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pushed_by_whip_is_decoded_by_another_webrtc_stack() {
    let Some(python) = python() else { return };
    let token = "whip-secret-7f3a";
    let receiver = Receiver::start(&python, token);
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Pushed host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();

    let out = c
        .outputs
        .add_output(whip(&s.session_id, &receiver.url(), token))
        .await
        .unwrap()
        .into_inner();
    match &out.kind {
        Some(v1::output::Kind::Whip(w)) => {
            assert_eq!(w.url, receiver.url());
            assert!(w.bearer_token.is_empty(), "the token is never returned");
        }
        other => panic!("{other:?}"),
    }
    // The same endpoint twice is refused.
    let (code, _) = code_of(
        c.outputs
            .add_output(whip(&s.session_id, &receiver.url(), token))
            .await,
    );
    assert_eq!(code, tonic::Code::AlreadyExists);

    c.say(
        &s.session_id,
        "Hello to everyone watching through the other server.",
    )
    .await;
    let mut stats = Value::Null;
    let decoded = eventually(Duration::from_secs(30), async || {
        stats = receiver.stats().await;
        stats["video_frames"].as_u64().unwrap_or(0) >= 50
            && stats["audio_frames"].as_u64().unwrap_or(0) >= 50
            && stats["loudest"].as_f64().unwrap_or(0.0) > 0.05
    })
    .await;
    assert!(decoded, "the receiver did not decode the session: {stats}");
    assert_eq!(
        (stats["width"].as_u64(), stats["height"].as_u64()),
        (Some(512), Some(512))
    );
    let codecs = stats["codecs"].to_string().to_lowercase();
    assert!(
        codecs.contains("h264") && codecs.contains("opus"),
        "{codecs}"
    );
    let (state, _) = output_state(&mut c, &s.session_id, &out.output_id).await;
    assert_eq!(state, v1::OutputState::Live as i32);

    let stopped = c
        .outputs
        .remove_output(v1::RemoveOutputRequest {
            output_id: out.output_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state, v1::OutputState::Stopped as i32);
    assert!(stopped.bytes > 50_000, "{stopped:?}");
    let deleted = eventually(Duration::from_secs(5), async || {
        receiver.stats().await["deleted"] == 1
    })
    .await;
    assert!(deleted, "the WHIP resource was not DELETEd");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unreachable_endpoints_fail_with_a_reason() {
    let Some(python) = python() else { return };
    let receiver = Receiver::start(&python, "right-token");
    let server = TestServer::start_with(|c| c.limits.output_reconnect_attempts = 2).await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();

    // A wrong token: failed at once, saying so, without the token.
    let refused = c
        .outputs
        .add_output(whip(&s.session_id, &receiver.url(), "wrong-token"))
        .await
        .unwrap()
        .into_inner();
    let mut last = (0, String::new());
    let failed = eventually(Duration::from_secs(15), async || {
        last = output_state(&mut c, &s.session_id, &refused.output_id).await;
        last.0 == v1::OutputState::Failed as i32
    })
    .await;
    assert!(failed, "{last:?}");
    assert!(
        last.1.contains("refused the bearer token (HTTP 401)"),
        "{}",
        last.1
    );
    assert!(!last.1.contains("wrong-token"));

    // Nothing listens: it reconnects, then gives up, saying why.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut watch = c.watch(&s.session_id).await;
    let gone = c
        .outputs
        .add_output(whip(
            &s.session_id,
            &format!("http://127.0.0.1:{port}/whip?room=a&token=in-the-url"),
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    // What was pasted into the URL's query is not shown back.
    let Some(v1::output::Kind::Whip(shown)) = gone.kind.clone() else {
        panic!("{gone:?}")
    };
    assert_eq!(
        shown.url,
        format!("http://127.0.0.1:{port}/whip?room=***&token=***")
    );
    use v1::session_event::Event as E;
    let events = events_until(
        &mut watch,
        Duration::from_secs(20),
        |e| matches!(e, E::OutputChanged(o) if o.state == v1::OutputState::Failed as i32),
    )
    .await;
    let states: Vec<(i32, String)> = events
        .into_iter()
        .filter_map(|e| match e {
            E::OutputChanged(o) if o.output_id == gone.output_id => Some((o.state, o.reason)),
            _ => None,
        })
        .collect();
    assert!(
        states
            .iter()
            .any(|(s, r)| *s == v1::OutputState::Reconnecting as i32 && r.contains("refused")),
        "{states:?}"
    );
    let (state, reason) = states.last().cloned().unwrap();
    assert_eq!(state, v1::OutputState::Failed as i32, "{states:?}");
    assert!(reason.contains("gave up after 2 attempts"), "{reason}");

    // Malformed destinations are refused before anything starts.
    for bad in ["ftp://x/whip", "https://user:pw@x/whip", "not a url"] {
        let (code, msg) = code_of(c.outputs.add_output(whip(&s.session_id, bad, "")).await);
        assert_eq!(code, tonic::Code::InvalidArgument, "{bad}: {msg}");
    }
    server.stop().await;
}

/// A number from the server's `/metrics` (a series without labels).
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = http(server.addr, "GET", "/metrics", &[], b"").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics"))
}

/// One session carried at once to ten WebRTC viewers, a WHIP endpoint, an
/// RTMP server (nginx-rtmp) and a recording for 60 s: no frame late,
/// everyone gets every frame, and the video is encoded once (one encoder
/// run per frame, however many outputs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_a_whip_push_and_a_recording_at_once() {
    use huashen_loadtest::viewer::{self, ViewerOptions};
    let Some(python) = python() else { return };
    let receiver = Receiver::start(&python, "t");
    let Some(nginx) = crate::rtmp::Nginx::start() else {
        return;
    };
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Busy host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut viewers = Vec::new();
    for _ in 0..10 {
        let v = viewer::connect(
            server.addr,
            &s.session_id,
            &s.viewer_token,
            ViewerOptions::default(),
        );
        viewers.push(v.await.unwrap());
    }
    for kind in [
        v1::add_output_request::Kind::Whip(v1::WhipOutput {
            url: receiver.url(),
            bearer_token: "t".into(),
        }),
        v1::add_output_request::Kind::Recording(v1::RecordingOutput {}),
        v1::add_output_request::Kind::Rtmp(v1::RtmpOutput {
            url: nginx.url("live"),
            stream_key: "busy".into(),
        }),
    ] {
        c.outputs
            .add_output(v1::AddOutputRequest {
                session_id: s.session_id.clone(),
                kind: Some(kind),
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late0 = metric(&server, "huashen_frames_late_total").await;
    let encodes0 = metric(&server, "huashen_video_encode_seconds_count").await;
    let received0: Vec<usize> = viewers.iter().map(|v| v.seen().video_ts.len()).collect();
    let whip0 = receiver.stats().await["video_frames"].as_u64().unwrap();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let secs = t0.elapsed().as_secs_f64();
    let late = metric(&server, "huashen_frames_late_total").await - late0;
    let encodes = metric(&server, "huashen_video_encode_seconds_count").await - encodes0;
    assert_eq!(late, 0.0, "frames went late");
    // 25 fps, one encode per frame (±1 s of frames at the window's edges).
    assert!(
        (encodes - 25.0 * secs).abs() <= 25.0,
        "{encodes} encodes in {secs:.1} s"
    );
    for (i, v) in viewers.iter().enumerate() {
        let got = v.seen().video_ts.len() - received0[i];
        assert!(
            got as f64 >= 24.0 * secs,
            "viewer {i}: {got} frames in {secs:.1} s"
        );
    }
    let whip = receiver.stats().await["video_frames"].as_u64().unwrap() - whip0;
    assert!(
        whip as f64 >= 24.0 * secs,
        "WHIP endpoint: {whip} frames in {secs:.1} s"
    );
    let outputs = c
        .outputs
        .list_outputs(v1::ListOutputsRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .outputs;
    assert!(
        outputs
            .iter()
            .all(|o| o.state == v1::OutputState::Live as i32),
        "{outputs:?}"
    );
    server.stop().await;
}
