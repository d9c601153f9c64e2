//! Hardening found by review (docs/SECURITY.md lists each finding with its
//! test): what pages allow a browser to do, and uploads cut short.

use crate::common::*;
use huashen_protos::v1;

/// Every page carries a Content-Security-Policy without inline code and
/// the standard security headers.
#[tokio::test]
async fn pages_carry_a_content_security_policy_and_security_headers() {
    let server = TestServer::start().await;
    for page in [
        "/",
        "/viewer.html",
        "/console.js",
        "/whep.js",
        "/viewer.css",
    ] {
        let r = http(server.addr, "GET", page, &[], b"").await;
        assert_eq!(r.status, 200, "{page}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        for want in [
            "default-src 'self'",
            "script-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(want), "{page}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{page}: {csp}");
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "same-origin"),
        ] {
            assert_eq!(r.header(name), Some(value), "{page}: {name}");
        }
        let permissions = r.header("permissions-policy").unwrap_or_default();
        assert!(permissions.contains("camera=()"), "{page}: {permissions}");
    }
    // No route hands a key out, even to a loopback client naming the server
    // by a loopback name (what a reverse proxy on this machine looks like).
    let host = format!("127.0.0.1:{}", server.addr.port());
    let r = http(
        server.addr,
        "GET",
        "/console/dev-key",
        &[("Host", &host)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().contains(&server.dev_key));
    server.stop().await;
}

/// A photo cut short in transit (here a JPEG at 40 %) is refused with a
/// message that says so, not enrolled with a grey band where the rest was.
#[tokio::test]
async fn a_truncated_photo_is_refused_saying_so() {
    let server = TestServer::start().await;
    let mut c = server.dev().await;
    let img = image::load_from_memory(&portrait()).unwrap();
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    for (format, whole) in [
        (v1::ImageFormat::Jpeg, jpeg),
        (v1::ImageFormat::Png, portrait()),
    ] {
        let cut = whole[..whole.len() * 4 / 10].to_vec();
        let mut start = enroll_start("Cut short", cut.len() as u64);
        start.image_format = format as i32;
        let (code, msg) = code_of(c.enroll_raw(start, vec![cut]).await);
        assert_eq!(code, tonic::Code::InvalidArgument, "{format:?}: {msg}");
        assert!(msg.contains("truncated or corrupt"), "{format:?}: {msg}");
    }
    let listed = c
        .avatars
        .list_avatars(v1::ListAvatarsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .avatars;
    assert!(listed.is_empty(), "{listed:?}");
    server.stop().await;
}

/// coturn's `turnserver` on a free loopback port, checking TURN REST
/// credentials made with `secret`.
struct Coturn {
    child: std::process::Child,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Coturn {
    fn start(secret: &str) -> Option<Self> {
        let present = std::process::Command::new("turnserver")
            .arg("--version")
            .output()
            .is_ok();
        if !require(present, "coturn") {
            return None;
        }
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("turnserver")
            .args(["-p", &port.to_string(), "--listening-ip=127.0.0.1"])
            .args(["--relay-ip=127.0.0.1", "--use-auth-secret"])
            .arg(format!("--static-auth-secret={secret}"))
            .args(["--realm=huashen.test", "--no-tls", "--no-dtls", "--no-cli"])
            .args([
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("turnserver");
        std::thread::sleep(std::time::Duration::from_millis(500));
        Some(Self { child, port })
    }

    /// Whether coturn grants an allocation (and relays) with these
    /// credentials, as its own client `turnutils_uclient` finds.
    fn allocates(&self, username: &str, credential: &str) -> bool {
        std::process::Command::new("timeout")
            .args(["10", "turnutils_uclient", "-p", &self.port.to_string()])
            .args(["-u", username, "-w", credential, "-n", "1", "-m", "1", "-y"])
            .arg("127.0.0.1")
            .output()
            .expect("turnutils_uclient")
            .status
            .success()
    }
}

/// The `username` and `credential` of a WHEP `Link` header.
fn link_credentials(link: &str) -> (String, String) {
    let field = |name: &str| {
        link.split(';')
            .find_map(|p| p.trim().strip_prefix(&format!("{name}=\"")))
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {name} in {link}"))
            .to_owned()
    };
    (field("username"), field("credential"))
}

/// TURN with a shared secret: each viewer gets credentials of its own that
/// expire (the TURN REST scheme), and coturn configured with the same
/// secret grants them an allocation; a forged one is refused. The secret
/// itself never leaves the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_the_turn_credentials_each_viewer_gets() {
    let secret = "turn-shared-secret-5c1e";
    let Some(coturn) = Coturn::start(secret) else {
        return;
    };
    let url = format!("turn:127.0.0.1:{}", coturn.port);
    let server = TestServer::start_with(|c| {
        c.webrtc.ice_servers = vec![huashen::config::IceServerConfig {
            urls: vec![url.clone()],
            shared_secret: huashen::config::Secret(secret.into()),
            credential_ttl: std::time::Duration::from_secs(3600),
            ..Default::default()
        }];
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut seen = vec![];
    for _ in 0..2 {
        let viewer = huashen_loadtest::viewer::connect(
            server.addr,
            &s.session_id,
            &s.viewer_token,
            Default::default(),
        )
        .await
        .unwrap();
        let link = viewer.ice_links.first().cloned().expect("a Link header");
        assert!(link.starts_with(&format!("<{url}>")), "{link}");
        assert!(!link.contains(secret), "{link}");
        seen.push(link_credentials(&link));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for (username, credential) in &seen {
        let (expiry, peer) = username.split_once(':').unwrap();
        let expiry: i64 = expiry.parse().unwrap();
        assert!((expiry - now - 3600).abs() < 60, "{username}");
        assert!(peer.starts_with("vw_"), "{username}");
        assert!(coturn.allocates(username, credential), "{username}");
    }
    assert_ne!(seen[0], seen[1], "each viewer has credentials of its own");
    let (username, _) = &seen[0];
    assert!(!coturn.allocates(username, "Zm9yZ2VkLWNyZWRlbnRpYWw="));
    server.stop().await;
}

/// Expensive calls have budgets per API key and per client address:
/// beyond them RESOURCE_EXHAUSTED with `retry-after` (gRPC) or 429 with
/// `Retry-After` (WHEP); cheap calls go on.
#[tokio::test]
async fn expensive_calls_are_rate_limited_per_key_and_address() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enrollments_per_minute = 2;
        c.rate_limits.sessions_per_minute = 2;
        c.rate_limits.offers_per_minute = 3;
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("One").await;
    c.enroll("Two").await;
    let img = portrait();
    let refused = c
        .enroll_raw(enroll_start("Three", img.len() as u64), vec![img.clone()])
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("too many enrollments"),
        "{refused:?}"
    );
    let wait: u64 = refused
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("retry-after");
    assert!((1..=60).contains(&wait), "{wait}");
    // Another tenant's key from the same address: the address is spent.
    let mut other = server.client(&server.new_tenant("other-studio")).await;
    let (code, _) = code_of(
        other
            .enroll_raw(enroll_start("Four", img.len() as u64), vec![img])
            .await,
    );
    assert_eq!(code, tonic::Code::ResourceExhausted);
    // Cheap calls are not counted.
    for _ in 0..5 {
        c.avatars
            .list_avatars(v1::ListAvatarsRequest::default())
            .await
            .unwrap();
    }

    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    c.create_session(&avatar.avatar_id).await.unwrap();
    let (code, msg) = code_of(c.create_session(&avatar.avatar_id).await);
    assert_eq!(code, tonic::Code::ResourceExhausted, "{msg}");
    assert!(msg.contains("too many new sessions"), "{msg}");

    let auth = format!("Bearer {}", s.viewer_token);
    let offer = async || {
        http(
            server.addr,
            "POST",
            &s.whep_path,
            &[
                ("Content-Type", "application/sdp"),
                ("Authorization", &auth),
            ],
            b"v=0\r\n",
        )
        .await
    };
    for _ in 0..3 {
        assert_ne!(offer().await.status, 429);
    }
    let r = offer().await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(
        r.header("retry-after")
            .is_some_and(|v| v.parse::<u64>().is_ok())
    );
    let metrics = http(server.addr, "GET", "/metrics", &[], b"").await.text();
    assert!(
        metrics.contains("huashen_rate_limited_total{call=\"WebRTC offers\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

/// Connections that hold their request headers open (slowloris) do not
/// hold up anyone else and are closed after the header timeout; a request
/// head larger than the limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversize_request_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start().await;
    let mut idle = vec![];
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        idle.push(s);
    }
    // Everyone else is served meanwhile.
    let t0 = std::time::Instant::now();
    let r = http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    // A head over the limit: refused (431) or cut.
    let mut big = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let filler = "a".repeat(100 * 1024);
    let head = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Filler: {filler}\r\n\r\n");
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), big.read(&mut answer))
        .await
        .expect("an answer to an oversize head")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The held connections are closed once the header timeout passes.
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let mut closed = 0;
    for mut s in idle {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(
        closed, 200,
        "connections still held open after the header timeout"
    );
    server.stop().await;
}

/// Uploads are decoded a few at a time (one per two cores, at least one):
/// three large photos sent at once never have more decoding together, and
/// the others wait their turn (`huashen_enroll_decodes`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_decoded_a_few_at_a_time() {
    let server = TestServer::start().await;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = (cores / 2).clamp(1, 4) as i64;
    // A 12-megapixel photo of noise: slow to decode, no face in it.
    let noise = image::RgbImage::from_fn(4000, 3000, |x, y| {
        let v = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) as u8;
        image::Rgb([v, v.rotate_left(3), v.rotate_left(5)])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(noise)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    let uploads = slots as usize + 2;
    let mut tasks = vec![];
    for i in 0..uploads {
        let mut c = server.dev().await;
        let photo = jpeg.clone();
        tasks.push(tokio::spawn(async move {
            let mut start = enroll_start(&format!("Big {i}"), photo.len() as u64);
            start.image_format = v1::ImageFormat::Jpeg as i32;
            let chunks = photo.chunks(64 * 1024).map(|c| c.to_vec()).collect();
            let _ = c.enroll_raw(start, chunks).await;
        }));
    }
    let gauge = |metrics: &str, state: &str| -> i64 {
        let series = format!("huashen_enroll_decodes{{state=\"{state}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    let (mut most_running, mut most_waiting) = (0, 0);
    while !tasks.iter().all(|t| t.is_finished()) {
        let metrics = http(server.addr, "GET", "/metrics", &[], b"").await.text();
        most_running = most_running.max(gauge(&metrics, "running"));
        most_waiting = most_waiting.max(gauge(&metrics, "waiting"));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        (1..=slots).contains(&most_running),
        "{most_running} decoding at once, {slots} allowed"
    );
    assert!(most_waiting >= 1, "no upload waited its turn");
    let metrics = http(server.addr, "GET", "/metrics", &[], b"").await.text();
    assert_eq!(gauge(&metrics, "running") + gauge(&metrics, "waiting"), 0);
    server.stop().await;
}
