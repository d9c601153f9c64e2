//! Short loadtest against a real in-process server: it must get answers for
//! every operation and no errors (no timing thresholds).

use std::time::Duration;

/// A real server on loopback (with the fetched speech models) and the test
/// portrait.
async fn start(data: &std::path::Path) -> (huashen::app::Running, Vec<u8>) {
    let mut config = huashen::config::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.data_dir = data.to_path_buf();
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    config.speech.models_dir = models.clone();
    config.face.models_dir = models;
    // Smoke runs share a small machine with other tests: no capacity
    // refusals here (tested in the server's metrics tests).
    config.limits.cpu_budget = 64.0;
    let server = huashen::app::start(config).await.unwrap();
    let image = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/tests/data/astronaut.png"
    ))
    .unwrap();
    (server, image)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let (server, image) = start(dir.path()).await;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: format!("http://{}", server.addr),
        api_key: server.dev_key.clone().unwrap(),
        sessions: 4,
        duration: Duration::from_millis(1500),
        rate: 10.0,
        image,
        viewers: 2,
        decode: true,
        speak: None,
        words_per_second: None,
    })
    .await
    .unwrap();
    println!("{}", report.table());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.create_session.count, 4);
    assert_eq!(report.first_watch_event.count, 4);
    assert_eq!(report.close_session.count, 4);
    assert!(report.interrupt.count >= 4);
    assert!(report.create_session.p50_ms > 0.0);
    // Two viewers per session received live media.
    assert_eq!(report.viewers.connected, 8);
    assert_eq!(report.viewers.time_to_first_frame.count, 8);
    assert!(report.viewers.fps_mean > 5.0, "{:?}", report.viewers);
    let usage = report.server.as_ref().unwrap();
    assert!(usage.cpu_percent > 0.0 && usage.rss_mb_after > 0.0);
    assert_eq!(server.sessions.live_count(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_speaking_run_hears_speech() {
    let dir = tempfile::tempdir().unwrap();
    let (server, image) = start(dir.path()).await;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: format!("http://{}", server.addr),
        api_key: server.dev_key.clone().unwrap(),
        sessions: 1,
        duration: Duration::from_secs(3),
        rate: 0.5,
        image,
        viewers: 1,
        decode: true,
        speak: Some("Hello and welcome, this is a load test of the speech path.".into()),
        words_per_second: None,
    })
    .await
    .unwrap();
    println!("{}", report.table());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.speech_started.count >= 1, "{report:?}");
    assert_eq!(report.speech_heard.count, report.speech_started.count);
    assert!(report.speech_heard.p50_ms > 0.0);
    // The viewer saw the mouth open too.
    assert_eq!(report.speech_seen.count, report.speech_started.count);
    assert!(report.interrupt_to_idle.count >= 1);
    server.shutdown().await.unwrap();
}

/// Text streamed word by word (as from an LLM) is spoken continuously, the
/// mouth moving, until all of it has played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_is_spoken_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (server, image) = start(dir.path()).await;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: format!("http://{}", server.addr),
        api_key: server.dev_key.clone().unwrap(),
        sessions: 1,
        duration: Duration::from_secs(1),
        rate: 1.0,
        image,
        viewers: 1,
        decode: true,
        speak: Some("Good evening. Today we taste three green teas, one by one.".into()),
        words_per_second: Some(8.0),
    })
    .await
    .unwrap();
    println!("{}", report.table());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.utterances_finished, 1);
    assert_eq!(report.speech_heard.count, 1);
    assert_eq!(report.speech_seen.count, 1);
    server.shutdown().await.unwrap();
}
