//! The real `huashen` binary: config validation, the tenant CLI, and a
//! served process that drains its sessions on SIGTERM.

use crate::common::*;
use huashen_protos::v1;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_huashen");

pub(crate) fn huashen(dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HUASHEN_STORAGE__DATA_DIR", dir)
        .env("HUASHEN_SERVER__LISTEN", "127.0.0.1:0")
        .env("HUASHEN_LOG", "info")
        .env("HUASHEN_FACE__MODELS_DIR", models_dir())
        .env("HUASHEN_SPEECH__MODELS_DIR", models_dir());
    c
}

#[test]
fn validate_config_accepts_good_and_names_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let ok = huashen(dir.path()).arg("validate-config").output().unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration is valid"));

    let bad = huashen(dir.path())
        .env("HUASHEN_LIMITS__MAX_SESSIONS", "0")
        .arg("validate-config")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max_sessions"));

    let file = dir.path().join("huashen.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9\"\nlisen = 1\n").unwrap();
    let typo = huashen(dir.path())
        .args(["--config", file.to_str().unwrap(), "validate-config"])
        .output()
        .unwrap();
    assert!(!typo.status.success());
    assert!(String::from_utf8_lossy(&typo.stderr).contains("lisen"));

    let device = huashen(dir.path())
        .env("HUASHEN_MODELS__DEVICE", "gpu")
        .arg("validate-config")
        .output()
        .unwrap();
    assert!(!device.status.success());
    assert!(String::from_utf8_lossy(&device.stderr).contains("models.device"));
}

/// `serve --device`: a device this build or machine cannot use stops the
/// server at start with a message saying what to do (never a panic inside
/// the GPU backend); `auto` falls back to the CPU and says so.
#[test]
fn serve_refuses_a_device_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let bad = huashen(dir.path())
        .args(["serve", "--device", "gpu"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not one of cpu, auto, cuda"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    if huashen_inference::device::CUDA_BUILT && huashen_inference::cuda_available() {
        eprintln!("skipped the cuda:N refusal: this machine has a working NVIDIA driver");
        return;
    }
    let cuda = huashen(dir.path())
        .args(["serve", "--device", "cuda:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&cuda.stderr);
    assert!(!cuda.status.success(), "{err}");
    assert!(
        err.contains("cuda:0") && err.contains("--device cpu"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Starts `huashen serve` and reads its banner: the child, its address, and
/// (with `dev_key`: a fresh data directory) the dev key it prints.
fn serve(dir: &std::path::Path, dev_key: bool) -> (std::process::Child, String, Option<String>) {
    serve_with(dir, dev_key, &[])
}

/// [`serve`] with more environment (configuration) variables.
pub(crate) fn serve_with(
    dir: &std::path::Path,
    dev_key: bool,
    envs: &[(&str, String)],
) -> (std::process::Child, String, Option<String>) {
    let mut cmd = huashen(dir);
    cmd.envs(envs.iter().map(|(k, v)| (k, v))).arg("serve");
    serve_command(cmd, dev_key)
}

/// Starts `cmd` (which runs `huashen serve`, perhaps through a wrapper) and
/// reads its banner, as [`serve`] does.
pub(crate) fn serve_command(
    mut cmd: Command,
    dev_key: bool,
) -> (std::process::Child, String, Option<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a banner").unwrap();
    let addr = first
        .strip_prefix("huashen listening on ")
        .expect("the banner starts with the address")
        .to_owned();
    let key = if dev_key {
        // Not a terminal: the banner says where the key is, not the key.
        let _console = lines.next().expect("the console line").unwrap();
        let line = lines.next().expect("a dev key line").unwrap();
        let path = line
            .strip_prefix("dev API key (tenant `dev`) in ")
            .unwrap_or_else(|| panic!("no dev key file in the banner: {line}"));
        let key = std::fs::read_to_string(path).unwrap().trim().to_owned();
        assert!(!line.contains(&key), "the key is in the log: {line}");
        Some(key)
    } else {
        None
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr, key)
}

/// Waits for the process off the test's runtime, so its client connections
/// keep answering the server (an idle HTTP/2 connection must ack GOAWAY).
pub(crate) async fn wait(mut child: std::process::Child) -> std::process::ExitStatus {
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait()),
    )
    .await
    .expect("exits within 30 s")
    .unwrap()
    .unwrap()
}

pub(crate) async fn client(addr: &str, key: &str) -> Client {
    let ch = tonic::transport::Channel::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Client::new(ch, key)
}

#[tokio::test]
async fn tenant_cli_and_sigterm_drains_sessions() {
    let dir = tempfile::tempdir().unwrap();
    // A tenant created by the CLI before the server starts.
    let out = huashen(dir.path())
        .args(["tenant", "create", "studio-7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let studio_key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(studio_key.starts_with("hs_"));
    let dup = huashen(dir.path())
        .args(["tenant", "create", "studio-7"])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    let bad = huashen(dir.path())
        .args(["tenant", "create", "Bad Name"])
        .output()
        .unwrap();
    assert!(!bad.status.success());

    // With a tenant present the server makes no dev tenant; the CLI's key
    // drives it.
    let (child, addr, _) = serve(dir.path(), false);
    let mut c = client(&addr, &studio_key).await;
    let avatar = c.enroll("Studio host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut reason = None;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("watch ends within 10 s")
    {
        if let Some(v1::session_event::Event::Closed(c)) = ev.event {
            reason = Some(c.reason);
        }
    }
    assert_eq!(reason, Some(v1::CloseReason::ServerShutdown as i32));
    let status = wait(child).await;
    assert!(status.success(), "exit status {status:?}");

    // After a restart the session is recorded as closed by the shutdown.
    // A tenant existed before the first start, so no dev key was written.
    assert!(!dir.path().join("dev-api-key").exists());
    let (child, addr, _) = serve(dir.path(), false);
    let mut c = client(&addr, &studio_key).await;
    let got = c
        .sessions
        .get_session(v1::GetSessionRequest {
            session_id: s.session_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, v1::SessionState::Closed as i32);
    assert_eq!(got.close_reason, v1::CloseReason::ServerShutdown as i32);
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(wait(child).await.success());
}

/// The dev key goes to a person at this machine's terminal (in the
/// console's link), never to a log, and never exists on a server that
/// listens beyond this machine (a container on 0.0.0.0).
#[test]
fn the_dev_key_reaches_a_terminal_only_and_only_on_loopback() {
    // Under `script` (util-linux) stdout is a terminal.
    let dir = tempfile::tempdir().unwrap();
    let server = huashen(dir.path());
    let mut cmd = Command::new("timeout");
    cmd.args(["--signal=INT", "8", "script", "-qefc"])
        .arg(format!("{} serve", BIN))
        .arg("/dev/null");
    for (k, v) in server.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let out = cmd.output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    let key = std::fs::read_to_string(dir.path().join("dev-api-key")).unwrap();
    let key = key.trim();
    assert!(
        shown.contains(&format!("/#key={key}")),
        "no console link with the key on the terminal: {shown}"
    );

    // Beyond loopback: no dev tenant, no key anywhere.
    let dir = tempfile::tempdir().unwrap();
    let mut open = huashen(dir.path());
    open.env("HUASHEN_SERVER__LISTEN", "0.0.0.0:0").arg("serve");
    let (mut child, _, _) = serve_command(open, false);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!dir.path().join("dev-api-key").exists());
}

#[tokio::test]
async fn fresh_data_dir_prints_a_working_dev_key() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr, key) = serve(dir.path(), true);
    let key = key.expect("a dev key on a fresh data directory");
    let mut c = client(&addr, &key).await;
    c.avatars
        .list_avatars(v1::ListAvatarsRequest::default())
        .await
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(wait(child).await.success());
    // The same key is printed again on the next start.
    let (child, _, key2) = serve(dir.path(), true);
    assert_eq!(Some(key), key2);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(wait(child).await.success());
}

/// `serve --production` refuses to start with the encryption key beside
/// the data (generated into the data directory, or a key file inside it)
/// or with the dev tenant on, saying what to change; with the key in a file
/// outside the data directory it starts, and no key is written beside the
/// data.
#[test]
fn production_refuses_a_key_beside_the_data() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let refused = huashen(dir.path())
        .args(["serve", "--production"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("beside the data") && err.contains("bootstrap_dev_tenant"),
        "{err}"
    );

    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let inside = dir.path().join("keys.txt");
    std::fs::write(&inside, format!("# the data key\nk1={key}\n")).unwrap();
    let refused = huashen(dir.path())
        .env("HUASHEN_STORAGE__ENCRYPTION_KEY_FILE", &inside)
        .env("HUASHEN_STORAGE__ACTIVE_KEY", "k1")
        .env("HUASHEN_AUTH__BOOTSTRAP_DEV_TENANT", "false")
        .args(["serve", "--production"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(err.contains("inside storage.data_dir"), "{err}");
    assert!(!err.contains(&key), "the key is in the message: {err}");
    // A bare key, without its id (base64 ends in '='), is not echoed either.
    std::fs::write(&inside, format!("{key}\n")).unwrap();
    let refused = huashen(dir.path())
        .env("HUASHEN_STORAGE__ENCRYPTION_KEY_FILE", &inside)
        .arg("validate-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("line 1"), "{err}");
    assert!(
        !err.contains(key.trim_end_matches('=')),
        "the key is in the message: {err}"
    );

    let secrets = tempfile::tempdir().unwrap();
    let outside = secrets.path().join("huashen-keys");
    std::fs::write(&outside, format!("k1={key}\n")).unwrap();
    let mut cmd = huashen(dir.path());
    cmd.env("HUASHEN_STORAGE__ENCRYPTION_KEY_FILE", &outside)
        .env("HUASHEN_STORAGE__ACTIVE_KEY", "k1")
        .env("HUASHEN_AUTH__BOOTSTRAP_DEV_TENANT", "false")
        .args(["serve", "--production"]);
    let (mut child, _, _) = serve_command(cmd, false);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!dir.path().join("keys/local.key").exists());
}

/// A self-signed certificate for `localhost` and 127.0.0.1 (OpenSSL):
/// (certificate, key) PEM files in `dir`.
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=localhost", "-addext"])
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    (cert, key)
}

/// `curl` (its own TLS and HTTP/2) against the server trusting `ca`:
/// (succeeded, what it printed).
fn curl(port: u16, ca: &std::path::Path, args: &[&str], path: &str) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("localhost:{port}:127.0.0.1"))
        .args(args)
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// TLS on the listener: curl reaches the pages over HTTP/2 and HTTP/1.1
/// and gRPC over HTTP/2 (the health service answers SERVING), nothing is
/// served in plain text, and a renewed certificate is taken on SIGHUP
/// without a restart.
#[test]
fn tls_on_the_listener_serves_grpc_and_reloads_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "first");
    let mut cmd = huashen(dir.path());
    cmd.env("HUASHEN_SERVER__TLS_CERT_FILE", &cert)
        .env("HUASHEN_SERVER__TLS_KEY_FILE", &key)
        .arg("serve");
    let (mut child, addr, _) = serve_command(cmd, false);
    assert!(addr.starts_with("https://127.0.0.1:"), "{addr}");
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();

    let (ok, out) = curl(
        port,
        &cert,
        &["--http2", "-w", " %{http_version}"],
        "/healthz",
    );
    assert!(
        ok && out.starts_with("ok") && out.trim_end().ends_with(" 2"),
        "{out}"
    );
    let (ok, out) = curl(
        port,
        &cert,
        &["--http1.1", "-w", " %{http_version}"],
        "/healthz",
    );
    assert!(ok && out.trim_end().ends_with(" 1.1"), "{out}");
    // grpc.health.v1.Health/Check with an empty request, over HTTP/2.
    let frame = certs.path().join("frame");
    std::fs::write(&frame, [0u8; 5]).unwrap();
    let data = format!("@{}", frame.display());
    let grpc = [
        "--http2",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "--data-binary",
        &data,
        "-D",
        "-",
        "-o",
        "/dev/null",
    ];
    let (ok, out) = curl(port, &cert, &grpc, "/grpc.health.v1.Health/Check");
    assert!(ok && out.contains("grpc-status: 0"), "{out}");
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .unwrap();
    assert!(!plain.status.success(), "served in plain text");

    // Renewal: a new pair in the same files, then SIGHUP.
    let old = certs.path().join("first-old.crt");
    std::fs::copy(&cert, &old).unwrap();
    let (new_cert, new_key) = self_signed(certs.path(), "second");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let mut renewed = false;
    for _ in 0..50 {
        if curl(port, &new_cert, &[], "/healthz").0 {
            renewed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(renewed, "the renewed certificate was not taken");
    assert!(
        !curl(port, &old, &[], "/healthz").0,
        "still the old certificate"
    );
    assert!(child.try_wait().unwrap().is_none(), "the server restarted");
    let _ = child.kill();
    let _ = child.wait();
}
