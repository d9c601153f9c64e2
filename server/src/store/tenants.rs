//! Tenants and their API keys. A key is `hs_` + 43 base64url characters (256 random
//! bits); only its SHA-256 is stored. Every gRPC call carries it in the
//! `authorization` metadata as `Bearer <key>`.

use super::backend::Backend;
use super::error::StoreError;
use super::records::{AuditEntry, Tenant, now_ms};
use crate::ids;
use crate::util::write_private;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::path::Path;

/// What every API key starts with.
pub const KEY_PREFIX: &str = "hs_";

/// A fresh random API key.
pub fn generate_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Checks a tenant name: 1..64 of `[a-z0-9_-]`.
pub fn validate_tenant_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant name must be 1..64 characters of a-z, 0-9, '-' or '_', got {:?}",
            ids::truncate(name, 80)
        ))
    }
}

/// Creates a tenant and its first key; returns the tenant and the key secret
/// (shown once, never stored).
pub fn create_tenant(
    backend: &dyn Backend,
    name: &str,
    actor: &str,
) -> Result<(Tenant, String), StoreError> {
    let tenant = Tenant {
        id: ids::new_id(ids::TENANT),
        name: name.to_owned(),
        created_at: now_ms(),
    };
    backend.create_tenant(&tenant)?;
    let key = create_key(backend, &tenant.id, "initial", actor)?;
    Ok((tenant, key))
}

/// Adds a key to an existing tenant; returns the secret.
pub fn create_key(
    backend: &dyn Backend,
    tenant_id: &str,
    label: &str,
    actor: &str,
) -> Result<String, StoreError> {
    let key = generate_key();
    let key_id = ids::new_id(ids::API_KEY);
    backend.create_api_key(&key_id, tenant_id, &hash_key(&key), label)?;
    backend.append_audit(&AuditEntry {
        at: now_ms(),
        tenant_id: Some(tenant_id.to_owned()),
        actor: actor.to_owned(),
        action: "api_key.create".into(),
        target: key_id,
        outcome: "ok".into(),
    })?;
    Ok(key)
}

/// File in the data directory holding the development key.
pub const DEV_KEY_FILE: &str = "dev-api-key";

/// On a server with no tenant, creates tenant `dev` and writes its key to
/// `<data_dir>/dev-api-key` (mode 0600). Returns the dev key when that file
/// exists, so `serve` can print it on every start.
pub fn bootstrap_dev_tenant(
    backend: &dyn Backend,
    data_dir: &Path,
) -> Result<Option<String>, StoreError> {
    let path = data_dir.join(DEV_KEY_FILE);
    if backend.count_tenants()? == 0 {
        match create_tenant(backend, "dev", "system") {
            Ok((_, key)) => {
                write_private(&path, key.as_bytes())?;
                return Ok(Some(key));
            }
            // Another server sharing the database bootstrapped it first.
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::read_to_string(&path) {
        Ok(k)
            if backend
                .principal_by_key_hash(&hash_key(k.trim()))?
                .is_some() =>
        {
            Ok(Some(k.trim().to_owned()))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Backend;
    use crate::store::sqlite::SqliteBackend;

    #[test]
    fn keys_are_random_and_resolve_by_hash() {
        let b = SqliteBackend::in_memory().unwrap();
        let (t, key) = create_tenant(&b, "acme", "cli").unwrap();
        assert!(key.starts_with("hs_") && key.len() == 46, "{key}");
        assert_ne!(generate_key(), generate_key());
        let p = b.principal_by_key_hash(&hash_key(&key)).unwrap().unwrap();
        assert_eq!(p.tenant_id, t.id);
        assert!(
            b.principal_by_key_hash(&hash_key("hs_other"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn dev_tenant_bootstraps_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBackend::in_memory().unwrap();
        let k1 = bootstrap_dev_tenant(&b, dir.path()).unwrap().unwrap();
        let k2 = bootstrap_dev_tenant(&b, dir.path()).unwrap().unwrap();
        assert_eq!(k1, k2);
        assert_eq!(b.count_tenants().unwrap(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn tenant_names() {
        assert!(validate_tenant_name("studio-1").is_ok());
        assert!(validate_tenant_name("").is_err());
        assert!(validate_tenant_name("Studio").is_err());
    }
}
