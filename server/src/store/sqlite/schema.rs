//! The SQLite schema: migrations applied in order, the version kept in
//! `PRAGMA user_version`.

use crate::store::error::{StoreError, StoreResult};
use rusqlite::Connection;

/// Schema migrations, applied in order; never edit one that has shipped.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: tenants, keys, avatars, consents, sessions, audit
    r#"
    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        key_hash BLOB NOT NULL UNIQUE,
        label TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE avatars (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        display_name TEXT NOT NULL,
        state TEXT NOT NULL,
        failure_reason TEXT NOT NULL DEFAULT '',
        image_format TEXT NOT NULL,
        image_bytes INTEGER NOT NULL,
        image_sha256 TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL
    );
    CREATE INDEX avatars_by_tenant ON avatars(tenant_id, id);
    CREATE TABLE consents (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        uploader TEXT NOT NULL,
        subject_name TEXT NOT NULL,
        subject_consented INTEGER NOT NULL,
        subject_is_minor INTEGER NOT NULL,
        guardian_name TEXT NOT NULL,
        purpose TEXT NOT NULL,
        consented_at INTEGER NOT NULL,
        policy_version TEXT NOT NULL,
        recorded_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX consents_by_avatar ON consents(avatar_id);
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        avatar_id TEXT NOT NULL,
        language TEXT NOT NULL,
        voice_id TEXT NOT NULL,
        speed REAL NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        fps INTEGER NOT NULL,
        video_bitrate_kbps INTEGER NOT NULL,
        audio_bitrate_kbps INTEGER NOT NULL,
        idle_timeout_secs INTEGER NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        closed_at INTEGER,
        close_reason INTEGER
    );
    CREATE INDEX sessions_by_tenant ON sessions(tenant_id, id);
    CREATE TABLE audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        tenant_id TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX audit_by_tenant ON audit_log(tenant_id, seq);
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    "#,
    // 2: uploads are minimised; record when the original was kept
    r#"
    ALTER TABLE avatars ADD COLUMN original_kept INTEGER NOT NULL DEFAULT 0;
    "#,
    // 3: face detection summary (the geometry itself is an encrypted file)
    r#"
    ALTER TABLE avatars ADD COLUMN faces_found INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE avatars ADD COLUMN face_score REAL NOT NULL DEFAULT 0;
    "#,
    // 4: the server process (node) running each session, and when each
    // node was last alive
    r#"
    ALTER TABLE sessions ADD COLUMN node_id TEXT;
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        started_at INTEGER NOT NULL,
        seen_at INTEGER NOT NULL
    );
    "#,
    // 5: where clients reach each node
    r#"
    ALTER TABLE nodes ADD COLUMN url TEXT NOT NULL DEFAULT '';
    "#,
    // 6: recordings of sessions (the media is an encrypted file)
    r#"
    CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        session_id TEXT NOT NULL,
        avatar_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        bytes INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX recordings_by_tenant ON recordings(tenant_id, id);
    "#,
];

pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this build ({}); upgrade huashen",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    Ok(())
}
