//! The studio console in a real browser: `web-demo/tests/console.e2e.mjs`
//! (Playwright driving Debian's Chromium) walks the whole flow against this
//! server — wrong key, enrollment by drag-and-drop with and without consent,
//! a photo without a face, an oversize file, a session played in the
//! embedded player, typed speech with subtitles, Interrupt, the viewer link,
//! recording from the Outputs panel and playing the recording in the page,
//! a WHIP destination nobody answers (shown reconnecting, with the reason),
//! closing and deleting. Screenshots go to `target/tmp/artifacts/`.

use crate::common::*;
use std::path::Path;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_walks_enroll_speak_watch() {
    // A small image limit, so an oversize file is quick to make and send.
    let server = TestServer::start_with(|c| c.limits.max_image_bytes = 1024 * 1024).await;
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-demo");
    assert!(
        web.join("node_modules/playwright-core").exists(),
        "web-demo/node_modules is missing: run scripts/setup.sh --test (npm ci in web-demo)"
    );
    let files = tempfile::tempdir().unwrap();
    let portrait_path = files.path().join("astronaut.png");
    std::fs::write(&portrait_path, portrait()).unwrap();
    let no_face = files.path().join("suit.png");
    std::fs::write(&no_face, no_face_png()).unwrap();
    // A PNG signature and 3 MiB of bytes: larger than the server takes.
    let oversize = files.path().join("huge.png");
    let mut big = b"\x89PNG\r\n\x1a\n".to_vec();
    big.resize(3 * 1024 * 1024, 7);
    std::fs::write(&oversize, big).unwrap();
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");

    let script = web.join("tests/console.e2e.mjs");
    // Chromium reads its fake microphone from a plain absolute path: speech
    // by a voice the lip-sync model never heard.
    let microphone_wav = files.path().join("host.wav");
    huashen_inference::wav::write_pcm16(&microphone_wav, 16000, &held_out_speech()).unwrap();
    let mouth = mouth_box(512, 512);
    let mouth = format!("{},{},{},{}", mouth[0], mouth[1], mouth[2], mouth[3]);
    let url = server.url();
    let key = server.dev_key.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("HUASHEN_URL", url)
            .env("HUASHEN_DEV_KEY", key)
            .env("PORTRAIT", &portrait_path)
            .env("NO_FACE", &no_face)
            .env("OVERSIZE", &oversize)
            .env("ARTIFACTS", &artifacts)
            .env("MICROPHONE_WAV", microphone_wav)
            .env("MOUTH_BOX", mouth)
            .output()
            .expect("node runs (Debian package nodejs)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the console walk-through failed:\n{stderr}\n{stdout}"
    );
    let found: serde_json::Value =
        serde_json::from_str(stdout.trim().lines().last().unwrap_or("")).unwrap();
    println!(
        "time to first frame {} ms, Interrupt to idle {} ms, A/V offset {} ms",
        found["ttffMs"], found["interruptMs"], found["avOffsetMs"]
    );
    server.stop().await;
}
