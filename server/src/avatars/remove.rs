//! Removing an avatar: deletion, or withdrawal of the subject's consent.

use crate::error::{ApiError, ApiResult};
use crate::session::SessionManager;
use crate::store::{AuditEntry, Principal, Store};

/// Closes an avatar's sessions, then deletes its records (consent
/// included) and files; `action` names why in the audit log. Returns the
/// closed sessions.
pub async fn remove(
    store: &Store,
    sessions: &SessionManager,
    who: &Principal,
    id: &str,
    action: &str,
) -> ApiResult<Vec<String>> {
    let tenant = who.tenant_id.clone();
    let id2 = id.to_owned();
    let exists = store
        .run(move |b| b.get_avatar(&tenant, &id2))
        .await?
        .is_some();
    if !exists {
        return Err(ApiError::not_found(format!("avatar {id} not found")));
    }
    // Sessions first, so nothing uses the files while they go.
    let mut closed = sessions.close_for_avatar(&who.tenant_id, id).await;
    let tenant = who.tenant_id.clone();
    let id2 = id.to_owned();
    let audit = AuditEntry::new(Some(who), action, id, "ok");
    let deleted = store
        .run(move |b| b.delete_avatar(&tenant, &id2, &audit))
        .await?;
    if !deleted {
        return Err(ApiError::not_found(format!("avatar {id} not found")));
    }
    // A session created while the row was still there closes too.
    closed.extend(sessions.close_for_avatar(&who.tenant_id, id).await);
    if let Err(e) = store.files.remove_avatar(id).await {
        // The record is gone; the startup sweep removes what is left.
        tracing::warn!(avatar = %id, error = %e, "could not remove avatar files now");
    }
    tracing::info!(avatar = %id, closed = closed.len(), action, "avatar removed");
    Ok(closed)
}
