//! One session's part of a run: set up, driven (Interrupt, Speak, streamed
//! text), watched by its viewers, closed.

use super::client::Svc;
use super::viewer;
use huashen_protos::v1;
use huashen_protos::v1::output_service_client::OutputServiceClient;
use huashen_protos::v1::session_service_client::SessionServiceClient;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct SessionPlan {
    pub(crate) avatar_id: String,
    pub(crate) duration: Duration,
    pub(crate) period: Duration,
    pub(crate) speak: Option<String>,
    pub(crate) words_per_second: Option<f64>,
    pub(crate) viewers: usize,
    pub(crate) viewer_options: viewer::ViewerOptions,
    pub(crate) whep_addr: std::net::SocketAddr,
    pub(crate) barrier: Arc<tokio::sync::Barrier>,
    /// Record the session, through this client.
    pub(crate) record: Option<OutputServiceClient<Svc>>,
    /// Push the session to this WHIP endpoint (URL, token).
    pub(crate) whip: Option<(OutputServiceClient<Svc>, String, String)>,
    /// Push the session to this RTMP server (URL, key).
    pub(crate) rtmp: Option<(OutputServiceClient<Svc>, String, String)>,
}

#[derive(Default)]
pub(crate) struct OneSession {
    pub(crate) create: Option<Duration>,
    pub(crate) first_event: Option<Duration>,
    pub(crate) interrupts: Vec<Duration>,
    pub(crate) speech_started: Vec<Duration>,
    pub(crate) speech_heard: Vec<Duration>,
    pub(crate) speech_seen: Vec<Duration>,
    pub(crate) finished: usize,
    pub(crate) interrupt_to_idle: Vec<Duration>,
    pub(crate) close: Option<Duration>,
    pub(crate) seen: Vec<viewer::Seen>,
    pub(crate) errors: Vec<String>,
}

/// Opens one session with its viewers, waits for every other session to be
/// ready too, drives it for the duration, then closes it.
pub(crate) async fn drive_session(
    mut client: SessionServiceClient<Svc>,
    plan: SessionPlan,
) -> OneSession {
    let mut out = OneSession::default();
    let setup = setup_session(&mut client, &plan, &mut out).await;
    plan.barrier.wait().await;
    let Some((id, viewers)) = setup else {
        return out;
    };
    let end = Instant::now() + plan.duration;
    let mut tick = tokio::time::interval(plan.period);
    if let Some(text) = &plan.speak {
        let mut watch = match client
            .watch_session(v1::WatchSessionRequest {
                session_id: id.clone(),
            })
            .await
        {
            Ok(w) => Some(w.into_inner()),
            Err(e) => {
                out.errors.push(format!("WatchSession: {}", e.message()));
                None
            }
        };
        while let Some(w) = watch.as_mut()
            && Instant::now() < end
        {
            match plan.words_per_second {
                Some(wps) => {
                    speak_streamed(&mut client, w, &id, text, wps, &viewers, &mut out).await
                }
                None => {
                    tick.tick().await;
                    speak_once(&mut client, w, &id, text, &viewers, &mut out).await;
                }
            }
        }
    }
    while plan.speak.is_none() && Instant::now() < end {
        tick.tick().await;
        let t = Instant::now();
        match client
            .interrupt(v1::InterruptRequest {
                session_id: id.clone(),
            })
            .await
        {
            Ok(_) => out.interrupts.push(t.elapsed()),
            Err(e) => out.errors.push(format!("Interrupt: {}", e.message())),
        }
    }
    for v in viewers {
        out.seen.push(v.seen());
        if v.hang_up().await != 200 {
            out.errors.push("WHEP DELETE failed".into());
        }
    }
    let t = Instant::now();
    match client
        .close_session(v1::CloseSessionRequest { session_id: id })
        .await
    {
        Ok(_) => out.close = Some(t.elapsed()),
        Err(e) => out.errors.push(format!("CloseSession: {}", e.message())),
    }
    out
}

/// Waits for the first event `want` accepts (at most `timeout`).
pub(crate) async fn wait_event(
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    timeout: Duration,
    mut want: impl FnMut(&v1::session_event::Event) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while let Ok(Ok(Some(ev))) = tokio::time::timeout_at(end, watch.message()).await {
        if ev.event.as_ref().is_some_and(&mut want) {
            return true;
        }
    }
    false
}

/// One utterance: Speak, see it start (events) and be heard (viewers), let
/// it play a second, Interrupt, see the session idle.
pub(crate) async fn speak_once(
    client: &mut SessionServiceClient<Svc>,
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    id: &str,
    text: &str,
    viewers: &[viewer::Viewer],
    out: &mut OneSession,
) {
    use v1::session_event::Event as E;
    let t0 = Instant::now();
    let wall0 = viewer::unix_now();
    let req = v1::SpeakRequest {
        session_id: id.to_owned(),
        text: text.to_owned(),
        flush: true,
    };
    if let Err(e) = client.speak(tokio_stream::iter(vec![req])).await {
        out.errors
            .push(format!("Speak: {:?} {}", e.code(), e.message()));
        return;
    }
    if wait_event(watch, Duration::from_secs(20), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await
    {
        out.speech_started.push(t0.elapsed());
    } else {
        out.errors.push("no SpeechStarted within 20 s".into());
        return;
    }
    heard_and_seen(viewers, wall0, out).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t1 = Instant::now();
    if let Err(e) = client
        .interrupt(v1::InterruptRequest {
            session_id: id.to_owned(),
        })
        .await
    {
        out.errors.push(format!("Interrupt: {}", e.message()));
        return;
    }
    out.interrupts.push(t1.elapsed());
    if wait_event(
        watch,
        Duration::from_secs(5),
        |e| matches!(e, E::StateChanged(s) if s.current == v1::SessionState::Idle as i32),
    )
    .await
    {
        out.interrupt_to_idle.push(t1.elapsed());
    } else {
        // The utterance may have ended on its own before the Interrupt.
        out.interrupt_to_idle.push(t1.elapsed());
    }
}

/// Each viewer's first speech onset, and first frame with the mouth open,
/// after `wall0` (Unix seconds) — waiting at most 5 s.
pub(crate) async fn heard_and_seen(viewers: &[viewer::Viewer], wall0: f64, out: &mut OneSession) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut hearing: Vec<&viewer::Viewer> = viewers.iter().collect();
    let mut seeing: Vec<&viewer::Viewer> = viewers
        .iter()
        .filter(|v| v.watched_region().is_some())
        .collect();
    while !(hearing.is_empty() && seeing.is_empty()) && Instant::now() < deadline {
        hearing.retain(
            |v| match v.seen().speech_onsets.iter().find(|&&t| t >= wall0) {
                Some(&t) => {
                    out.speech_heard
                        .push(Duration::from_secs_f64((t - wall0).max(0.0)));
                    false
                }
                None => true,
            },
        );
        seeing.retain(|v| match v.seen().mouth_opened_after(wall0) {
            Some(t) => {
                out.speech_seen
                    .push(Duration::from_secs_f64((t - wall0).max(0.0)));
                false
            }
            None => true,
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One pass over `text`, streamed word by word at `wps` in one Speak call
/// while the speech plays; returns when it has all been spoken.
pub(crate) async fn speak_streamed(
    client: &mut SessionServiceClient<Svc>,
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    id: &str,
    text: &str,
    wps: f64,
    viewers: &[viewer::Viewer],
    out: &mut OneSession,
) {
    use v1::session_event::Event as E;
    let words: Vec<String> = text.split_whitespace().map(|w| format!("{w} ")).collect();
    let n = words.len();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let gap = Duration::from_secs_f64(1.0 / wps.max(0.1));
    let sid = id.to_owned();
    tokio::spawn(async move {
        for (i, w) in words.into_iter().enumerate() {
            let req = v1::SpeakRequest {
                session_id: sid.clone(),
                text: w,
                flush: i + 1 == n,
            };
            if tx.send(req).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let t0 = Instant::now();
    let wall0 = viewer::unix_now();
    let mut call_client = client.clone();
    let call = tokio::spawn(async move {
        call_client
            .speak(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    if wait_event(watch, Duration::from_secs(20), |e| {
        matches!(e, E::SpeechStarted(_))
    })
    .await
    {
        out.speech_started.push(t0.elapsed());
    } else {
        out.errors.push("no SpeechStarted within 20 s".into());
    }
    heard_and_seen(viewers, wall0, out).await;
    let ids = match call.await {
        Ok(Ok(r)) => r.into_inner().utterance_ids,
        Ok(Err(e)) => {
            out.errors
                .push(format!("Speak: {:?} {}", e.code(), e.message()));
            return;
        }
        Err(e) => {
            out.errors.push(format!("Speak task: {e}"));
            return;
        }
    };
    // Played out: the last clause's SpeechFinished.
    let Some(last) = ids.last().cloned() else {
        return;
    };
    let budget = Duration::from_secs_f64(30.0 + n as f64 / wps.max(0.1));
    if wait_event(
        watch,
        budget,
        |e| matches!(e, E::SpeechFinished(f) if f.utterance_id == last),
    )
    .await
    {
        out.finished += 1;
    } else {
        out.errors.push("streamed speech did not finish".into());
    }
}

pub(crate) async fn setup_session(
    client: &mut SessionServiceClient<Svc>,
    plan: &SessionPlan,
    out: &mut OneSession,
) -> Option<(String, Vec<viewer::Viewer>)> {
    let t = Instant::now();
    let session = match client
        .create_session(v1::CreateSessionRequest {
            avatar_id: plan.avatar_id.clone(),
            ..Default::default()
        })
        .await
    {
        Ok(s) => s.into_inner(),
        Err(e) => {
            out.errors
                .push(format!("CreateSession: {:?} {}", e.code(), e.message()));
            return None;
        }
    };
    out.create = Some(t.elapsed());
    let id = session.session_id;
    use v1::add_output_request::Kind;
    let mut wanted = vec![];
    if let Some(outputs) = &plan.record {
        let kind = Kind::Recording(v1::RecordingOutput {});
        wanted.push((outputs.clone(), kind, "recording"));
    }
    if let Some((outputs, url, bearer_token)) = plan.whip.clone() {
        let kind = Kind::Whip(v1::WhipOutput { url, bearer_token });
        wanted.push((outputs, kind, "WHIP"));
    }
    if let Some((outputs, url, stream_key)) = plan.rtmp.clone() {
        let kind = Kind::Rtmp(v1::RtmpOutput { url, stream_key });
        wanted.push((outputs, kind, "RTMP"));
    }
    for (mut outputs, kind, what) in wanted {
        let request = v1::AddOutputRequest {
            session_id: id.clone(),
            kind: Some(kind),
        };
        if let Err(e) = outputs.add_output(request).await {
            out.errors.push(format!(
                "AddOutput ({what}): {:?} {}",
                e.code(),
                e.message()
            ));
        }
    }
    let t = Instant::now();
    match client
        .watch_session(v1::WatchSessionRequest {
            session_id: id.clone(),
        })
        .await
    {
        Ok(s) => {
            let mut s = s.into_inner();
            match tokio::time::timeout(Duration::from_secs(5), s.message()).await {
                Ok(Ok(Some(_))) => out.first_event = Some(t.elapsed()),
                other => out
                    .errors
                    .push(format!("WatchSession: no first event ({other:?})")),
            }
        }
        Err(e) => out.errors.push(format!("WatchSession: {}", e.message())),
    }
    let mut viewers = vec![];
    let mut options = plan.viewer_options.clone();
    if options.decode {
        // 0 means the server's default size, 512.
        let size = |v: u32| if v == 0 { 512 } else { v as usize };
        let (w, h) = session
            .output
            .as_ref()
            .map_or((512, 512), |o| (size(o.width), size(o.height)));
        options.watch = Some(viewer::mouth_region(w, h));
    }
    for _ in 0..plan.viewers {
        match viewer::connect(plan.whep_addr, &id, &session.viewer_token, options.clone()).await {
            Ok(v) => viewers.push(v),
            Err(e) => out.errors.push(format!("viewer: {e}")),
        }
    }
    // Let the viewers' connections come up (and, decoding, show pictures)
    // before the window starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = |v: &viewer::Viewer| {
        let s = v.seen();
        s.connected && (!options.decode || s.frames_decoded >= 30)
    };
    while Instant::now() < deadline && !viewers.iter().all(ready) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((id, viewers))
}
