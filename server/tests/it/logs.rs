//! Logs carry no personal data: a whole enroll → session → speak → watch →
//! export → delete flow, with every crate logging at debug level, must not
//! log the subject's name, the consent text, spoken text, image bytes, or
//! the client's IP address (the client connects from 127.0.0.2, the server
//! listens on 127.0.0.1), nor the secrets of outputs (an RTMP stream key, a
//! WHIP token). Spoken text is not written to disk either.

use crate::common::*;
use base64::Engine;
use huashen_protos::v1;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_flow_logs_no_personal_data() {
    let logs = Captured::default();
    let writer = logs.clone();
    // As an operator would run it with HUASHEN_LOG=debug.
    tracing_subscriber::fmt()
        .with_env_filter(huashen::logging::filter(Some("debug")))
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let server = TestServer::start().await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut c = Client::new(channel, &server.dev_key);
    let secret_name = "Ouyang Xiaoxue";
    let spoken = "大家好，今天的秘密优惠码是 HS-7731, use it before Friday.";
    let img = portrait();
    let mut start = enroll_start("Private presenter", img.len() as u64);
    start.consent.as_mut().unwrap().subject_name = secret_name.into();
    start.consent.as_mut().unwrap().purpose = "private purpose text".into();
    let avatar = c.enroll_with(start).await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let _watch = c.watch(&s.session_id).await;
    // A viewer, also from 127.0.0.2.
    let viewer = huashen_loadtest::viewer::connect(
        server.addr,
        &s.session_id,
        &s.viewer_token,
        huashen_loadtest::viewer::ViewerOptions {
            bind_ip: "127.0.0.2".parse().unwrap(),
            decode: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let playing = eventually(std::time::Duration::from_secs(10), async || {
        viewer.seen().frames_decoded > 5
    })
    .await;
    assert!(playing, "the viewer plays");
    let _ = c
        .sessions
        .speak(tokio_stream::iter(vec![v1::SpeakRequest {
            session_id: s.session_id.clone(),
            text: spoken.into(),
            flush: true,
        }]))
        .await;
    // The text went through moderation, the TTS and the playback buffer.
    let heard = eventually(std::time::Duration::from_secs(20), async || {
        viewer.seen().audio_loud_frames > 10
    })
    .await;
    assert!(heard, "the viewer hears the speech");
    // Outputs with secrets: an RTMP push with its stream key to nginx-rtmp,
    // and a WHIP push with its token to a port nobody listens on.
    let nginx = crate::rtmp::Nginx::start();
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut pushes = vec![v1::add_output_request::Kind::Whip(v1::WhipOutput {
        url: format!("http://127.0.0.1:{free_port}/whip"),
        bearer_token: "whip-token-Zq81".into(),
    })];
    if let Some(n) = &nginx {
        pushes.push(v1::add_output_request::Kind::Rtmp(v1::RtmpOutput {
            url: n.url("live"),
            stream_key: "rtmp-key-Vx42".into(),
        }));
    }
    for kind in pushes {
        c.outputs
            .add_output(v1::AddOutputRequest {
                session_id: s.session_id.clone(),
                kind: Some(kind),
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    c.avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(viewer.hang_up().await, 200);
    let mut export = c
        .privacy
        .export_subject_data(v1::ExportSubjectDataRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    while export.message().await.unwrap().is_some() {}
    c.privacy
        .delete_subject_data(v1::DeleteSubjectDataRequest {
            avatar_id: avatar.avatar_id.clone(),
            confirm: true,
        })
        .await
        .unwrap();
    let key = server.dev_key.clone();
    let data_dir = server.dir.path().to_path_buf();
    // Spoken text is processed in memory only: no file holds it.
    let mut stack = vec![data_dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let needle = "秘密优惠码".as_bytes();
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle),
                    "spoken text in {}",
                    p.display()
                );
            }
        }
    }
    server.stop().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.lines().count() > 20,
        "debug logging was captured:\n{text}"
    );
    assert!(text.contains(&avatar.avatar_id), "identifiers are logged");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&img[1000..1048]);
    for (what, needle) in [
        ("subject name", secret_name),
        ("consent purpose", "private purpose text"),
        ("spoken text", "秘密优惠码"),
        ("spoken text", "HS-7731"),
        ("spoken text", "before Friday"),
        ("display name", "Private presenter"),
        ("image bytes (base64)", &b64[..32]),
        ("client IP", "127.0.0.2"),
        ("API key", &key[3..20]),
        ("RTMP stream key", "rtmp-key-Vx42"),
        ("WHIP token", "whip-token-Zq81"),
    ] {
        assert!(!text.contains(needle), "{what} found in the logs");
    }
    let raw = logs.0.lock().unwrap().clone();
    assert!(
        !raw.windows(24).any(|w| w == &img[2000..2024]),
        "image bytes found in the logs"
    );
}
