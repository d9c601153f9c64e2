//! Connections to PostgreSQL: settings from `[storage]`, TLS by rustls
//! when the URL's `sslmode` asks for it, and a bounded pool handing out one
//! connection per call.

use crate::store::error::{StoreError, StoreResult, pg_message};
use ::postgres::Client;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Connection settings (from `[storage]`).
#[derive(Clone)]
pub struct PgOptions {
    pub config: ::postgres::Config,
    pub pool: usize,
    pub timeout: Duration,
    pub ca_file: Option<std::path::PathBuf>,
}

impl PgOptions {
    pub fn from_config(cfg: &crate::config::StorageConfig) -> StoreResult<Self> {
        Self::from_url(&cfg.database_url.0, cfg.database_pool, cfg.database_timeout).map(|o| Self {
            ca_file: cfg.database_ca_file.clone(),
            ..o
        })
    }

    pub fn from_url(url: &str, pool: usize, timeout: Duration) -> StoreResult<Self> {
        let mut config: ::postgres::Config = url.trim().parse().map_err(|e| {
            StoreError::Unavailable(format!("storage.database_url is not a PostgreSQL URL: {e}"))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("huashen");
        }
        Ok(Self {
            config,
            pool: pool.max(1),
            timeout,
            ca_file: None,
        })
    }

    /// Where the database is (never the password), for messages.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                ::postgres::config::Host::Tcp(h) => h.clone(),
                ::postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        format!(
            "{}@{}/{}",
            self.config.get_user().unwrap_or("?"),
            hosts.join(","),
            self.config.get_dbname().unwrap_or("?")
        )
    }
}

pub(super) fn tls(
    ca_file: Option<&std::path::Path>,
) -> StoreResult<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                StoreError::Unavailable(format!("storage.database_ca_file {}: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(StoreError::Unavailable(format!(
                "storage.database_ca_file {} holds no certificate",
                path.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                StoreError::Unavailable(format!("storage.database_ca_file {}: {e}", path.display()))
            })?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Unavailable(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connections kept open, handed out one per call.
pub(super) struct Pool {
    pub(super) options: PgOptions,
    pub(super) tls: tokio_postgres_rustls::MakeRustlsConnect,
    pub(super) state: Mutex<PoolState>,
    pub(super) freed: Condvar,
}

pub(super) struct PoolState {
    pub(super) idle: Vec<(Client, Instant)>,
    /// Connections out of the pool plus idle ones plus ones being opened.
    pub(super) open: usize,
}

impl Drop for Pool {
    /// Closing a connection blocks on the client's own runtime, which must
    /// not happen on an async runtime's thread (the last handle to the
    /// store is often dropped there, at shutdown): close them on a thread
    /// of their own.
    fn drop(&mut self) {
        let idle =
            std::mem::take(&mut self.state.get_mut().unwrap_or_else(|p| p.into_inner()).idle);
        if !idle.is_empty() {
            let _ = std::thread::spawn(move || drop(idle)).join();
        }
    }
}

/// An idle connection older than this is checked before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(30);

pub(super) struct Conn<'a> {
    pub(super) pool: &'a Pool,
    pub(super) client: Option<Client>,
    /// Not to be reused.
    pub(super) broken: bool,
}

impl std::ops::Deref for Conn<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("connection present until drop")
    }
}

impl std::ops::DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("connection present until drop")
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let client = self.client.take();
        let mut st = self.pool.state.lock().unwrap_or_else(|p| p.into_inner());
        match client {
            // A connection lost mid-call (or left inside a transaction by a
            // panic) is not reused.
            Some(c) if !c.is_closed() && !self.broken && !std::thread::panicking() => {
                st.idle.push((c, Instant::now()))
            }
            _ => st.open -= 1,
        }
        drop(st);
        self.pool.freed.notify_one();
    }
}

impl Pool {
    /// An empty pool for `options` (connections open on first use).
    pub(super) fn new(options: &PgOptions) -> StoreResult<Self> {
        Ok(Self {
            tls: tls(options.ca_file.as_deref())?,
            options: options.clone(),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// A new connection: TLS as the URL's `sslmode` asks, except over Unix
    /// sockets (local; PostgreSQL offers no TLS there).
    fn connect(&self) -> Result<Client, ::postgres::Error> {
        let c = &self.options.config;
        let local = c
            .get_hosts()
            .iter()
            .all(|h| matches!(h, ::postgres::config::Host::Unix(_)));
        if local || c.get_ssl_mode() == ::postgres::config::SslMode::Disable {
            c.connect(::postgres::NoTls)
        } else {
            c.connect(self.tls.clone())
        }
    }

    pub(super) fn get(&self) -> StoreResult<Conn<'_>> {
        let deadline = Instant::now() + self.options.timeout;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some((mut client, since)) = st.idle.pop() {
                drop(st);
                if since.elapsed() < CHECK_IDLE_AFTER
                    || client.is_valid(Duration::from_secs(2)).is_ok()
                {
                    return Ok(Conn {
                        pool: self,
                        client: Some(client),
                        broken: false,
                    });
                }
                // Dead while idle (a database restart): open another.
                st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                st.open -= 1;
                continue;
            }
            if st.open < self.options.pool {
                st.open += 1;
                drop(st);
                return match self.connect() {
                    Ok(client) => Ok(Conn {
                        pool: self,
                        client: Some(client),
                        broken: false,
                    }),
                    Err(e) => {
                        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                        st.open -= 1;
                        drop(st);
                        self.freed.notify_one();
                        Err(StoreError::Unavailable(format!(
                            "cannot connect to PostgreSQL at {}: {}",
                            self.options.describe(),
                            pg_message(&e)
                        )))
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "all {} PostgreSQL connections stayed busy for {:?}",
                    self.options.pool, self.options.timeout
                )));
            }
            st = self
                .freed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
