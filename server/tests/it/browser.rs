//! The viewer page in a real browser: headless Chromium (Debian's, driven by
//! chromedriver over WebDriver) plays a session by WHEP; getStats shows
//! decoded video frames and received audio; a screenshot of the playing page
//! is kept in `target/tmp/artifacts/`.

use crate::common::*;
use base64::Engine;
use huashen_protos::v1;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Driver {
    child: Child,
    addr: std::net::SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wd(addr: std::net::SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let body = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let r = http(
        addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert!(
        r.status == 200,
        "WebDriver {method} {path}: {} {}",
        r.status,
        r.text()
    );
    v["value"].clone()
}

async fn start_browser() -> Driver {
    let driver = which("chromedriver");
    let chromium = which("chromium");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = eventually(Duration::from_secs(15), async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
    assert!(up, "chromedriver did not start");
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({"capabilities": {"alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-features=WebRtcHideLocalIpsWithMdns",
                "--window-size=800,600",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    }}});
    let v = wd(addr, "POST", "/session", caps).await;
    let session = v["sessionId"]
        .as_str()
        .expect("WebDriver session")
        .to_owned();
    Driver {
        child,
        addr,
        session,
        _profile: profile,
    }
}

fn which(name: &str) -> String {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::Path::new(dir).join(name);
        if p.exists() {
            return p.display().to_string();
        }
    }
    panic!(
        "{name} is not installed: run scripts/setup.sh --test (Debian packages chromium, chromium-driver)"
    );
}

impl Driver {
    async fn goto(&self, url: &str) {
        wd(
            self.addr,
            "POST",
            &format!("/session/{}/url", self.session),
            json!({"url": url}),
        )
        .await;
    }
    async fn eval(&self, script: &str) -> Value {
        wd(
            self.addr,
            "POST",
            &format!("/session/{}/execute/sync", self.session),
            json!({"script": script, "args": []}),
        )
        .await
    }
    async fn screenshot(&self) -> Vec<u8> {
        let v = wd(
            self.addr,
            "GET",
            &format!("/session/{}/screenshot", self.session),
            Value::Null,
        )
        .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }
    async fn quit(&self) {
        let _ = http(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            b"",
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_session_by_whep() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c
        .sessions
        .create_session(v1::CreateSessionRequest {
            avatar_id: avatar.avatar_id,
            output: Some(v1::OutputOptions {
                width: 640,
                height: 360,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let browser = start_browser().await;
    browser
        .goto(&format!(
            "http://{}/viewer.html?session={}#token={}",
            server.addr, s.session_id, s.viewer_token
        ))
        .await;
    let mut stats = Value::Null;
    let playing = eventually(Duration::from_secs(30), async || {
        stats = browser.eval("return window.huashenViewer || null").await;
        stats["stats"]["framesDecoded"].as_u64().unwrap_or(0) >= 50
            && stats["stats"]["audioPackets"].as_u64().unwrap_or(0) >= 50
    })
    .await;
    assert!(playing, "the page did not play: {stats}");
    assert_eq!(stats["state"], "connected");
    assert_eq!(stats["stats"]["frameWidth"], 640);
    assert_eq!(stats["stats"]["frameHeight"], 360);

    let png = browser.screenshot().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("viewer-playing.png");
    std::fs::write(&shot, &png).unwrap();
    println!("screenshot: {}", shot.display());
    // The portrait is on screen, undimmed: the middle of the page is as
    // bright as the middle of the portrait itself.
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let mean = |img: &image::RgbImage, x0: u32, y0: u32, x1: u32, y1: u32| {
        let mut sum = 0u64;
        for y in y0..y1 {
            for x in x0..x1 {
                sum += img
                    .get_pixel(x, y)
                    .0
                    .iter()
                    .map(|&v| u64::from(v))
                    .sum::<u64>();
            }
        }
        sum as f64 / (3 * (x1 - x0) * (y1 - y0)) as f64
    };
    let shown = mean(&img, w * 3 / 8, h / 4, w * 5 / 8, h * 3 / 4);
    let src = image::load_from_memory(&portrait()).unwrap().to_rgb8();
    let (sw, sh) = src.dimensions();
    let original = mean(&src, sw / 4, sh / 4, sw * 3 / 4, sh * 3 / 4);
    assert!(
        shown > original * 0.7,
        "page centre brightness {shown:.0}, portrait {original:.0}"
    );

    // A wrong token gets a clear message, not a spinner.
    browser
        .goto(&format!(
            "http://{}/viewer.html?session={}#token=wrong",
            server.addr, s.session_id
        ))
        .await;
    let mut v = Value::Null;
    let told = eventually(Duration::from_secs(10), async || {
        v = browser.eval("return window.huashenViewer || null").await;
        v["state"] == "ended"
    })
    .await;
    assert!(told, "{v}");
    assert!(v["error"].as_str().unwrap_or("").contains("token"), "{v}");
    browser.quit().await;
    server.stop().await;
}

/// Two servers on one database: the viewer page is opened on A for a
/// session B runs. A redirects the offer (307) to B's advertised address;
/// Chromium drops the Authorization header on that cross-origin redirect,
/// and the page asks B directly — and plays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_session_another_server_runs() {
    use huashen::store::postgres::testdb::TestDb;
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_with(|c| crate::shared_storage::share(c, &db, dir.path())).await;
    let (b, _) = crate::shared_storage::start_advertised(&db, dir.path()).await;
    let mut cb = b.dev().await;
    let avatar = cb.enroll("Host").await;
    let s = cb.create_session(&avatar.avatar_id).await.unwrap();
    let browser = start_browser().await;
    browser
        .goto(&format!(
            "http://{}/viewer.html?session={}#token={}",
            a.addr, s.session_id, s.viewer_token
        ))
        .await;
    let mut stats = Value::Null;
    let playing = eventually(Duration::from_secs(30), async || {
        stats = browser.eval("return window.huashenViewer || null").await;
        stats["stats"]["framesDecoded"].as_u64().unwrap_or(0) >= 25
    })
    .await;
    assert!(playing, "the page on A did not play B's session: {stats}");
    assert_eq!(stats["state"], "connected");
    // B has the viewer.
    let seen = crate::shared_storage::get_session(&mut cb, &s.session_id)
        .await
        .unwrap();
    assert_eq!(seen.viewer_count, 1);
    browser.quit().await;
    a.stop().await;
    b.stop().await;
}

/// A recording plays in Chromium's `<video>` from GetRecording's
/// `download_path` (range requests: the element seeks), and shows the
/// avatar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_a_recording_and_seeks_in_it() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let out = c
        .outputs
        .add_output(v1::AddOutputRequest {
            session_id: s.session_id.clone(),
            kind: Some(v1::add_output_request::Kind::Recording(
                v1::RecordingOutput {},
            )),
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.outputs
        .remove_output(v1::RemoveOutputRequest {
            output_id: out.output_id,
        })
        .await
        .unwrap();
    let rec = c
        .recordings
        .get_recording(v1::GetRecordingRequest {
            recording_id: out.recording_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rec.download_path.starts_with("/recordings/"), "{rec:?}");

    let browser = start_browser().await;
    browser
        .goto(&format!("http://{}/viewer.html", server.addr))
        .await;
    let script = format!(
        "document.body.innerHTML = ''; document.body.style.margin = '0'; \
         const v = document.createElement('video'); v.id = 'rec'; v.muted = true; \
         v.style.width = '100vw'; v.style.height = '100vh'; v.src = {:?}; \
         document.body.appendChild(v); window.seeked = false; \
         v.addEventListener('seeked', () => window.seeked = true); \
         v.play(); return true",
        rec.download_path
    );
    browser.eval(&script).await;
    let mut state = Value::Null;
    let played = eventually(Duration::from_secs(20), async || {
        state = browser
            .eval(
                "const v = document.getElementById('rec'); return {ready: v.readyState, \
                 w: v.videoWidth, h: v.videoHeight, t: v.currentTime, d: v.duration, \
                 error: v.error && v.error.message}",
            )
            .await;
        state["t"].as_f64().unwrap_or(0.0) > 1.0
    })
    .await;
    assert!(played, "the recording did not play: {state}");
    assert_eq!(
        (state["w"].as_u64(), state["h"].as_u64()),
        (Some(512), Some(512))
    );
    let d = state["d"].as_f64().unwrap();
    assert!(
        (d - rec.duration_ms as f64 / 1000.0).abs() <= 0.1,
        "{state} vs {rec:?}"
    );
    // Seek back to 0.5 s: the element asks for the bytes it needs.
    browser
        .eval(
            "const v = document.getElementById('rec'); v.pause(); v.currentTime = 0.5; return true",
        )
        .await;
    let seeked = eventually(Duration::from_secs(10), async || {
        browser.eval("return window.seeked").await == Value::Bool(true)
    })
    .await;
    assert!(seeked, "the video did not seek");

    let png = browser.screenshot().await;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("recording-playing.png"), &png).unwrap();
    // The avatar is on screen: the middle of the page is not dark.
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let mut sum = 0u64;
    for y in h / 4..h * 3 / 4 {
        for x in w * 3 / 8..w * 5 / 8 {
            sum += img
                .get_pixel(x, y)
                .0
                .iter()
                .map(|&v| u64::from(v))
                .sum::<u64>();
        }
    }
    let mean = sum as f64 / (3 * (h / 2) * (w / 4)) as f64;
    assert!(
        mean > 40.0,
        "the page centre is dark ({mean:.0}): no picture"
    );
    browser.quit().await;
    server.stop().await;
}
