//! Privacy rules that hold today (see docs/PRIVACY.md): portraits are
//! encrypted at rest with rotatable keys, and nothing in the data directory
//! holds them in plaintext.

use crate::common::*;

/// 64-byte windows of `needle` at 4 KiB steps (only varied ones: a run of
/// zeros would match any empty database page), searched in every file under
/// `dir` (database, WAL, blobs, temporary files).
fn find_plaintext(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let probes: std::collections::HashSet<&[u8]> = (0..needle.len().saturating_sub(64))
        .step_by(4096)
        .map(|i| &needle[i..i + 64])
        .filter(|w| w.iter().collect::<std::collections::HashSet<_>>().len() >= 12)
        .collect();
    assert!(probes.len() > 50, "enough probes: {}", probes.len());
    let mut hits = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                if bytes.windows(64).any(|w| probes.contains(w)) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test]
async fn portraits_are_encrypted_at_rest_and_keys_rotate() {
    use base64::Engine;
    let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
    let (k1, k2) = (b64(7), b64(9));
    let server = TestServer::start_with(|c| {
        c.storage
            .encryption_keys
            .insert("k1".into(), huashen::config::Secret(k1.clone()));
        c.storage.active_key = "k1".into();
    })
    .await;
    let mut c = server.dev().await;
    let old = c.enroll("Sealed with k1").await;
    let img = portrait();
    // What the server derives and keeps, in plaintext, to search for too.
    let derived =
        huashen::engines::portrait::normalise(&huashen::engines::portrait::decode(&img).unwrap())
            .unwrap();
    let mut hits = find_plaintext(server.dir.path(), &img);
    hits.extend(find_plaintext(server.dir.path(), &derived));
    assert!(hits.is_empty(), "plaintext in {hits:?}");
    let dir = server.dir.path().to_path_buf();
    let mut server = server;

    // Rotate: k2 active, k1 kept for old objects.
    let key = |k: &str| huashen::config::Secret(k.to_owned());
    server
        .restart(|cfg| {
            cfg.storage.encryption_keys.insert("k1".into(), key(&k1));
            cfg.storage.encryption_keys.insert("k2".into(), key(&k2));
            cfg.storage.active_key = "k2".into();
        })
        .await;
    let mut c = server.dev().await;
    let new = c.enroll("Sealed with k2").await;
    c.create_session(&old.avatar_id)
        .await
        .expect("old portrait opens with k1");
    c.create_session(&new.avatar_id)
        .await
        .expect("new portrait opens with k2");
    let sealed = std::fs::read(
        dir.join("blobs/avatars")
            .join(&new.avatar_id)
            .join("portrait.png"),
    )
    .unwrap();
    assert_eq!(&sealed[..7], b"HSE1\x02k2");
    let mut hits = find_plaintext(&dir, &img);
    hits.extend(find_plaintext(&dir, &derived));
    assert!(hits.is_empty(), "plaintext in {hits:?}");

    // Without k1 the old portrait cannot be used, and the error says why.
    server
        .restart(|cfg| {
            cfg.storage.encryption_keys.insert("k2".into(), key(&k2));
            cfg.storage.active_key = "k2".into();
        })
        .await;
    let mut c = server.dev().await;
    let (code, msg) = code_of(c.create_session(&old.avatar_id).await);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("k1"), "{msg}");
    c.create_session(&new.avatar_id).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn withdrawing_consent_stops_sessions_at_once_and_deletes_the_data() {
    use huashen_protos::v1;
    use std::time::{Duration, Instant};
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Withdrawn").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let t = Instant::now();
    let r = c
        .avatars
        .withdraw_consent(v1::WithdrawConsentRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.closed_session_ids, vec![s.session_id.clone()]);
    // The watcher sees the session end within a second.
    let mut closed = false;
    while let Ok(Ok(Some(ev))) = tokio::time::timeout(Duration::from_secs(1), watch.message()).await
    {
        if let Some(v1::session_event::Event::Closed(cl)) = ev.event {
            assert_eq!(cl.reason, v1::CloseReason::AvatarDeleted as i32);
            closed = true;
        }
    }
    assert!(
        closed && t.elapsed() < Duration::from_secs(1),
        "closed in {:?}",
        t.elapsed()
    );
    // Data gone: record, consent, files.
    server.assert_avatar_gone(&mut c, &avatar.avatar_id).await;
    let (code, _) = code_of(c.create_session(&avatar.avatar_id).await);
    assert_eq!(code, tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn the_audit_log_records_access_for_its_tenant_only_and_holds_no_personal_data() {
    use huashen_protos::v1;
    let server = TestServer::start().await;
    let mut a = server.dev().await;
    let mut b = server.client(&server.new_tenant("other-studio")).await;
    let avatar = a.enroll("Audited").await;
    a.avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap();
    a.avatars
        .list_avatars(v1::ListAvatarsRequest::default())
        .await
        .unwrap();
    let s = a.create_session(&avatar.avatar_id).await.unwrap();
    a.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap();
    a.avatars
        .withdraw_consent(v1::WithdrawConsentRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap();
    b.enroll("Other").await;

    let all = a
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<(&str, &str)> = all
        .entries
        .iter()
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    for want in [
        ("avatar.enroll", avatar.avatar_id.as_str()),
        ("avatar.read", avatar.avatar_id.as_str()),
        ("avatar.list", ""),
        ("session.create", s.session_id.as_str()),
        ("session.close", s.session_id.as_str()),
        ("consent.withdraw", avatar.avatar_id.as_str()),
    ] {
        assert!(actions.contains(&want), "{want:?} missing from {actions:?}");
    }
    // Newest first, and attributed to the caller's key.
    assert!(all.entries.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(all.entries.iter().any(|e| e.actor.starts_with("ak_")));
    // Only identifiers: the subject's name and the purpose never appear.
    let text = format!("{:?}", all.entries);
    assert!(
        !text.contains("Zhang Min") && !text.contains("livestreams"),
        "{text}"
    );
    // Filtered by object, and paged.
    let one = a
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest {
            page: None,
            target: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(one.entries.iter().all(|e| e.target == s.session_id) && one.entries.len() == 2);
    let p1 = a
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest {
            page: Some(v1::PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
            target: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let p2 = a
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest {
            page: Some(v1::PageRequest {
                page_size: 2,
                page_token: p1.next_page_token.clone(),
            }),
            target: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.entries.len(), 2);
    assert!(p2.entries[0].seq < p1.entries[1].seq);
    // Tenant B sees none of A's entries.
    let theirs = b
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!theirs.entries.is_empty());
    assert!(
        theirs
            .entries
            .iter()
            .all(|e| e.target != avatar.avatar_id && e.target != s.session_id)
    );
    server.stop().await;
}

#[tokio::test]
async fn retention_purges_old_records_by_an_injected_clock() {
    use huashen::store::retention::{Purged, purge};
    use huashen_protos::v1;
    use std::time::Duration;
    const DAY: i64 = 86_400_000;
    let server = TestServer::start().await;
    let store = server.running.as_ref().unwrap().store.clone();
    let cfg = huashen::config::RetentionConfig::default();
    let mut c = server.dev().await;
    let avatar = c.enroll("Retained").await;
    let closed = c.create_session(&avatar.avatar_id).await.unwrap();
    // A recording of it, ended when it closes.
    let rec = c
        .outputs
        .add_output(v1::AddOutputRequest {
            session_id: closed.session_id.clone(),
            kind: Some(v1::add_output_request::Kind::Recording(
                v1::RecordingOutput {},
            )),
        })
        .await
        .unwrap()
        .into_inner()
        .recording_id;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: closed.session_id.clone(),
        })
        .await
        .unwrap();
    let get_rec = |c: &mut Client| {
        let mut r = c.recordings.clone();
        let id = rec.clone();
        async move {
            r.get_recording(v1::GetRecordingRequest { recording_id: id })
                .await
                .map(|r| r.into_inner())
        }
    };
    assert!(
        eventually(Duration::from_secs(5), async || get_rec(&mut c)
            .await
            .is_ok_and(|r| r.ended_at.is_some()))
        .await
    );
    let open = c.create_session(&avatar.avatar_id).await.unwrap();
    let now = huashen::store::now_ms();

    // Today nothing is due.
    assert_eq!(purge(&store, &cfg, now).await.unwrap(), Purged::default());
    // 31 days on: the closed session's metadata goes; the open one and the
    // audit log (180 days) stay.
    let p = purge(&store, &cfg, now + 31 * DAY).await.unwrap();
    assert_eq!(
        p,
        Purged {
            audit_entries: 0,
            sessions: 1,
            recordings: 0,
        }
    );
    let (code, _) = code_of(
        c.sessions
            .get_session(v1::GetSessionRequest {
                session_id: closed.session_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    c.sessions
        .get_session(v1::GetSessionRequest {
            session_id: open.session_id.clone(),
        })
        .await
        .unwrap();
    let audit = |c: &mut Client| {
        let mut a = c.audit.clone();
        async move {
            a.list_audit_entries(v1::ListAuditEntriesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    assert!(!audit(&mut c).await.is_empty());
    // 181 days on: the audit entries of today go too.
    let p = purge(&store, &cfg, now + 181 * DAY).await.unwrap();
    assert!(p.audit_entries >= 5, "{p:?}");
    assert!(audit(&mut c).await.is_empty());
    // Recordings are kept until deleted by default; with a retention
    // period they go (record and file) once it has passed.
    assert_eq!(p.recordings, 0);
    get_rec(&mut c).await.unwrap();
    let keep_90_days = huashen::config::RetentionConfig {
        recordings: Duration::from_secs(90 * 86_400),
        ..Default::default()
    };
    let p = purge(&store, &keep_90_days, now + 89 * DAY).await.unwrap();
    assert_eq!(p.recordings, 0);
    let p = purge(&store, &keep_90_days, now + 91 * DAY).await.unwrap();
    assert_eq!(p.recordings, 1);
    assert_eq!(code_of(get_rec(&mut c).await).0, tonic::Code::NotFound);
    let files = std::fs::read_dir(server.dir.path().join("blobs/recordings")).unwrap();
    assert_eq!(files.count(), 0);
    // Records still in use are not touched: the avatar stays until deleted.
    c.avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap();
    server.stop().await;
}

/// Runs an export and unpacks the archive: path → bytes.
pub async fn export(
    c: &mut Client,
    avatar_id: &str,
) -> std::collections::BTreeMap<String, Vec<u8>> {
    use huashen_protos::v1;
    let mut stream = c
        .privacy
        .export_subject_data(v1::ExportSubjectDataRequest {
            avatar_id: avatar_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut archive = vec![];
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(chunk.data.len() <= 64 * 1024);
        archive.extend_from_slice(&chunk.data);
    }
    let mut files = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(std::io::Cursor::new(archive));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let mut data = vec![];
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        files.insert(path, data);
    }
    files
}

#[tokio::test]
async fn subjects_can_export_everything_about_them() {
    use huashen_protos::v1;
    let server = TestServer::start().await;
    let mut a = server.dev().await;
    let mut b = server.client(&server.new_tenant("elsewhere")).await;
    let subject = a.enroll("Subject").await;
    let other = a.enroll("Other subject").await;
    let theirs = b.enroll("Not ours").await;
    let s = a.create_session(&subject.avatar_id).await.unwrap();

    let files = export(&mut a, &subject.avatar_id).await;
    let dir = format!("avatars/{}", subject.avatar_id);
    for want in [
        "manifest.json",
        "sessions.json",
        "audit.json",
        "recordings.json",
    ] {
        assert!(
            files.contains_key(want),
            "{want} missing: {:?}",
            files.keys()
        );
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&files[&format!("{dir}/avatar.json")]).unwrap();
    assert_eq!(meta["consent"]["subject_name"], "Zhang Min");
    assert_eq!(meta["avatar_id"], subject.avatar_id.as_str());
    let img = image::load_from_memory(&files[&format!("{dir}/portrait.png")]).unwrap();
    assert_eq!((img.width(), img.height()), (512, 512));
    // The face record (biometric geometry) is the subject's too.
    let face: serde_json::Value = serde_json::from_slice(&files[&format!("{dir}/face.json")])
        .expect("face.json in the export");
    assert_eq!(
        face["landmarks"].as_array().map(Vec::len),
        Some(468),
        "{face}"
    );
    let sessions: serde_json::Value = serde_json::from_slice(&files["sessions.json"]).unwrap();
    assert_eq!(sessions[0]["session_id"], s.session_id.as_str());
    let audit = String::from_utf8(files["audit.json"].clone()).unwrap();
    assert!(audit.contains("avatar.enroll") && audit.contains(&s.session_id));
    // Only this subject: not the other avatar, nor another tenant's.
    assert!(
        files
            .keys()
            .all(|k| !k.contains(&other.avatar_id) && !k.contains(&theirs.avatar_id))
    );
    assert!(!audit.contains(&other.avatar_id));

    // The whole tenant: both avatars, still none of the other tenant's.
    let all = export(&mut a, "").await;
    assert!(all.contains_key(&format!("avatars/{}/avatar.json", other.avatar_id)));
    assert!(all.keys().all(|k| !k.contains(&theirs.avatar_id)));
    // Another tenant cannot export this subject.
    let (code, _) = code_of(
        b.privacy
            .export_subject_data(v1::ExportSubjectDataRequest {
                avatar_id: subject.avatar_id.clone(),
            })
            .await
            .map(|_| ()),
    );
    assert_eq!(code, tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn subjects_can_delete_everything_about_them() {
    use huashen_protos::v1;
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let subject = c.enroll("Subject").await;
    let other = c.enroll("Other").await;
    let old = c.create_session(&subject.avatar_id).await.unwrap();
    c.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: old.session_id.clone(),
        })
        .await
        .unwrap();
    let live = c.create_session(&subject.avatar_id).await.unwrap();
    let other_session = c.create_session(&other.avatar_id).await.unwrap();

    let (code, msg) = code_of(
        c.privacy
            .delete_subject_data(v1::DeleteSubjectDataRequest {
                avatar_id: subject.avatar_id.clone(),
                confirm: false,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
    let r = c
        .privacy
        .delete_subject_data(v1::DeleteSubjectDataRequest {
            avatar_id: subject.avatar_id.clone(),
            confirm: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deleted_avatar_ids, vec![subject.avatar_id.clone()]);
    assert_eq!(r.closed_session_ids, vec![live.session_id.clone()]);
    assert_eq!(r.deleted_session_records, 2);
    assert_eq!(r.deleted_files, 2, "portrait and face record");
    for id in [&old.session_id, &live.session_id] {
        let (code, _) = code_of(
            c.sessions
                .get_session(v1::GetSessionRequest {
                    session_id: id.clone(),
                })
                .await,
        );
        assert_eq!(code, tonic::Code::NotFound);
    }
    server.assert_avatar_gone(&mut c, &subject.avatar_id).await;
    // Nothing else was touched.
    c.avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: other.avatar_id.clone(),
        })
        .await
        .unwrap();
    let s = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: other_session.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(s.state, v1::SessionState::Closed as i32);
    // The whole tenant.
    let r = c
        .privacy
        .delete_subject_data(v1::DeleteSubjectDataRequest {
            avatar_id: String::new(),
            confirm: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deleted_avatar_ids, vec![other.avatar_id.clone()]);
    assert!(
        c.avatars
            .list_avatars(v1::ListAvatarsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .avatars
            .is_empty()
    );
    assert!(
        c.sessions
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
    server.stop().await;
}
