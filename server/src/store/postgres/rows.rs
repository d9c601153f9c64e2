//! Rows of the PostgreSQL tables as records, and the audit insert every
//! writing transaction shares.

use crate::store::error::{StoreError, StoreResult};
use crate::store::records::*;
use ::postgres::Row;

pub(super) fn insert_audit(
    c: &mut impl ::postgres::GenericClient,
    e: &AuditEntry,
) -> StoreResult<()> {
    c.execute(
        "INSERT INTO audit_log (at, tenant_id, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5, $6)",
        &[&e.at, &e.tenant_id, &e.actor, &e.action, &e.target, &e.outcome],
    )?;
    Ok(())
}

pub(super) fn avatar_from_row(r: &Row) -> StoreResult<Avatar> {
    Ok(Avatar {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        display_name: r.try_get(2)?,
        state: AvatarState::parse(r.try_get(3)?)?,
        failure_reason: r.try_get(4)?,
        image_format: ImageFormat::parse(r.try_get(5)?)?,
        image_bytes: r.try_get::<_, i64>(6)? as u64,
        image_sha256: r.try_get(7)?,
        labels: labels_from_json(r.try_get(8)?)?,
        created_at: r.try_get(9)?,
        consent: Consent {
            id: r.try_get(10)?,
            uploader: r.try_get(11)?,
            subject_name: r.try_get(12)?,
            subject_consented: r.try_get(13)?,
            subject_is_minor: r.try_get(14)?,
            guardian_name: r.try_get(15)?,
            purpose: r.try_get(16)?,
            consented_at: r.try_get(17)?,
            policy_version: r.try_get(18)?,
            recorded_at: r.try_get(19)?,
        },
        original_kept: r.try_get(20)?,
        face: FaceSummary {
            faces_found: r.try_get::<_, i64>(21)? as u32,
            score: r.try_get::<_, f64>(22)? as f32,
        },
    })
}

pub(super) fn session_from_row(r: &Row) -> StoreResult<SessionRecord> {
    let u32_at = |i: usize| -> StoreResult<u32> {
        let v: i64 = r.try_get(i)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("session column {i}: {v}")))
    };
    Ok(SessionRecord {
        id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        avatar_id: r.try_get(2)?,
        language: r.try_get(3)?,
        voice_id: r.try_get(4)?,
        speed: r.try_get::<_, f64>(5)? as f32,
        width: u32_at(6)?,
        height: u32_at(7)?,
        fps: u32_at(8)?,
        video_bitrate_kbps: u32_at(9)?,
        audio_bitrate_kbps: u32_at(10)?,
        idle_timeout_secs: u32_at(11)?,
        labels: labels_from_json(r.try_get(12)?)?,
        created_at: r.try_get(13)?,
        closed_at: r.try_get(14)?,
        close_reason: r.try_get(15)?,
        node_id: r.try_get(16)?,
    })
}

pub(super) fn audit_from_row(r: &Row, first: usize) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        at: r.try_get(first)?,
        tenant_id: r.try_get(first + 1)?,
        actor: r.try_get(first + 2)?,
        action: r.try_get(first + 3)?,
        target: r.try_get(first + 4)?,
        outcome: r.try_get(first + 5)?,
    })
}

pub(super) fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
