//! Which avatars a subject request covers.

use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::store::{Avatar, Principal, Store};

/// Avatars read per page when a request covers the whole tenant.
const PAGE: usize = 500;

/// The avatars in scope: `avatar_id`'s (NOT_FOUND if not the caller's), or
/// all of the caller's tenant when it is empty.
pub async fn avatars(store: &Store, who: &Principal, avatar_id: &str) -> ApiResult<Vec<Avatar>> {
    let tenant = who.tenant_id.clone();
    if !avatar_id.is_empty() {
        let id = ids::parse_id("avatar_id", ids::AVATAR, avatar_id)?;
        let id2 = id.clone();
        return store
            .run(move |b| b.get_avatar(&tenant, &id2))
            .await?
            .map(|a| vec![a])
            .ok_or_else(|| ApiError::not_found(format!("avatar {id} not found")));
    }
    Ok(store
        .run(move |b| {
            let mut all = vec![];
            let mut before: Option<String> = None;
            loop {
                let page = b.list_avatars(&tenant, before.as_deref(), PAGE)?;
                let done = page.len() < PAGE;
                before = page.last().map(|a| a.id.clone());
                all.extend(page);
                if done {
                    return Ok(all);
                }
            }
        })
        .await?)
}
