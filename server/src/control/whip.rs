//! WHIP (RFC 9725) ingest of the host's microphone on the HTTP listener:
//!
//! * `POST /whip/sessions/{id}` with the publisher's SDP offer
//!   (`application/sdp`, an Opus audio track) → `201 Created`, the SDP
//!   answer and `Location` of the publisher resource;
//! * `DELETE /whip/sessions/{id}/publishers/{publisher}` ends it;
//! * `PATCH` (trickle ICE) answers 405: the answer carries every candidate.
//!
//! Publishing drives a session, so it takes the tenant's API key
//! (`Authorization: Bearer <key>`), not a viewer token. What is published
//! becomes the session's live voice exactly like PushAudio, and like it one
//! stream feeds a session at a time (a second one: 409).

use super::auth::authenticate_header;
use super::whep::{created, error, read_offer, redirect_elsewhere, rtc_error, token};
use crate::rtc::RtcSettings;
use crate::session::{Found, SessionManager};
use crate::store::Store;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dashmap::DashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const MAX_OFFER_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct WhipState {
    pub sessions: SessionManager,
    pub store: Store,
    pub settings: Arc<RtcSettings>,
    /// Live publishers: id → (session id, stop).
    pub publishers: Arc<DashMap<String, (String, CancellationToken)>>,
    pub limits: Arc<super::ratelimit::RateLimits>,
}

pub fn routes(state: WhipState) -> Router {
    Router::new()
        .route("/whip/sessions/{session_id}", post(offer).patch(no_trickle))
        .route(
            "/whip/sessions/{session_id}/publishers/{publisher_id}",
            axum::routing::delete(hang_up).patch(no_trickle),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .with_state(state)
}

/// The caller's live session, or the response that says why not.
async fn authorize(
    state: &WhipState,
    session_id: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<Arc<crate::session::SessionHandle>, Box<Response>> {
    let key = token(headers).map(|k| format!("Bearer {k}"));
    let who = authenticate_header(&state.store, key.as_deref())
        .await
        .map_err(|e| {
            let mut r = error(StatusCode::UNAUTHORIZED, format!("{e}"));
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Box::new(r)
        })?;
    match state.sessions.find(&who, session_id).await {
        Ok(Found::Live(s)) => return Ok(s),
        // Another server's session (of this tenant: others' ids stay
        // unknown): it is published there.
        Ok(Found::Elsewhere(..)) => {
            if let Some(r) = redirect_elsewhere(&state.store, session_id, uri).await {
                return Err(Box::new(r));
            }
        }
        _ => {}
    }
    Err(Box::new(error(
        StatusCode::NOT_FOUND,
        format!(
            "no live session {} of this tenant",
            crate::ids::truncate(session_id, 40)
        ),
    )))
}

async fn offer(
    State(state): State<WhipState>,
    Path(session_id): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<super::ratelimit::PeerAddr>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = super::whep::offer_allowed(&state.limits, peer) {
        return *r;
    }
    let session = match authorize(&state, &session_id, &uri, &headers).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let sdp = match read_offer(&headers, &body) {
        Ok(sdp) => sdp,
        Err(r) => return *r,
    };
    let Some(feed) = session.media.voice.feed() else {
        return error(
            StatusCode::CONFLICT,
            "another PushAudio or WHIP stream is feeding this session; end it first",
        );
    };
    let cancel = session.cancel_token.child_token();
    let tracker = state.sessions.clone();
    let spawn = move |fut| tracker.spawn_tracked(fut);
    match crate::rtc::publish(&state.settings, session, feed, cancel.clone(), spawn, sdp).await {
        Ok(p) => {
            state
                .publishers
                .insert(p.publisher_id.clone(), (session_id.clone(), cancel.clone()));
            // Forget the publisher once it stops, whoever stopped it (it,
            // DELETE, or the session closing).
            let publishers = state.publishers.clone();
            let id = p.publisher_id.clone();
            tokio::spawn(async move {
                cancel.cancelled().await;
                publishers.remove(&id);
            });
            created(
                &state.settings,
                p.answer_sdp,
                &format!("/whip/sessions/{session_id}/publishers/{}", p.publisher_id),
                &p.publisher_id,
            )
        }
        Err(e) => rtc_error(e, "publisher"),
    }
}

async fn hang_up(
    State(state): State<WhipState>,
    Path((session_id, publisher_id)): Path<(String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = authorize(&state, &session_id, &uri, &headers).await {
        return *r;
    }
    match state
        .publishers
        .remove_if(&publisher_id, |_, (sid, _)| *sid == session_id)
    {
        Some((_, (_, cancel))) => {
            cancel.cancel();
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such publisher in this session"),
    }
}

async fn no_trickle() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported: the SDP answer already carries every candidate",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}
