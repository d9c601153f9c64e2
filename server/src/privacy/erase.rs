//! Deletion of everything about a subject: their avatars' records (consent
//! included), files and closed session records; their live sessions close
//! first.

use super::scope;
use crate::error::ApiResult;
use crate::session::SessionManager;
use crate::store::{AuditEntry, Principal, Store};

/// What a deletion removed.
#[derive(Debug, Default)]
pub struct Erased {
    pub closed_session_ids: Vec<String>,
    pub deleted_avatar_ids: Vec<String>,
    pub deleted_session_records: u32,
    pub deleted_files: u32,
    pub deleted_recordings: u32,
}

/// Deletes `avatar_id`'s data (or, when empty, all of the tenant's
/// avatars'), recording each in the audit log.
pub async fn erase(
    store: &Store,
    sessions: &SessionManager,
    who: &Principal,
    avatar_id: &str,
) -> ApiResult<Erased> {
    let mut out = Erased::default();
    for a in scope::avatars(store, who, avatar_id).await? {
        out.closed_session_ids
            .extend(sessions.close_for_avatar(&who.tenant_id, &a.id).await);
        let tenant = who.tenant_id.clone();
        let id = a.id.clone();
        let audit = AuditEntry::new(Some(who), "subject.delete", a.id.clone(), "ok");
        // Records first: a crash after this leaves only files no record
        // points to, which the next start removes.
        let records = store
            .run(move |b| {
                b.delete_avatar(&tenant, &id, &audit)?;
                b.delete_closed_sessions(&tenant, Some(&id))
            })
            .await?;
        out.deleted_session_records += records as u32;
        out.deleted_recordings += erase_recordings(store, who, &a.id).await?;
        match store.files.remove_avatar(&a.id).await {
            Ok(n) => out.deleted_files += n as u32,
            Err(e) => {
                tracing::warn!(avatar = %a.id, error = %e, "files left for the startup sweep")
            }
        }
        out.deleted_avatar_ids.push(a.id);
    }
    Ok(out)
}

/// Deletes the recordings of an avatar (records, then files); returns how
/// many.
async fn erase_recordings(store: &Store, who: &Principal, avatar_id: &str) -> ApiResult<u32> {
    let tenant = who.tenant_id.clone();
    let avatar = avatar_id.to_owned();
    let who2 = who.clone();
    let ids = store
        .run(move |b| {
            let mut ids = Vec::new();
            for r in b.list_recordings(&tenant, Some(&avatar), None, usize::MAX >> 1)? {
                let audit = AuditEntry::new(Some(&who2), "subject.delete", r.id.clone(), "ok");
                if b.delete_recording(&tenant, &r.id, &audit)? {
                    ids.push(r.id);
                }
            }
            Ok(ids)
        })
        .await?;
    store.files.remove_recordings(&ids).await;
    Ok(ids.len() as u32)
}
