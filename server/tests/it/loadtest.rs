//! The load test (`huashen-loadtest`, a library of its own) in short runs
//! against a real server: it must get answers for every operation and no
//! errors (no timing thresholds). The test lives here, not in the loadtest
//! crate, so that the dependency between the two runs one way: the server's
//! tests use the loadtest's viewer, the loadtest never depends on the server.

use crate::common::{TestServer, portrait};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_against_a_real_server() {
    let server = TestServer::start().await;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: server.url(),
        api_key: server.dev_key.clone(),
        sessions: 4,
        duration: Duration::from_millis(1500),
        rate: 10.0,
        image: portrait(),
        viewers: 2,
        decode: true,
        speak: None,
        words_per_second: None,
        record: false,
        whip: None,
        whip_token: String::new(),
        rtmp: None,
        rtmp_key: String::new(),
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
    assert_eq!(server.running.as_ref().unwrap().sessions.live_count(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_speaking_run_hears_speech() {
    let server = TestServer::start().await;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: server.url(),
        api_key: server.dev_key.clone(),
        sessions: 1,
        duration: Duration::from_secs(3),
        rate: 0.5,
        image: portrait(),
        viewers: 1,
        decode: true,
        speak: Some("Hello and welcome, this is a load test of the speech path.".into()),
        words_per_second: None,
        record: false,
        whip: None,
        whip_token: String::new(),
        rtmp: None,
        rtmp_key: String::new(),
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
    server.stop().await;
}

/// Text streamed word by word (as from an LLM) is spoken continuously, the
/// mouth moving, until all of it has played.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_text_is_spoken_to_the_end() {
    let server = TestServer::start().await;
    let report = huashen_loadtest::run(huashen_loadtest::Options {
        addr: server.url(),
        api_key: server.dev_key.clone(),
        sessions: 1,
        duration: Duration::from_secs(1),
        rate: 1.0,
        image: portrait(),
        viewers: 1,
        decode: true,
        speak: Some("Good evening. Today we taste three green teas, one by one.".into()),
        words_per_second: Some(8.0),
        record: false,
        whip: None,
        whip_token: String::new(),
        rtmp: None,
        rtmp_key: String::new(),
    })
    .await
    .unwrap();
    println!("{}", report.table());
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.utterances_finished, 1);
    assert_eq!(report.speech_heard.count, 1);
    assert_eq!(report.speech_seen.count, 1);
    server.stop().await;
}
