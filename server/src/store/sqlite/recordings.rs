//! The `recordings` table in SQLite.

use crate::store::error::StoreResult;
use crate::store::records::{Millis, Recording};
use rusqlite::{Connection, OptionalExtension, Row, params};

const COLS: &str = "id, tenant_id, session_id, avatar_id, started_at, ended_at, bytes, duration_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Recording> {
    Ok(Recording {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        session_id: r.get(2)?,
        avatar_id: r.get(3)?,
        started_at: r.get(4)?,
        ended_at: r.get(5)?,
        bytes: r.get::<_, i64>(6)? as u64,
        duration_ms: r.get::<_, i64>(7)? as u64,
    })
}

pub(super) fn insert(c: &Connection, r: &Recording) -> rusqlite::Result<()> {
    c.execute(
        &format!("INSERT INTO recordings ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
        params![
            r.id,
            r.tenant_id,
            r.session_id,
            r.avatar_id,
            r.started_at,
            r.ended_at,
            r.bytes as i64,
            r.duration_ms as i64
        ],
    )?;
    Ok(())
}

pub(super) fn update(
    c: &Connection,
    id: &str,
    bytes: u64,
    duration_ms: u64,
    ended_at: Option<Millis>,
) -> StoreResult<()> {
    c.execute(
        "UPDATE recordings SET bytes = ?2, duration_ms = ?3, ended_at = COALESCE(?4, ended_at) \
         WHERE id = ?1",
        params![id, bytes as i64, duration_ms as i64, ended_at],
    )?;
    Ok(())
}

pub(super) fn get(c: &Connection, tenant_id: &str, id: &str) -> StoreResult<Option<Recording>> {
    Ok(c.query_row(
        &format!("SELECT {COLS} FROM recordings WHERE tenant_id = ?1 AND id = ?2"),
        [tenant_id, id],
        from_row,
    )
    .optional()?)
}

pub(super) fn list(
    c: &Connection,
    tenant_id: &str,
    avatar_id: Option<&str>,
    before: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Recording>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLS} FROM recordings WHERE tenant_id = ?1 AND (?2 IS NULL OR avatar_id = ?2) \
         AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4"
    ))?;
    let rows = st.query_map(
        params![tenant_id, avatar_id, before, limit as i64],
        from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn delete(c: &Connection, tenant_id: &str, id: &str) -> rusqlite::Result<bool> {
    Ok(c.execute(
        "DELETE FROM recordings WHERE tenant_id = ?1 AND id = ?2",
        [tenant_id, id],
    )? > 0)
}

pub(super) fn end_orphaned(c: &Connection, ended_at: Millis) -> rusqlite::Result<usize> {
    c.execute(
        "UPDATE recordings SET ended_at = ?1 WHERE ended_at IS NULL AND session_id IN \
         (SELECT id FROM sessions WHERE closed_at IS NOT NULL)",
        [ended_at],
    )
}

pub(super) fn ended_before(
    c: &Connection,
    before: Millis,
    limit: usize,
) -> StoreResult<Vec<Recording>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLS} FROM recordings WHERE ended_at IS NOT NULL AND ended_at < ?1 \
         ORDER BY ended_at LIMIT ?2"
    ))?;
    let rows = st.query_map(params![before, limit as i64], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn all_ids(c: &Connection) -> StoreResult<Vec<String>> {
    let mut st = c.prepare("SELECT id FROM recordings")?;
    let rows = st.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}
