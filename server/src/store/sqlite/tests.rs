//! The SQLite backend's tests.

use super::*;
use crate::store::conformance as c;

#[test]
fn migrates_once_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    let b = SqliteBackend::open(&p).unwrap();
    c::tenant(&b, "a");
    drop(b);
    let b = SqliteBackend::open(&p).unwrap();
    assert_eq!(b.count_tenants().unwrap(), 1);
    let mode: String = b
        .with(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn conformance() {
    c::tenants_and_keys(&SqliteBackend::in_memory().unwrap());
    c::avatars_are_tenant_scoped_and_paged(&SqliteBackend::in_memory().unwrap());
    c::sessions_open_close_list_and_delete(&SqliteBackend::in_memory().unwrap());
    c::audit_pages_and_purges(&SqliteBackend::in_memory().unwrap());
    c::recordings_grow_end_list_and_delete(&SqliteBackend::in_memory().unwrap());
}

#[test]
fn dead_nodes_sessions_close() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("db");
    c::dead_nodes_sessions_close(
        &SqliteBackend::open(&p).unwrap(),
        &SqliteBackend::open(&p).unwrap(),
    );
}

#[test]
fn audit_log_refuses_updates() {
    let b = SqliteBackend::in_memory().unwrap();
    b.append_audit(&AuditEntry::new(None, "a", "t", "ok"))
        .unwrap();
    let err = b
        .with(|c| Ok(c.execute("UPDATE audit_log SET outcome = 'x'", [])?))
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}
