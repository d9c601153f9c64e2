//! The host's live voice: PushAudio (PCM or Opus) reaches a real WebRTC
//! viewer on the session clock, the session is LISTENING while the host
//! talks, voice barges in on text, and one stream feeds a session at a time.

use crate::common::*;
use huashen_loadtest::viewer::{self, ViewerOptions};
use huashen_protos::v1;
use std::time::Duration;
use v1::session_event::Event as E;

/// 16-bit mono samples and rate of a WAV file in the repository.
fn wav(path: &str) -> (Vec<i16>, u32) {
    let bytes = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    let pcm = bytes[data..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (pcm, rate)
}

fn start_msg(session_id: &str, encoding: v1::AudioEncoding, rate: u32) -> v1::PushAudioRequest {
    v1::PushAudioRequest {
        payload: Some(v1::push_audio_request::Payload::Start(v1::PushAudioStart {
            session_id: session_id.to_owned(),
            format: Some(v1::AudioFormat {
                encoding: encoding as i32,
                sample_rate_hz: rate,
                channels: 1,
            }),
        })),
    }
}

fn data_msg(data: Vec<u8>) -> v1::PushAudioRequest {
    v1::PushAudioRequest {
        payload: Some(v1::push_audio_request::Payload::Data(data)),
    }
}

/// A live host: the messages go out one every 20 ms, as a microphone
/// produces them. Returns the request stream and the task feeding it.
fn live(
    messages: Vec<v1::PushAudioRequest>,
) -> tokio_stream::wrappers::ReceiverStream<v1::PushAudioRequest> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for m in messages {
            tick.tick().await;
            if tx.send(m).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// 20 ms PCM messages of `pcm` at `rate`.
fn pcm_messages(session_id: &str, pcm: &[i16], rate: u32) -> Vec<v1::PushAudioRequest> {
    let mut out = vec![start_msg(session_id, v1::AudioEncoding::PcmS16le, rate)];
    for frame in pcm.chunks(rate as usize / 50) {
        out.push(data_msg(
            frame.iter().flat_map(|s| s.to_le_bytes()).collect(),
        ));
    }
    out
}

fn is_state(e: &E, s: v1::SessionState) -> bool {
    matches!(e, E::StateChanged(sc) if sc.current == s as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_voice_is_heard_in_sync_while_listening() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let v = viewer::connect(
        server.addr,
        &s.session_id,
        &s.viewer_token,
        ViewerOptions {
            decode: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || v.seen().audio_decoded
            > 25)
        .await
    );
    assert_eq!(
        v.seen().audio_loud_frames,
        0,
        "silent before the host talks"
    );

    // About 3 s of Mandarin speech at 24 kHz, pushed live as PCM.
    let (pcm, rate) = wav("../docs/audio/speech-zh.wav");
    let pcm = &pcm[..pcm.len().min(rate as usize * 3)];
    let push = c
        .sessions
        .push_audio(live(pcm_messages(&s.session_id, pcm, rate)));
    let (r, events) = tokio::join!(
        push,
        events_until(&mut watch, Duration::from_secs(15), |e| {
            is_state(e, v1::SessionState::Idle)
        })
    );
    let r = r.unwrap().into_inner();
    let expect_ms = pcm.len() as u64 * 1000 / u64::from(rate);
    assert!(
        r.accepted_ms.abs_diff(expect_ms) <= 20,
        "accepted {} ms of {expect_ms}",
        r.accepted_ms
    );
    let listening = events
        .iter()
        .position(|e| is_state(e, v1::SessionState::Listening));
    assert!(listening.is_some(), "never LISTENING: {events:?}");
    assert!(
        is_state(events.last().unwrap(), v1::SessionState::Idle),
        "{events:?}"
    );
    // The viewer heard the voice: most of its 3 s loud (speech has pauses).
    assert!(
        eventually(Duration::from_secs(3), async || v.seen().audio_loud_frames
            > 60)
        .await,
        "loud frames: {}",
        v.seen().audio_loud_frames
    );
    // One clock: audio and video play out together (within one frame).
    let offset = v.seen().av_offset().expect("A/V offset");
    assert!(offset.abs() <= 0.040, "A/V offset {offset:.3} s");
    v.hang_up().await;
    server.stop().await;
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let cov: f32 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f32 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f32 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va.sqrt() * vb.sqrt()).max(1e-12)
}

/// Issue 8's end-to-end check: held-out speech pushed through PushAudio
/// reaches a WHEP viewer as audio; the decoded video's mouth region moves
/// while the speech is voiced and rests through the noisy pause; audio and
/// video share one clock (offset within a frame).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_out_voice_moves_the_mouth_and_rests_in_the_pause() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let v = mouth_viewer(&server, &s, 40).await;
    let idle = v.seen().watched.clone();
    let pcm: Vec<i16> = held_out_speech()
        .iter()
        .map(|v| (v * 32767.0) as i16)
        .collect();
    let push = c
        .sessions
        .push_audio(live(pcm_messages(&s.session_id, &pcm, 16000)));
    let (r, _) = tokio::join!(
        push,
        events_until(&mut watch, Duration::from_secs(20), |e| {
            is_state(e, v1::SessionState::Idle)
        })
    );
    let r = r.unwrap().into_inner();
    assert!(r.accepted_ms.abs_diff(pcm.len() as u64 / 16) <= 20, "{r:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = v.seen();
    assert!(
        seen.audio_loud_frames > 80,
        "heard {}",
        seen.audio_loud_frames
    );
    let offset = seen.av_offset().expect("A/V offset");
    assert!(offset.abs() <= 0.040, "A/V offset {offset:.3} s");

    // Put audio loudness and mouth pictures on the sender's clock.
    let loud: Vec<f64> = seen
        .audio_levels
        .iter()
        .filter(|a| a.1 > huashen_loadtest::viewer::SPEECH_RMS)
        .filter_map(|a| seen.sender_time(a.0, false))
        .collect();
    let (first, last) = (loud[0], *loud.last().unwrap());
    let near_loud = |t: f64, within: f64| loud.iter().any(|&a| (a - t).abs() <= within);
    let frames: Vec<(f64, f64, f64)> = seen.watched[idle.len()..]
        .iter()
        .filter_map(|w| Some((seen.sender_time(w.0, true)?, w.2, w.3)))
        .collect();
    let voiced: Vec<_> = frames.iter().filter(|f| near_loud(f.0, 0.05)).collect();
    // The pause: no speech within 350 ms either side, between the sentences.
    let pause: Vec<_> = frames
        .iter()
        .filter(|f| f.0 > first && f.0 < last && !near_loud(f.0, 0.35))
        .collect();
    let (idle_dark, idle_sd) = mouth_stats(idle[5..].iter().map(|w| (w.2, w.3)));
    let (talk_dark, talk_sd) = mouth_stats(voiced.iter().map(|f| (f.1, f.2)));
    let (pause_dark, pause_sd) = mouth_stats(pause.iter().map(|f| (f.1, f.2)));
    eprintln!(
        "mouth: idle dark≤{idle_dark:.3} sd {idle_sd:.2}; voiced ({} frames) dark≤{talk_dark:.3} sd {talk_sd:.2}; \
         pause ({} frames) dark≤{pause_dark:.3} sd {pause_sd:.2}; A/V offset {offset:.3} s",
        voiced.len(),
        pause.len()
    );
    // Lip-sync lag: the shift of the audio's loudness that best matches the
    // mouth's opening (the animator opens the mouth 50 ms before the
    // sound, as speakers do).
    let levels: Vec<(f64, f64)> = seen
        .audio_levels
        .iter()
        .filter_map(|a| Some((seen.sender_time(a.0, false)?, a.1)))
        .collect();
    let level_at = |t: f64| {
        levels
            .iter()
            .min_by(|a, b| (a.0 - t).abs().total_cmp(&(b.0 - t).abs()))
            .map_or(0.0, |l| l.1)
    };
    let dark: Vec<f32> = frames.iter().map(|f| f.2 as f32).collect();
    let lag_ms = (-20i32..=20)
        .map(|k| {
            let loudness: Vec<f32> = frames
                .iter()
                .map(|f| level_at(f.0 + f64::from(k) * 0.01) as f32)
                .collect();
            (k * 10, pearson(&dark, &loudness))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    eprintln!(
        "mouth follows the sound best at lag {} ms (r = {:.2})",
        lag_ms.0, lag_ms.1
    );
    assert!(
        lag_ms.0.abs() <= 40 && lag_ms.1 > 0.3,
        "lips and sound more than a frame apart: {lag_ms:?}"
    );
    assert!(
        voiced.len() > 40 && pause.len() >= 15,
        "{} voiced, {} pause frames",
        voiced.len(),
        pause.len()
    );
    assert!(talk_dark > 0.04, "the mouth opens while the host speaks");
    assert!(
        talk_sd > 3.0 * idle_sd.max(0.3),
        "the mouth moves while the host speaks"
    );
    assert!(
        pause_dark < 0.02,
        "the mouth rests in the pause (noise only)"
    );
    assert!(
        pause_sd < 2.0 * idle_sd.max(0.3),
        "no chattering in the pause"
    );
    v.hang_up().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_voice_barges_in_on_text_and_one_stream_feeds_a_session() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let text = "This is a long announcement that goes on and on. It has several \
                sentences, so there is plenty queued. Nobody should hear the end of it.";
    c.say(&s.session_id, text).await;
    let started = events_until(&mut watch, Duration::from_secs(30), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await;
    assert!(
        matches!(started.last(), Some(E::SpeechStarted(_))),
        "{started:?}"
    );

    // The host starts talking (Opus, 20 ms packets of 24 kHz speech).
    let (pcm, rate) = wav("../docs/audio/speech-zh.wav");
    let mut enc = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut messages = vec![start_msg(&s.session_id, v1::AudioEncoding::Opus, rate)];
    let mut packet = vec![0u8; 1500];
    for frame in pcm[..rate as usize * 2].chunks_exact(rate as usize / 50) {
        let n = enc.encode(frame, &mut packet).unwrap();
        messages.push(data_msg(packet[..n].to_vec()));
    }
    let mut c2 = server.dev().await;
    let push = tokio::spawn(async move { c2.sessions.push_audio(live(messages)).await });
    let events = events_until(&mut watch, Duration::from_secs(10), |e| {
        is_state(e, v1::SessionState::Listening)
    })
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, E::SpeechFinished(f) if f.interrupted)),
        "the text was not cut: {events:?}"
    );
    assert!(is_state(
        events.last().unwrap(),
        v1::SessionState::Listening
    ));

    // A second stream while the first one feeds the session is refused.
    let second = c
        .sessions
        .push_audio(tokio_stream::iter(vec![start_msg(
            &s.session_id,
            v1::AudioEncoding::PcmS16le,
            16000,
        )]))
        .await;
    let (code, msg) = code_of(second);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    assert!(msg.contains("another PushAudio stream"), "{msg}");

    let r = push.await.unwrap().unwrap().into_inner();
    assert!(r.accepted_ms.abs_diff(2000) <= 20, "{r:?}");
    // The rest of the text was dropped (barge-in "interrupt"): back to idle,
    // and nothing else is spoken.
    let after = events_until(&mut watch, Duration::from_secs(10), |e| {
        is_state(e, v1::SessionState::Idle)
    })
    .await;
    assert!(
        is_state(after.last().unwrap(), v1::SessionState::Idle),
        "{after:?}"
    );
    let later = events_until(&mut watch, Duration::from_millis(1500), |_| false).await;
    assert!(
        later.iter().all(|e| !matches!(e, E::SpeechStarted(_))),
        "{later:?}"
    );
    server.stop().await;
}

/// `voice.barge_in = "queue"`: text pauses while the host talks and then
/// finishes, nothing cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_text_resumes_after_the_host() {
    let server = TestServer::start_with(|c| {
        c.voice.barge_in = huashen::config::BargeIn::Queue;
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    c.say(
        &s.session_id,
        "Welcome back to the studio, everyone, and thank you for waiting.",
    )
    .await;
    events_until(&mut watch, Duration::from_secs(30), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await;
    let (pcm, rate) = wav("../docs/audio/speech-zh.wav");
    let messages = pcm_messages(&s.session_id, &pcm[..rate as usize], rate);
    let mut c2 = server.dev().await;
    let push = tokio::spawn(async move { c2.sessions.push_audio(live(messages)).await });
    let events = events_until(&mut watch, Duration::from_secs(30), |e| {
        matches!(e, E::SpeechFinished(_))
    })
    .await;
    push.await.unwrap().unwrap();
    let states: Vec<i32> = events
        .iter()
        .filter_map(|e| match e {
            E::StateChanged(sc) => Some(sc.current),
            _ => None,
        })
        .collect();
    use v1::SessionState as S;
    assert_eq!(
        states,
        vec![S::Listening as i32, S::Speaking as i32],
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(E::SpeechFinished(f)) if !f.interrupted),
        "{events:?}"
    );
    server.stop().await;
}

/// WHIP ingest refuses what it cannot serve with a status and a message:
/// no or a wrong API key (401), another tenant's session (404), a body that
/// is not SDP (415), an offer that cannot be answered (400), a session already
/// fed by PushAudio (409); trickle ICE is not offered (405). (A browser
/// publishing for real: `console::console_walks_enroll_speak_watch`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_refusals_are_clear() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let path = format!("/whip/sessions/{}", s.session_id);
    let key = format!("Bearer {}", server.dev_key);
    let sdp = &[
        ("Content-Type", "application/sdp"),
        ("Authorization", key.as_str()),
    ];
    let offer = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    let r = http(
        server.addr,
        "POST",
        &path,
        &[("Content-Type", "application/sdp")],
        offer,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("API key"), "{}", r.text());
    let wrong = [
        ("Content-Type", "application/sdp"),
        ("Authorization", "Bearer hs_nope"),
    ];
    assert_eq!(
        http(server.addr, "POST", &path, &wrong, offer).await.status,
        401
    );
    // A viewer token watches; it cannot publish.
    let viewer = format!("Bearer {}", s.viewer_token);
    let as_viewer = [
        ("Content-Type", "application/sdp"),
        ("Authorization", viewer.as_str()),
    ];
    assert_eq!(
        http(server.addr, "POST", &path, &as_viewer, offer)
            .await
            .status,
        401
    );
    let other = format!("Bearer {}", server.new_tenant("other"));
    let other_tenant = [
        ("Content-Type", "application/sdp"),
        ("Authorization", other.as_str()),
    ];
    let r = http(server.addr, "POST", &path, &other_tenant, offer).await;
    assert_eq!(r.status, 404, "{}", r.text());

    let text = [
        ("Content-Type", "text/plain"),
        ("Authorization", key.as_str()),
    ];
    assert_eq!(
        http(server.addr, "POST", &path, &text, offer).await.status,
        415
    );
    // SDP, but nothing a publisher could send (no media, no ICE).
    let r = http(server.addr, "POST", &path, sdp, offer).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("offer"), "{}", r.text());
    assert_eq!(
        http(server.addr, "PATCH", &path, sdp, b"").await.status,
        405
    );
    let r = http(
        server.addr,
        "DELETE",
        &format!("{path}/publishers/pb_x"),
        sdp,
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());

    // While PushAudio feeds the session (LISTENING), WHIP is refused (and
    // the other way round: opus_voice_barges_in_on_text_and_one_stream_feeds_a_session).
    let mut watch = c.watch(&s.session_id).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(start_msg(&s.session_id, v1::AudioEncoding::PcmS16le, 16000))
        .await
        .unwrap();
    tx.send(data_msg(vec![0; 6400])).await.unwrap();
    let mut c2 = server.dev().await;
    let push = tokio::spawn(async move {
        c2.sessions
            .push_audio(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let events = events_until(&mut watch, Duration::from_secs(10), |e| {
        is_state(e, v1::SessionState::Listening)
    })
    .await;
    assert!(
        is_state(events.last().unwrap(), v1::SessionState::Listening),
        "{events:?}"
    );
    let r = http(server.addr, "POST", &path, sdp, offer).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("another PushAudio or WHIP stream"),
        "{}",
        r.text()
    );
    drop(tx);
    push.await.unwrap().unwrap();
    server.stop().await;
}
