//! Finding a caller's session: live here, closed, or open on another
//! server that shares the records (sessions are driven on the server that
//! created them; the others say where it runs).

use super::handle::SessionHandle;
use super::manager::SessionManager;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::{Principal, SessionRecord};
use std::sync::Arc;

/// A session as found by id.
pub enum Found {
    Live(Arc<SessionHandle>),
    Closed(SessionRecord),
    /// Open, run by another server sharing the database (reachable at the
    /// URL it advertises, if any).
    Elsewhere(SessionRecord, Option<String>),
}

impl SessionManager {
    /// The caller's session, live or closed; NOT_FOUND otherwise.
    pub async fn find(&self, who: &Principal, session_id: &str) -> ApiResult<Found> {
        let id = ids::parse_id("session_id", ids::SESSION, session_id)?;
        if let Some(h) = self.live(who, &id) {
            return Ok(Found::Live(h));
        }
        let store = self.store();
        let tenant = who.tenant_id.clone();
        let id2 = id.clone();
        let record = store
            .run(move |b| b.get_session(&tenant, &id2))
            .await?
            .ok_or_else(|| ApiError::not_found(format!("session {id} not found")))?;
        Ok(if self.runs_elsewhere(&record) {
            // Its server's address, for the caller to go there.
            let url = match store.session_elsewhere(&record.id).await {
                Ok(at) => at.and_then(|e| e.url),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot look up where a session runs");
                    None
                }
            };
            Found::Elsewhere(record, url)
        } else {
            Found::Closed(record)
        })
    }

    /// The caller's live session; FAILED_PRECONDITION if it is closed or
    /// runs on another server.
    pub async fn find_live(
        &self,
        who: &Principal,
        session_id: &str,
    ) -> ApiResult<Arc<SessionHandle>> {
        match self.find(who, session_id).await? {
            Found::Live(h) => Ok(h),
            Found::Closed(r) => Err(ApiError::FailedPrecondition(format!(
                "session {} is closed; create a new session",
                r.id
            ))),
            Found::Elsewhere(r, url) => Err(elsewhere(&r, url.as_deref())),
        }
    }

    /// An open record of a session another server (node) runs.
    pub fn runs_elsewhere(&self, r: &SessionRecord) -> bool {
        r.closed_at.is_none()
            && r.node_id
                .as_deref()
                .is_some_and(|n| n != self.store().node_id())
    }
}

/// The error for a call about a session another server runs.
pub fn elsewhere(r: &SessionRecord, url: Option<&str>) -> ApiError {
    let node = r.node_id.as_deref().unwrap_or("?");
    let message = match url {
        Some(url) => format!(
            "session {} runs on another server of this deployment (node {node}, at {url}); send calls for it there",
            r.id
        ),
        None => format!(
            "session {} runs on another server of this deployment (node {node}, which advertises no address: server.advertise_url); send calls for it to the server that created it",
            r.id
        ),
    };
    ApiError::Elsewhere {
        message,
        url: url.map(str::to_owned),
    }
}
