//! The listener's connections: HTTP/1.1 and HTTP/2 on hyper, with the
//! limits a server facing the internet needs — a client must send its
//! request headers within [`HEADER_READ_TIMEOUT`] (a connection holding
//! headers open is closed), headers are bounded in size, an HTTP/2
//! connection carries at most [`MAX_STREAMS`] requests at once and is
//! pinged when idle (a dead peer is dropped). Each connection knows its
//! client's address (`ConnectInfo<PeerAddr>`), and shutdown lets open
//! requests finish.

use crate::control::ratelimit::PeerAddr;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request's headers (HTTP/1.1).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head: headers of HTTP/1.1 (buffer) and HTTP/2 (list).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Requests one HTTP/2 connection may have open at once.
pub const MAX_STREAMS: u32 = 256;
/// An idle HTTP/2 connection is pinged this often, and dropped when a ping
/// is not answered within [`KEEP_ALIVE_TIMEOUT`].
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn builder() -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    b
}

/// Serves `router` on the connections `listener` accepts until `stop`,
/// then waits for the open ones to finish their requests.
pub(super) async fn serve<L>(mut listener: L, router: axum::Router, stop: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let service = router
            .clone()
            .map_request(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
                req.map(axum::body::Body::new)
            });
        let service = TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let builder = builder();
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::trace!(%peer, error = %e, "connection ended");
            }
        });
    }
    graceful.shutdown().await;
}
