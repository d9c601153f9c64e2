//! Who is calling: the API key in a request's `authorization` metadata (or
//! an HTTP header), resolved to a tenant's principal.

use crate::error::{ApiError, ApiResult};
use crate::store::tenants::{KEY_PREFIX, hash_key};
use crate::store::{Principal, Store};

/// Resolves the caller of a request from its `authorization` metadata.
pub async fn authenticate(
    store: &Store,
    md: &tonic::metadata::MetadataMap,
) -> ApiResult<Principal> {
    let raw = md.get("authorization").map(|v| v.to_str());
    authenticate_header(store, raw.map(|r| r.unwrap_or("\u{fffd}"))).await
}

/// Resolves the caller from the value of an `authorization` header (gRPC
/// metadata or HTTP, e.g. a WHIP publisher).
pub async fn authenticate_header(store: &Store, raw: Option<&str>) -> ApiResult<Principal> {
    let raw = raw.ok_or_else(|| {
        ApiError::Unauthenticated(
            "missing API key: send metadata `authorization: Bearer <key>`".into(),
        )
    })?;
    let text = Some(raw).filter(|t| t.is_ascii()).ok_or_else(|| {
        ApiError::Unauthenticated("authorization metadata is not valid ASCII".into())
    })?;
    let key = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            ApiError::Unauthenticated("authorization metadata must be `Bearer <key>`".into())
        })?;
    if !key.starts_with(KEY_PREFIX) || key.len() > 128 {
        return Err(ApiError::Unauthenticated(
            "unknown or revoked API key".into(),
        ));
    }
    let hash = hash_key(key);
    store
        .run(move |b| b.principal_by_key_hash(&hash))
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("unknown or revoked API key".into()))
}
