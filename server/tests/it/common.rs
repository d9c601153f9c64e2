//! Shared harness: a server in a temporary data directory, and clients that
//! send an API key.

#![allow(dead_code)]

use huashen::app::{Running, start};
use huashen::config::Config;
use huashen_protos::v1;
use huashen_protos::v1::avatar_service_client::AvatarServiceClient;
use huashen_protos::v1::session_service_client::SessionServiceClient;
use std::time::Duration;
use tonic::service::Interceptor;
use tonic::transport::Channel;

pub struct TestServer {
    pub running: Option<Running>,
    pub addr: std::net::SocketAddr,
    pub dev_key: String,
    pub dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.shutdown_grace = Duration::from_secs(5);
    c.storage.data_dir = dir.to_path_buf();
    // The models fetched by scripts/fetch-models.sh (setup runs it).
    c.speech.models_dir = models_dir();
    c.face.models_dir = models_dir();
    // Tests run side by side on a small machine in a debug build: admission
    // by measured capacity is tested on its own (metrics.rs), not here.
    c.limits.cpu_budget = 64.0;
    c
}

/// The test portrait as the server keeps it, and its face record.
fn analysed_portrait() -> (image::RgbImage, huashen::engines::face::FaceRecord) {
    use huashen::engines::{face, portrait};
    let engine = face::FaceEngine::load(&models_dir());
    let img = portrait::decode(&portrait()).unwrap();
    let kept = portrait::decode(&portrait::normalise(&img).unwrap())
        .unwrap()
        .to_rgb8();
    let record = engine.analyze(&kept).unwrap();
    (kept, record)
}

/// The test portrait's avatar at rest, as a session renders it.
pub fn rest_frame(w: u32, h: u32) -> image::RgbImage {
    let (kept, record) = analysed_portrait();
    huashen::engines::face::rest_frame(&kept, &record, w, h)
}

/// Where the test avatar's mouth is in a `w`×`h` session picture: the box
/// of its lips at rest, grown a little (x0, y0, x1, y1).
pub fn mouth_box(w: u32, h: u32) -> [usize; 4] {
    use huashen_inference::face::rig::Framing;
    let (_, record) = analysed_portrait();
    let framing = Framing::head_and_shoulders(&record.landmarks, w, h);
    let pts: Vec<[f32; 2]> = [61, 291, 0, 17]
        .iter()
        .map(|&i| framing.to_output([record.landmarks[i][0], record.landmarks[i][1]]))
        .collect();
    let grow = (pts[1][0] - pts[0][0]) * 0.1;
    let x0 = pts.iter().map(|p| p[0]).fold(f32::MAX, f32::min) - grow;
    let x1 = pts.iter().map(|p| p[0]).fold(f32::MIN, f32::max) + grow;
    let y0 = pts.iter().map(|p| p[1]).fold(f32::MAX, f32::min) - grow;
    let y1 = pts.iter().map(|p| p[1]).fold(f32::MIN, f32::max) + 4.0 * grow;
    [x0 as usize, y0 as usize, x1 as usize, y1 as usize]
}

/// Speech by a voice the lip-sync model never heard in training (espeak-ng
/// `en-us+m7`), two sentences with 1.6 s of low background noise between,
/// at 16 kHz, peak at half of full scale.
pub fn held_out_speech() -> Vec<f32> {
    use huashen_inference::speech::espeak::{EspeakVoice, synthesize};
    let voice = EspeakVoice::new("en-us+m7");
    let say = |t: &str| {
        let s = synthesize(t, &voice).unwrap();
        let mut out = Vec::new();
        let mut r = huashen_inference::resample::Resampler::new(s.sample_rate, 16000);
        r.push(&s.pcm, &mut out);
        r.finish(&mut out);
        out
    };
    let mut audio = say("Good evening, and welcome to the show.");
    // Low noise (about -50 dBFS), not silence: it must not move the mouth.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    audio.extend((0..25_600).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.01
    }));
    audio.extend(say("Tonight we taste three rare teas from the mountains."));
    let peak = audio.iter().fold(0f32, |m, v| m.max(v.abs()));
    audio.iter().map(|v| v / peak * 0.5).collect()
}

/// A decoding WebRTC viewer of `session` watching the test avatar's mouth
/// (512×512 sessions), once it has seen `idle_frames` frames of it.
pub async fn mouth_viewer(
    server: &TestServer,
    session: &v1::Session,
    idle_frames: usize,
) -> huashen_loadtest::viewer::Viewer {
    use huashen_loadtest::viewer::{self, ViewerOptions};
    let v = viewer::connect(
        server.addr,
        &session.session_id,
        &session.viewer_token,
        ViewerOptions {
            decode: true,
            watch: Some(mouth_box(512, 512)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || v.seen().watched.len()
            > idle_frames)
        .await,
        "the viewer saw too few frames"
    );
    v
}

/// Of a watched mouth region over some frames, given as (mean luma, dark
/// share) per frame: the largest dark share (an open mouth shows its dark
/// interior) and the deviation of the luma (the mouth moving).
pub fn mouth_stats(frames: impl IntoIterator<Item = (f64, f64)>) -> (f64, f64) {
    let frames: Vec<(f64, f64)> = frames.into_iter().collect();
    let n = frames.len().max(1) as f64;
    let dark_max = frames.iter().map(|f| f.1).fold(0.0, f64::max);
    let mean = frames.iter().map(|f| f.0).sum::<f64>() / n;
    let sd = (frames.iter().map(|f| (f.0 - mean).powi(2)).sum::<f64>() / n).sqrt();
    (dark_max, sd)
}

pub fn models_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        edit(&mut config);
        let running = start(config).await.expect("server starts");
        Self {
            addr: running.addr,
            dev_key: running.dev_key.clone().expect("dev tenant bootstrapped"),
            running: Some(running),
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connects")
    }

    /// A second tenant's key, created as the CLI does.
    pub fn new_tenant(&self, name: &str) -> String {
        let keys = huashen::store::crypto::Keyring::local(self.dir.path()).unwrap();
        let store = huashen::store::Store::open_embedded(self.dir.path(), keys).unwrap();
        huashen::store::tenants::create_tenant(store.blocking(), name, "test")
            .unwrap()
            .1
    }

    pub async fn client(&self, key: &str) -> Client {
        Client::new(self.channel().await, key)
    }

    pub async fn dev(&self) -> Client {
        self.client(&self.dev_key.clone()).await
    }

    /// Shuts the server down (gracefully) and starts it again on the same
    /// data directory, with the test config changed by `edit`.
    pub async fn restart(&mut self, edit: impl FnOnce(&mut Config)) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
        let mut config = test_config(self.dir.path());
        edit(&mut config);
        let running = start(config).await.expect("server restarts");
        self.addr = running.addr;
        self.running = Some(running);
    }

    /// Asserts an avatar is gone: its record (NOT_FOUND) and its files.
    pub async fn assert_avatar_gone(&self, c: &mut Client, avatar_id: &str) {
        let r = c
            .avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: avatar_id.to_owned(),
            })
            .await;
        assert_eq!(code_of(r).0, tonic::Code::NotFound, "record of {avatar_id}");
        let dir = self.dir.path().join("blobs/avatars").join(avatar_id);
        assert!(!dir.exists(), "files of {avatar_id}");
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }
}

#[derive(Clone)]
pub struct Auth(pub Option<String>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0 {
            req.metadata_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        Ok(req)
    }
}

type Intercepted = tonic::service::interceptor::InterceptedService<Channel, Auth>;

pub struct Client {
    pub avatars: AvatarServiceClient<Intercepted>,
    pub sessions: SessionServiceClient<Intercepted>,
    pub audit: huashen_protos::v1::audit_service_client::AuditServiceClient<Intercepted>,
    pub privacy: huashen_protos::v1::privacy_service_client::PrivacyServiceClient<Intercepted>,
    pub outputs: huashen_protos::v1::output_service_client::OutputServiceClient<Intercepted>,
    pub recordings:
        huashen_protos::v1::recording_service_client::RecordingServiceClient<Intercepted>,
}

impl Client {
    pub fn new(channel: Channel, key: &str) -> Self {
        Self::with_auth(channel, Auth(Some(key.to_owned())))
    }

    pub fn with_auth(channel: Channel, auth: Auth) -> Self {
        Self {
            avatars: AvatarServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(4 << 20)
                .max_encoding_message_size(4 << 20),
            sessions: SessionServiceClient::with_interceptor(channel.clone(), auth.clone()),
            audit: huashen_protos::v1::audit_service_client::AuditServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            privacy:
                huashen_protos::v1::privacy_service_client::PrivacyServiceClient::with_interceptor(
                    channel.clone(),
                    auth.clone(),
                ),
            outputs:
                huashen_protos::v1::output_service_client::OutputServiceClient::with_interceptor(
                    channel.clone(),
                    auth.clone(),
                ),
            recordings:
                huashen_protos::v1::recording_service_client::RecordingServiceClient::with_interceptor(
                    channel, auth,
                ),
        }
    }

    /// Enrolls `image` in chunks; returns all responses (progress + avatar).
    pub async fn enroll_raw(
        &mut self,
        start: v1::EnrollStart,
        chunks: Vec<Vec<u8>>,
    ) -> Result<Vec<v1::EnrollAvatarResponse>, tonic::Status> {
        let mut msgs = vec![v1::EnrollAvatarRequest {
            payload: Some(v1::enroll_avatar_request::Payload::Start(start)),
        }];
        msgs.extend(chunks.into_iter().map(|c| v1::EnrollAvatarRequest {
            payload: Some(v1::enroll_avatar_request::Payload::Chunk(c)),
        }));
        let mut stream = self
            .avatars
            .enroll_avatar(tokio_stream::iter(msgs))
            .await?
            .into_inner();
        let mut out = vec![];
        while let Some(m) = stream.message().await? {
            out.push(m);
        }
        Ok(out)
    }

    /// Speaks `text` (one flushed message) in the session.
    pub async fn say(&mut self, session_id: &str, text: &str) -> v1::SpeakResponse {
        self.sessions
            .speak(tokio_stream::iter(vec![v1::SpeakRequest {
                session_id: session_id.into(),
                text: text.into(),
                flush: true,
            }]))
            .await
            .expect("speaks")
            .into_inner()
    }

    /// Enrolls the test portrait and returns the avatar.
    pub async fn enroll(&mut self, name: &str) -> v1::Avatar {
        let img = portrait();
        let chunks = img.chunks(64 * 1024).map(|c| c.to_vec()).collect();
        let events = self
            .enroll_raw(enroll_start(name, img.len() as u64), chunks)
            .await
            .expect("enrolls");
        avatar_of(&events)
    }

    /// Enrolls the test portrait with `start`, in 64 KiB chunks.
    pub async fn enroll_with(&mut self, start: v1::EnrollStart) -> v1::Avatar {
        let img = portrait();
        let chunks = img.chunks(64 * 1024).map(|c| c.to_vec()).collect();
        avatar_of(&self.enroll_raw(start, chunks).await.expect("enrolls"))
    }

    /// Opens a WatchSession stream and reads its first event (the state at
    /// the time of the call).
    pub async fn watch(&mut self, session_id: &str) -> tonic::Streaming<v1::SessionEvent> {
        let mut w = self
            .sessions
            .watch_session(v1::WatchSessionRequest {
                session_id: session_id.to_owned(),
            })
            .await
            .expect("watch")
            .into_inner();
        w.message()
            .await
            .expect("first event")
            .expect("first event");
        w
    }

    pub async fn create_session(&mut self, avatar_id: &str) -> Result<v1::Session, tonic::Status> {
        self.sessions
            .create_session(v1::CreateSessionRequest {
                avatar_id: avatar_id.to_owned(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// The avatar that ends a successful enrollment stream.
pub fn avatar_of(events: &[v1::EnrollAvatarResponse]) -> v1::Avatar {
    match events.last().and_then(|e| e.event.clone()) {
        Some(v1::enroll_avatar_response::Event::Avatar(a)) => a,
        other => panic!("last event is not the avatar: {other:?}"),
    }
}

pub fn consent() -> v1::ConsentRecord {
    v1::ConsentRecord {
        uploader: "studio operator".into(),
        subject_name: "Zhang Min".into(),
        subject_consented: true,
        subject_is_minor: false,
        guardian_name: String::new(),
        purpose: "product livestreams for the studio's shop".into(),
        consented_at: None,
        policy_version: "2026-11".into(),
    }
}

pub fn enroll_start(name: &str, total: u64) -> v1::EnrollStart {
    v1::EnrollStart {
        display_name: name.into(),
        consent: Some(consent()),
        image_format: v1::ImageFormat::Png as i32,
        total_bytes: total,
        inline_image: vec![],
        labels: [("shop".to_string(), "tea".to_string())].into(),
        keep_original: false,
    }
}

/// The test portrait (see tests/data/README.md).
pub fn portrait() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/astronaut.png"
    ))
    .unwrap()
}

/// The test portrait scaled to 128×128, as PNG (a few tens of kB).
/// The test portrait as a JPEG (quality 80, well under 100 kB).
pub fn jpeg_portrait() -> Vec<u8> {
    let img = image::load_from_memory(&portrait()).unwrap().to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&img)
        .unwrap();
    out
}

/// A real photo with no face in it (the astronaut's suit, below her chin).
pub fn no_face_png() -> Vec<u8> {
    let img = image::load_from_memory(&portrait()).unwrap().to_rgb8();
    let suit = image::imageops::crop_imm(&img, 0, 300, 512, 212).to_image();
    let suit = image::imageops::resize(&suit, 256, 106, image::imageops::FilterType::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    suit.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn small_png() -> Vec<u8> {
    let img = image::load_from_memory(&portrait()).unwrap();
    let small = img.resize_exact(128, 128, image::imageops::FilterType::Triangle);
    let mut out = std::io::Cursor::new(Vec::new());
    small.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn code_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (tonic::Code, String) {
    let s = r.expect_err("expected an error");
    (s.code(), s.message().to_owned())
}

/// Reads a WatchSession stream's events until `stop` says so (or the
/// timeout), returning them.
pub async fn events_until(
    watch: &mut tonic::Streaming<v1::SessionEvent>,
    timeout: Duration,
    mut stop: impl FnMut(&v1::session_event::Event) -> bool,
) -> Vec<v1::session_event::Event> {
    let mut out = vec![];
    let end = tokio::time::Instant::now() + timeout;
    while let Ok(Ok(Some(ev))) = tokio::time::timeout_at(end, watch.message()).await {
        if let Some(e) = ev.event {
            let done = stop(&e);
            out.push(e);
            if done {
                break;
            }
        }
    }
    out
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

pub use huashen_loadtest::http::HttpResponse;

/// One HTTP/1.1 request (see `huashen_loadtest::http`); panics on I/O
/// errors, as a test should.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    huashen_loadtest::http::request(addr, method, path, headers, body, Duration::from_secs(20))
        .await
        .unwrap()
}

/// An output of a session as ListOutputs shows it.
pub async fn output_of(c: &mut Client, session_id: &str, output_id: &str) -> v1::Output {
    c.outputs
        .list_outputs(v1::ListOutputsRequest {
            session_id: session_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .outputs
        .into_iter()
        .find(|o| o.output_id == output_id)
        .unwrap_or_else(|| panic!("no output {output_id}"))
}

/// An output's state and reason.
pub async fn output_state(c: &mut Client, session_id: &str, output_id: &str) -> (i32, String) {
    let o = output_of(c, session_id, output_id).await;
    (o.state, o.reason)
}

/// Whether a tool a test needs is `present`. Missing, it fails the test
/// under CI (`scripts/setup.sh --test` installs it) and elsewhere skips it,
/// saying so.
pub fn require(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing: scripts/setup.sh --test installs it"
        );
        eprintln!("skipped: {what} is not installed (scripts/setup.sh --test)");
    }
    present
}
