//! Storage at start: the keyring, the records (SQLite or PostgreSQL) and
//! files, recovery from an unclean stop, and the development tenant.

use crate::config::Config;
use crate::session::CloseReason;
use crate::store::Store;
use anyhow::Context;

/// The store, recovered, and the development key when the dev tenant is
/// bootstrapped.
pub(super) async fn open(config: &Config) -> anyhow::Result<(Store, Option<String>)> {
    let data_dir = config.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let keys = crate::store::crypto::Keyring::from_config(&config.storage)
        .context("storage encryption")?;
    let shared = !config.storage.database_url.0.trim().is_empty();
    if config
        .storage
        .configured_keys()
        .is_ok_and(|keys| keys.is_empty())
    {
        tracing::warn!(
            "no storage.encryption_keys configured: encrypting at rest with a generated key kept in the data directory"
        );
        if shared {
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
            if shared {
                "cannot open the PostgreSQL database of storage.database_url".to_owned()
            } else {
                format!("cannot open the data directory {}", data_dir.display())
            }
        })?;
    tracing::info!(
        records = store.kind(),
        node = store.blocking().node_id(),
        data_dir = %data_dir.display(),
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
    // A dev tenant only for a server that only this machine can reach: one
    // listening beyond it (a container on 0.0.0.0) gets tenants made with
    // `huashen tenant create`.
    let loopback = config.server.listen.ip().is_loopback();
    if config.auth.bootstrap_dev_tenant && !loopback {
        tracing::info!(
            listen = %config.server.listen,
            "no dev tenant: the server listens beyond this machine; create tenants with `huashen tenant create NAME`"
        );
    }
    let dev_key = if config.auth.bootstrap_dev_tenant && loopback {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            crate::store::tenants::bootstrap_dev_tenant(store.blocking(), &data_dir)
        })
        .await??
    } else {
        None
    };
    Ok((store, dev_key))
}
