//! Records in PostgreSQL (`storage.database_url`), shared by several
//! servers that also share the data directory and the encryption keys: what
//! one server enrolls the other serves; a session is driven where it runs;
//! deleting an avatar on one server closes its sessions on the others;
//! a killed server's sessions are closed by the survivors; a database that
//! cannot be reached is a clear error, at start and mid-run.
//!
//! Needs the test PostgreSQL (`TEST_POSTGRES`, set by
//! scripts/test.sh); without it these tests are skipped (an error under CI).

use crate::common::*;
use crate::process::{client, serve_with, wait};
use huashen::config::{Config, Secret};
use huashen::store::postgres::testdb::{TestDb, admin};
use huashen_protos::v1;
use std::time::Duration;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

/// Configures `c` for the shared records in `db` and the files in `dir`.
pub(crate) fn share(c: &mut Config, db: &TestDb, dir: &std::path::Path) {
    c.storage.data_dir = dir.to_path_buf();
    c.storage.database_url = Secret(db.url());
    c.storage.encryption_keys = [("k1".to_string(), Secret(KEY.into()))].into();
    c.storage.active_key = "k1".into();
    c.storage.node_ttl = Duration::from_secs(2);
}

/// A server sharing `db` and `dir` that advertises where clients reach it
/// (a port picked beforehand), and that URL.
pub(crate) async fn start_advertised(db: &TestDb, dir: &std::path::Path) -> (TestServer, String) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let server = TestServer::start_with(|c| {
        share(c, db, dir);
        c.server.listen = addr;
        // A trailing slash is dropped.
        c.server.advertise_url = format!("{url}/");
    })
    .await;
    (server, url)
}

/// The same settings as environment variables, for the `huashen` binary.
fn share_env(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("HUASHEN_STORAGE__DATABASE_URL", db.url()),
        ("HUASHEN_STORAGE__ENCRYPTION_KEYS__K1", KEY.into()),
        ("HUASHEN_STORAGE__ACTIVE_KEY", "k1".into()),
        ("HUASHEN_STORAGE__NODE_TTL", "2s".into()),
        (
            "HUASHEN_SPEECH__MODELS_DIR",
            models_dir().display().to_string(),
        ),
        ("HUASHEN_LIMITS__CPU_BUDGET", "64".into()),
    ]
}

pub(crate) async fn get_session(c: &mut Client, id: &str) -> Result<v1::Session, tonic::Status> {
    c.sessions
        .get_session(v1::GetSessionRequest {
            session_id: id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_share_avatars_and_sessions() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start_with(|c| share(c, &db, dir.path())).await;
    let (b, b_url) = start_advertised(&db, dir.path()).await;
    // One dev tenant, bootstrapped by the first; the second prints its key.
    assert_eq!(a.dev_key, b.dev_key);
    let (mut ca, mut cb) = (a.dev().await, b.dev().await);

    // Enrolled on A, served by B: the record from PostgreSQL, the portrait
    // and face data from the shared (encrypted) files.
    let avatar = ca.enroll("shared host").await;
    let got = cb
        .avatars
        .get_avatar(v1::GetAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.avatar_id, avatar.avatar_id);
    assert_eq!(got.state, v1::AvatarState::Ready as i32);
    let on_b = cb.create_session(&avatar.avatar_id).await.unwrap();

    // A sees B's session but does not drive it: a clear error naming why.
    let seen = get_session(&mut ca, &on_b.session_id).await.unwrap();
    assert_eq!(seen.state, v1::SessionState::Remote as i32);
    assert!(seen.closed_at.is_none());
    let listed = ca
        .sessions
        .list_sessions(v1::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .sessions
            .iter()
            .any(|s| s.session_id == on_b.session_id && s.state == v1::SessionState::Remote as i32)
    );
    let refused = ca
        .sessions
        .close_session(v1::CloseSessionRequest {
            session_id: on_b.session_id.clone(),
        })
        .await
        .unwrap_err();
    // Where to go, for programs too.
    assert_eq!(
        refused
            .metadata()
            .get("huashen-session-server")
            .and_then(|v| v.to_str().ok()),
        Some(b_url.as_str())
    );
    let (code, msg) = (refused.code(), refused.message().to_owned());
    assert_eq!(code, tonic::Code::FailedPrecondition, "{msg}");
    assert!(
        msg.contains("another server") && msg.contains(&b_url),
        "names the server and where it is: {msg}"
    );

    // A viewer's or publisher's offer sent to A is redirected to B, path
    // and query kept, once A has checked the viewer token (a token B
    // issued, sealed by the keys both share); without it, or with another,
    // A says nothing of the session or of B (401, no Location). Another
    // tenant's key learns nothing either (404, as for an unknown session).
    let whep = format!("/whep/sessions/{}?quality=high", on_b.session_id);
    for auth in [None, Some("Bearer t0k".to_owned())] {
        let mut headers = vec![("content-type", "application/sdp")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        let r = http(a.addr, "POST", &whep, &headers, b"v=0").await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        assert_eq!(r.header("location"), None);
        assert!(!r.text().contains(&b_url), "{}", r.text());
    }
    let viewer = format!("Bearer {}", on_b.viewer_token);
    let r = http(
        a.addr,
        "POST",
        &whep,
        &[
            ("content-type", "application/sdp"),
            ("authorization", viewer.as_str()),
        ],
        b"v=0",
    )
    .await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(format!("{b_url}{whep}").as_str())
    );
    let whip = format!("/whip/sessions/{}", on_b.session_id);
    let auth = format!("Bearer {}", a.dev_key);
    let r = http(
        a.addr,
        "POST",
        &whip,
        &[
            ("authorization", &auth),
            ("content-type", "application/sdp"),
        ],
        b"v=0",
    )
    .await;
    assert_eq!(r.status, 307);
    assert_eq!(
        r.header("location"),
        Some(format!("{b_url}{whip}").as_str())
    );
    let stranger = {
        let (_, key) = tokio::task::spawn_blocking({
            let cfg = {
                let mut c = test_config(dir.path());
                share(&mut c, &db, dir.path());
                c
            };
            move || {
                let store = huashen::store::Store::open(
                    &cfg.storage,
                    huashen::store::crypto::Keyring::from_config(&cfg.storage).unwrap(),
                )
                .unwrap();
                huashen::store::tenants::create_tenant(store.blocking(), "stranger", "test")
                    .unwrap()
            }
        })
        .await
        .unwrap();
        format!("Bearer {key}")
    };
    let r = http(
        a.addr,
        "POST",
        &whip,
        &[
            ("authorization", &stranger),
            ("content-type", "application/sdp"),
        ],
        b"v=0",
    )
    .await;
    assert_eq!(r.status, 404);
    // B itself answers its own session (no redirect loop): a bad offer is
    // a 400 there, not a 307.
    let r = http(
        b.addr,
        "POST",
        &whep,
        &[("content-type", "application/sdp")],
        b"v=0",
    )
    .await;
    assert_ne!(r.status, 307);

    // Closed where it runs; both see it closed.
    cb.sessions
        .close_session(v1::CloseSessionRequest {
            session_id: on_b.session_id.clone(),
        })
        .await
        .unwrap();
    let closed = get_session(&mut ca, &on_b.session_id).await.unwrap();
    assert_eq!(closed.state, v1::SessionState::Closed as i32);

    // Deleted through A while B runs a session of it: B closes that
    // session within a second or two (its avatar watch), and the avatar is
    // gone for both, files included.
    let running = cb.create_session(&avatar.avatar_id).await.unwrap();
    ca.avatars
        .delete_avatar(v1::DeleteAvatarRequest {
            avatar_id: avatar.avatar_id.clone(),
        })
        .await
        .unwrap();
    let closed = eventually(Duration::from_secs(5), async || {
        get_session(&mut cb, &running.session_id)
            .await
            .is_ok_and(|s| s.state == v1::SessionState::Closed as i32)
    })
    .await;
    assert!(closed, "B kept running a session of an avatar deleted on A");
    let s = get_session(&mut cb, &running.session_id).await.unwrap();
    assert_eq!(s.close_reason, v1::CloseReason::AvatarDeleted as i32);
    let (code, _) = code_of(
        cb.avatars
            .get_avatar(v1::GetAvatarRequest {
                avatar_id: avatar.avatar_id.clone(),
            })
            .await,
    );
    assert_eq!(code, tonic::Code::NotFound);
    assert!(
        !dir.path()
            .join("blobs/avatars")
            .join(&avatar.avatar_id)
            .exists()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_servers_sessions_are_closed_by_a_survivor() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let survivor = TestServer::start_with(|c| share(c, &db, dir.path())).await;
    let mut cs = survivor.dev().await;
    let avatar = cs.enroll("host").await;

    // A second server, a real process, runs a session and is killed.
    let (mut child, addr, _) = serve_with(dir.path(), false, &share_env(&db));
    let mut ck = client(&addr, &survivor.dev_key).await;
    let doomed = ck.create_session(&avatar.avatar_id).await.unwrap();
    let own = cs.create_session(&avatar.avatar_id).await.unwrap();
    child.kill().unwrap();
    wait(child).await;

    // Within the node TTL (2 s) and a heartbeat, the survivor marks the
    // dead server's session closed (server shutdown) and keeps its own.
    let closed = eventually(Duration::from_secs(15), async || {
        get_session(&mut cs, &doomed.session_id)
            .await
            .is_ok_and(|s| s.state == v1::SessionState::Closed as i32)
    })
    .await;
    assert!(closed, "the killed server's session was never closed");
    let s = get_session(&mut cs, &doomed.session_id).await.unwrap();
    assert_eq!(s.close_reason, v1::CloseReason::ServerShutdown as i32);
    let mine = get_session(&mut cs, &own.session_id).await.unwrap();
    assert_ne!(mine.state, v1::SessionState::Closed as i32);
    survivor.stop().await;
}

#[tokio::test]
async fn an_unreachable_database_stops_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = crate::process::huashen(dir.path())
        .env(
            "HUASHEN_STORAGE__DATABASE_URL",
            format!(
                "postgres://huashen:hunter2@localhost/db?host={}&port=5999&connect_timeout=2",
                dir.path().display()
            ),
        )
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the PostgreSQL database of storage.database_url")
            && err.contains("cannot connect to PostgreSQL at huashen@"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2"),
        "the password is never shown: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_unavailable_and_passes() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        share(c, &db, dir.path());
        c.storage.database_timeout = Duration::from_secs(1);
    })
    .await;
    let mut c = server.dev().await;
    let list = async |c: &mut Client| {
        c.avatars
            .list_avatars(v1::ListAvatarsRequest::default())
            .await
            .map(|r| r.into_inner().avatars.len())
    };
    assert_eq!(list(&mut c).await.unwrap(), 0);

    // The database refuses new connections and ends the open ones.
    let name = db.name.clone();
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).unwrap();
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .unwrap();
    let (code, msg) = code_of(list(&mut c).await);
    assert_eq!(code, tonic::Code::Unavailable, "{msg}");
    assert!(msg.contains("retry"), "{msg}");
    // The server itself keeps answering.
    let health = http(server.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 200);

    admin(format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name)).unwrap();
    let back = eventually(Duration::from_secs(10), async || list(&mut c).await.is_ok()).await;
    assert!(back, "the server never got its database back");
    server.stop().await;
}

/// Fail closed: while the shared records cannot be read, this server
/// cannot see a deletion or consent withdrawal made on another one; after
/// `storage.avatar_check_grace` it closes its sessions, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_records_close_the_sessions_after_the_grace() {
    let Some(db) = TestDb::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        share(c, &db, dir.path());
        c.storage.database_timeout = Duration::from_secs(1);
        c.storage.avatar_check_grace = Duration::from_secs(3);
    })
    .await;
    let mut c = server.dev().await;
    let avatar = c.enroll("Host").await;
    let s = c.create_session(&avatar.avatar_id).await.unwrap();
    let mut watch = c.watch(&s.session_id).await;
    let name = db.name.clone();
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).unwrap();
    admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .unwrap();
    let t0 = std::time::Instant::now();
    use v1::session_event::Event as E;
    let events = events_until(&mut watch, Duration::from_secs(20), |e| {
        matches!(e, E::Closed(_))
    })
    .await;
    let closed = events.iter().find_map(|e| match e {
        E::Closed(c) => Some(*c),
        _ => None,
    });
    admin(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).unwrap();
    let closed = closed.expect("the session was not closed");
    assert_eq!(
        closed.reason,
        v1::CloseReason::RecordsUnavailable as i32,
        "{closed:?}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "closed before the grace"
    );
    server.stop().await;
}
