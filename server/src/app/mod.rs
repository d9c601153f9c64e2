//! Builds the server from a [`Config`] and runs it until shutdown: gRPC,
//! gRPC-Web, health, reflection and HTTP on one port.

use crate::config::Config;
use crate::control::{audit::AuditApi, avatars::AvatarApi, sessions::SessionApi};
use crate::engines::Engines;
use crate::ingest::moderation::Moderator;
use crate::ingest::text::TextIngest;
use crate::session::{CloseReason, ManagerConfig, SessionManager};
use crate::store::Store;
use anyhow::Context;
use huashen_protos::v1::audit_service_server::AuditServiceServer;
use huashen_protos::v1::avatar_service_server::AvatarServiceServer;
use huashen_protos::v1::privacy_service_server::PrivacyServiceServer;
use huashen_protos::v1::session_service_server::SessionServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest gRPC message accepted (a 1 MiB upload chunk plus framing).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// A server that has bound its port and is serving.
pub struct Running {
    pub addr: SocketAddr,
    /// The server's storage (for tools and tests that inspect it).
    pub store: Store,
    /// The development key, when the dev tenant is bootstrapped.
    pub dev_key: Option<String>,
    pub sessions: SessionManager,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("server task")?
    }

    /// Waits until the server stops (after `stop_on` resolved).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }

    /// A token that starts graceful shutdown when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Opens storage, recovers from any crash, binds and starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let keys = crate::store::crypto::Keyring::from_config(&config.storage)
        .context("storage encryption")?;
    if config.storage.encryption_keys.is_empty() {
        tracing::warn!(
            "no storage.encryption_keys configured: encrypting at rest with a generated key kept in the data directory"
        );
        if !config.storage.database_url.0.trim().is_empty() {
            tracing::warn!(
                "storage.database_url is set: servers sharing the database must share the data directory and the same storage.encryption_keys; configure the keys"
            );
        }
    }
    let storage = config.storage.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&storage, keys))
        .await?
        .map(|s| s.with_advertise_url(&config.server.advertise_url))
        .with_context(|| {
            if config.storage.database_url.0.trim().is_empty() {
                format!("cannot open the data directory {}", data_dir.display())
            } else {
                "cannot open the PostgreSQL database of storage.database_url".to_owned()
            }
        })?;
    tracing::info!(
        records = store.kind(),
        node = store.blocking().node_id(),
        data_dir = %config.storage.data_dir.display(),
        "storage open"
    );
    let report = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.recover(CloseReason::ServerShutdown as i32))
            .await??
    };
    if report != Default::default() {
        tracing::warn!(?report, "recovered from an unclean stop");
    }
    let dev_key = if config.auth.bootstrap_dev_tenant {
        let store = store.clone();
        let dir = config.storage.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            crate::store::tenants::bootstrap_dev_tenant(store.blocking(), &dir)
        })
        .await??
    } else {
        None
    };

    // Where the models run, checked before any model touches the device.
    let requested = huashen_inference::device::parse(&config.models.device)
        .map_err(|e| anyhow::anyhow!("models.device: {e}"))?;
    let (device, why) =
        huashen_inference::device::resolve(requested).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(%device, reason = %why, "speech models run on {device}; face analysis, rendering and encoding on the CPU");
    let engines = {
        let config = config.clone();
        let rate = crate::pipeline::clock::AUDIO_RATE;
        tokio::task::spawn_blocking(move || Engines::start(&config, device, rate))
            .await?
            .context("cannot start the engines")?
    };
    let sessions = SessionManager::new(
        store.clone(),
        ManagerConfig {
            max_sessions: config.limits.max_sessions,
            max_sessions_per_tenant: config.limits.max_sessions_per_tenant,
            queue_capacity: config.limits.session_queue,
            event_buffer: config.limits.event_buffer,
            labels: config.label.clone(),
            voice: config.voice.clone(),
            cpu_budget: config.limits.cpu_budget_cores(),
            session_cost: config.limits.session_cost,
        },
        engines,
    );
    let avatar_api = AvatarApi {
        store: store.clone(),
        sessions: sessions.clone(),
        max_image_bytes: config.limits.max_image_bytes,
    };
    let session_api = SessionApi {
        store: store.clone(),
        sessions: sessions.clone(),
        text: TextIngest {
            moderator: Arc::new(Moderator::new(&config.moderation)),
            store: store.clone(),
            max_bytes: config.limits.max_speak_bytes,
        },
        default_idle_timeout: config.sessions.idle_timeout,
        max_idle_timeout: config.sessions.max_idle_timeout,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AvatarServiceServer<AvatarApi>>().await;
    health
        .set_serving::<SessionServiceServer<SessionApi>>()
        .await;
    health.set_serving::<AuditServiceServer<AuditApi>>().await;
    health
        .set_serving::<PrivacyServiceServer<crate::control::privacy::PrivacyApi>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(huashen_protos::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(huashen_protos::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    // Browsers (gRPC-Web) send the whole image in one message, so the
    // avatar service takes any image the server accepts in one message.
    let max_image_bytes = config.limits.max_image_bytes;
    let avatar_message_bytes = MAX_MESSAGE_BYTES.max(usize::try_from(max_image_bytes)? + 64 * 1024);
    let grpc = tonic::service::Routes::new(
        AvatarServiceServer::new(avatar_api)
            .max_decoding_message_size(avatar_message_bytes)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        SessionServiceServer::new(session_api)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(AuditServiceServer::new(AuditApi {
        store: store.clone(),
    }))
    .add_service(PrivacyServiceServer::new(
        crate::control::privacy::PrivacyApi {
            store: store.clone(),
            sessions: sessions.clone(),
        },
    ))
    .add_service(health_service)
    .add_service(reflection_v1)
    .add_service(reflection_v1alpha)
    .into_axum_router()
    // Browsers speak gRPC-Web over HTTP/1.1 to the same services.
    .route_layer(tonic_web::GrpcWebLayer::new())
    .route_layer(axum::middleware::from_fn(move |req, next| {
        crate::control::avatars::refuse_oversize_web_uploads(
            avatar_message_bytes,
            max_image_bytes,
            req,
            next,
        )
    }));
    // One port allocator for viewers and publishers.
    let rtc_settings = crate::rtc::RtcSettings::new(config.webrtc.clone());
    let whep = crate::control::whep::routes(crate::control::whep::WhepState {
        sessions: sessions.clone(),
        store: store.clone(),
        settings: rtc_settings.clone(),
    });
    let whip = crate::control::whip::routes(crate::control::whip::WhipState {
        sessions: sessions.clone(),
        store: store.clone(),
        settings: rtc_settings,
        publishers: Default::default(),
    });
    let router = crate::control::http::routes(grpc, sessions.clone(), dev_key.clone())
        .merge(whep)
        .merge(whip);

    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "huashen listening (gRPC, gRPC-Web, HTTP)");

    let stop = CancellationToken::new();
    let http_stop = CancellationToken::new();
    let grace = config.server.shutdown_grace;
    // Cancelled once every session is closed: the liveness task then
    // records this server's clean stop.
    let drained = CancellationToken::new();
    let task = {
        let stop = stop.clone();
        let drained = drained.clone();
        let sessions = sessions.clone();
        let http_stop = http_stop.clone();
        tokio::spawn(async move {
            let server = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(http_stop.clone().cancelled_owned());
            let server = tokio::spawn(async move { server.await });
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
                Ok(r) => r.context("HTTP server task")?.context("HTTP server")?,
                Err(_) => tracing::warn!("open requests did not finish within the grace period"),
            }
            tracing::info!("shutdown complete");
            Ok(())
        })
    };
    sessions.spawn_capacity_sampler(stop.clone());
    sessions.spawn_avatar_watch(stop.clone());
    tokio::spawn(store.clone().keep_alive(
        CloseReason::ServerShutdown as i32,
        stop.clone(),
        drained.cancelled_owned(),
    ));
    tokio::spawn(crate::store::retention::run(
        store.clone(),
        config.retention.clone(),
        stop.clone(),
    ));
    Ok(Running {
        addr,
        store,
        dev_key,
        sessions,
        stop,
        task,
    })
}

/// Runs until `signal` resolves, then shuts down gracefully.
pub async fn serve_until(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let running = start(config).await?;
    let mut banner = format!("huashen listening on http://{}\n", running.addr);
    if let Some(key) = &running.dev_key {
        banner.push_str(&format!(
            "dev API key (tenant `dev`): {key}\n  try: grpcurl -plaintext -H 'authorization: Bearer {key}' {} list\n",
            running.addr
        ));
    }
    banner.push_str(&format!("studio console: http://{}/\n", running.addr));
    {
        use std::io::Write;
        // A closed stdout (a supervisor that stopped reading) must not stop
        // the server.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|_| out.flush());
    }
    let stop = running.stop_token();
    tokio::select! {
        _ = signal => stop.cancel(),
        _ = stop.cancelled() => {}
    }
    running.wait().await
}

/// Registers SIGINT and SIGTERM handlers now (so a signal that arrives
/// while the server starts is not lost) and resolves on the first of them.
/// Must be called inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => tracing::info!("SIGINT received"),
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGINT/SIGTERM; stop with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}
