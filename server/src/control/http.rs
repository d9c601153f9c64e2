//! Plain HTTP routes beside gRPC on the same port: health, and the web pages
//! in `web-demo/` (the studio console at `/`, the viewer), compiled into the
//! binary so `huashen serve` needs no files beside it — the console's
//! script is the bundle committed in `web-demo/dist/`.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// (path, content type, body) of every page served.
const PAGES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../../../web-demo/index.html"),
    ),
    (
        "/console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web-demo/dist/console.js"),
    ),
    (
        "/console.css",
        "text/css; charset=utf-8",
        include_str!("../../../web-demo/console.css"),
    ),
    (
        "/viewer.html",
        "text/html; charset=utf-8",
        include_str!("../../../web-demo/viewer.html"),
    ),
    (
        "/viewer.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web-demo/viewer.js"),
    ),
    (
        "/whep.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web-demo/whep.js"),
    ),
    (
        "/viewer.css",
        "text/css; charset=utf-8",
        include_str!("../../../web-demo/viewer.css"),
    ),
];

/// What pages may load and do: scripts, styles and calls of their own
/// origin only (no inline code), pictures also from `data:`/`blob:` URLs
/// (the console's previews), no plugins, no framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The viewer page's: the same, but its WHEP offer may be redirected to the
/// server (another origin) that runs the session.
const VIEWER_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
     connect-src 'self' https: http:; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The security headers every page carries (`viewer`: the viewer page's
/// policy).
pub fn security_headers(h: &mut HeaderMap, viewer: bool) {
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    let policy = if viewer {
        VIEWER_CONTENT_SECURITY_POLICY
    } else {
        CONTENT_SECURITY_POLICY
    };
    set(h, "content-security-policy", policy);
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(
        h,
        "permissions-policy",
        "microphone=(self), camera=(), geolocation=(), payment=(), usb=()",
    );
}

/// Adds the HTTP routes to the gRPC router. No route hands out a key: the
/// development key reaches the console in the fragment of the link `serve`
/// prints to its terminal (a same-host reverse proxy could not tell its
/// clients from this machine's).
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
    r = r.fallback(not_found);
    for &(path, content_type, body) in PAGES {
        r = r.route(
            path,
            get(move || async move {
                let mut resp = body.into_response();
                let h = resp.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                security_headers(h, path == "/viewer.html");
                resp
            }),
        );
    }
    r
}

/// Anything else: gRPC's UNIMPLEMENTED to gRPC clients, a plain 404 to the
/// rest.
async fn not_found(headers: HeaderMap) -> axum::response::Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    if grpc {
        tonic::Status::unimplemented("no such method")
            .into_http::<axum::body::Body>()
            .into_response()
    } else {
        (axum::http::StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}
