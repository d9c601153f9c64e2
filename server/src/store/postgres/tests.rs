//! The PostgreSQL backend's tests, against a throwaway server
//! (`scripts/test-postgres.sh`; `TEST_POSTGRES`).

use super::schema::MIGRATIONS;
use super::testdb::TestDb;
use super::*;
use crate::store::conformance as c;
use std::time::{Duration, Instant};

fn backend(db: &TestDb) -> PgBackend {
    PgBackend::connect(&PgOptions::from_url(&db.url(), 4, Duration::from_secs(5)).unwrap()).unwrap()
}

/// Runs `check` on a backend over a fresh database.
fn on_fresh(check: fn(&dyn Backend)) {
    if let Some(db) = TestDb::create() {
        check(&backend(&db));
    }
}

#[test]
fn tenants_and_keys() {
    on_fresh(c::tenants_and_keys);
}

#[test]
fn avatars_are_tenant_scoped_and_paged() {
    on_fresh(c::avatars_are_tenant_scoped_and_paged);
}

#[test]
fn sessions_open_close_list_and_delete() {
    on_fresh(c::sessions_open_close_list_and_delete);
}

#[test]
fn audit_pages_and_purges() {
    on_fresh(c::audit_pages_and_purges);
}

#[test]
fn recordings_grow_end_list_and_delete() {
    on_fresh(c::recordings_grow_end_list_and_delete);
}

#[test]
fn dead_nodes_sessions_close() {
    let Some(db) = TestDb::create() else { return };
    c::dead_nodes_sessions_close(&backend(&db), &backend(&db));
}

#[test]
fn servers_starting_together_migrate_once() {
    let Some(db) = TestDb::create() else { return };
    let url = db.url();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                PgBackend::connect(&PgOptions::from_url(&url, 2, Duration::from_secs(10)).unwrap())
                    .map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().expect("each server opens the database");
    }
    let b = backend(&db);
    let v: i32 = b
        .conn()
        .unwrap()
        .query_one("SELECT version FROM huashen_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(v as usize, MIGRATIONS.len());
    let rows: i64 = b
        .conn()
        .unwrap()
        .query_one("SELECT COUNT(*) FROM huashen_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(db) = TestDb::create() else { return };
    let b = backend(&db);
    b.conn()
        .unwrap()
        .execute("UPDATE huashen_schema SET version = version + 1", &[])
        .unwrap();
    let Err(e) =
        PgBackend::connect(&PgOptions::from_url(&db.url(), 1, Duration::from_secs(5)).unwrap())
    else {
        panic!("opened a database from a newer build")
    };
    assert!(e.to_string().contains("upgrade huashen"), "{e}");
}

#[test]
fn audit_log_refuses_updates() {
    let Some(db) = TestDb::create() else { return };
    let b = backend(&db);
    b.append_audit(&AuditEntry::new(None, "a", "t", "ok"))
        .unwrap();
    let e = b
        .conn()
        .unwrap()
        .execute("UPDATE audit_log SET outcome = 'x'", &[])
        .unwrap_err();
    let e = StoreError::from(e);
    assert!(e.to_string().contains("append-only"), "{e}");
}

#[test]
fn the_pool_bounds_connections_and_survives_a_killed_connection() {
    let Some(db) = TestDb::create() else { return };
    let b = std::sync::Arc::new(
        PgBackend::connect(&PgOptions::from_url(&db.url(), 3, Duration::from_millis(300)).unwrap())
            .unwrap(),
    );
    c::tenant(&*b, "pool");
    // Three calls hold every connection: a fourth waits, then fails
    // with UNAVAILABLE (not a hang, not a panic).
    let held: Vec<_> = (0..3).map(|_| b.conn().unwrap()).collect();
    assert_eq!(b.open_connections(), 3);
    let t0 = Instant::now();
    let e = b.count_tenants().unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(250));
    drop(held);
    // The database ends every connection of ours (as a restart would):
    // the pool drops the dead ones and opens new ones.
    super::testdb::admin(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        db.name
    ))
    .unwrap();
    // The first call on a killed connection may fail as UNAVAILABLE;
    // within a few calls every dead connection has been replaced.
    let mut ok = 0;
    for _ in 0..6 {
        match b.count_tenants() {
            Ok(n) => {
                assert_eq!(n, 1);
                ok += 1;
            }
            Err(e) => assert!(matches!(e, StoreError::Unavailable(_)), "{e}"),
        }
    }
    assert!(ok >= 3, "{ok} of 6 calls succeeded after the restart");
    assert!(b.open_connections() <= 3);
}

#[test]
fn tls_to_the_database_is_verified() {
    let Some(db) = TestDb::create() else { return };
    let (Ok(tls), Ok(ca)) = (
        std::env::var("TEST_POSTGRES_TLS"),
        std::env::var("TEST_POSTGRES_CA"),
    ) else {
        panic!("TEST_POSTGRES_TLS/_CA unset: scripts/test-postgres.sh sets them")
    };
    let url = format!("{tls} dbname={} sslmode=require", db.name);
    let options = |ca_file: Option<&str>| PgOptions {
        ca_file: ca_file.map(Into::into),
        ..PgOptions::from_url(&url, 1, Duration::from_secs(5)).unwrap()
    };
    // Trusting the test authority: the connection is TLS.
    let b = PgBackend::connect(&options(Some(&ca))).unwrap();
    let (ssl, version): (bool, String) = b
        .with(|c| {
            let r = c.query_one(
                "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?;
            Ok((r.try_get(0)?, r.try_get(1)?))
        })
        .unwrap();
    assert!(ssl && version.starts_with("TLS"), "{ssl} {version}");
    c::tenants_and_keys(&b);
    // Not trusting it: refused, never a connection in clear.
    let Err(e) = PgBackend::connect(&options(None)) else {
        panic!("connected to a server whose certificate nobody vouches for")
    };
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    assert!(e.to_string().contains("certificate"), "{e}");
    // A CA file that is not one: said at start.
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("ca.pem");
    std::fs::write(&bogus, "not a certificate").unwrap();
    let Err(e) = PgBackend::connect(&options(Some(bogus.to_str().unwrap()))) else {
        panic!("accepted a CA file without certificates")
    };
    assert!(e.to_string().contains("database_ca_file"), "{e}");
}

#[test]
fn an_unreachable_database_is_unavailable_with_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "host={} port=5999 user=huashen password=secret dbname=nowhere",
        dir.path().display()
    );
    let Err(e) = PgBackend::connect(&PgOptions::from_url(&url, 1, Duration::from_secs(2)).unwrap())
    else {
        panic!("connected to nothing")
    };
    let msg = e.to_string();
    assert!(matches!(e, StoreError::Unavailable(_)), "{msg}");
    assert!(
        msg.contains("huashen@") && msg.contains("/nowhere"),
        "{msg}"
    );
    assert!(
        !msg.contains("secret"),
        "the password is never shown: {msg}"
    );
}
