//! The PostgreSQL schema: migrations applied in order under an advisory
//! lock, so servers starting together migrate once.

use crate::store::error::{StoreError, StoreResult};
use ::postgres::Client;

/// Schema migrations, applied in order; never edit one that has shipped.
/// The tables and their meaning are those of the SQLite backend; ids sort
/// bytewise (`COLLATE "C"`) so paging by id matches creation order.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: tenants, keys, avatars, consents, sessions, audit, nodes
    r#"
    CREATE TABLE tenants (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        key_hash BYTEA NOT NULL UNIQUE,
        label TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        revoked_at BIGINT
    );
    CREATE TABLE avatars (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        display_name TEXT NOT NULL,
        state TEXT NOT NULL,
        failure_reason TEXT NOT NULL DEFAULT '',
        image_format TEXT NOT NULL,
        image_bytes BIGINT NOT NULL,
        image_sha256 TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at BIGINT NOT NULL,
        original_kept BOOLEAN NOT NULL DEFAULT FALSE,
        faces_found BIGINT NOT NULL DEFAULT 0,
        face_score DOUBLE PRECISION NOT NULL DEFAULT 0
    );
    CREATE INDEX avatars_by_tenant ON avatars(tenant_id, id);
    CREATE TABLE consents (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        avatar_id TEXT NOT NULL REFERENCES avatars(id) ON DELETE CASCADE,
        uploader TEXT NOT NULL,
        subject_name TEXT NOT NULL,
        subject_consented BOOLEAN NOT NULL,
        subject_is_minor BOOLEAN NOT NULL,
        guardian_name TEXT NOT NULL,
        purpose TEXT NOT NULL,
        consented_at BIGINT NOT NULL,
        policy_version TEXT NOT NULL,
        recorded_at BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX consents_by_avatar ON consents(avatar_id);
    CREATE TABLE sessions (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        avatar_id TEXT NOT NULL,
        language TEXT NOT NULL,
        voice_id TEXT NOT NULL,
        speed DOUBLE PRECISION NOT NULL,
        width BIGINT NOT NULL,
        height BIGINT NOT NULL,
        fps BIGINT NOT NULL,
        video_bitrate_kbps BIGINT NOT NULL,
        audio_bitrate_kbps BIGINT NOT NULL,
        idle_timeout_secs BIGINT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        created_at BIGINT NOT NULL,
        closed_at BIGINT,
        close_reason INTEGER,
        node_id TEXT
    );
    CREATE INDEX sessions_by_tenant ON sessions(tenant_id, id);
    CREATE INDEX sessions_open ON sessions(node_id) WHERE closed_at IS NULL;
    CREATE TABLE audit_log (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at BIGINT NOT NULL,
        tenant_id TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX audit_by_tenant ON audit_log(tenant_id, seq);
    CREATE INDEX audit_by_at ON audit_log(at);
    CREATE FUNCTION huashen_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
    CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION huashen_audit_append_only();
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        started_at BIGINT NOT NULL,
        seen_at BIGINT NOT NULL
    );
    "#,
    // 2: where clients reach each node
    r#"
    ALTER TABLE nodes ADD COLUMN url TEXT NOT NULL DEFAULT '';
    "#,
    // 3: recordings of sessions (the media is an encrypted file)
    r#"
    CREATE TABLE recordings (
        id TEXT COLLATE "C" PRIMARY KEY,
        tenant_id TEXT COLLATE "C" NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        session_id TEXT COLLATE "C" NOT NULL,
        avatar_id TEXT COLLATE "C" NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        bytes BIGINT NOT NULL DEFAULT 0,
        duration_ms BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX recordings_by_tenant ON recordings(tenant_id, id);
    "#,
];

/// Any number; servers migrating the same database take this lock.
const MIGRATION_LOCK: i64 = 0x0068_7561_7368_656e; // "huashen"

pub(super) fn migrate(c: &mut Client) -> StoreResult<()> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    // (Without the NOTICE "already exists, skipping" on every start.)
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning; \
         CREATE TABLE IF NOT EXISTS huashen_schema (version INTEGER NOT NULL)",
    )?;
    let current: i32 = tx
        .query_opt("SELECT version FROM huashen_schema", &[])?
        .map(|r| r.get(0))
        .unwrap_or(0);
    if current as usize > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "database schema version {current} is newer than this build ({}); upgrade huashen",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql)?;
        tracing::info!(version = i + 1, "applied database migration");
    }
    let version = MIGRATIONS.len() as i32;
    if current == 0 {
        tx.execute(
            "INSERT INTO huashen_schema (version) VALUES ($1)",
            &[&version],
        )?;
    } else if version != current {
        tx.execute("UPDATE huashen_schema SET version = $1", &[&version])?;
    }
    tx.commit()?;
    Ok(())
}
