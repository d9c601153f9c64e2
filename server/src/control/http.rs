//! Plain HTTP routes beside gRPC on the same port: health, and the web pages
//! in `web-demo/` (the studio console at `/`, the viewer), compiled into the
//! binary so `huashen serve` needs no files beside it — the console's
//! script is the bundle committed in `web-demo/dist/`.

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::{IpAddr, SocketAddr};

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

/// Adds the HTTP routes to the gRPC router. `dev_key` is the development
/// tenant's key when the server bootstrapped it (see [`dev_key_page`]).
pub fn routes(
    grpc: Router,
    sessions: crate::session::SessionManager,
    dev_key: Option<String>,
) -> Router {
    let mut r = grpc
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/console/dev-key",
            get(
                move |ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap| {
                    let key = dev_key.clone();
                    async move { dev_key_page(key.as_deref(), peer, &headers) }
                },
            ),
        )
        .route(
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
                security_headers(h, path == "/viewer.html");
                resp
            }),
        );
    }
    r
}

/// The development key for the console's sign-in box, so that a newcomer on
/// the server's own machine opens the page and is signed in. Only when the
/// dev tenant is bootstrapped (never in production, where
/// `auth.bootstrap_dev_tenant = false`), only to a loopback peer, and only
/// when the page was addressed by a loopback name: a web page elsewhere that
/// rebinds its own host name to 127.0.0.1 sends that name as `Host` and is
/// refused; no CORS headers are sent, so other origins cannot read it.
/// Anything else is a plain 404: the key is typed in by hand.
fn dev_key_page(key: Option<&str>, peer: SocketAddr, headers: &HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    match key {
        Some(key) if is_loopback(peer.ip()) && is_loopback_host(host) => {
            let mut resp = format!("{key}\n").into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        _ => (
            StatusCode::NOT_FOUND,
            "the development key is only offered to this machine (type the API key)\n",
        )
            .into_response(),
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn dev_key_only_for_loopback_peers_and_names() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lan: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let ok = |r: Response| r.status() == StatusCode::OK;
        assert!(ok(dev_key_page(Some("k"), local, &host("127.0.0.1:8700"))));
        assert!(ok(dev_key_page(Some("k"), local, &host("localhost:8700"))));
        assert!(ok(dev_key_page(
            Some("k"),
            "[::1]:9".parse().unwrap(),
            &host("[::1]:8700")
        )));
        assert!(!ok(dev_key_page(None, local, &host("127.0.0.1:8700"))));
        assert!(!ok(dev_key_page(Some("k"), lan, &host("127.0.0.1:8700"))));
        // DNS rebinding: a loopback peer, but the page's host is elsewhere.
        assert!(!ok(dev_key_page(
            Some("k"),
            local,
            &host("evil.example:8700")
        )));
        assert!(!ok(dev_key_page(Some("k"), local, &HeaderMap::new())));
    }
}
