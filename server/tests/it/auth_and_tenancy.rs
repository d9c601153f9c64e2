//! API keys and tenant isolation: unknown keys are refused, and one tenant
//! can neither see nor drive another's avatars or sessions.

use crate::common::*;
use huashen_protos::v1;

#[tokio::test]
async fn calls_without_a_valid_key_are_unauthenticated() {
    let server = TestServer::start().await;
    let ch = server.channel().await;
    for auth in [
        Auth(None),
        Auth(Some("hs_not-a-real-key".into())),
        Auth(Some(format!("{}x", server.dev_key))),
    ] {
        let mut c = Client::with_auth(ch.clone(), auth.clone());
        let (code, msg) = code_of(
            c.avatars
                .list_avatars(v1::ListAvatarsRequest::default())
                .await,
        );
        assert_eq!(code, tonic::Code::Unauthenticated, "{msg}");
        let (code, _) = code_of(
            c.sessions
                .list_sessions(v1::ListSessionsRequest::default())
                .await,
        );
        assert_eq!(code, tonic::Code::Unauthenticated);
        // Streaming calls are checked before anything is read or stored.
        let (code, _) = code_of(c.enroll_raw(enroll_start("x", 0), vec![portrait()]).await);
        assert_eq!(code, tonic::Code::Unauthenticated);
    }
    // A key under another scheme is refused with a hint.
    let mut req = tonic::Request::new(v1::ListAvatarsRequest::default());
    req.metadata_mut().insert(
        "authorization",
        format!("Basic {}", server.dev_key).parse().unwrap(),
    );
    let mut raw = v1::avatar_service_client::AvatarServiceClient::new(ch);
    let (code, msg) = code_of(raw.list_avatars(req).await);
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(msg.contains("Bearer"), "{msg}");
    assert!(
        std::fs::read_dir(server.dir.path().join("blobs/avatars"))
            .unwrap()
            .next()
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let server = TestServer::start().await;
    let mut a = server.dev().await;
    let mut b = server.client(&server.new_tenant("rival")).await;
    let avatar = a.enroll("A's presenter").await;
    let session = a.create_session(&avatar.avatar_id).await.unwrap();
    let aid = avatar.avatar_id.clone();
    let sid = session.session_id.clone();

    // B sees nothing of A's.
    assert!(
        b.avatars
            .list_avatars(v1::ListAvatarsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .avatars
            .is_empty()
    );
    assert!(
        b.sessions
            .list_sessions(v1::ListSessionsRequest {
                page: None,
                include_closed: true
            })
            .await
            .unwrap()
            .into_inner()
            .sessions
            .is_empty()
    );

    // Every attempt on A's objects is NOT_FOUND, as for ids that never existed.
    let nf = |r: Result<tonic::Response<_>, tonic::Status>| {
        let (code, msg) = code_of(r.map(|_: tonic::Response<()>| ()));
        assert_eq!(code, tonic::Code::NotFound, "{msg}");
    };
    nf(b.avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: aid.clone(),
        })
        .await
        .map(|r| r.map(|_| ())));
    nf(b.avatars
        .delete_avatar(v1::DeleteAvatarRequest {
            avatar_id: aid.clone(),
        })
        .await
        .map(|r| r.map(|_| ())));
    nf(b.create_session(&aid)
        .await
        .map(|_| tonic::Response::new(())));
    nf(b.sessions
        .get_session(v1::GetSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .map(|r| r.map(|_| ())));
    nf(b.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .map(|r| r.map(|_| ())));
    nf(b.sessions
        .interrupt(v1::InterruptRequest {
            session_id: sid.clone(),
        })
        .await
        .map(|r| r.map(|_| ())));
    nf(b.sessions
        .watch_session(v1::WatchSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .map(|r| r.map(|_| ())));
    let speak = vec![v1::SpeakRequest {
        session_id: sid.clone(),
        text: "hijack".into(),
        flush: true,
    }];
    nf(b.sessions
        .speak(tokio_stream::iter(speak))
        .await
        .map(|r| r.map(|_| ())));

    // The message for someone else's id equals the one for an unknown id.
    let unknown = "av_0123456789abcdef0123456789abcdef";
    let (_, m1) = code_of(
        b.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: unknown.into(),
            })
            .await,
    );
    let (_, m2) = code_of(
        b.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: aid.clone(),
            })
            .await,
    );
    assert_eq!(m1.replace(unknown, "ID"), m2.replace(&aid, "ID"));

    // A's objects are untouched.
    let s = a
        .sessions
        .get_session(v1::GetSessionRequest { session_id: sid })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(s.state, v1::SessionState::Closed as i32);
    a.avatars
        .get_avatar(v1::GetAvatarRequest { avatar_id: aid })
        .await
        .unwrap();
    server.stop().await;
}
