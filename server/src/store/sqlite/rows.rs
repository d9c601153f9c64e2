//! Rows of the SQLite tables as records, and the audit insert every
//! writing transaction shares.

use crate::store::error::StoreResult;
use crate::store::records::*;
use rusqlite::{Connection, Row, params};
use std::collections::BTreeMap;

pub(super) fn insert_audit(conn: &Connection, e: &AuditEntry) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, tenant_id, actor, action, target, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![e.at, e.tenant_id, e.actor, e.action, e.target, e.outcome],
    )?;
    Ok(())
}

pub(super) fn avatar_from_row(r: &Row<'_>) -> rusqlite::Result<(Avatar, String, String, String)> {
    let state: String = r.get(3)?;
    let format: String = r.get(5)?;
    let labels: String = r.get(8)?;
    Ok((
        Avatar {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            display_name: r.get(2)?,
            state: AvatarState::Ready,
            failure_reason: r.get(4)?,
            image_format: ImageFormat::Png,
            image_bytes: r.get::<_, i64>(6)? as u64,
            image_sha256: r.get(7)?,
            consent: Consent {
                id: r.get(10)?,
                uploader: r.get(11)?,
                subject_name: r.get(12)?,
                subject_consented: r.get(13)?,
                subject_is_minor: r.get(14)?,
                guardian_name: r.get(15)?,
                purpose: r.get(16)?,
                consented_at: r.get(17)?,
                policy_version: r.get(18)?,
                recorded_at: r.get(19)?,
            },
            labels: BTreeMap::new(),
            created_at: r.get(9)?,
            original_kept: r.get(20)?,
            face: FaceSummary {
                faces_found: r.get::<_, i64>(21)? as u32,
                score: r.get::<_, f64>(22)? as f32,
            },
        },
        state,
        format,
        labels,
    ))
}

pub(super) fn finish_avatar(raw: (Avatar, String, String, String)) -> StoreResult<Avatar> {
    let (mut a, state, format, labels) = raw;
    a.state = AvatarState::parse(&state)?;
    a.image_format = ImageFormat::parse(&format)?;
    a.labels = labels_from_json(&labels)?;
    Ok(a)
}

pub(super) fn session_from_row(r: &Row<'_>) -> rusqlite::Result<(SessionRecord, String)> {
    Ok((
        SessionRecord {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            avatar_id: r.get(2)?,
            language: r.get(3)?,
            voice_id: r.get(4)?,
            speed: r.get::<_, f64>(5)? as f32,
            width: r.get(6)?,
            height: r.get(7)?,
            fps: r.get(8)?,
            video_bitrate_kbps: r.get(9)?,
            audio_bitrate_kbps: r.get(10)?,
            idle_timeout_secs: r.get(11)?,
            labels: BTreeMap::new(),
            created_at: r.get(13)?,
            closed_at: r.get(14)?,
            close_reason: r.get(15)?,
            node_id: r.get(16)?,
        },
        r.get(12)?,
    ))
}

pub(super) fn finish_session(raw: (SessionRecord, String)) -> StoreResult<SessionRecord> {
    let (mut s, labels) = raw;
    s.labels = labels_from_json(&labels)?;
    Ok(s)
}
