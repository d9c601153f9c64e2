//! WHEP (the WISH working group's egress protocol) for viewers on the HTTP
//! listener:
//!
//! * `POST /whep/sessions/{id}` with an SDP offer (`application/sdp`) →
//!   `201 Created`, the SDP answer, and `Location` of the viewer resource;
//! * `DELETE /whep/sessions/{id}/viewers/{viewer}` ends that viewer;
//! * `PATCH` (trickle ICE) answers 405: the answer carries every candidate;
//! * `OPTIONS` and CORS headers let browsers on other origins play.
//!
//! Viewers authenticate with the session's viewer token, as
//! `Authorization: Bearer <token>` (never in the URL, where access logs and
//! `Referer` headers would keep it).

use crate::rtc::{RtcError, RtcSettings};
use crate::session::SessionManager;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use std::sync::Arc;
use tower_http::cors::{Any, CorsLayer};

/// Largest SDP offer accepted.
const MAX_OFFER_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct WhepState {
    pub sessions: SessionManager,
    /// Where sessions of other servers sharing the records run.
    pub store: crate::store::Store,
    pub settings: Arc<RtcSettings>,
    pub limits: Arc<super::ratelimit::RateLimits>,
}

pub fn routes(state: WhepState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
        ])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG]);
    Router::new()
        .route("/whep/sessions/{session_id}", post(offer).patch(no_trickle))
        .route(
            "/whep/sessions/{session_id}/viewers/{viewer_id}",
            axum::routing::delete(hang_up).patch(no_trickle),
        )
        .layer(DefaultBodyLimit::max(MAX_OFFER_BYTES))
        .layer(cors)
        .with_state(state)
}

/// For an offer to a session another server (sharing the records) runs:
/// a 307 redirect to that server's advertised URL, same path and query (the
/// offer is re-sent there and answered by the server that has the media),
/// or a 404 that names the node when it advertises no address. `None`: not
/// another server's session (or not known to be).
pub(super) async fn redirect_elsewhere(
    store: &crate::store::Store,
    session_id: &str,
    uri: &axum::http::Uri,
) -> Option<Response> {
    crate::ids::parse_id("session_id", crate::ids::SESSION, session_id).ok()?;
    let at = match store.session_elsewhere(session_id).await {
        Ok(at) => at?,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up where a session runs");
            return None;
        }
    };
    let Some(url) = at.url else {
        return Some(error(
            StatusCode::NOT_FOUND,
            format!(
                "session {session_id} runs on another server (node {}), which advertises no address (server.advertise_url)",
                at.node_id
            ),
        ));
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    let target = format!("{url}{path}");
    let Ok(location) = HeaderValue::from_str(&target) else {
        return None;
    };
    let mut r = error(
        StatusCode::TEMPORARY_REDIRECT,
        format!("session {session_id} runs on {url}"),
    );
    r.headers_mut().insert(header::LOCATION, location);
    Some(r)
}

/// An offer within the client address's budget, or 429 with
/// `Retry-After`.
pub(super) fn offer_allowed(
    limits: &super::ratelimit::RateLimits,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<super::ratelimit::PeerAddr>>>,
) -> Result<(), Box<Response>> {
    let ip = peer.map(|p| p.0.0.0.ip());
    match limits.check(super::ratelimit::Costly::Offer, None, ip) {
        Ok(()) => Ok(()),
        Err(crate::error::ApiError::RateLimited {
            message,
            retry_after,
        }) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, message);
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Err(Box::new(r))
        }
        Err(e) => Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        ))),
    }
}

pub(super) fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut r = (status, format!("{}\n", msg.into())).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong viewer token: send `Authorization: Bearer <viewer_token>` \
         (a token in the URL is not accepted)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The bearer token of a request (`Authorization: Bearer …`).
pub(super) fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Finds the live session and checks the viewer token.
fn authorize(
    state: &WhepState,
    session_id: &str,
    headers: &HeaderMap,
) -> Result<Arc<crate::session::SessionHandle>, Box<Response>> {
    let session = state.sessions.live_by_id(session_id).ok_or_else(|| {
        Box::new(error(
            StatusCode::NOT_FOUND,
            format!("no live session {}", crate::ids::truncate(session_id, 40)),
        ))
    })?;
    match token(headers) {
        Some(t) if session.viewer_token_matches(t) => Ok(session),
        _ => Err(Box::new(unauthorized())),
    }
}

async fn offer(
    State(state): State<WhepState>,
    Path(session_id): Path<String>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<super::ratelimit::PeerAddr>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = offer_allowed(&state.limits, peer) {
        return *r;
    }
    if state.sessions.live_by_id(&session_id).is_none() {
        // Another server's, perhaps: only a genuine viewer token for it
        // learns that (and where).
        let keys = state.store.files.keyring();
        let genuine = token(&headers)
            .is_some_and(|t| crate::session::viewer_token::genuine(keys, &session_id, t));
        if !genuine {
            return unauthorized();
        }
        if let Some(r) = redirect_elsewhere(&state.store, &session_id, &uri).await {
            return r;
        }
    }
    let session = match authorize(&state, &session_id, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let sdp = match read_offer(&headers, &body) {
        Ok(sdp) => sdp,
        Err(r) => return *r,
    };
    if session.viewers.len() >= state.settings.max_viewers() {
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this session already has its maximum of {} viewers",
                state.settings.max_viewers()
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
        return r;
    }
    let tracker = state.sessions.clone();
    let spawn = move |fut| tracker.spawn_tracked(fut);
    match crate::rtc::connect(&state.settings, session, spawn, sdp).await {
        Ok(acc) => created(
            &state.settings,
            acc.answer_sdp,
            &format!("/whep/sessions/{session_id}/viewers/{}", acc.viewer_id),
            &acc.viewer_id,
        ),
        Err(e) => rtc_error(e, "viewer"),
    }
}

/// The SDP offer in a WHEP/WHIP request body, or the response that says
/// what is wrong with it.
pub(super) fn read_offer(headers: &HeaderMap, body: &[u8]) -> Result<String, Box<Response>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim()
        .to_ascii_lowercase()
        .starts_with("application/sdp")
    {
        return Err(Box::new(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        )));
    }
    let Ok(sdp) = String::from_utf8(body.to_vec()) else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "the SDP offer is not valid UTF-8",
        )));
    };
    if !sdp.starts_with("v=0") {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "the body is not an SDP offer (it must start with v=0)",
        )));
    }
    Ok(sdp)
}

/// `201 Created` with the SDP answer, the resource's `Location` and the
/// configured ICE servers as `Link` headers.
pub(super) fn created(
    settings: &RtcSettings,
    answer_sdp: String,
    location: &str,
    peer: &str,
) -> Response {
    let mut r = (StatusCode::CREATED, answer_sdp).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    for link in settings.ice_server_links(peer) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    r
}

/// The response to a failed WHEP/WHIP negotiation.
pub(super) fn rtc_error(e: RtcError, what: &str) -> Response {
    match e {
        e @ (RtcError::BadOffer(_) | RtcError::Negotiation(_)) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        e @ RtcError::NoPort => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        e => {
            tracing::error!(error = %e, "{what} setup failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the {what} connection could not be set up"),
            )
        }
    }
}

async fn hang_up(
    State(state): State<WhepState>,
    Path((session_id, viewer_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let session = match authorize(&state, &session_id, &headers) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match session.viewers.remove(&viewer_id) {
        Some((_, cancel)) => {
            cancel.cancel();
            StatusCode::OK.into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no such viewer in this session"),
    }
}

async fn no_trickle() -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not supported: the SDP answer already carries every candidate",
    );
    r.headers_mut().insert(
        header::ALLOW,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    r
}
