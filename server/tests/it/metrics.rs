//! `/metrics` in Prometheus text format follows what happens: sessions by
//! state, viewers, encoding, admission rejections, process CPU and memory;
//! gauges come back down when sessions and viewers go.

use crate::common::*;
use huashen_loadtest::viewer::{self, ViewerOptions};
use huashen_protos::v1;
use std::time::Duration;

/// The value of one sample line (`name{labels} value`).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
}

async fn scrape(server: &TestServer) -> String {
    let r = http(server.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    r.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_sessions_viewers_and_limits() {
    let server = TestServer::start_with(|c| c.limits.max_sessions = 2).await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Measured").await;
    let s1 = c.create_session(&avatar.avatar_id).await.unwrap();
    let s2 = c.create_session(&avatar.avatar_id).await.unwrap();
    assert!(c.create_session(&avatar.avatar_id).await.is_err());
    let v = viewer::connect(
        server.addr,
        &s1.session_id,
        &s1.viewer_token,
        ViewerOptions::default(),
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || v.seen().frames_decoded
            > 3)
        .await
    );

    let m = scrape(&server).await;
    assert_eq!(sample(&m, "huashen_sessions_open"), 2.0);
    assert_eq!(sample(&m, "huashen_sessions{state=\"idle\"}"), 2.0);
    assert_eq!(sample(&m, "huashen_viewers"), 1.0);
    assert_eq!(
        sample(&m, "huashen_admission_rejections_total{limit=\"server\"}"),
        1.0
    );
    assert!(sample(&m, "huashen_video_encode_seconds_count") > 10.0);
    assert!(sample(&m, "huashen_render_seconds_count") > 10.0);
    assert!(sample(&m, "huashen_audio_encode_seconds_count") > 10.0);
    assert!(sample(&m, "huashen_keyframes_total") >= 2.0);
    assert!(sample(&m, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&m, "process_cpu_seconds_total") >= 0.0);
    assert!(sample(&m, "huashen_process_cpu_seconds_total") > 0.0);
    // Every batched model stage is reported; the start-up warm-up already
    // went through the speech stages, and nothing failed.
    for stage in ["en_clauses", "en_vocoder", "zh_acoustic", "zh_vocoder"] {
        let items = sample(
            &m,
            &format!("huashen_batch_items_total{{stage=\"{stage}\"}}"),
        );
        let runs = sample(
            &m,
            &format!("huashen_batch_runs_total{{stage=\"{stage}\"}}"),
        );
        assert!(
            items >= 1.0 && runs >= 1.0 && items >= runs,
            "{stage}: {items} in {runs}"
        );
        assert_eq!(
            sample(
                &m,
                &format!("huashen_batch_failed_total{{stage=\"{stage}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(
        sample(&m, "huashen_batch_failed_total{stage=\"lipsync\"}"),
        0.0
    );
    // No identifiers in metrics.
    assert!(!m.contains("se_") && !m.contains("av_") && !m.contains("127.0.0.1"));

    assert_eq!(v.hang_up().await, 200);
    for s in [s1, s2] {
        c.sessions
            .close_session(v1::CloseSessionRequest {
                session_id: s.session_id,
            })
            .await
            .unwrap();
    }
    let down = eventually(Duration::from_secs(5), async || {
        let m = scrape(&server).await;
        sample(&m, "huashen_viewers") == 0.0 && sample(&m, "huashen_sessions_open") == 0.0
    })
    .await;
    assert!(down, "gauges return to zero:\n{}", scrape(&server).await);
    server.stop().await;
}

/// Admission by measured capacity: with room for few sessions, one more is
/// refused with RESOURCE_EXHAUSTED saying why; the sessions' cost is
/// measured and published; closing one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_measured_capacity_are_refused() {
    let server = TestServer::start_with(|c| {
        c.limits.cpu_budget = 0.3;
        c.limits.session_cost = 0.2;
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Measured").await;
    // Unmeasured, a session counts at 0.2 cores: the second is refused. On a
    // loaded machine the first may be measured (cheaper) before the second
    // asks, so more may fit; either way the budget ends admission within a
    // few sessions (an idle session measures 0.05–0.1 cores in this build).
    let s1 = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut refused = None;
    for _ in 0..8 {
        match c.create_session(&avatar.avatar_id).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("a 0.3-core budget admitted nine sessions");
    let (code, msg) = (refused.code(), refused.message().to_owned());
    assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("measured capacity"), "{msg}");
    assert!(msg.contains("0.30 CPU"), "{msg}");

    // Within a few samples the session's own cost is measured.
    let mut m = String::new();
    let measured = eventually(Duration::from_secs(10), async || {
        m = scrape(&server).await;
        sample(&m, "huashen_cpu_load_cores") > 0.0
            && sample(&m, "huashen_session_cost_cores") != 0.2
    })
    .await;
    assert!(measured, "{m}");
    assert_eq!(sample(&m, "huashen_cpu_budget_cores"), 0.3);
    assert_eq!(
        sample(&m, "huashen_admission_rejections_total{limit=\"capacity\"}"),
        1.0
    );
    println!(
        "one idle 512x512 session (test build): {:.3} cores",
        sample(&m, "huashen_session_cost_cores")
    );

    // Closed, they no longer count: a new session fits again.
    let open = c
        .sessions
        .list_sessions(v1::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(open.iter().any(|s| s.session_id == s1.session_id));
    for s in open {
        c.sessions
            .close_session(v1::CloseSessionRequest {
                session_id: s.session_id,
            })
            .await
            .unwrap();
    }
    let admitted = eventually(Duration::from_secs(10), async || {
        match c.create_session(&avatar.avatar_id).await {
            Ok(_) => true,
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::ResourceExhausted, "{s:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
                false
            }
        }
    })
    .await;
    assert!(admitted, "no room after the session closed");
    server.stop().await;
}
