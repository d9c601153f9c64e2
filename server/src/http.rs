//! Plain HTTP routes beside gRPC on the same port: health, and the web pages
//! in `web-demo/`, compiled into the binary so `huashen serve` needs no
//! files beside it.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// (path, content type, body) of every page served.
const PAGES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../web-demo/index.html"),
    ),
    (
        "/viewer.html",
        "text/html; charset=utf-8",
        include_str!("../../web-demo/viewer.html"),
    ),
    (
        "/viewer.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web-demo/viewer.js"),
    ),
    (
        "/whep.js",
        "text/javascript; charset=utf-8",
        include_str!("../../web-demo/whep.js"),
    ),
    (
        "/viewer.css",
        "text/css; charset=utf-8",
        include_str!("../../web-demo/viewer.css"),
    ),
];

/// Adds the HTTP routes to the gRPC router.
pub fn routes(grpc: Router, sessions: crate::session::SessionManager) -> Router {
    let mut r = grpc.route("/healthz", get(|| async { "ok\n" })).route(
        "/metrics",
        get(move || {
            let sessions = sessions.clone();
            async move {
                sessions.refresh_metrics();
                let mut resp = crate::metrics::render().into_response();
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
        }),
    );
    for &(path, content_type, body) in PAGES {
        r = r.route(
            path,
            get(move || async move {
                let mut resp = body.into_response();
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                h.insert(
                    "x-content-type-options",
                    HeaderValue::from_static("nosniff"),
                );
                resp
            }),
        );
    }
    r
}
