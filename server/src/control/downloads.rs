//! `GET /recordings/{id}/file`: a recording over HTTP, as `video/mp4` with
//! range requests (a browser's `<video>` seeks with them). Authorised by
//! an API key (`Authorization: Bearer`) or by the short-lived `token` that
//! `GetRecording` puts in its `download_path`. Every download is audited.

use super::auth::authenticate_header;
use crate::error::ApiError;
use crate::outputs::recordings;
use crate::store::{Principal, Store, now_ms};
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use std::collections::HashMap;
use tokio_stream::wrappers::ReceiverStream;

pub fn routes(store: Store) -> Router {
    Router::new()
        .route("/recordings/{recording_id}/file", get(download))
        .with_state(store)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, format!("{}\n", msg.into())).into_response()
}

/// An API error as HTTP (its gRPC message, which holds no internals).
fn api_error(e: ApiError) -> Response {
    let status = tonic::Status::from(e);
    let code = match status.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => StatusCode::NOT_FOUND,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, status.message())
}

/// The caller: the token's, or the API key's.
async fn caller(
    store: &Store,
    id: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<Principal, Response> {
    if let Some(token) = query.get("token") {
        return recordings::check_download_token(&store.files, token, id, now_ms()).ok_or_else(
            || {
                error(
                    StatusCode::UNAUTHORIZED,
                    "the download token is not valid for this recording (or has expired); \
                     GetRecording gives a fresh one",
                )
            },
        );
    }
    let key = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    authenticate_header(store, key)
        .await
        .map_err(|e| error(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// The byte range asked for (one range: `bytes=a-b`, `bytes=a-`,
/// `bytes=-n`), as `start..end` within `size`; `Err` when it cannot be met.
fn range(headers: &HeaderMap, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = spec.trim().strip_prefix("bytes=")?;
    let first = spec.split(',').next()?.trim();
    let (a, b) = first.split_once('-')?;
    let parsed = match (a.trim(), b.trim()) {
        ("", n) => n
            .parse::<u64>()
            .ok()
            .map(|n| (size.saturating_sub(n), size)),
        (a, "") => a.parse::<u64>().ok().map(|a| (a, size)),
        (a, b) => match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(a), Ok(b)) if a <= b => Some((a, (b + 1).min(size))),
            _ => None,
        },
    };
    Some(match parsed {
        Some((start, end)) if start < end => Ok((start, end)),
        _ => Err(()),
    })
}

async fn download(
    State(store): State<Store>,
    Path(recording_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let who = match caller(&store, &recording_id, &headers, &query).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let rec = match recordings::get(&store, &who, &recording_id).await {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    let files = store.files.clone();
    let id = rec.id.clone();
    let size = match tokio::task::spawn_blocking(move || recordings::size(&files, &id)).await {
        Ok(Ok(n)) => n,
        other => {
            tracing::error!(recording = %rec.id, error = ?other.map(|r| r.err()), "cannot size the recording");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the recording could not be read",
            );
        }
    };
    let (status, start, end) = match range(&headers, size) {
        None => (StatusCode::OK, 0, size),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(Err(())) => {
            let mut r = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "the range is not in the file",
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let outcome = format!("bytes {start}-{end} of {size}");
    if let Err(e) =
        recordings::audit(&store, &who, "recording.download", rec.id.clone(), outcome).await
    {
        return api_error(e);
    }
    let chunks = recordings::read_range(store.files.clone(), rec.id, start, end);
    let body = Body::from_stream(ReceiverStream::new(chunks).map(|c| {
        c.map(axum::body::Bytes::from)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }));
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}
