//! PostgreSQL backend, for several servers sharing their records: a small
//! connection pool, schema migrations applied under an advisory lock (so
//! servers starting together migrate once), TLS by rustls when the URL's
//! `sslmode` asks for it, the audit log append-only (a trigger refuses
//! updates) as in SQLite.

use super::backend::Backend;
use super::error::{StoreError, StoreResult};
use super::records::*;
use ::postgres::Client;

mod pool;
mod recordings;
mod rows;
mod schema;

use rows::{audit_from_row, avatar_from_row, count, insert_audit, session_from_row};
#[doc(hidden)]
pub mod testdb;

pub use pool::PgOptions;
use pool::{Conn, Pool};
use schema::migrate;

pub struct PgBackend {
    pool: Pool,
    node_id: String,
    started_at: Millis,
}

impl PgBackend {
    /// Connects, migrates the schema and keeps the connection for reuse.
    pub fn connect(options: &PgOptions) -> StoreResult<Self> {
        let b = Self {
            pool: Pool::new(options)?,
            node_id: crate::ids::new_id(crate::ids::NODE),
            started_at: now_ms(),
        };
        migrate(&mut *b.pool.get()?)?;
        Ok(b)
    }

    /// Where the database is (never the password).
    pub fn describe(&self) -> String {
        self.pool.options.describe()
    }

    fn conn(&self) -> StoreResult<Conn> {
        self.pool.get()
    }

    /// Runs `f` on a pooled connection. A connection lost during the call
    /// is closed, and the pool does not hand it out again.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> StoreResult<T>) -> StoreResult<T> {
        f(&mut *self.conn()?)
    }

    /// Connections open now (idle or in use), for tests.
    pub fn open_connections(&self) -> usize {
        self.pool.open()
    }
}

impl Backend for PgBackend {
    fn create_tenant(&self, t: &Tenant) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&t.id, &t.name, &t.created_at],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("tenant {:?}", t.name)));
            }
            Ok(())
        })
    }

    fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        self.with(|c| {
            c.query_opt(
                "SELECT id, name, created_at FROM tenants WHERE name = $1",
                &[&name],
            )?
            .map(|r| {
                Ok(Tenant {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                })
            })
            .transpose()
        })
    }

    fn count_tenants(&self) -> StoreResult<u64> {
        self.with(|c| {
            let n: i64 = c
                .query_one("SELECT COUNT(*) FROM tenants", &[])?
                .try_get(0)?;
            Ok(n as u64)
        })
    }

    fn create_api_key(
        &self,
        key_id: &str,
        tenant_id: &str,
        key_hash: &[u8; 32],
        label: &str,
    ) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO api_keys (id, tenant_id, key_hash, label, created_at) VALUES ($1, $2, $3, $4, $5)",
                &[&key_id, &tenant_id, &&key_hash[..], &label, &now_ms()],
            )?;
            Ok(())
        })
    }

    fn principal_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Principal>> {
        self.with(|c| {
            c.query_opt(
                "SELECT id, tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
                &[&&key_hash[..]],
            )?
            .map(|r| {
                Ok(Principal {
                    key_id: r.try_get(0)?,
                    tenant_id: r.try_get(1)?,
                })
            })
            .transpose()
        })
    }

    fn insert_avatar(&self, a: &Avatar, audit: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO avatars (id, tenant_id, display_name, state, failure_reason, image_format, \
                 image_bytes, image_sha256, labels, created_at, original_kept, faces_found, \
                 face_score) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                &[
                    &a.id,
                    &a.tenant_id,
                    &a.display_name,
                    &a.state.as_str(),
                    &a.failure_reason,
                    &a.image_format.as_str(),
                    &(a.image_bytes as i64),
                    &a.image_sha256,
                    &labels_to_json(&a.labels),
                    &a.created_at,
                    &a.original_kept,
                    &i64::from(a.face.faces_found),
                    &f64::from(a.face.score),
                ],
            )?;
            let k = &a.consent;
            tx.execute(
                "INSERT INTO consents (id, tenant_id, avatar_id, uploader, subject_name, subject_consented, \
                 subject_is_minor, guardian_name, purpose, consented_at, policy_version, recorded_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
                &[
                    &k.id,
                    &a.tenant_id,
                    &a.id,
                    &k.uploader,
                    &k.subject_name,
                    &k.subject_consented,
                    &k.subject_is_minor,
                    &k.guardian_name,
                    &k.purpose,
                    &k.consented_at,
                    &k.policy_version,
                    &k.recorded_at,
                ],
            )?;
            insert_audit(&mut tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get_avatar(&self, tenant_id: &str, avatar_id: &str) -> StoreResult<Option<Avatar>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {AVATAR_COLS} FROM avatars a JOIN consents c ON c.avatar_id = a.id \
                         WHERE a.tenant_id = $1 AND a.id = $2"
                ),
                &[&tenant_id, &avatar_id],
            )?
            .as_ref()
            .map(avatar_from_row)
            .transpose()
        })
    }

    fn list_avatars(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Avatar>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {AVATAR_COLS} FROM avatars a JOIN consents c ON c.avatar_id = a.id \
                         WHERE a.tenant_id = $1 AND ($2::text IS NULL OR a.id < $2) \
                         ORDER BY a.id DESC LIMIT $3"
                ),
                &[&tenant_id, &before, &(limit as i64)],
            )?
            .iter()
            .map(avatar_from_row)
            .collect()
        })
    }

    fn delete_avatar(
        &self,
        tenant_id: &str,
        avatar_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM avatars WHERE tenant_id = $1 AND id = $2",
                &[&tenant_id, &avatar_id],
            )?;
            if n > 0 {
                insert_audit(&mut tx, audit)?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn all_avatar_ids(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            c.query("SELECT id FROM avatars", &[])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn existing_avatar_ids(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        self.with(|c| {
            c.query("SELECT id FROM avatars WHERE id = ANY($1::text[])", &[&ids])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn insert_session(&self, s: &SessionRecord, audit: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}, node_id) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17)"
                ),
                &[
                    &s.id,
                    &s.tenant_id,
                    &s.avatar_id,
                    &s.language,
                    &s.voice_id,
                    &f64::from(s.speed),
                    &i64::from(s.width),
                    &i64::from(s.height),
                    &i64::from(s.fps),
                    &i64::from(s.video_bitrate_kbps),
                    &i64::from(s.audio_bitrate_kbps),
                    &i64::from(s.idle_timeout_secs),
                    &labels_to_json(&s.labels),
                    &s.created_at,
                    &s.closed_at,
                    &s.close_reason,
                    &self.node_id,
                ],
            )?;
            insert_audit(&mut tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn close_session(
        &self,
        session_id: &str,
        closed_at: Millis,
        reason: i32,
        audit: &AuditEntry,
    ) -> StoreResult<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE sessions SET closed_at = $2, close_reason = $3 WHERE id = $1 AND closed_at IS NULL",
                &[&session_id, &closed_at, &reason],
            )?;
            insert_audit(&mut tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get_session(&self, tenant_id: &str, session_id: &str) -> StoreResult<Option<SessionRecord>> {
        self.with(|c| {
            c.query_opt(
                &format!(
                    "SELECT {SESSION_COLS}, node_id FROM sessions WHERE tenant_id = $1 AND id = $2"
                ),
                &[&tenant_id, &session_id],
            )?
            .as_ref()
            .map(session_from_row)
            .transpose()
        })
    }

    fn list_sessions(
        &self,
        tenant_id: &str,
        include_closed: bool,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {SESSION_COLS}, node_id FROM sessions WHERE tenant_id = $1 \
                         AND ($2 OR closed_at IS NULL) AND ($3::text IS NULL OR id < $3) \
                         ORDER BY id DESC LIMIT $4"
                ),
                &[&tenant_id, &include_closed, &before, &(limit as i64)],
            )?
            .iter()
            .map(session_from_row)
            .collect()
        })
    }

    fn sessions_of(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<Vec<SessionRecord>> {
        self.with(|c| {
            c.query(
                &format!(
                    "SELECT {SESSION_COLS}, node_id FROM sessions WHERE tenant_id = $1 \
                         AND ($2::text IS NULL OR avatar_id = $2) ORDER BY id"
                ),
                &[&tenant_id, &avatar_id],
            )?
            .iter()
            .map(session_from_row)
            .collect()
        })
    }

    fn delete_closed_sessions(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<usize> {
        self.with(|c| {
            Ok(count(c.execute(
                "DELETE FROM sessions WHERE tenant_id = $1 AND ($2::text IS NULL OR avatar_id = $2) \
                 AND closed_at IS NOT NULL",
                &[&tenant_id, &avatar_id],
            )?))
        })
    }

    fn insert_recording(&self, r: &Recording, audit: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            recordings::insert(&mut tx, r)?;
            insert_audit(&mut tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn update_recording(
        &self,
        id: &str,
        bytes: u64,
        duration_ms: u64,
        ended_at: Option<Millis>,
    ) -> StoreResult<()> {
        self.with(|c| recordings::update(c, id, bytes, duration_ms, ended_at))
    }

    fn get_recording(&self, tenant_id: &str, id: &str) -> StoreResult<Option<Recording>> {
        self.with(|c| recordings::get(c, tenant_id, id))
    }

    fn list_recordings(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Recording>> {
        self.with(|c| recordings::list(c, tenant_id, avatar_id, before, limit))
    }

    fn recordings_ended_before(&self, before: Millis, limit: usize) -> StoreResult<Vec<Recording>> {
        self.with(|c| recordings::ended_before(c, before, limit))
    }

    fn all_recording_ids(&self) -> StoreResult<Vec<String>> {
        self.with(recordings::all_ids)
    }

    fn end_orphaned_recordings(&self, ended_at: Millis) -> StoreResult<usize> {
        self.with(|c| recordings::end_orphaned(c, ended_at))
    }

    fn delete_recording(&self, tenant_id: &str, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let deleted = recordings::delete(&mut tx, tenant_id, id)?;
            if deleted {
                insert_audit(&mut tx, audit)?;
            }
            tx.commit()?;
            Ok(deleted)
        })
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn heartbeat(&self, now: Millis, url: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO nodes (id, started_at, seen_at, url) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, url = excluded.url",
                &[&self.node_id, &self.started_at, &now, &url],
            )?;
            Ok(())
        })
    }

    fn session_location(&self, session_id: &str) -> StoreResult<Option<(String, String)>> {
        self.with(|c| {
            c.query_opt(
                "SELECT s.node_id, COALESCE(n.url, '') FROM sessions s \
                 LEFT JOIN nodes n ON n.id = s.node_id \
                 WHERE s.id = $1 AND s.closed_at IS NULL AND s.node_id IS NOT NULL",
                &[&session_id],
            )?
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
        })
    }

    fn close_sessions_of_dead_nodes(
        &self,
        dead_before: Millis,
        closed_at: Millis,
        reason: i32,
    ) -> StoreResult<usize> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET closed_at = $2, close_reason = $3 WHERE closed_at IS NULL \
                 AND node_id IS DISTINCT FROM $4 AND (node_id IS NULL OR node_id NOT IN \
                 (SELECT id FROM nodes WHERE seen_at >= $1))",
                &[&dead_before, &closed_at, &reason, &self.node_id],
            )?;
            tx.execute(
                "DELETE FROM nodes WHERE seen_at < $1 AND id <> $2",
                &[&(closed_at - NODE_FORGET_MS), &self.node_id],
            )?;
            tx.commit()?;
            Ok(count(n))
        })
    }

    fn leave(&self) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM nodes WHERE id = $1", &[&self.node_id])?;
            Ok(())
        })
    }

    fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.with(|c| insert_audit(c, entry))
    }

    fn purge(&self, audit_before: Millis, sessions_before: Millis) -> StoreResult<(usize, usize)> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let audit = tx.execute("DELETE FROM audit_log WHERE at < $1", &[&audit_before])?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE closed_at IS NOT NULL AND closed_at < $1",
                &[&sessions_before],
            )?;
            tx.commit()?;
            Ok((count(audit), count(sessions)))
        })
    }

    fn audit_for_tenant(&self, tenant_id: &str, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.with(|c| {
            c.query(
                "SELECT at, tenant_id, actor, action, target, outcome FROM audit_log \
                     WHERE tenant_id = $1 ORDER BY seq LIMIT $2",
                &[&tenant_id, &(limit as i64)],
            )?
            .iter()
            .map(|r| audit_from_row(r, 0))
            .collect()
        })
    }

    fn list_audit(
        &self,
        tenant_id: &str,
        target: Option<&str>,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        self.with(|c| {
            c.query(
                "SELECT seq, at, tenant_id, actor, action, target, outcome FROM audit_log \
                     WHERE tenant_id = $1 AND ($2::text IS NULL OR target = $2) \
                     AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
                &[&tenant_id, &target, &before_seq, &(limit as i64)],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, audit_from_row(r, 1)?)))
            .collect()
        })
    }
}

#[cfg(test)]
mod tests;
