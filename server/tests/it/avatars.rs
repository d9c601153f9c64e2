//! Enroll (chunked and inline) → list (paged) → get → delete, with the image
//! stored as a file and sessions of a deleted avatar closed.

use crate::common::*;
use huashen_protos::v1;
use sha2::{Digest, Sha256};
use std::time::Duration;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn enroll_list_get_delete() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let img = portrait();
    let chunks: Vec<Vec<u8>> = img.chunks(64 * 1024).map(|c| c.to_vec()).collect();
    let events = c
        .enroll_raw(enroll_start("Presenter", img.len() as u64), chunks)
        .await
        .unwrap();

    // Progress: stages never go back, bytes never shrink, the end is DONE at 100 %.
    let progress: Vec<v1::EnrollProgress> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(v1::enroll_avatar_response::Event::Progress(p)) => Some(*p),
            _ => None,
        })
        .collect();
    assert!(progress.len() >= 3, "{progress:?}");
    // Stage order (DETECTING was numbered after DONE).
    let rank = |s: i32| {
        use v1::EnrollStage::*;
        [Receiving, Validating, Detecting, Storing, Done]
            .iter()
            .position(|&x| x as i32 == s)
            .unwrap()
    };
    assert!(
        progress
            .windows(2)
            .all(|w| rank(w[0].stage) <= rank(w[1].stage)
                && w[0].received_bytes <= w[1].received_bytes),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|p| p.stage == v1::EnrollStage::Detecting as i32)
    );
    let last_p = progress.last().unwrap();
    assert_eq!(last_p.stage, v1::EnrollStage::Done as i32);
    assert_eq!(last_p.received_bytes, img.len() as u64);
    assert!((last_p.fraction - 1.0).abs() < 1e-6);

    let avatar = avatar_of(&events);
    assert!(avatar.avatar_id.starts_with("av_"));
    assert_eq!(avatar.state, v1::AvatarState::Ready as i32);
    assert_eq!(avatar.image_bytes, img.len() as u64);
    assert_eq!(avatar.image_sha256, hex(&Sha256::digest(&img)));
    assert_eq!(avatar.consent.as_ref().unwrap().subject_name, "Zhang Min");
    assert_eq!(avatar.labels.get("shop").map(String::as_str), Some("tea"));
    let face = avatar.face.unwrap();
    assert_eq!(face.faces_found, 1);
    assert!(face.score > 0.5, "{face:?}");

    // Kept: the normalised portrait, encrypted; the upload itself is gone.
    let dir = server
        .dir
        .path()
        .join("blobs/avatars")
        .join(&avatar.avatar_id);
    let file = dir.join("portrait.png");
    let raw = std::fs::read(&file).unwrap();
    assert!(raw.starts_with(b"HSE1"), "sealed");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["face.json", "portrait.png"]);
    // The face geometry is biometric: sealed like the portrait.
    assert!(
        std::fs::read(dir.join("face.json"))
            .unwrap()
            .starts_with(b"HSE1")
    );
    assert!(!avatar.original_kept);

    let got = c
        .avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, avatar);

    // Paging over three avatars, two per page, newest first.
    let a2 = c.enroll("Second").await;
    let a3 = c.enroll("Third").await;
    let p1 = c
        .avatars
        .list_avatars(v1::ListAvatarsRequest {
            page: Some(v1::PageRequest {
                page_size: 2,
                page_token: String::new(),
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = p1.avatars.iter().map(|a| a.avatar_id.clone()).collect();
    assert_eq!(ids, vec![a3.avatar_id.clone(), a2.avatar_id.clone()]);
    assert!(!p1.next_page_token.is_empty());
    let p2 = c
        .avatars
        .list_avatars(v1::ListAvatarsRequest {
            page: Some(v1::PageRequest {
                page_size: 2,
                page_token: p1.next_page_token,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p2.avatars.len(), 1);
    assert_eq!(p2.avatars[0].avatar_id, avatar.avatar_id);
    assert!(p2.next_page_token.is_empty());

    // Delete: record and files go; a second delete is NOT_FOUND.
    c.avatars
        .delete_avatar(v1::DeleteAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap();
    assert!(!file.exists());
    let (code, _) = code_of(
        c.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: avatar.avatar_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    let (code, _) = code_of(
        c.avatars
            .delete_avatar(v1::DeleteAvatarRequest {
                avatar_id: avatar.avatar_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    server.stop().await;
}

#[tokio::test]
async fn the_original_is_kept_only_when_asked() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let img = portrait();
    let mut start = enroll_start("Keep", img.len() as u64);
    start.keep_original = true;
    let avatar = c.enroll_with(start).await;
    assert!(avatar.original_kept);
    let dir = server
        .dir
        .path()
        .join("blobs/avatars")
        .join(&avatar.avatar_id);
    assert!(dir.join("original.png").exists() && dir.join("portrait.png").exists());
    c.create_session(&avatar.avatar_id).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn inline_upload_for_browsers() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let img = portrait();
    let mut start = enroll_start("Inline", 0);
    start.inline_image = img.clone();
    let events = c.enroll_raw(start, vec![]).await.unwrap();
    match events.last().unwrap().event.clone() {
        Some(v1::enroll_avatar_response::Event::Avatar(a)) => {
            assert_eq!(a.image_bytes, img.len() as u64)
        }
        e => panic!("{e:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn deleting_an_avatar_closes_its_sessions() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let other = c.enroll("Other host").await;
    let s1 = c.create_session(&avatar.avatar_id).await.unwrap();
    let s2 = c.create_session(&other.avatar_id).await.unwrap();
    let mut watch = c
        .sessions
        .watch_session(v1::WatchSessionRequest {
            session_id: s1.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let resp = c
        .avatars
        .delete_avatar(v1::DeleteAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.closed_session_ids, vec![s1.session_id.clone()]);
    let mut reason = None;
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        if let Some(v1::session_event::Event::Closed(c)) = ev.event {
            reason = Some(c.reason);
        }
    }
    assert_eq!(reason, Some(v1::CloseReason::AvatarDeleted as i32));
    let s1_now = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s1.session_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s1_now.state, v1::SessionState::Closed as i32);
    assert_eq!(s1_now.close_reason, v1::CloseReason::AvatarDeleted as i32);
    // The other avatar's session is untouched.
    let s2_now = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s2.session_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(s2_now.state, v1::SessionState::Closed as i32);
    server.stop().await;
}

#[tokio::test]
async fn restart_keeps_records_and_sweeps_orphans() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Kept").await;
    let dir = server.dir.path().to_path_buf();
    let mut server = server;
    if let Some(r) = server.running.take() {
        r.shutdown().await.unwrap();
    }

    // What a crash mid-enrollment / mid-deletion would leave behind.
    let orphan = dir.join("blobs/avatars/av_0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("original.png"), b"x").unwrap();
    std::fs::write(dir.join("tmp/upload-crashed"), b"partial").unwrap();

    server.restart(|_| {}).await;
    assert!(!orphan.exists());
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
    let mut c = server.dev().await;
    let got = c
        .avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.avatar_id, avatar.avatar_id);
    assert!(
        dir.join("blobs/avatars")
            .join(&avatar.avatar_id)
            .join("portrait.png")
            .exists()
    );
    server.stop().await;
}

/// A group photo enrolls the largest face and says there were others; a
/// session made from it shows that face.
#[tokio::test]
async fn group_photo_uses_the_largest_face() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let img = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../inference/tests/data/face/sample1.jpg"
    ))
    .unwrap();
    let mut start = enroll_start("Group", img.len() as u64);
    start.image_format = v1::ImageFormat::Jpeg as i32;
    let chunks = img.chunks(64 * 1024).map(|c| c.to_vec()).collect();
    let avatar = avatar_of(&c.enroll_raw(start, chunks).await.unwrap());
    let face = avatar.face.unwrap();
    assert!(face.faces_found >= 2, "{face:?}");
    let got = c
        .avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.face, Some(face), "stored with the avatar");
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    assert_ne!(s.state, v1::SessionState::Closed as i32);
    server.stop().await;
}
