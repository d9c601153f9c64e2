//! Serving until shutdown, and the tasks beside the server: capacity
//! sampling, the avatar watch, liveness in the shared records, retention.

use crate::config::Config;
use crate::control::avatars::AvatarApi;
use crate::control::sessions::SessionApi;
use crate::session::{CloseReason, SessionManager};
use crate::store::Store;
use anyhow::Context;
use huashen_protos::v1::avatar_service_server::AvatarServiceServer;
use huashen_protos::v1::session_service_server::SessionServiceServer;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// What serving needs besides the listener.
pub(super) struct Serving {
    pub router: axum::Router,
    pub health: HealthReporter,
    pub sessions: SessionManager,
    /// How long sessions may drain, and open requests finish.
    pub grace: Duration,
    pub stop: CancellationToken,
    /// Cancelled once every session is closed.
    pub drained: CancellationToken,
}

/// Serves the router on `listener` (TCP, or TLS over it) until `stop` is
/// cancelled, then shuts down gracefully: health says not serving,
/// sessions drain (within `grace`), open requests finish (within `grace`).
pub(super) fn spawn_server<L>(
    listener: L,
    serving: Serving,
) -> tokio::task::JoinHandle<anyhow::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let Serving {
        router,
        health,
        sessions,
        grace,
        stop,
        drained,
    } = serving;
    let http_stop = CancellationToken::new();
    tokio::spawn(async move {
        let server = tokio::spawn(super::connections::serve(
            listener,
            router,
            http_stop.clone(),
        ));
        stop.cancelled().await;
        tracing::info!("shutting down: refusing new sessions, draining open ones");
        health
            .set_not_serving::<SessionServiceServer<SessionApi>>()
            .await;
        health
            .set_not_serving::<AvatarServiceServer<AvatarApi>>()
            .await;
        sessions.shutdown(grace).await;
        drained.cancel();
        http_stop.cancel();
        match tokio::time::timeout(grace, server).await {
            Ok(r) => r.context("HTTP server task")?,
            Err(_) => tracing::warn!("open requests did not finish within the grace period"),
        }
        tracing::info!("shutdown complete");
        Ok(())
    })
}

/// The background tasks; each ends when `stop` is cancelled (liveness
/// records the clean stop once `drained` is cancelled).
pub(super) fn spawn_background(
    config: &Config,
    store: &Store,
    sessions: &SessionManager,
    stop: &CancellationToken,
    drained: &CancellationToken,
) {
    sessions.spawn_capacity_sampler(stop.clone());
    sessions.spawn_avatar_watch(stop.clone());
    tokio::spawn(store.clone().keep_alive(
        CloseReason::ServerShutdown as i32,
        stop.clone(),
        drained.clone().cancelled_owned(),
    ));
    tokio::spawn(crate::store::retention::run(
        store.clone(),
        config.retention.clone(),
        stop.clone(),
    ));
}
