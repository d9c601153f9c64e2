//! Connections to PostgreSQL: settings from `[storage]`, TLS by rustls
//! when the URL's `sslmode` asks for it, and a bounded pool (r2d2) handing
//! out one connection per call.

use crate::store::error::{StoreError, StoreResult, pg_message};
use ::postgres::tls::{MakeTlsConnect, TlsConnect};
use ::postgres::{Client, NoTls, Socket};
use r2d2_postgres::PostgresConnectionManager as Manager;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

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

pub(super) fn tls(ca_file: Option<&std::path::Path>) -> StoreResult<MakeRustlsConnect> {
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
    Ok(MakeRustlsConnect::new(config))
}

/// A pooled connection; back to the pool when dropped (unless closed).
pub(super) enum Conn {
    Tls(r2d2::PooledConnection<Manager<MakeRustlsConnect>>),
    Plain(r2d2::PooledConnection<Manager<NoTls>>),
}

impl std::ops::Deref for Conn {
    type Target = Client;
    fn deref(&self) -> &Client {
        match self {
            Conn::Tls(c) => c,
            Conn::Plain(c) => c,
        }
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Client {
        match self {
            Conn::Tls(c) => c,
            Conn::Plain(c) => c,
        }
    }
}

/// The pool, over TLS or not: TLS needs a host name, so a Unix socket (or
/// `sslmode=disable`) is served without.
enum Pools {
    Tls(r2d2::Pool<Manager<MakeRustlsConnect>>),
    Plain(r2d2::Pool<Manager<NoTls>>),
}

/// Connections kept open and handed out one per call: r2d2's pool, which
/// checks a connection before handing it out (a database restart costs no
/// failed call) and drops connections found closed.
pub(super) struct Pool {
    pub(super) options: PgOptions,
    /// Always `Some` until dropped.
    inner: Option<Pools>,
    /// Why the last connection attempt failed, for the error a caller gets.
    last_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Pool {
    /// Closing a connection blocks on the client's own runtime, which must
    /// not happen on an async runtime's thread (the last handle to the
    /// store is often dropped there, at shutdown): close them on a thread
    /// of their own.
    fn drop(&mut self) {
        if let Some(pools) = self.inner.take() {
            let _ = std::thread::spawn(move || drop(pools)).join();
        }
    }
}

/// Keeps the last connection error (r2d2 otherwise logs it through `log`,
/// which this server does not read).
#[derive(Debug)]
struct KeepError(Arc<Mutex<Option<String>>>);

impl r2d2::HandleError<::postgres::Error> for KeepError {
    fn handle_error(&self, e: ::postgres::Error) {
        let message = pg_message(&e);
        tracing::warn!(error = %message, "PostgreSQL connection failed");
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }
}

/// An r2d2 pool of at most `options.pool` connections, opened on first use.
fn build<T>(
    config: ::postgres::Config,
    tls: T,
    options: &PgOptions,
    last_error: &Arc<Mutex<Option<String>>>,
) -> r2d2::Pool<Manager<T>>
where
    T: MakeTlsConnect<Socket> + Clone + 'static + Sync + Send,
    T::TlsConnect: Send,
    T::Stream: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    r2d2::Pool::builder()
        .max_size(u32::try_from(options.pool).unwrap_or(u32::MAX))
        .min_idle(Some(0))
        .connection_timeout(options.timeout)
        .error_handler(Box::new(KeepError(last_error.clone())))
        .build_unchecked(Manager::new(config, tls))
}

impl Pool {
    /// A pool for `options`; connections open on first use. TLS as the
    /// URL's `sslmode` asks, except over Unix sockets (local; PostgreSQL
    /// offers no TLS there).
    pub(super) fn new(options: &PgOptions) -> StoreResult<Self> {
        let tls = tls(options.ca_file.as_deref())?;
        let config = options.config.clone();
        let local = config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, ::postgres::config::Host::Unix(_)));
        let last_error = Arc::new(Mutex::new(None));
        let inner = if local || config.get_ssl_mode() == ::postgres::config::SslMode::Disable {
            Pools::Plain(build(config, NoTls, options, &last_error))
        } else {
            Pools::Tls(build(config, tls, options, &last_error))
        };
        Ok(Self {
            options: options.clone(),
            inner: Some(inner),
            last_error,
        })
    }

    fn pools(&self) -> &Pools {
        self.inner.as_ref().expect("pool present until drop")
    }

    /// A connection, waiting at most `database_timeout` for one.
    pub(super) fn get(&self) -> StoreResult<Conn> {
        let got = match self.pools() {
            Pools::Tls(p) => p.get().map(Conn::Tls),
            Pools::Plain(p) => p.get().map(Conn::Plain),
        };
        let failed = self
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        got.map_err(|_| {
            StoreError::Unavailable(match failed {
                Some(why) => format!(
                    "cannot connect to PostgreSQL at {}: {why}",
                    self.options.describe()
                ),
                None => format!(
                    "all {} PostgreSQL connections stayed busy for {:?}",
                    self.options.pool, self.options.timeout
                ),
            })
        })
    }

    /// Connections open now (idle or in use).
    pub(super) fn open(&self) -> usize {
        let state = match self.pools() {
            Pools::Tls(p) => p.state(),
            Pools::Plain(p) => p.state(),
        };
        state.connections as usize
    }
}
