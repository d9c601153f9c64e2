//! The `recordings` table in PostgreSQL.

use crate::store::error::StoreResult;
use crate::store::records::{Millis, Recording};
use ::postgres::{GenericClient, Row};

const COLS: &str = "id, tenant_id, session_id, avatar_id, started_at, ended_at, bytes, duration_ms";

fn from_row(r: &Row) -> StoreResult<Recording> {
    Ok(Recording {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        session_id: r.try_get(2)?,
        avatar_id: r.try_get(3)?,
        started_at: r.try_get(4)?,
        ended_at: r.try_get(5)?,
        bytes: r.try_get::<_, i64>(6)? as u64,
        duration_ms: r.try_get::<_, i64>(7)? as u64,
    })
}

pub(super) fn insert(c: &mut impl GenericClient, r: &Recording) -> StoreResult<()> {
    c.execute(
        &format!("INSERT INTO recordings ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
        &[
            &r.id,
            &r.tenant_id,
            &r.session_id,
            &r.avatar_id,
            &r.started_at,
            &r.ended_at,
            &(r.bytes as i64),
            &(r.duration_ms as i64),
        ],
    )?;
    Ok(())
}

pub(super) fn update(
    c: &mut impl GenericClient,
    id: &str,
    bytes: u64,
    duration_ms: u64,
    ended_at: Option<Millis>,
) -> StoreResult<()> {
    c.execute(
        "UPDATE recordings SET bytes = $2, duration_ms = $3, ended_at = COALESCE($4, ended_at) \
         WHERE id = $1",
        &[&id, &(bytes as i64), &(duration_ms as i64), &ended_at],
    )?;
    Ok(())
}

pub(super) fn get(
    c: &mut impl GenericClient,
    tenant_id: &str,
    id: &str,
) -> StoreResult<Option<Recording>> {
    c.query_opt(
        &format!("SELECT {COLS} FROM recordings WHERE tenant_id = $1 AND id = $2"),
        &[&tenant_id, &id],
    )?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub(super) fn list(
    c: &mut impl GenericClient,
    tenant_id: &str,
    avatar_id: Option<&str>,
    before: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<Recording>> {
    c.query(
        &format!(
            "SELECT {COLS} FROM recordings WHERE tenant_id = $1 \
             AND ($2::text IS NULL OR avatar_id = $2) AND ($3::text IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ),
        &[&tenant_id, &avatar_id, &before, &(limit as i64)],
    )?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) fn delete(c: &mut impl GenericClient, tenant_id: &str, id: &str) -> StoreResult<bool> {
    Ok(c.execute(
        "DELETE FROM recordings WHERE tenant_id = $1 AND id = $2",
        &[&tenant_id, &id],
    )? > 0)
}

pub(super) fn end_orphaned(c: &mut impl GenericClient, ended_at: Millis) -> StoreResult<usize> {
    let n = c.execute(
        "UPDATE recordings SET ended_at = $1 WHERE ended_at IS NULL AND session_id IN \
         (SELECT id FROM sessions WHERE closed_at IS NOT NULL)",
        &[&ended_at],
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) fn ended_before(
    c: &mut impl GenericClient,
    before: Millis,
    limit: usize,
) -> StoreResult<Vec<Recording>> {
    c.query(
        &format!(
            "SELECT {COLS} FROM recordings WHERE ended_at IS NOT NULL AND ended_at < $1 \
             ORDER BY ended_at LIMIT $2"
        ),
        &[&before, &(limit as i64)],
    )?
    .iter()
    .map(from_row)
    .collect()
}

pub(super) fn all_ids(c: &mut impl GenericClient) -> StoreResult<Vec<String>> {
    c.query("SELECT id FROM recordings", &[])?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}
