//! Speech end to end: Speak → TTS → Opus → a real WebRTC viewer hears it;
//! WatchSession reports the utterance, its words and phonemes; Interrupt
//! stops it at once.

use crate::common::*;
use huashen_loadtest::viewer::{self, ViewerOptions};
use huashen_protos::v1;
use std::time::Duration;

fn speak_req(session_id: &str, text: &str) -> Vec<v1::SpeakRequest> {
    vec![v1::SpeakRequest {
        session_id: session_id.to_owned(),
        text: text.to_owned(),
        flush: true,
    }]
}

fn audio_viewer() -> ViewerOptions {
    ViewerOptions {
        decode: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn spoken_text_is_heard_with_word_events_then_idle() {
    use v1::session_event::Event as E;
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let voices = c
        .sessions
        .list_voices(v1::ListVoicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .voices;
    assert!(
        voices
            .iter()
            .any(|v| v.language == "en-US" && v.sample_rate_hz == 22050),
        "{voices:?}"
    );
    let avatar = c.enroll("Speaker").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let v = viewer::connect(server.addr, &s.session_id, &s.viewer_token, audio_viewer())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || v.seen().audio_decoded
            > 25)
        .await
    );
    assert_eq!(v.seen().audio_loud_frames, 0, "silent before speaking");

    let r = c
        .sessions
        .speak(tokio_stream::iter(speak_req(
            &s.session_id,
            "Hello world. This is Huashen speaking.",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.utterance_ids.len(), 2, "two clauses");
    assert_eq!(
        r.accepted_chars, 37,
        "clause characters, spaces between clauses dropped"
    );

    let mut finished = 0;
    let events = events_until(&mut watch, Duration::from_secs(60), |e| {
        if matches!(e, E::SpeechFinished(_)) {
            finished += 1;
        }
        matches!(e, E::StateChanged(sc) if sc.current == v1::SessionState::Idle as i32 && finished == 2)
    })
    .await;
    let words: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            E::Word(w) => Some(w.word.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        words,
        ["Hello", "world", "This", "is", "Huashen", "speaking"]
    );
    let started: Vec<&v1::SpeechStarted> = events
        .iter()
        .filter_map(|e| match e {
            E::SpeechStarted(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 2);
    assert_eq!(started[0].utterance_id, r.utterance_ids[0]);
    assert_eq!(started[0].text, "Hello world.");
    assert!(started[1].clock_ms > started[0].clock_ms);
    let phonemes = events
        .iter()
        .filter(|e| matches!(e, E::Phoneme(p) if !p.viseme.is_empty()))
        .count();
    assert!(phonemes > 15, "{phonemes} phoneme events");
    let states: Vec<i32> = events
        .iter()
        .filter_map(|e| match e {
            E::StateChanged(sc) => Some(sc.current),
            _ => None,
        })
        .collect();
    assert!(
        states.contains(&(v1::SessionState::Speaking as i32)),
        "{states:?}"
    );
    assert!(
        events.iter().all(|e| !matches!(e, E::Error(_))),
        "{events:?}"
    );

    // The viewer heard about two seconds of speech (20 ms frames).
    assert!(
        eventually(Duration::from_secs(5), async || v.seen().audio_loud_frames
            > 60)
        .await,
        "loud frames: {}, peak rms {}",
        v.seen().audio_loud_frames,
        v.seen().audio_peak_rms
    );
    let peak = v.seen().audio_peak_rms;
    assert!(peak > 0.05 && peak < 0.9, "peak rms {peak}");
    v.hang_up().await;
    server.stop().await;
}

#[tokio::test]
async fn interrupt_silences_speech_at_once() {
    use v1::session_event::Event as E;
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Talker").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let v = viewer::connect(server.addr, &s.session_id, &s.viewer_token, audio_viewer())
        .await
        .unwrap();
    let text = "This is a long announcement that goes on and on. It has several \
                sentences, so there is plenty queued. Nobody should hear the end of it. \
                Really, the end must never be spoken.";
    let r = c
        .sessions
        .speak(tokio_stream::iter(speak_req(&s.session_id, text)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.utterance_ids.len() >= 4);
    let _ = events_until(&mut watch, Duration::from_secs(30), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await;
    assert!(
        eventually(Duration::from_secs(5), async || v.seen().audio_loud_frames
            > 5)
        .await
    );
    let cut = c
        .sessions
        .interrupt(v1::InterruptRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cut.cancelled_utterances >= 2, "{cut:?}");
    let events = events_until(
        &mut watch,
        Duration::from_secs(5),
        |e| matches!(e, E::StateChanged(sc) if sc.current == v1::SessionState::Idle as i32),
    )
    .await;
    assert!(
        events
            .iter()
            .any(|e| matches!(e, E::SpeechFinished(f) if f.interrupted)),
        "{events:?}"
    );
    // Within a few frames (jitter, decoder) the audio is silent and stays so.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = v.seen().audio_loud_frames;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(v.seen().audio_loud_frames, after, "speech after Interrupt");
    // No further utterance starts.
    let later = events_until(&mut watch, Duration::from_millis(500), |_| false).await;
    assert!(
        later.iter().all(|e| !matches!(e, E::SpeechStarted(_))),
        "{later:?}"
    );
    // The session speaks again after an interrupt.
    c.sessions
        .speak(tokio_stream::iter(speak_req(&s.session_id, "Back again.")))
        .await
        .unwrap();
    let again = events_until(&mut watch, Duration::from_secs(30), |e| {
        matches!(e, E::SpeechFinished(_))
    })
    .await;
    assert!(
        again
            .iter()
            .any(|e| matches!(e, E::SpeechFinished(f) if !f.interrupted))
    );
    v.hang_up().await;
    server.stop().await;
}

/// The avatar's mouth, seen by a real viewer decoding the H.264 stream:
/// still while idle, opening and closing (dark mouth interior appearing)
/// while the speech plays.
#[tokio::test]
async fn the_mouth_moves_with_the_speech() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Lips").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mouth = mouth_box(512, 512);
    let v = mouth_viewer(&server, &s, 30).await;
    let idle = v.seen().watched.clone();
    c.sessions
        .speak(tokio_stream::iter(speak_req(
            &s.session_id,
            "Good evening everyone. Welcome to our live show about tea.",
        )))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), async || v.seen().audio_loud_frames
            > 100)
        .await
    );
    // Let the speech play on a little.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen = v.seen();
    let speaking: Vec<_> = seen.watched[idle.len()..].to_vec();
    let (idle_dark, idle_sd) = mouth_stats(idle[5..].iter().map(|w| (w.2, w.3)));
    let (talk_dark, talk_sd) = mouth_stats(speaking.iter().map(|w| (w.2, w.3)));
    eprintln!(
        "mouth box {mouth:?}: idle dark≤{idle_dark:.3} sd {idle_sd:.2}; speaking dark≤{talk_dark:.3} sd {talk_sd:.2} over {} frames",
        speaking.len()
    );
    assert!(idle_dark < 0.02, "the idle mouth is closed");
    assert!(talk_dark > 0.04, "the mouth opens while speaking");
    assert!(
        talk_sd > 3.0 * idle_sd.max(0.3),
        "the mouth moves while speaking"
    );
    server.stop().await;
}

/// A Mandarin session speaks Chinese (with an English word inside) to a
/// WebRTC viewer: audio is heard, word events are the characters and the
/// English word, phonemes carry visemes.
#[tokio::test]
async fn mandarin_is_heard_with_character_events() {
    use v1::session_event::Event as E;
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let voices = c
        .sessions
        .list_voices(v1::ListVoicesRequest {})
        .await
        .unwrap()
        .into_inner()
        .voices;
    assert!(
        voices
            .iter()
            .any(|v| v.language == "zh-CN" && v.sample_rate_hz == 24000),
        "{voices:?}"
    );
    let avatar = c.enroll("Host").await;
    let s = c
        .sessions
        .create_session(v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id,
            voice: Some(v1::VoiceOptions {
                language: "zh-CN".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut watch = c.watch(&s.session_id).await;
    let v = viewer::connect(server.addr, &s.session_id, &s.viewer_token, audio_viewer())
        .await
        .unwrap();
    c.sessions
        .speak(tokio_stream::iter(speak_req(
            &s.session_id,
            "欢迎来到直播间，今天聊聊Huashen。",
        )))
        .await
        .unwrap();
    // Two clauses (split at the comma).
    let mut finished = 0;
    let events = events_until(&mut watch, Duration::from_secs(60), |e| {
        finished += usize::from(matches!(e, E::SpeechFinished(_)));
        finished == 2
    })
    .await;
    let words: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            E::Word(w) => Some(w.word.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        words,
        [
            "欢", "迎", "来", "到", "直", "播", "间", "今", "天", "聊", "聊", "Huashen"
        ]
    );
    let visemes = events
        .iter()
        .filter(|e| matches!(e, E::Phoneme(p) if p.viseme != "sil"))
        .count();
    assert!(visemes > 15, "{visemes} phoneme events with a mouth shape");
    assert!(
        eventually(Duration::from_secs(10), async || v.seen().audio_loud_frames
            > 25)
        .await,
        "the viewer hears the speech"
    );
    server.stop().await;
}
