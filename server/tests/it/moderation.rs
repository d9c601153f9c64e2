//! Moderation before speech (docs/PRIVACY.md, promise 7): clauses refused
//! by the blocklists or by the signed moderation webhook are not spoken,
//! and the session goes on.

use crate::common::*;

#[tokio::test]
async fn moderation_refuses_clauses_before_speech_and_the_session_goes_on() {
    use huashen_protos::v1;
    use std::time::Duration;
    let server = TestServer::start_with(|c| {
        c.moderation
            .blocklist
            .insert("brand".into(), vec!["竞品店铺".into()]);
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Moderated").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let speak = |pieces: Vec<(&str, bool)>| {
        let id = s.session_id.clone();
        let msgs: Vec<v1::SpeakRequest> = pieces
            .into_iter()
            .map(|(t, flush)| v1::SpeakRequest {
                session_id: id.clone(),
                text: t.into(),
                flush,
            })
            .collect();
        let mut sc = c.sessions.clone();
        async move { sc.speak(tokio_stream::iter(msgs)).await }
    };
    // Evasion split across messages: the clause is checked whole.
    let r = speak(vec![
        ("欢迎大家来到直播间。今天教大家网 络", false),
        ("赌 博的技巧。谢谢！", true),
    ])
    .await;
    // The other two clauses are queued for speech.
    let r = r.expect("the allowed clauses are accepted").into_inner();
    assert_eq!(r.utterance_ids.len(), 2, "{r:?}");
    // The refusal reaches the watchers (other events, e.g. of the allowed
    // clauses' speech, may come before it).
    let blocked = loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a moderation event within 5 s")
            .unwrap()
            .unwrap();
        if let Some(v1::session_event::Event::Error(e)) = ev.event
            && e.code == "MODERATION_BLOCKED"
        {
            break e;
        }
    };
    assert!(
        blocked.message.contains("gambling") && !blocked.message.contains("赌"),
        "{}",
        blocked.message
    );
    // Only refused text: nothing to speak, no error.
    let r = speak(vec![("竞 品 店 铺！", true)])
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted_chars, 0);
    // Audited, without the text; the session is still live.
    let audit = c
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let blocks: Vec<_> = audit
        .entries
        .iter()
        .filter(|e| e.action == "moderation.block")
        .collect();
    assert!(blocks.len() >= 2 && blocks.iter().all(|e| e.target == s.session_id));
    assert!(
        blocks.iter().any(|e| e.outcome == "gambling")
            && blocks.iter().any(|e| e.outcome == "brand")
    );
    assert!(!format!("{:?}", audit.entries).contains("赌"));
    let now = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(now.state, v1::SessionState::Closed as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderation_webhook_is_asked_and_fails_closed() {
    use axum::Json;
    use axum::routing::post;
    use huashen_protos::v1;
    use std::sync::{Arc, Mutex};
    // A moderation service on loopback: refuses one phrase; another route
    // never answers in time.
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = asked.clone();
    const SECRET: &str = "webhook-secret-0123456789";
    let app = axum::Router::new()
        .route(
            "/moderate",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    // Signed: HMAC-SHA256 of "<timestamp>.<body>", recent.
                    use hmac::Mac;
                    let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
                    let timestamp = header("x-huashen-timestamp");
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs() as i64;
                    assert!((timestamp.parse::<i64>().unwrap() - now).abs() < 60);
                    let mut mac =
                        hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
                    mac.update(format!("{timestamp}.{body}").as_bytes());
                    let want: String = mac
                        .finalize()
                        .into_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    assert_eq!(header("x-huashen-signature"), format!("sha256={want}"));
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let text = v["text"].as_str().unwrap_or("").to_owned();
                    assert!(v["session_id"].as_str().unwrap().starts_with("se_"));
                    let allow = !text.contains("webhook-says-no");
                    seen.lock().unwrap().push(text);
                    Json(serde_json::json!({"allow": allow, "category": "policy"}))
                }
            }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                Json(serde_json::json!({"allow": true}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let speak = |c: &Client, id: &str, text: &str| {
        let mut sc = c.sessions.clone();
        let msgs = vec![v1::SpeakRequest {
            session_id: id.into(),
            text: text.into(),
            flush: true,
        }];
        async move { sc.speak(tokio_stream::iter(msgs)).await }
    };
    let server = TestServer::start_with(|c| {
        c.moderation.webhook_url = format!("http://{hook}/moderate");
        c.moderation.webhook_secret = huashen::config::Secret(SECRET.into());
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Webhooked").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let r = speak(
        &c,
        &s.session_id,
        "Hello there. Now webhook-says-no please. 网络赌博!",
    )
    .await
    .expect("the allowed clause is accepted")
    .into_inner();
    assert_eq!(
        r.utterance_ids.len(),
        1,
        "one of three clauses passed: {r:?}"
    );
    assert_eq!(r.accepted_chars, "Hello there.".len() as u64);
    // The blocklist answered for the last clause; the webhook saw the others.
    let asked_now = asked.lock().unwrap().clone();
    assert_eq!(
        asked_now,
        vec!["Hello there.", "Now webhook-says-no please."]
    );
    let audit = c
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let outcomes: Vec<&str> = audit
        .entries
        .iter()
        .filter(|e| e.action == "moderation.block")
        .map(|e| e.outcome.as_str())
        .collect();
    assert!(
        outcomes.contains(&"policy") && outcomes.contains(&"gambling"),
        "{outcomes:?}"
    );
    server.stop().await;

    // A webhook that does not answer in time: clauses are refused.
    let server = TestServer::start_with(|c| {
        c.moderation.webhook_url = format!("http://{hook}/slow");
        c.moderation.webhook_secret = huashen::config::Secret(SECRET.into());
        c.moderation.webhook_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Unreachable").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let r = speak(&c, &s.session_id, "Hello.")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted_chars, 0);
    let audit = c
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.outcome == "moderation_unavailable")
    );
    server.stop().await;

    // A webhook over HTTPS whose certificate nobody vouches for (OpenSSL's
    // s_server, self-signed): the text is not sent, clauses are refused.
    let tls = crate::output_faults::UntrustedTls::start();
    let server = TestServer::start_with(|c| {
        c.moderation.webhook_url = format!("https://localhost:{}/moderate", tls.port);
        c.moderation.webhook_secret = huashen::config::Secret(SECRET.into());
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Untrusted").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let r = speak(&c, &s.session_id, "Hello.")
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted_chars, 0, "spoken past an untrusted webhook");
    server.stop().await;
}
