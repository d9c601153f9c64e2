//! Live media end to end: real WebRTC viewers over WHEP decode the session's
//! H.264 into the enrolled portrait, decode its Opus, and find audio and
//! video on one clock; bad WHEP requests and a killed viewer disturb nobody.

use crate::common::*;
use huashen_loadtest::viewer::{self, Expected, Seen, ViewerOptions};
use huashen_protos::v1;
use std::sync::Arc;
use std::time::Duration;

const W: u32 = 256;
const H: u32 = 192;

async fn session(c: &mut Client) -> v1::Session {
    let avatar = c.enroll("Host").await;
    c.sessions
        .create_session(v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id,
            output: Some(v1::OutputOptions {
                width: W,
                height: H,
                video_bitrate_kbps: 600,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// The avatar at rest, framed as the server frames it (the live frames
/// add only small idle motion).
fn expected() -> Expected {
    Arc::new((rest_frame(W, H).into_raw(), W, H))
}

fn opts(e: &Expected) -> ViewerOptions {
    ViewerOptions {
        decode: true,
        expected: Some(e.clone()),
        ..Default::default()
    }
}

/// The decoded frame carries the visible AI badge where the server puts it:
/// inside its box the picture differs from the plain portrait, outside not.
fn check_badge(i: usize, s: &Seen, expected: &Expected) {
    let frame = s.last_frame.as_ref().expect("a decoded frame");
    let badge = huashen::pipeline::label::VisibleLabel::new(
        "AI-generated",
        huashen::config::Corner::TopRight,
        W as usize,
        H as usize,
    )
    .unwrap();
    let (bx, by, bw, bh) = badge.rect();
    let (mut inside, mut n_in, mut outside, mut n_out) = (0f64, 0f64, 0f64, 0f64);
    for y in 0..H as usize {
        for x in 0..W as usize {
            let o = (y * W as usize + x) * 3;
            let d = (0..3)
                .map(|c| (f64::from(frame[o + c]) - f64::from(expected.0[o + c])).abs())
                .sum::<f64>()
                / 3.0;
            if (bx..bx + bw).contains(&x) && (by..by + bh).contains(&y) {
                inside += d;
                n_in += 1.0;
            } else {
                outside += d;
                n_out += 1.0;
            }
        }
    }
    let (inside, outside) = (inside / n_in, outside / n_out);
    assert!(
        inside > 25.0 && outside < 10.0,
        "viewer {i}: badge {inside:.1}, rest {outside:.1}"
    );
}

fn check_viewer(i: usize, s: &Seen) {
    assert!(s.connected, "viewer {i} connected");
    assert!(
        s.frames_decoded >= 20,
        "viewer {i} decoded {} frames",
        s.frames_decoded
    );
    assert!(!s.frame_errors.is_empty());
    for e in &s.frame_errors {
        assert!(
            *e < 12.0,
            "viewer {i}: frame differs from the portrait by {e:.1} on average"
        );
    }
    assert!(
        s.audio_decoded >= 50,
        "viewer {i} decoded {} audio frames",
        s.audio_decoded
    );
    // The machine-readable AI label rides in the H.264 stream.
    assert!(s.ai_labels >= 2, "viewer {i}: {} AI labels", s.ai_labels);
    let label = s.last_ai_label.as_deref().unwrap();
    assert!(
        label.contains("\"ai_generated\":true") && label.contains("\"generator\":\"huashen/"),
        "{label}"
    );
    // Lockstep: audio advances 960 per 20 ms packet, video 3600 per 40 ms
    // frame (25 fps; a skipped frame makes a multiple).
    for w in s.audio_ts.windows(2) {
        assert_eq!(w[1].0.wrapping_sub(w[0].0), 960, "viewer {i} audio step");
    }
    for w in s.video_ts.windows(2) {
        let step = w[1].0.wrapping_sub(w[0].0);
        assert!(step > 0 && step % 3600 == 0, "viewer {i} video step {step}");
    }
    // Both clocks advance at the rate of real time.
    let (a0, a1) = (s.audio_ts[0], *s.audio_ts.last().unwrap());
    let audio_s = f64::from(a1.0.wrapping_sub(a0.0)) / 48_000.0;
    assert!(
        (audio_s - (a1.1 - a0.1)).abs() < 0.25,
        "viewer {i}: audio clock {audio_s:.2} s vs {:.2} s",
        a1.1 - a0.1
    );
    let (v0, v1) = (s.video_ts[0], *s.video_ts.last().unwrap());
    let video_s = f64::from(v1.0.wrapping_sub(v0.0)) / 90_000.0;
    assert!(
        (video_s - (v1.1 - v0.1)).abs() < 0.25,
        "viewer {i}: video clock {video_s:.2} s vs {:.2} s",
        v1.1 - v0.1
    );
    // Sender reports put both tracks on the same wall clock (lip sync).
    assert!(
        s.audio_sr.is_some() && s.video_sr.is_some(),
        "viewer {i}: sender reports"
    );
    let offset = s.av_offset().expect("A/V offset");
    assert!(
        offset.abs() < 0.08,
        "viewer {i}: A/V offset {:.0} ms",
        offset * 1e3
    );
    assert!(
        s.video_seq.loss() == 0.0 && s.audio_seq.loss() == 0.0,
        "viewer {i}: loss on loopback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_viewers_decode_the_portrait_on_one_clock() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let s = session(&mut c).await;
    assert!(!s.viewer_token.is_empty());
    assert_eq!(s.whep_path, format!("/whep/sessions/{}", s.session_id));
    let mut watch = c
        .sessions
        .watch_session(v1::WatchSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let exp = expected();
    let mut viewers = vec![];
    for _ in 0..10 {
        viewers.push(
            viewer::connect(server.addr, &s.session_id, &s.viewer_token, opts(&exp))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (i, v) in viewers.iter().enumerate() {
        let seen = v.seen();
        check_viewer(i, &seen);
        check_badge(i, &seen, &exp);
        assert!(
            seen.last_ai_label
                .as_deref()
                .unwrap()
                .contains(&s.session_id)
        );
    }
    let live = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(live.viewer_count, 10);

    // Half hang up; the others keep playing.
    let before: Vec<usize> = viewers[5..]
        .iter()
        .map(|v| v.seen().frames_decoded)
        .collect();
    for v in viewers.drain(..5) {
        assert_eq!(v.hang_up().await, 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (v, b) in viewers.iter().zip(before) {
        assert!(
            v.seen().frames_decoded > b + 10,
            "a remaining viewer stalled"
        );
    }

    // WatchSession reported every join and leave.
    let (mut joined, mut left) = (0, 0);
    while left < 5 {
        let ev = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("viewer events")
            .unwrap()
            .unwrap();
        match ev.event {
            Some(v1::session_event::Event::ViewerJoined(_)) => joined += 1,
            Some(v1::session_event::Event::ViewerLeft(v)) => {
                left += 1;
                assert_eq!(v.viewer_count as usize, 10 - left);
            }
            _ => {}
        }
    }
    assert_eq!(joined, 10);

    // Closing the session ends the remaining viewers' media.
    c.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts: Vec<usize> = viewers.iter().map(|v| v.seen().frames_decoded).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (v, n) in viewers.iter().zip(counts) {
        assert_eq!(v.seen().frames_decoded, n, "media stopped with the session");
    }
    for v in viewers {
        let _ = v.pc.close().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_whep_requests_and_a_killed_viewer_disturb_nobody() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let s = session(&mut c).await;
    let good = viewer::connect(
        server.addr,
        &s.session_id,
        &s.viewer_token,
        opts(&expected()),
    )
    .await
    .unwrap();
    let path = s.whep_path.clone();
    let auth = format!("Bearer {}", s.viewer_token);
    let sdp = [
        ("Content-Type", "application/sdp"),
        ("Authorization", auth.as_str()),
    ];
    let a = server.addr;

    let r = http(
        a,
        "POST",
        "/whep/sessions/se_0123456789abcdef0123456789abcdef",
        &sdp,
        b"v=0\r\n",
    )
    .await;
    // Another session's token tells nothing about this one.
    assert_eq!(r.status, 401, "{}", r.text());
    // A token in the URL (access logs, Referer) is not taken.
    let in_url = format!("{path}?token={}", s.viewer_token);
    let r = http(
        a,
        "POST",
        &in_url,
        &[("Content-Type", "application/sdp")],
        b"v=0\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("not accepted"), "{}", r.text());
    let r = http(
        a,
        "POST",
        &path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", "Bearer nope"),
        ],
        b"v=0\r\n",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = http(
        a,
        "POST",
        &path,
        &[("Content-Type", "application/sdp")],
        b"v=0\r\n",
    )
    .await;
    assert_eq!(r.status, 401);
    let r = http(a, "POST", &path, &sdp, b"hello").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(
        a,
        "POST",
        &path,
        &sdp,
        b"v=0\r\no=- garbage\r\nm=video nonsense\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("SDP"), "{}", r.text());
    let r = http(
        a,
        "POST",
        &path,
        &[("Content-Type", "text/plain"), ("Authorization", &auth)],
        b"v=0\r\n",
    )
    .await;
    assert_eq!(r.status, 415);
    let r = http(a, "POST", &path, &sdp, &vec![b'v'; 200 * 1024]).await;
    assert_eq!(r.status, 413);
    let r = http(
        a,
        "PATCH",
        &path,
        &sdp,
        b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    let r = http(
        a,
        "DELETE",
        &format!("{path}/viewers/vw_nobody"),
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404);
    let r = http(
        a,
        "OPTIONS",
        &path,
        &[
            ("Origin", "https://viewer.example"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization,content-type",
            ),
        ],
        b"",
    )
    .await;
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // A viewer whose process dies: its runtime is torn down without any
    // goodbye. The server notices and drops it; the good viewer plays on.
    let (addr, sid, tok) = (server.addr, s.session_id.clone(), s.viewer_token.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let v = rt.block_on(async {
            let v = viewer::connect(addr, &sid, &tok, opts(&expected()))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(v.seen().frames_decoded > 0);
            v
        });
        rt.shutdown_background();
        std::mem::forget(v);
    })
    .join()
    .unwrap();
    let get = || {
        let mut sc = c.sessions.clone();
        let id = s.session_id.clone();
        async move {
            sc.get_session(v1::GetSessionRequest { session_id: id })
                .await
                .unwrap()
                .into_inner()
                .viewer_count
        }
    };
    assert!(
        eventually(Duration::from_secs(20), async || get().await == 1).await,
        "the dead viewer was dropped"
    );
    let before = good.seen().frames_decoded;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        good.seen().frames_decoded > before + 10,
        "the good viewer kept playing"
    );
    assert_eq!(good.hang_up().await, 200);
    server.stop().await;
}

/// Host candidates in an SDP answer: (address, port).
fn host_candidates(sdp: &str) -> Vec<(String, u16)> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:") && l.contains(" typ host"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(4)?.to_string(), f.get(5)?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_uses_the_configured_port_range_and_public_address() {
    // A free block of three UDP ports.
    let base = loop {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p < 65000 && (1..3).all(|i| std::net::UdpSocket::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let server = TestServer::start_with(|c| {
        c.webrtc.port_min = base;
        c.webrtc.port_max = base + 2;
    })
    .await;
    let mut c = server.dev().await;
    let s = session(&mut c).await;
    let mut viewers = vec![];
    for _ in 0..3 {
        let v = viewer::connect(
            server.addr,
            &s.session_id,
            &s.viewer_token,
            ViewerOptions::default(),
        )
        .await
        .unwrap();
        let answer = v.pc.remote_description().await.unwrap().sdp;
        let hosts = host_candidates(&answer);
        assert!(!hosts.is_empty(), "{answer}");
        for (_, port) in hosts {
            assert!(
                (base..=base + 2).contains(&port),
                "port {port} outside {base}..={}",
                base + 2
            );
        }
        viewers.push(v);
    }
    // All three ports are taken: a fourth viewer is told so, clearly.
    let err = viewer::connect(
        server.addr,
        &s.session_id,
        &s.viewer_token,
        ViewerOptions::default(),
    )
    .await
    .err()
    .expect("no free port");
    assert!(err.contains("503") && err.contains("port"), "{err}");
    for v in viewers {
        v.hang_up().await;
    }
    server.stop().await;

    // Behind a 1:1 NAT the answer advertises the public address instead.
    // The offer carries no candidates and nobody dials the answer, so no
    // packet leaves loopback.
    let server =
        TestServer::start_with(|c| c.webrtc.nat_1to1_ips = vec!["203.0.113.7".into()]).await;
    let mut c = server.dev().await;
    let s = session(&mut c).await;
    let fingerprint = (0..32)
        .map(|i| format!("{i:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let offer = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         a=fingerprint:sha-256 {fingerprint}\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=rtcp-mux\r\n\
         a=setup:actpass\r\na=rtpmap:102 H264/90000\r\n\
         a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
    );
    let auth = format!("Bearer {}", s.viewer_token);
    let r = http(
        server.addr,
        "POST",
        &s.whep_path,
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        offer.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.text();
    let hosts = host_candidates(&answer);
    assert!(
        !hosts.is_empty() && hosts.iter().all(|(ip, _)| ip == "203.0.113.7"),
        "{answer}"
    );
    server.stop().await;
}
