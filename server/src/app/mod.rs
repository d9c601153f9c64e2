//! Builds the server from a [`Config`] and runs it until shutdown: gRPC,
//! gRPC-Web, health, reflection and HTTP on one port. Storage at start is in
//! `storage.rs`, the endpoints in `routes.rs`, serving and the tasks beside
//! it in `serve.rs`.

mod connections;
mod routes;
mod serve;
mod storage;
pub mod tls;

use crate::config::Config;
use crate::engines::Engines;
use crate::session::{ManagerConfig, SessionManager};
use crate::store::Store;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use routes::MAX_MESSAGE_BYTES;

/// A server that has bound its port and is serving.
pub struct Running {
    pub addr: SocketAddr,
    /// Whether the listener speaks TLS (`https://`).
    pub tls: bool,
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

/// Opens storage, recovers from any crash, starts the engines, binds and
/// starts serving.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let (store, dev_key) = storage::open(&config).await?;
    let engines = start_engines(&config).await?;
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
            keyframe_request_interval: config.limits.keyframe_request_interval,
            avatar_check_grace: config.storage.avatar_check_grace,
        },
        engines,
    );
    let (router, health) = routes::router(&config, &store, &sessions).await?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    // Cancelled once every session is closed: the liveness task then
    // records this server's clean stop.
    let drained = CancellationToken::new();
    let serving = serve::Serving {
        router,
        health,
        sessions: sessions.clone(),
        grace: config.server.shutdown_grace,
        stop: stop.clone(),
        drained: drained.clone(),
    };
    let (task, tls) = match (&config.server.tls_cert_file, &config.server.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = tls::Tls::load(cert, key)?;
            tls.spawn_reloader(stop.clone());
            let listener = tls::listen(listener, tls, stop.clone());
            (serve::spawn_server(listener, serving), true)
        }
        _ => (serve::spawn_server(listener, serving), false),
    };
    tracing::info!(%addr, tls, "huashen listening (gRPC, gRPC-Web, HTTP)");
    serve::spawn_background(&config, &store, &sessions, &stop, &drained);
    Ok(Running {
        addr,
        tls,
        store,
        dev_key,
        sessions,
        stop,
        task,
    })
}

/// The process-wide engines, on the device `models.device` resolves to
/// (checked before any model touches it).
async fn start_engines(config: &Config) -> anyhow::Result<Engines> {
    let requested = huashen_inference::device::parse(&config.models.device)
        .map_err(|e| anyhow::anyhow!("models.device: {e}"))?;
    let (device, why) =
        huashen_inference::device::resolve(requested).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(%device, reason = %why, "speech models run on {device}; face analysis, rendering and encoding on the CPU");
    let config = config.clone();
    let rate = crate::pipeline::clock::AUDIO_RATE;
    tokio::task::spawn_blocking(move || Engines::start(&config, device, rate))
        .await?
        .context("cannot start the engines")
}

/// What `serve` prints at start. The dev key only to a terminal (a person
/// at this machine), in the console's link (its fragment, which browsers
/// never send); a supervisor's or container's log gets where the key file
/// is instead.
fn banner(running: &Running, data_dir: &std::path::Path) -> String {
    use std::io::IsTerminal;
    let scheme = if running.tls { "https" } else { "http" };
    let addr = format!("{scheme}://{}", running.addr);
    let mut banner = format!("huashen listening on {addr}\n");
    match &running.dev_key {
        Some(key) if std::io::stdout().is_terminal() => banner.push_str(&format!(
            "studio console: {addr}/#key={key}\n\
             dev API key (tenant `dev`): {key}\n  \
             try: grpcurl {}-H 'authorization: Bearer {key}' {} list\n",
            if running.tls { "" } else { "-plaintext " },
            running.addr
        )),
        Some(_) => banner.push_str(&format!(
            "studio console: {addr}/\ndev API key (tenant `dev`) in {}\n",
            data_dir.join(crate::store::tenants::DEV_KEY_FILE).display()
        )),
        None => banner.push_str(&format!("studio console: {addr}/\n")),
    }
    banner
}

/// Runs until `signal` resolves, then shuts down gracefully.
pub async fn serve_until(config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config_data_dir = config.storage.data_dir.clone();
    let running = start(config).await?;
    let banner = banner(&running, &config_data_dir);
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
