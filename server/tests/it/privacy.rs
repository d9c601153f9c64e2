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
    let hits = find_plaintext(server.dir.path(), &img);
    assert!(hits.is_empty(), "plaintext in {hits:?}");
    let dir = server.dir.path().to_path_buf();
    let mut server = server;
    server.running.take().unwrap().shutdown().await.unwrap();

    // Rotate: k2 active, k1 kept for old objects.
    let mut cfg = test_config(&dir);
    cfg.storage
        .encryption_keys
        .insert("k1".into(), huashen::config::Secret(k1));
    cfg.storage
        .encryption_keys
        .insert("k2".into(), huashen::config::Secret(k2.clone()));
    cfg.storage.active_key = "k2".into();
    let running = huashen::app::start(cfg).await.unwrap();
    server.addr = running.addr;
    server.running = Some(running);
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
            .join("original.png"),
    )
    .unwrap();
    assert_eq!(&sealed[..7], b"HSE1\x02k2");
    let hits = find_plaintext(&dir, &img);
    assert!(hits.is_empty(), "plaintext in {hits:?}");
    server.running.take().unwrap().shutdown().await.unwrap();

    // Without k1 the old portrait cannot be used, and the error says why.
    let mut cfg = test_config(&dir);
    cfg.storage
        .encryption_keys
        .insert("k2".into(), huashen::config::Secret(k2));
    cfg.storage.active_key = "k2".into();
    let running = huashen::app::start(cfg).await.unwrap();
    server.addr = running.addr;
    server.running = Some(running);
    let mut c = server.dev().await;
    let (code, msg) = code_of(c.create_session(&old.avatar_id).await);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("k1"), "{msg}");
    c.create_session(&new.avatar_id).await.unwrap();
    server.stop().await;
}
