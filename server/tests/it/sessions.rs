//! Sessions: create/get/list/close, events, admission limits, idle timeout,
//! interrupt, and speech calls on a server without a speech engine.

use crate::common::*;
use huashen_protos::v1;
use std::time::Duration;

async fn next_event(
    s: &mut tonic::Streaming<v1::SessionEvent>,
) -> Option<v1::session_event::Event> {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("event within 5 s")
        .expect("stream ok")
        .and_then(|e| e.event)
}

#[tokio::test]
async fn create_get_list_close_and_watch() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c
        .sessions
        .create_session(v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id.clone(),
            voice: Some(v1::VoiceOptions {
                language: "zh-cn".into(),
                voice_id: String::new(),
                speed: 1.25,
            }),
            output: Some(v1::OutputOptions {
                width: 640,
                height: 360,
                ..Default::default()
            }),
            idle_timeout_seconds: 0,
            labels: [("room".to_string(), "A".to_string())].into(),
            outputs: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(s.session_id.starts_with("se_"));
    let voice = s.voice.clone().unwrap();
    assert_eq!((voice.language.as_str(), voice.speed), ("zh-CN", 1.25));
    let out = s.output.unwrap();
    assert_eq!(
        (out.width, out.height, out.fps, out.video_bitrate_kbps),
        (640, 360, 25, 1200)
    );
    assert_eq!(s.idle_timeout_seconds, 600);

    let mut watch = c
        .sessions
        .watch_session(v1::WatchSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // The first event repeats the current state.
    match next_event(&mut watch).await {
        Some(v1::session_event::Event::StateChanged(sc)) => assert_eq!(sc.previous, sc.current),
        e => panic!("{e:?}"),
    }
    assert!(
        eventually(Duration::from_secs(5), async || {
            c.sessions
                .get_session(v1::GetSessionRequest {
                    session_id: s.session_id.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .state
                == v1::SessionState::Idle as i32
        })
        .await
    );

    let listed = c
        .sessions
        .list_sessions(v1::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.sessions.len(), 1);
    assert_eq!(listed.sessions[0].session_id, s.session_id);

    let closed = c
        .sessions
        .close_session(v1::CloseSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.state, v1::SessionState::Closed as i32);
    assert_eq!(closed.close_reason, v1::CloseReason::ClientRequest as i32);
    assert!(closed.closed_at.is_some());

    // Watch: a state change to CLOSED, then `closed`, then the stream ends.
    let mut saw_closed_state = false;
    loop {
        match next_event(&mut watch).await {
            Some(v1::session_event::Event::StateChanged(sc)) => {
                saw_closed_state |= sc.current == v1::SessionState::Closed as i32
            }
            Some(v1::session_event::Event::Closed(cl)) => {
                assert_eq!(cl.reason, v1::CloseReason::ClientRequest as i32);
                break;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(saw_closed_state);
    assert!(next_event(&mut watch).await.is_none());

    // Closed sessions: Get still answers, List hides them unless asked,
    // Close is idempotent, and watching one says it is closed.
    let got = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, v1::SessionState::Closed as i32);
    assert_eq!(got.labels.get("room").map(String::as_str), Some("A"));
    let open = c
        .sessions
        .list_sessions(v1::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(open.sessions.is_empty());
    let all = c
        .sessions
        .list_sessions(v1::ListSessionsRequest {
            page: None,
            include_closed: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sessions.len(), 1);
    c.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap();
    let mut w = c
        .sessions
        .watch_session(v1::WatchSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(e) = next_event(&mut w).await {
        last = Some(e);
    }
    assert!(matches!(last, Some(v1::session_event::Event::Closed(_))));
    server.stop().await;
}

#[tokio::test]
async fn admission_limits_per_tenant_and_server() {
    let server = TestServer::start_with(|c| {
        c.limits.max_sessions = 3;
        c.limits.max_sessions_per_tenant = 2;
    })
    .await;
    let mut a = server.dev().await;
    let mut b = server.client(&server.new_tenant("studio-b")).await;
    let av_a = a.enroll("A").await;
    let av_b = b.enroll("B").await;

    let a1 = a.create_session(&av_a.avatar_id).await.unwrap();
    a.create_session(&av_a.avatar_id).await.unwrap();
    let (code, msg) = code_of(a.create_session(&av_a.avatar_id).await);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(msg.contains("tenant"), "{msg}");

    b.create_session(&av_b.avatar_id).await.unwrap();
    let (code, msg) = code_of(b.create_session(&av_b.avatar_id).await);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(msg.contains("server"), "{msg}");

    // Closing frees the slot at once.
    a.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: a1.session_id,
        })
        .await
        .unwrap();
    b.create_session(&av_b.avatar_id).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn idle_sessions_close_themselves_and_activity_keeps_them() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let req = v1::CreateSessionRequest {
        avatar_id: avatar.avatar_id.clone(),
        idle_timeout_seconds: 1,
        ..Default::default()
    };
    let idle = c
        .sessions
        .create_session(req.clone())
        .await
        .unwrap()
        .into_inner();
    let busy = c.sessions.create_session(req).await.unwrap().into_inner();
    // Interrupt counts as activity: keep `busy` alive for ~1.6 s.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = c
            .sessions
            .interrupt(v1::InterruptRequest {
                session_id: busy.session_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.cancelled_utterances, 0);
    }
    let get = |id: String| {
        let mut s = c.sessions.clone();
        async move {
            s.get_session(v1::GetSessionRequest { session_id: id })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let idle_now = get(idle.session_id.clone()).await;
    assert_eq!(idle_now.state, v1::SessionState::Closed as i32);
    assert_eq!(idle_now.close_reason, v1::CloseReason::IdleTimeout as i32);
    assert_ne!(
        get(busy.session_id.clone()).await.state,
        v1::SessionState::Closed as i32
    );
    // And once left alone, it goes too.
    assert!(
        eventually(Duration::from_secs(4), async || {
            get(busy.session_id.clone()).await.state == v1::SessionState::Closed as i32
        })
        .await
    );
    // Interrupting a closed session is a clear precondition failure.
    let (code, msg) = code_of(
        c.sessions
            .interrupt(v1::InterruptRequest {
                session_id: busy.session_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    server.stop().await;
}

#[tokio::test]
async fn speech_without_a_voice_is_a_clear_error_and_the_session_survives() {
    // No models installed: the server runs, Speak says what to install.
    let empty = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| c.speech.models_dir = empty.path().to_path_buf()).await;
    let mut c = server.dev().await;
    let voices = c
        .sessions
        .list_voices(v1::ListVoicesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(voices.voices.is_empty());
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let speak = vec![v1::SpeakRequest {
        session_id: s.session_id.clone(),
        text: "Hello, welcome to the show.".into(),
        flush: true,
    }];
    let (code, msg) = code_of(c.sessions.speak(tokio_stream::iter(speak)).await);
    assert_eq!(code, tonic::Code::FailedPrecondition);
    assert!(msg.contains("fetch-models"), "{msg}");
    let got = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(got.state, v1::SessionState::Closed as i32);
    server.stop().await;

    // With the voices installed, a session asking for one that does not
    // exist is told which do.
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c
        .sessions
        .create_session(v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id,
            voice: Some(v1::VoiceOptions {
                language: "zh-CN".into(),
                voice_id: "zh-CN-nobody".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let speak = vec![v1::SpeakRequest {
        session_id: s.session_id.clone(),
        text: "你好，欢迎来到直播间。".into(),
        flush: true,
    }];
    let (code, msg) = code_of(c.sessions.speak(tokio_stream::iter(speak)).await);
    assert_eq!(code, tonic::Code::FailedPrecondition);
    assert!(
        msg.contains("zh-CN-nobody") && msg.contains("zh-CN-baker") && msg.contains("en-US-joe"),
        "{msg}"
    );
    server.stop().await;
}
