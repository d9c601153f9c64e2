//! The WHIP egress output (RFC 9725, Huashen as the client): POST the
//! offer to the endpoint with the bearer token, take the answer and the
//! resource's `Location`, carry the session, DELETE the resource when it
//! stops. A lost or refused connection is tried again with backoff, up to
//! a limit; a refusal the user must fix (a rejected token, a wrong URL)
//! fails at once with that reason. The token is a secret: it appears in no
//! log, error or state.

use super::retry::{self, Backoff, Fault};
use super::state::{OutputState, StateTx};
use crate::config::Secret;
use crate::error::{ApiError, ApiResult};
use crate::rtc::RtcSettings;
use crate::rtc::egress;
use crate::rtc::forward::{Ended, Sent};
use crate::session::SessionHandle;
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one HTTP exchange with the endpoint may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest SDP answer accepted.
const MAX_ANSWER: usize = 64 * 1024;

pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// An HTTP(S) client for WHIP endpoints: TLS by rustls with the web's root
/// certificates.
pub fn http_client() -> HttpClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::util::tls_client_config())
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// Where to push: a checked URL and the optional bearer token.
#[derive(Debug, Clone)]
pub struct WhipTarget {
    pub url: Uri,
    pub token: Option<Secret>,
}

/// Checks a WHIP destination from the API.
pub fn target(url: &str, token: &str) -> ApiResult<WhipTarget> {
    let bad = |why: &str| ApiError::invalid(format!("whip.url {why}"));
    if url.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|_| bad("is not a URL (http://… or https://…)"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("must start with http:// or https://")),
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad(
            "must not carry credentials: send them as whip.bearer_token",
        ));
    }
    if token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "whip.bearer_token must be at most 4096 visible ASCII characters",
        ));
    }
    Ok(WhipTarget {
        url: uri,
        token: (!token.is_empty()).then(|| Secret(token.to_owned())),
    })
}

/// What a WHIP output needs.
pub struct WhipJob {
    pub id: String,
    pub target: WhipTarget,
    pub session: Arc<SessionHandle>,
    pub settings: Arc<RtcSettings>,
    pub http: HttpClient,
    pub backoff: Backoff,
    pub stop: CancellationToken,
    pub state: StateTx,
    pub counters: Sent,
}

/// Runs the output until it is stopped, its session ends, or it fails.
pub async fn run(job: WhipJob) {
    retry::run(
        &job.id,
        &job.state,
        &job.stop,
        &job.counters,
        job.backoff,
        || once(&job),
    )
    .await;
    tracing::info!(output = %job.id, "WHIP output ended");
}

/// One connection: offer, answer, carry the session, hang up.
async fn once(job: &WhipJob) -> Result<Ended, Fault> {
    let offer = egress::offer(&job.settings, &job.session, &job.id)
        .await
        .map_err(|e| Fault::Retry(format!("the offer could not be made: {e}")))?;
    let (answer, resource) = match post(job, &offer.sdp).await {
        Ok(r) => r,
        Err(f) => {
            offer.close().await;
            return Err(f);
        }
    };
    let connect_timeout = job.settings.connect_timeout();
    let connected = match offer.complete(answer, connect_timeout, &job.stop).await {
        Ok(c) => c,
        Err(e) => {
            hang_up(job, resource.as_ref()).await;
            return Err(Fault::Retry(e.to_string()));
        }
    };
    job.state.set(OutputState::Live);
    let ended = connected.run(&job.session, &job.stop, &job.counters).await;
    hang_up(job, resource.as_ref()).await;
    Ok(ended)
}

fn request(job: &WhipJob, method: Method, uri: &Uri, body: Bytes) -> Request<Full<Bytes>> {
    let mut r = Request::builder().method(method).uri(uri.clone());
    if !body.is_empty() {
        r = r.header(header::CONTENT_TYPE, "application/sdp");
    }
    if let Some(token) = &job.target.token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {}", token.0));
    }
    r.body(Full::new(body)).expect("a valid request")
}

/// POSTs the offer; the answer and the resource's URL.
async fn post(job: &WhipJob, offer: &str) -> Result<(String, Option<Uri>), Fault> {
    let host = job.target.url.host().unwrap_or("?").to_owned();
    let req = request(
        job,
        Method::POST,
        &job.target.url,
        Bytes::from(offer.to_owned()),
    );
    let resp = tokio::time::timeout(HTTP_TIMEOUT, job.http.request(req))
        .await
        .map_err(|_| Fault::Retry(format!("{host} did not answer within {HTTP_TIMEOUT:?}")))?
        .map_err(|e| Fault::Retry(unreachable(&host, &e)))?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| resolve(&job.target.url, l));
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let said: String = text.trim().chars().take(200).collect();
    match status {
        StatusCode::CREATED if text.starts_with("v=0") => Ok((text.into_owned(), location)),
        StatusCode::CREATED => Err(Fault::Fatal(format!(
            "{host} answered 201 without an SDP answer"
        ))),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(Fault::Fatal(format!(
            "{host} refused the bearer token (HTTP {})",
            status.as_u16()
        ))),
        StatusCode::NOT_FOUND => Err(Fault::Fatal(format!(
            "{host} has no WHIP endpoint at this URL (HTTP 404)"
        ))),
        s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => Err(Fault::Retry(
            format!("{host} is unavailable (HTTP {}): {said}", s.as_u16()),
        )),
        s => Err(Fault::Fatal(format!(
            "{host} refused the offer (HTTP {}): {said}",
            s.as_u16()
        ))),
    }
}

/// DELETE of the WHIP resource, best effort.
async fn hang_up(job: &WhipJob, resource: Option<&Uri>) {
    let Some(uri) = resource else { return };
    let req = request(job, Method::DELETE, uri, Bytes::new());
    match tokio::time::timeout(HTTP_TIMEOUT, job.http.request(req)).await {
        Ok(Ok(r)) if r.status().is_success() => {}
        Ok(Ok(r)) => {
            tracing::info!(output = %job.id, status = r.status().as_u16(), "WHIP DELETE refused")
        }
        _ => tracing::info!(output = %job.id, "WHIP DELETE did not go through"),
    }
}

/// `Location` may be relative to the endpoint.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let loc: Uri = location.parse().ok()?;
    if loc.scheme().is_some() {
        return Some(loc);
    }
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(location.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// Why a host could not be reached, in words (DNS, refused, TLS).
fn unreachable(host: &str, e: &hyper_util::client::legacy::Error) -> String {
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    let lower = cause.to_ascii_lowercase();
    let why = if lower.contains("dns") || lower.contains("failed to lookup") {
        "its name does not resolve (DNS)"
    } else if lower.contains("refused") {
        "the connection was refused"
    } else if lower.contains("certificate") || lower.contains("tls") {
        "TLS failed (certificate)"
    } else {
        cause.as_str()
    };
    format!("cannot reach {host}: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_checked() {
        assert!(target("https://sfu.example/whip/live", "tok").is_ok());
        assert!(
            target("http://127.0.0.1:9/whip", "")
                .unwrap()
                .token
                .is_none()
        );
        for bad in [
            "ftp://x/whip",
            "whip",
            "https://user:pw@x/whip",
            "https:///x",
        ] {
            let e = target(bad, "").unwrap_err().to_string();
            assert!(e.starts_with("whip.url"), "{bad}: {e}");
            assert!(!e.contains("pw"), "{e}");
        }
        assert!(target("https://x/whip", "two words").is_err());
        // The token never shows in what a target prints.
        let t = target("https://x/whip", "s3cret-token").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn relative_locations_resolve_against_the_endpoint() {
        let base: Uri = "https://sfu.example:8443/whip/endpoint".parse().unwrap();
        assert_eq!(
            resolve(&base, "/whip/resource/42").unwrap().to_string(),
            "https://sfu.example:8443/whip/resource/42"
        );
        assert_eq!(
            resolve(&base, "https://other/x").unwrap().to_string(),
            "https://other/x"
        );
    }
}
