//! Recording a live session (OutputService) and the recordings kept
//! (RecordingService): what is downloaded is checked by ffmpeg's tools,
//! and recordings follow the subject's export and deletion.

use crate::common::*;
use huashen_protos::v1;
use std::time::Duration;

pub(crate) fn recording_output(session_id: &str) -> v1::AddOutputRequest {
    v1::AddOutputRequest {
        session_id: session_id.into(),
        kind: Some(v1::add_output_request::Kind::Recording(
            v1::RecordingOutput {},
        )),
    }
}

pub(crate) async fn download(c: &mut Client, recording_id: &str) -> Vec<u8> {
    let mut stream = c
        .recordings
        .download_recording(v1::DownloadRecordingRequest {
            recording_id: recording_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut file = vec![];
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(!chunk.data.is_empty() && chunk.data.len() <= 64 * 1024);
        file.extend(chunk.data);
    }
    file
}

/// `ffprobe`'s streams and format of a file, as JSON.
pub(crate) fn ffprobe(path: &std::path::Path) -> serde_json::Value {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_streams",
            "-show_format",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian package ffmpeg; scripts/setup.sh --test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The loudest audio sample of a file in dBFS, as ffmpeg's `volumedetect`
/// measures it.
pub(crate) fn max_volume_db(path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-nostats", "-i"])
        .arg(path)
        .args(["-vn", "-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let log = String::from_utf8_lossy(&out.stderr);
    log.lines()
        .find_map(|l| l.split("max_volume: ").nth(1))
        .and_then(|v| v.trim_end_matches(" dB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no max_volume in ffmpeg's output: {log}"))
}

/// A recording keeps the session's time: between any two labelled frames
/// the SEI labels' wall-clock times (stamped by the session as it encoded
/// them) advance as the frames' timestamps do, within one frame; and its
/// sound and picture start and end together, within one frame.
fn session_time_and_sync(path: &std::path::Path, probe: &serde_json::Value) {
    const FRAME: f64 = 0.04;
    let stream = |kind: &str| {
        probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == kind)
            .unwrap()
            .clone()
    };
    let secs = |v: &serde_json::Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let (video, audio) = (stream("video"), stream("audio"));
    let (v0, a0) = (secs(&video["start_time"]), secs(&audio["start_time"]));
    let (v1, a1) = (v0 + secs(&video["duration"]), a0 + secs(&audio["duration"]));
    assert!(
        (v0 - a0).abs() <= FRAME,
        "video starts at {v0} s, audio at {a0} s"
    );
    assert!(
        (v1 - a1).abs() <= FRAME,
        "video ends at {v1} s, audio at {a1} s"
    );

    // Which frames carry an unregistered-user-data SEI, as ffprobe sees
    // them, and the times our labels say, in file order.
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-select_streams", "v"])
        .args([
            "-show_entries",
            "frame=pts_time:frame_side_data=side_data_type",
        ])
        .arg(path)
        .output()
        .unwrap();
    let frames: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let labelled: Vec<f64> = frames["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["side_data_list"].to_string().contains("Unregistered"))
        .map(|f| secs(&f["pts_time"]))
        .collect();
    let bytes = std::fs::read(path).unwrap();
    let uuid = huashen_protos::sei::AI_LABEL_UUID;
    let stamped: Vec<f64> = (0..bytes.len() - 16)
        .filter(|&i| bytes[i..i + 16] == uuid)
        .map(|i| {
            let json = &bytes[i + 16..];
            let end = json.iter().position(|&b| b == b'}').unwrap() + 1;
            let label: serde_json::Value = serde_json::from_slice(&json[..end]).unwrap();
            label["time_ms"].as_f64().unwrap() / 1000.0
        })
        .collect();
    assert_eq!(labelled.len(), stamped.len(), "{labelled:?} {stamped:?}");
    assert!(labelled.len() >= 4, "{labelled:?}");
    // Encoding jitter only ever delays a stamp: compare the earliest
    // (least delayed) offsets of the first and the last labels.
    let offsets: Vec<f64> = stamped.iter().zip(&labelled).map(|(w, p)| w - p).collect();
    let k = (offsets.len() / 3).max(1);
    let least = |o: &[f64]| o.iter().cloned().fold(f64::INFINITY, f64::min);
    let drift = least(&offsets[offsets.len() - k..]) - least(&offsets[..k]);
    assert!(
        drift.abs() <= FRAME,
        "the recording's time drifts {drift:.3} s from the session's: {offsets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_downloads_as_a_file_ffprobe_plays_and_follows_the_subject() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Recorded host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;

    let out = c
        .outputs
        .add_output(recording_output(&s.session_id))
        .await
        .unwrap()
        .into_inner();
    assert!(out.output_id.starts_with("ou_") && out.recording_id.starts_with("rc_"));
    assert!(matches!(out.kind, Some(v1::output::Kind::Recording(_))));
    // One recording per session at a time.
    let (code, msg) = code_of(c.outputs.add_output(recording_output(&s.session_id)).await);
    assert_eq!(code, tonic::Code::AlreadyExists, "{msg}");

    c.say(
        &s.session_id,
        "Welcome to the show. Tonight we taste three green teas.",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let listed = c
        .outputs
        .list_outputs(v1::ListOutputsRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .outputs;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, v1::OutputState::Live as i32, "{listed:?}");
    assert!(listed[0].bytes > 10_000, "{listed:?}");
    // Not deletable while it is written.
    let (code, _) = code_of(
        c.recordings
            .delete_recording(v1::DeleteRecordingRequest {
                recording_id: out.recording_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::FailedPrecondition);

    let stopped = c
        .outputs
        .remove_output(v1::RemoveOutputRequest {
            output_id: out.output_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        stopped.state,
        v1::OutputState::Stopped as i32,
        "{stopped:?}"
    );
    // Watchers saw it start, go live and stop.
    use v1::session_event::Event as E;
    let seen: Vec<i32> = events_until(
        &mut watch,
        Duration::from_secs(5),
        |e| matches!(e, E::OutputChanged(o) if o.state == v1::OutputState::Stopped as i32),
    )
    .await
    .into_iter()
    .filter_map(|e| match e {
        E::OutputChanged(o) if o.output_id == out.output_id => Some(o.state),
        _ => None,
    })
    .collect();
    assert_eq!(
        seen,
        [
            v1::OutputState::Starting,
            v1::OutputState::Live,
            v1::OutputState::Stopped
        ]
        .map(|s| s as i32)
        .to_vec()
    );
    let rec = c
        .recordings
        .get_recording(v1::GetRecordingRequest {
            recording_id: out.recording_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rec.ended_at.is_some(), "{rec:?}");
    assert_eq!(rec.avatar_id, avatar.avatar_id);
    assert!(rec.duration_ms >= 4000, "{rec:?}");

    // What is downloaded is what ffprobe calls H.264 + Opus, as long as
    // the record says within one frame, with the host's speech in it.
    let file = download(&mut c, &out.recording_id).await;
    assert_eq!(file.len() as u64, rec.bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rec.mp4");
    std::fs::write(&path, &file).unwrap();
    let probe = ffprobe(&path);
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(codecs, vec!["h264", "opus"], "{probe}");
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (duration - rec.duration_ms as f64 / 1000.0).abs() <= 0.04,
        "ffprobe {duration} s, record {} ms",
        rec.duration_ms
    );
    let loudest = max_volume_db(&path);
    assert!(loudest > -30.0, "the recording is silent: {loudest} dB");
    session_time_and_sync(&path, &probe);
    // Nothing of it is readable at rest.
    let stored: Vec<_> = std::fs::read_dir(server.dir.path().join("blobs/recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1);
    let raw = std::fs::read(&stored[0]).unwrap();
    assert!(!raw.windows(4).any(|w| w == b"moof" || w == b"ftyp"));

    // Over HTTP: the download path of GetRecording, with byte ranges.
    let rec = c
        .recordings
        .get_recording(v1::GetRecordingRequest {
            recording_id: out.recording_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let path = rec.download_path.clone();
    let whole = http(server.addr, "GET", &path, &[], b"").await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.body, file);
    let part = http(
        server.addr,
        "GET",
        &path,
        &[("Range", "bytes=100-1099")],
        b"",
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, file[100..1100]);
    let total = file.len();
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-1099/{total}").as_str())
    );
    let tail = http(server.addr, "GET", &path, &[("Range", "bytes=-10")], b"").await;
    assert_eq!(
        (tail.status, tail.body.as_slice()),
        (206, &file[total - 10..])
    );
    let bad = format!("bytes={}-", total + 5);
    let past = http(server.addr, "GET", &path, &[("Range", bad.as_str())], b"").await;
    assert_eq!(past.status, 416);
    let file_path = format!("/recordings/{}/file", out.recording_id);
    let keyed = format!("Bearer {}", server.dev_key);
    let by_key = http(
        server.addr,
        "GET",
        &file_path,
        &[("Authorization", keyed.as_str())],
        b"",
    )
    .await;
    assert_eq!((by_key.status, by_key.body.len()), (200, total));
    assert_eq!(
        http(server.addr, "GET", &file_path, &[], b"").await.status,
        401
    );
    let forged = format!("{file_path}?token=AAAA");
    assert_eq!(
        http(server.addr, "GET", &forged, &[], b"").await.status,
        401
    );
    let other = format!("Bearer {}", server.new_tenant("someone-else"));
    let theirs = http(
        server.addr,
        "GET",
        &file_path,
        &[("Authorization", other.as_str())],
        b"",
    )
    .await;
    assert_eq!(theirs.status, 404);

    let listed = c
        .recordings
        .list_recordings(v1::ListRecordingsRequest {
            avatar_id: avatar.avatar_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .recordings;
    assert_eq!(listed.len(), 1);
    let audit = c
        .audit
        .list_audit_entries(v1::ListAuditEntriesRequest {
            target: out.recording_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for want in ["recording.start", "recording.read", "recording.download"] {
        assert!(actions.contains(&want), "{actions:?}");
    }

    // The subject's export carries the recording; deletion removes it.
    let files = crate::privacy::export(&mut c, &avatar.avatar_id).await;
    let key = format!("recordings/{}.mp4", out.recording_id);
    assert_eq!(files.get(&key), Some(&file), "{:?}", files.keys());
    let erased = c
        .privacy
        .delete_subject_data(v1::DeleteSubjectDataRequest {
            avatar_id: avatar.avatar_id.clone(),
            confirm: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.deleted_recordings, 1);
    let (code, _) = code_of(
        c.recordings
            .get_recording(v1::GetRecordingRequest {
                recording_id: out.recording_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    assert!(!stored[0].exists());
    server.stop().await;
}

#[tokio::test]
async fn outputs_refuse_bad_requests_with_clear_errors() {
    let server = TestServer::start_with(|c| c.limits.max_outputs_per_session = 1).await;
    let mut c = server.dev().await;
    let mut other = server.client(&server.new_tenant("other")).await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();

    let (code, msg) = code_of(
        c.outputs
            .add_output(v1::AddOutputRequest {
                session_id: s.session_id.clone(),
                kind: None,
            })
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument, "{msg}");
    // Another tenant's session is unknown to the caller.
    let (code, _) = code_of(
        other
            .outputs
            .add_output(recording_output(&s.session_id))
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    let (code, _) = code_of(c.outputs.add_output(recording_output("se_nope")).await);
    assert_eq!(code, tonic::Code::InvalidArgument);

    let out = c
        .outputs
        .add_output(recording_output(&s.session_id))
        .await
        .unwrap()
        .into_inner();
    // The limit counts running outputs of the session.
    let (code, msg) = code_of(c.outputs.add_output(recording_output(&s.session_id)).await);
    assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");
    let (code, _) = code_of(
        other
            .outputs
            .remove_output(v1::RemoveOutputRequest {
                output_id: out.output_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    let (code, _) = code_of(
        other
            .recordings
            .download_recording(v1::DownloadRecordingRequest {
                recording_id: out.recording_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);

    // Closing the session ends the recording, and no output starts on a
    // closed session.
    c.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap();
    let ended = eventually(Duration::from_secs(5), async || {
        c.recordings
            .get_recording(v1::GetRecordingRequest {
                recording_id: out.recording_id.clone(),
            })
            .await
            .is_ok_and(|r| r.into_inner().ended_at.is_some())
    })
    .await;
    assert!(ended, "the recording did not end with its session");
    let (code, msg) = code_of(c.outputs.add_output(recording_output(&s.session_id)).await);
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    server.stop().await;
}

/// A server killed (SIGKILL) mid-recording leaves a file ffprobe accepts,
/// and the next start ends its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_recording_leaves_a_playable_file() {
    use crate::process::{client, serve_with};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, key) = serve_with(dir.path(), true, &[]);
    let key = key.expect("dev key");
    let mut c = client(&addr, &key).await;
    let avatar = c.enroll("Killed host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let out = c
        .outputs
        .add_output(recording_output(&s.session_id))
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_secs(4)).await;
    child.kill().unwrap();
    tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();

    let (mut again, addr, _) = serve_with(dir.path(), false, &[]);
    let mut c = client(&addr, &key).await;
    let rec = c
        .recordings
        .get_recording(v1::GetRecordingRequest {
            recording_id: out.recording_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rec.ended_at.is_some(), "the restart ends it: {rec:?}");
    let file = download(&mut c, &out.recording_id).await;
    let path = dir.path().join("killed.mp4");
    std::fs::write(&path, &file).unwrap();
    let probe = ffprobe(&path);
    assert_eq!(probe["streams"].as_array().unwrap().len(), 2, "{probe}");
    let duration: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(duration >= 2.0, "only {duration} s survived the kill");
    again.kill().unwrap();
    let _ = again.wait();
}

/// Outputs can start with the session (CreateSession's `outputs`); a bad
/// one refuses the whole call before any session exists.
#[tokio::test]
async fn create_session_starts_its_outputs() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c
        .sessions
        .create_session(v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id.clone(),
            outputs: vec![recording_output("")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let outputs = c
        .outputs
        .list_outputs(v1::ListOutputsRequest {
            session_id: s.session_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .outputs;
    assert_eq!(outputs.len(), 1);
    assert!(!outputs[0].recording_id.is_empty());

    let open = || async {
        let mut sessions = server.dev().await.sessions;
        sessions
            .list_sessions(v1::ListSessionsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sessions
            .len()
    };
    let before = open().await;
    let bad = v1::AddOutputRequest {
        session_id: String::new(),
        kind: Some(v1::add_output_request::Kind::Rtmp(v1::RtmpOutput {
            url: "ftp://nope/app".into(),
            stream_key: "k".into(),
        })),
    };
    let (code, msg) = code_of(
        c.sessions
            .create_session(v1::CreateSessionRequest {
                avatar_id: avatar.avatar_id.clone(),
                outputs: vec![recording_output(""), bad],
                ..Default::default()
            })
            .await,
    );
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(msg.starts_with("outputs[1]: rtmp.url"), "{msg}");
    assert_eq!(open().await, before, "no session was created");
    server.stop().await;
}
