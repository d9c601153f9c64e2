//! TLS on the listener: rustls with the configured certificate and key
//! (PEM), ALPN `h2` (gRPC) and `http/1.1` (gRPC-Web, pages, WHEP). The pair
//! is read again on SIGHUP and when a file changes (renewal), without a
//! restart; a bad new pair is refused and the old one kept. Handshakes run
//! on tasks of their own with a time limit, so a client that opens a
//! connection and says nothing holds up no one.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most (more connections wait in the backlog).
const MAX_HANDSHAKES: usize = 256;
/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(5);

/// The certificate and key in use, and where they come from.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("server.tls_cert_file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("server.tls_cert_file {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "server.tls_cert_file {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls_key_file {} (a PEM private key)", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("server.tls_cert_file and server.tls_key_file do not make a pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn modified(paths: [&Path; 2]) -> Option<[SystemTime; 2]> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some([m(paths[0])?, m(paths[1])?])
}

impl Tls {
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<Self>> {
        let config = server_config(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(config)),
        }))
    }

    fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the pair again; on failure keeps the one in use.
    pub fn reload(&self) {
        match server_config(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
                tracing::info!("TLS certificate loaded again");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "TLS certificate not reloaded; keeping the one in use");
            }
        }
    }

    /// Reloads on SIGHUP and when a file changes, until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut seen = modified([&tls.cert, &tls.key]);
            let mut poll = tokio::time::interval(POLL);
            loop {
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => s.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let reload = tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = hangup => true,
                    _ = poll.tick() => {
                        let now = modified([&tls.cert, &tls.key]);
                        let changed = now.is_some() && now != seen;
                        seen = now;
                        changed
                    }
                };
                if reload {
                    // Reading and parsing files: off the runtime.
                    let tls = tls.clone();
                    let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
                }
            }
        });
    }
}

/// Connections that finished their TLS handshake, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

/// Accepts on `tcp` and shakes hands on tasks of their own, until `stop`.
pub fn listen(tcp: TcpListener, tls: Arc<Tls>, stop: CancellationToken) -> TlsListener {
    let local = tcp.local_addr().expect("a bound listener has an address");
    let (tx, ready) = mpsc::channel(64);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                accepted = tcp.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send((s, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsListener { ready, local }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop stopped (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
