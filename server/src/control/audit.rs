//! `huashen.v1.AuditService`: the tenant's audit log, read-only.

use super::auth::authenticate;
use super::validate;
use crate::error::ApiError;
use crate::store::Store;
use base64::Engine;
use huashen_protos::v1;
use huashen_protos::v1::audit_service_server::AuditService;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    pub store: Store,
}

fn page(p: Option<&v1::PageRequest>) -> Result<(usize, Option<i64>), ApiError> {
    let size = match p.map_or(0, |p| p.page_size as usize) {
        0 => validate::DEFAULT_PAGE_SIZE,
        n if n > validate::MAX_PAGE_SIZE => {
            return Err(ApiError::invalid(format!(
                "page.page_size is {n}; at most {} is allowed",
                validate::MAX_PAGE_SIZE
            )));
        }
        n => n,
    };
    let token = p.map_or("", |p| p.page_token.as_str());
    if token.is_empty() {
        return Ok((size, None));
    }
    let seq = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("audit:").and_then(|n| n.parse::<i64>().ok()))
        .ok_or_else(|| {
            ApiError::invalid("page.page_token is not a token returned by ListAuditEntries")
        })?;
    Ok((size, Some(seq)))
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_entries(
        &self,
        request: Request<v1::ListAuditEntriesRequest>,
    ) -> Result<Response<v1::ListAuditEntriesResponse>, Status> {
        let who = authenticate(&self.store, request.metadata()).await?;
        let req = request.into_inner();
        let (size, before) = page(req.page.as_ref())?;
        let target = validate::optional_text("target", &req.target, 64)?;
        let tenant = who.tenant_id.clone();
        let rows = self
            .store
            .run(move |b| {
                let t = (!target.is_empty()).then_some(target.as_str());
                b.list_audit(&tenant, t, before, size)
            })
            .await
            .map_err(ApiError::from)?;
        let next_page_token = match rows.last() {
            Some((seq, _)) if rows.len() == size => {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("audit:{seq}"))
            }
            _ => String::new(),
        };
        let entries = rows
            .into_iter()
            .map(|(seq, e)| v1::AuditEntry {
                seq,
                time: Some(validate::timestamp(e.at)),
                actor: e.actor,
                action: e.action,
                target: e.target,
                outcome: e.outcome,
            })
            .collect();
        Ok(Response::new(v1::ListAuditEntriesResponse {
            entries,
            next_page_token,
        }))
    }
}
