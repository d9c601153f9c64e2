//! SQLite backend: one connection in WAL mode, schema migrations tracked by
//! `PRAGMA user_version` (`schema.rs`), foreign keys on, audit log
//! append-only (a trigger refuses updates).

use super::backend::Backend;
use super::error::{StoreError, StoreResult};
use super::records::*;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::Mutex;

mod recordings;
mod rows;
mod schema;

use rows::{avatar_from_row, finish_avatar, finish_session, insert_audit, session_from_row};

use schema::migrate;

pub struct SqliteBackend {
    conn: Mutex<Connection>,
    node_id: String,
    started_at: Millis,
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> StoreResult<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> StoreResult<Self> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            node_id: crate::ids::new_id(crate::ids::NODE),
            started_at: now_ms(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        // A poisoned lock means a panic mid-call; SQLite rolled the
        // transaction back, so the connection itself is still consistent.
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

impl Backend for SqliteBackend {
    fn create_tenant(&self, t: &Tenant) -> StoreResult<()> {
        self.with(|c| {
            let n = c.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![t.id, t.name, t.created_at],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("tenant {:?}", t.name)));
            }
            Ok(())
        })
    }

    fn tenant_by_name(&self, name: &str) -> StoreResult<Option<Tenant>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, name, created_at FROM tenants WHERE name = ?1",
                [name],
                |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: r.get(2)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn count_tenants(&self) -> StoreResult<u64> {
        self.with(|c| {
            Ok(c.query_row("SELECT COUNT(*) FROM tenants", [], |r| r.get::<_, i64>(0))? as u64)
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
                "INSERT INTO api_keys (id, tenant_id, key_hash, label, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key_id, tenant_id, &key_hash[..], label, now_ms()],
            )?;
            Ok(())
        })
    }

    fn principal_by_key_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<Principal>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT id, tenant_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
                [&key_hash[..]],
                |r| {
                    Ok(Principal {
                        key_id: r.get(0)?,
                        tenant_id: r.get(1)?,
                    })
                },
            )
            .optional()?)
        })
    }

    fn insert_avatar(&self, a: &Avatar, audit: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO avatars (id, tenant_id, display_name, state, failure_reason, image_format, \
                 image_bytes, image_sha256, labels, created_at, original_kept, faces_found, \
                 face_score) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)",
                params![
                    a.id,
                    a.tenant_id,
                    a.display_name,
                    a.state.as_str(),
                    a.failure_reason,
                    a.image_format.as_str(),
                    a.image_bytes as i64,
                    a.image_sha256,
                    labels_to_json(&a.labels),
                    a.created_at,
                    a.original_kept,
                    i64::from(a.face.faces_found),
                    f64::from(a.face.score)
                ],
            )?;
            let k = &a.consent;
            tx.execute(
                "INSERT INTO consents (id, tenant_id, avatar_id, uploader, subject_name, subject_consented, \
                 subject_is_minor, guardian_name, purpose, consented_at, policy_version, recorded_at) \
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
                params![
                    k.id,
                    a.tenant_id,
                    a.id,
                    k.uploader,
                    k.subject_name,
                    k.subject_consented,
                    k.subject_is_minor,
                    k.guardian_name,
                    k.purpose,
                    k.consented_at,
                    k.policy_version,
                    k.recorded_at
                ],
            )?;
            insert_audit(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get_avatar(&self, tenant_id: &str, avatar_id: &str) -> StoreResult<Option<Avatar>> {
        let raw = self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {AVATAR_COLS} FROM avatars a JOIN consents c ON c.avatar_id = a.id \
                     WHERE a.tenant_id = ?1 AND a.id = ?2"
                ),
                [tenant_id, avatar_id],
                avatar_from_row,
            )
            .optional()?)
        })?;
        raw.map(finish_avatar).transpose()
    }

    fn list_avatars(
        &self,
        tenant_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Avatar>> {
        let raws = self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {AVATAR_COLS} FROM avatars a JOIN consents c ON c.avatar_id = a.id \
                 WHERE a.tenant_id = ?1 AND (?2 IS NULL OR a.id < ?2) ORDER BY a.id DESC LIMIT ?3"
            ))?;
            let rows = st.query_map(params![tenant_id, before, limit as i64], avatar_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        raws.into_iter().map(finish_avatar).collect()
    }

    fn delete_avatar(
        &self,
        tenant_id: &str,
        avatar_id: &str,
        audit: &AuditEntry,
    ) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM avatars WHERE tenant_id = ?1 AND id = ?2",
                [tenant_id, avatar_id],
            )?;
            if n > 0 {
                insert_audit(&tx, audit)?;
            }
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn all_avatar_ids(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id FROM avatars")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    fn existing_avatar_ids(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare_cached("SELECT 1 FROM avatars WHERE id = ?1")?;
            let mut out = Vec::new();
            for id in ids {
                if st.exists([id])? {
                    out.push(id.clone());
                }
            }
            Ok(out)
        })
    }

    fn insert_session(&self, s: &SessionRecord, audit: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLS}, node_id) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17)"
                ),
                params![
                    s.id,
                    s.tenant_id,
                    s.avatar_id,
                    s.language,
                    s.voice_id,
                    s.speed as f64,
                    s.width,
                    s.height,
                    s.fps,
                    s.video_bitrate_kbps,
                    s.audio_bitrate_kbps,
                    s.idle_timeout_secs,
                    labels_to_json(&s.labels),
                    s.created_at,
                    s.closed_at,
                    s.close_reason,
                    self.node_id
                ],
            )?;
            insert_audit(&tx, audit)?;
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
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE sessions SET closed_at = ?2, close_reason = ?3 WHERE id = ?1 AND closed_at IS NULL",
                params![session_id, closed_at, reason],
            )?;
            insert_audit(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get_session(&self, tenant_id: &str, session_id: &str) -> StoreResult<Option<SessionRecord>> {
        let raw = self.with(|c| {
            Ok(c.query_row(
                &format!(
                    "SELECT {SESSION_COLS}, node_id FROM sessions WHERE tenant_id = ?1 AND id = ?2"
                ),
                [tenant_id, session_id],
                session_from_row,
            )
            .optional()?)
        })?;
        raw.map(finish_session).transpose()
    }

    fn list_sessions(
        &self,
        tenant_id: &str,
        include_closed: bool,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SessionRecord>> {
        let raws = self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SESSION_COLS}, node_id FROM sessions WHERE tenant_id = ?1 AND (?2 OR closed_at IS NULL) \
                 AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
            ))?;
            let rows = st.query_map(
                params![tenant_id, include_closed, before, limit as i64],
                session_from_row,
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        raws.into_iter().map(finish_session).collect()
    }

    fn sessions_of(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<Vec<SessionRecord>> {
        let raws = self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SESSION_COLS}, node_id FROM sessions WHERE tenant_id = ?1 AND (?2 IS NULL OR avatar_id = ?2) ORDER BY id"
            ))?;
            let rows = st.query_map(params![tenant_id, avatar_id], session_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        raws.into_iter().map(finish_session).collect()
    }

    fn delete_closed_sessions(
        &self,
        tenant_id: &str,
        avatar_id: Option<&str>,
    ) -> StoreResult<usize> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM sessions WHERE tenant_id = ?1 AND (?2 IS NULL OR avatar_id = ?2) AND closed_at IS NOT NULL",
                params![tenant_id, avatar_id],
            )?)
        })
    }

    fn insert_recording(&self, r: &Recording, audit: &AuditEntry) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            recordings::insert(&tx, r)?;
            insert_audit(&tx, audit)?;
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
        self.with(|c| recordings::all_ids(c))
    }

    fn end_orphaned_recordings(&self, ended_at: Millis) -> StoreResult<usize> {
        self.with(|c| Ok(recordings::end_orphaned(c, ended_at)?))
    }

    fn delete_recording(&self, tenant_id: &str, id: &str, audit: &AuditEntry) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let deleted = recordings::delete(&tx, tenant_id, id)?;
            if deleted {
                insert_audit(&tx, audit)?;
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
                "INSERT INTO nodes (id, started_at, seen_at, url) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at, url = excluded.url",
                params![self.node_id, self.started_at, now, url],
            )?;
            Ok(())
        })
    }

    fn session_location(&self, session_id: &str) -> StoreResult<Option<(String, String)>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT s.node_id, COALESCE(n.url, '') FROM sessions s \
                 LEFT JOIN nodes n ON n.id = s.node_id \
                 WHERE s.id = ?1 AND s.closed_at IS NULL AND s.node_id IS NOT NULL",
                [session_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
        })
    }

    fn close_sessions_of_dead_nodes(
        &self,
        dead_before: Millis,
        closed_at: Millis,
        reason: i32,
    ) -> StoreResult<usize> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE sessions SET closed_at = ?2, close_reason = ?3 WHERE closed_at IS NULL \
                 AND node_id IS NOT ?4 AND (node_id IS NULL OR node_id NOT IN \
                 (SELECT id FROM nodes WHERE seen_at >= ?1))",
                params![dead_before, closed_at, reason, self.node_id],
            )?;
            tx.execute(
                "DELETE FROM nodes WHERE seen_at < ?1 AND id <> ?2",
                params![closed_at - NODE_FORGET_MS, self.node_id],
            )?;
            tx.commit()?;
            Ok(n)
        })
    }

    fn leave(&self) -> StoreResult<()> {
        self.with(|c| {
            c.execute("DELETE FROM nodes WHERE id = ?1", [&self.node_id])?;
            Ok(())
        })
    }

    fn purge(&self, audit_before: Millis, sessions_before: Millis) -> StoreResult<(usize, usize)> {
        self.with(|c| {
            let tx = c.transaction()?;
            let audit = tx.execute("DELETE FROM audit_log WHERE at < ?1", [audit_before])?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE closed_at IS NOT NULL AND closed_at < ?1",
                [sessions_before],
            )?;
            tx.commit()?;
            Ok((audit, sessions))
        })
    }

    fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.with(|c| Ok(insert_audit(c, entry)?))
    }

    fn list_audit(
        &self,
        tenant_id: &str,
        target: Option<&str>,
        before_seq: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT seq, at, tenant_id, actor, action, target, outcome FROM audit_log \
                 WHERE tenant_id = ?1 AND (?2 IS NULL OR target = ?2) AND (?3 IS NULL OR seq < ?3) \
                 ORDER BY seq DESC LIMIT ?4",
            )?;
            let rows = st.query_map(params![tenant_id, target, before_seq, limit as i64], |r| {
                Ok((
                    r.get(0)?,
                    AuditEntry {
                        at: r.get(1)?,
                        tenant_id: r.get(2)?,
                        actor: r.get(3)?,
                        action: r.get(4)?,
                        target: r.get(5)?,
                        outcome: r.get(6)?,
                    },
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    fn audit_for_tenant(&self, tenant_id: &str, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT at, tenant_id, actor, action, target, outcome FROM audit_log \
                 WHERE tenant_id = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = st.query_map(params![tenant_id, limit as i64], |r| {
                Ok(AuditEntry {
                    at: r.get(0)?,
                    tenant_id: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    outcome: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests;
