//! HTTP/1.1 requests for WHEP signalling, `/metrics` and tests, on hyper's
//! connection-level client: one request per connection, bounded in time and
//! in response size.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::io::{Error, ErrorKind, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// Largest response body accepted.
const MAX_RESPONSE: usize = 16 << 20;

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::other(format!("{what}: {e}"))
}

/// Sends one request to `addr` (method, path with query, headers, body)
/// and reads the response, all within `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse> {
    tokio::time::timeout(timeout, exchange(addr, method, path, headers, body))
        .await
        .map_err(|_| Error::new(ErrorKind::TimedOut, "no HTTP response in time"))?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("HTTP request: {e}")))?;
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed("HTTP handshake", e))?;
    // The connection runs beside the request; it ends when `sender` drops.
    let connection = tokio::spawn(connection);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| failed("HTTP request", e))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| failed("HTTP response body", e))?
            .to_bytes();
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_owned(), v)
            })
            .collect();
        Ok(HttpResponse {
            status: parts.status.as_u16(),
            headers,
            body: body.to_vec(),
        })
    }
    .await;
    drop(sender);
    connection.abort();
    result
}
