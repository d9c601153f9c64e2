//! RTMP push into a real RTMP server: Debian's nginx with
//! `libnginx-mod-rtmp`, started here with a generated configuration; what
//! it relays is read back and checked by ffprobe and ffmpeg.

use crate::common::*;
use huashen_protos::v1;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub(crate) struct Nginx {
    child: Option<Child>,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Nginx {
    /// nginx-rtmp on a free loopback port: application `live` takes any
    /// stream, application `locked` refuses every publisher.
    pub(crate) fn start() -> Option<Self> {
        if !require(
            std::path::Path::new(MODULE).exists(),
            "nginx-rtmp (nginx, libnginx-mod-rtmp)",
        ) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut n = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        n.run();
        Some(n)
    }

    fn run(&mut self) {
        let d = self.dir.path().display();
        let conf = format!(
            "load_module {MODULE};\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
               application live {{ live on; record off; }}\n\
               application locked {{ live on; deny publish all; }}\n}} }}\n",
            port = self.port
        );
        std::fs::write(self.dir.path().join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package nginx)");
        self.child = Some(child);
        // Listening once the port answers.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not listen");
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn url(&self, app: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}", self.port)
    }
}

pub(crate) fn rtmp(session_id: &str, url: &str, key: &str) -> v1::AddOutputRequest {
    v1::AddOutputRequest {
        session_id: session_id.into(),
        kind: Some(v1::add_output_request::Kind::Rtmp(v1::RtmpOutput {
            url: url.into(),
            stream_key: key.into(),
        })),
    }
}

/// Runs a tool on the live stream (blocking, off the runtime).
async fn tool(program: &'static str, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || Command::new(program).args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_pushed_by_rtmp_plays_from_nginx_rtmp() {
    let Some(mut nginx) = Nginx::start() else {
        return;
    };
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("RTMP host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let key = "studio-7-stream-key";
    let out = c
        .outputs
        .add_output(rtmp(&s.session_id, &nginx.url("live"), key))
        .await
        .unwrap()
        .into_inner();
    match &out.kind {
        Some(v1::output::Kind::Rtmp(r)) => {
            assert!(r.stream_key.is_empty(), "the key is never returned")
        }
        other => panic!("{other:?}"),
    }
    let live = eventually(Duration::from_secs(10), async || {
        output_state(&mut c, &s.session_id, &out.output_id).await.0 == v1::OutputState::Live as i32
    })
    .await;
    assert!(
        live,
        "{:?}",
        output_state(&mut c, &s.session_id, &out.output_id).await
    );
    c.sessions
        .speak(tokio_stream::iter(vec![v1::SpeakRequest {
            session_id: s.session_id.clone(),
            text: "Welcome to the live room. Today we taste three green teas from the mountains, \
                   one by one, and talk about where each of them grows."
                .into(),
            flush: true,
        }]))
        .await
        .unwrap();

    // What nginx relays: H.264 at 25 fps and AAC, keyframes at most 2 s
    // apart, the AI label in the video, the speech in the sound.
    let stream = format!("{}/{key}", nginx.url("live"));
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("relayed.flv");
    let flv_path = flv.display().to_string();
    let got = tool(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-rw_timeout",
            "10000000",
            "-i",
            stream.as_str(),
            "-t",
            "6",
            "-c",
            "copy",
            "-y",
            &flv_path,
        ],
    )
    .await;
    assert!(
        got.status.success(),
        "{}\nnginx: {}",
        String::from_utf8_lossy(&got.stderr),
        std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
    );
    let probe = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-show_frames",
            "-select_streams",
            "v",
            &flv_path,
        ],
    )
    .await;
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    let video = &probe["streams"][0];
    assert_eq!(video["codec_name"], "h264", "{probe}");
    assert_eq!(video["r_frame_rate"], "25/1");
    let keys: Vec<f64> = probe["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["key_frame"] == 1)
        .filter_map(|f| f["pts_time"].as_str()?.parse().ok())
        .collect();
    assert!(keys.len() >= 2, "{keys:?}");
    assert!(keys.windows(2).all(|k| k[1] - k[0] <= 2.05), "{keys:?}");
    let audio = tool(
        "ffprobe",
        &[
            "-v",
            "error",
            "-of",
            "json",
            "-show_streams",
            "-select_streams",
            "a",
            &flv_path,
        ],
    )
    .await;
    let audio: serde_json::Value = serde_json::from_slice(&audio.stdout).unwrap();
    assert_eq!(audio["streams"][0]["codec_name"], "aac", "{audio}");
    assert_eq!(audio["streams"][0]["profile"], "LC");
    let loudest = crate::recordings::max_volume_db(&flv);
    assert!(loudest > -30.0, "the relayed sound is silent: {loudest} dB");
    let bytes = std::fs::read(&flv).unwrap();
    assert!(
        bytes
            .windows(16)
            .any(|w| w == huashen_protos::sei::AI_LABEL_UUID),
        "no SEI label in the relayed video"
    );

    // nginx goes away: the output reconnects, a WebRTC viewer keeps its
    // 25 fps meanwhile, and the output is back when nginx is.
    let viewer = huashen_loadtest::viewer::connect(
        server.addr,
        &s.session_id,
        &s.viewer_token,
        Default::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let frames0 = viewer.seen().video_ts.len();
    let t0 = std::time::Instant::now();
    nginx.stop();
    let reconnecting = eventually(Duration::from_secs(10), async || {
        output_state(&mut c, &s.session_id, &out.output_id).await.0
            == v1::OutputState::Reconnecting as i32
    })
    .await;
    assert!(
        reconnecting,
        "{:?}",
        output_state(&mut c, &s.session_id, &out.output_id).await
    );
    nginx.run();
    let back = eventually(Duration::from_secs(20), async || {
        output_state(&mut c, &s.session_id, &out.output_id).await.0 == v1::OutputState::Live as i32
    })
    .await;
    assert!(
        back,
        "{:?}",
        output_state(&mut c, &s.session_id, &out.output_id).await
    );
    let secs = t0.elapsed().as_secs_f64();
    let frames = viewer.seen().video_ts.len() - frames0;
    assert!(
        frames as f64 >= 24.0 * secs,
        "the viewer got {frames} frames in {secs:.1} s"
    );
    let metrics = http(server.addr, "GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("huashen_output_reconnects_total{kind=\"rtmp\",output=")),
        "no reconnect counted"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_keys_and_unreachable_servers_fail_with_a_reason() {
    let Some(nginx) = Nginx::start() else { return };
    let server = TestServer::start_with(|c| c.limits.output_reconnect_attempts = 1).await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();

    let locked = c
        .outputs
        .add_output(rtmp(&s.session_id, &nginx.url("locked"), "some-key"))
        .await
        .unwrap()
        .into_inner();
    let mut last = (0, String::new());
    let failed = eventually(Duration::from_secs(15), async || {
        last = output_state(&mut c, &s.session_id, &locked.output_id).await;
        last.0 == v1::OutputState::Failed as i32
    })
    .await;
    assert!(failed, "{last:?}");
    assert!(
        last.1.contains("refused the stream key") || last.1.contains("right after accepting it"),
        "{}",
        last.1
    );
    assert!(!last.1.contains("some-key"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = c
        .outputs
        .add_output(rtmp(
            &s.session_id,
            &format!("rtmp://127.0.0.1:{port}/live"),
            "k",
        ))
        .await
        .unwrap()
        .into_inner();
    let failed = eventually(Duration::from_secs(15), async || {
        last = output_state(&mut c, &s.session_id, &gone.output_id).await;
        last.0 == v1::OutputState::Failed as i32
    })
    .await;
    assert!(failed, "{last:?}");
    assert!(
        last.1.contains("gave up after 1 attempts") && last.1.contains("refused"),
        "{}",
        last.1
    );

    // A name that resolves nowhere (RFC 6761's .invalid): DNS, named.
    let unknown = c
        .outputs
        .add_output(rtmp(&s.session_id, "rtmp://no-such-host.invalid/live", "k"))
        .await
        .unwrap()
        .into_inner();
    let failed = eventually(Duration::from_secs(30), async || {
        last = output_state(&mut c, &s.session_id, &unknown.output_id).await;
        last.0 == v1::OutputState::Failed as i32
    })
    .await;
    assert!(failed, "{last:?}");
    assert!(last.1.contains("does not resolve (DNS)"), "{}", last.1);

    for (url, key) in [
        ("http://x/app", "k"),
        ("rtmp://x", "k"),
        ("rtmp://x/app", ""),
    ] {
        let (code, msg) = code_of(c.outputs.add_output(rtmp(&s.session_id, url, key)).await);
        assert_eq!(code, tonic::Code::InvalidArgument, "{url}: {msg}");
    }
    server.stop().await;
}
