//! Encryption at rest: AES-256-GCM with a fresh random nonce per object and
//! the object's identity as associated data (a file moved onto another
//! object's path does not decrypt). Keys have ids; every sealed object names
//! the key that sealed it, so keys can be rotated: new objects use the active
//! key, old ones stay readable while their key is configured.
//!
//! Sealed layout: `HSE1` | key id length (1 byte) | key id | nonce (12) |
//! ciphertext and tag.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"HSE1";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("encryption key {0:?} is not configured (storage.encryption_keys)")]
    UnknownKey(String),
    #[error("the stored object is not an encrypted Huashen object")]
    NotSealed,
    #[error("the stored object failed authentication (corrupt, or moved from another object)")]
    Corrupt,
    #[error("invalid encryption key {id:?}: {why}")]
    BadKey { id: String, why: String },
    #[error("key file: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a sealed file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

/// The configured keys. `Debug` shows key ids only, never key material.
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// File (in the data directory) that holds the generated key when none is
/// configured.
pub const LOCAL_KEY_FILE: &str = "keys/local.key";
/// Id of that generated key.
pub const LOCAL_KEY_ID: &str = "local";

impl Keyring {
    /// The keys of `storage`: the configured ones, or the generated local
    /// key when none are configured.
    pub fn from_config(storage: &crate::config::StorageConfig) -> Result<Self, CryptoError> {
        let keys = storage
            .configured_keys()
            .map_err(|e| CryptoError::Io(std::io::Error::other(e)))?;
        if keys.is_empty() {
            return Self::local(&storage.data_dir);
        }
        Self::new(&keys, &storage.active_key)
    }

    /// From configured keys (id → base64 of 32 bytes) and the active id.
    pub fn new(keys: &BTreeMap<String, String>, active: &str) -> Result<Self, CryptoError> {
        let mut ring = BTreeMap::new();
        for (id, b64) in keys {
            let bad = |why: String| CryptoError::BadKey {
                id: id.clone(),
                why,
            };
            let bytes = crate::config::decode_key(id, b64).map_err(bad)?;
            let cipher = Aes256Gcm::new_from_slice(&bytes)
                .map_err(|_| bad(format!("{} bytes; AES-256 needs 32", bytes.len())))?;
            ring.insert(id.clone(), cipher);
        }
        if !ring.contains_key(active) {
            return Err(CryptoError::UnknownKey(active.to_owned()));
        }
        Ok(Self {
            active: active.to_owned(),
            keys: ring,
        })
    }

    /// The key kept in `<data_dir>/keys/local.key`, created (mode 0600) if
    /// missing: for a server with no configured key.
    pub fn local(data_dir: &Path) -> Result<Self, CryptoError> {
        let path = data_dir.join(LOCAL_KEY_FILE);
        let b64 = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rng().fill_bytes(&mut key);
                let fresh = base64::engine::general_purpose::STANDARD.encode(key);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                // Servers sharing the data directory may start together:
                // the key is written aside and linked into place only if no
                // other server's key got there first (then that one is used).
                let tmp = path.with_extension(format!("new-{:016x}", rand::random::<u64>()));
                crate::util::write_private(&tmp, fresh.as_bytes())?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                        return Err(e.into());
                    }
                    // What is in place is the key, whoever wrote it.
                    _ => std::fs::read_to_string(&path)?,
                }
            }
            Err(e) => return Err(e.into()),
        };
        Self::new(
            &BTreeMap::from([(LOCAL_KEY_ID.to_owned(), b64)]),
            LOCAL_KEY_ID,
        )
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Encrypts `plaintext` for the object named `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let cipher = &self.keys[&self.active];
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let id = self.active.as_bytes();
        let mut out = Vec::with_capacity(4 + 1 + id.len() + 12 + ct.len());
        out.extend_from_slice(MAGIC);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// The plaintext length of a sealed object of `sealed_len` bytes whose
    /// first bytes are `head` (at least its magic and key id), without
    /// decrypting it; `None` when `head` is not a sealed object's.
    pub fn plaintext_len(head: &[u8], sealed_len: usize) -> Option<usize> {
        let rest = head.strip_prefix(MAGIC)?;
        let n = usize::from(*rest.first()?);
        sealed_len.checked_sub(MAGIC.len() + 1 + n + 12 + 16)
    }

    /// Decrypts an object sealed by [`Keyring::seal`] for `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(CryptoError::NotSealed)?;
        let (&n, rest) = rest.split_first().ok_or(CryptoError::NotSealed)?;
        if rest.len() < usize::from(n) + 12 + 16 {
            return Err(CryptoError::NotSealed);
        }
        let (id, rest) = rest.split_at(usize::from(n));
        let id = String::from_utf8_lossy(id).into_owned();
        let (nonce, ct) = rest.split_at(12);
        let cipher = self.keys.get(&id).ok_or(CryptoError::UnknownKey(id))?;
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| CryptoError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        let mut k = [0u8; 32];
        rand::rng().fill_bytes(&mut k);
        base64::engine::general_purpose::STANDARD.encode(k)
    }

    #[test]
    fn seal_open_rotate() {
        let (k1, k2) = (key(), key());
        let old = Keyring::new(&BTreeMap::from([("k1".into(), k1.clone())]), "k1").unwrap();
        let sealed = old.seal(b"portrait bytes", b"avatar/a/original.png");
        assert!(!sealed.windows(8).any(|w| w == b"portrait"));
        // Rotated: k2 active, k1 still readable.
        let both = Keyring::new(
            &BTreeMap::from([("k1".into(), k1), ("k2".into(), k2.clone())]),
            "k2",
        )
        .unwrap();
        assert_eq!(
            both.open(&sealed, b"avatar/a/original.png").unwrap(),
            b"portrait bytes"
        );
        let newer = both.seal(b"x", b"o");
        assert_eq!(&newer[5..7], b"k2");
        // Without k1, old objects say which key they need.
        let only2 = Keyring::new(&BTreeMap::from([("k2".into(), k2)]), "k2").unwrap();
        assert!(
            matches!(only2.open(&sealed, b"avatar/a/original.png"), Err(CryptoError::UnknownKey(k)) if k == "k1")
        );
        // Bound to its object; tamper-evident; nonces unique.
        assert!(matches!(
            both.open(&sealed, b"avatar/b/original.png"),
            Err(CryptoError::Corrupt)
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            both.open(&bad, b"avatar/a/original.png"),
            Err(CryptoError::Corrupt)
        ));
        assert_ne!(both.seal(b"same", b"o"), both.seal(b"same", b"o"));
        assert!(!format!("{both:?}").contains(&key()[..8]));
    }

    #[test]
    fn bad_keys_are_named() {
        let e = Keyring::new(&BTreeMap::from([("k".into(), "c2hvcnQ=".into())]), "k").unwrap_err();
        assert!(e.to_string().contains("32"), "{e}");
        let e = Keyring::new(&BTreeMap::new(), "nope").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn local_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = Keyring::local(dir.path()).unwrap();
        let sealed = a.seal(b"x", b"o");
        let b = Keyring::local(dir.path()).unwrap();
        assert_eq!(b.open(&sealed, b"o").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(LOCAL_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn servers_starting_together_agree_on_the_local_key() {
        let dir = tempfile::tempdir().unwrap();
        let rings: Vec<Keyring> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| Keyring::local(dir.path()).unwrap()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sealed = rings[0].seal(b"portrait", b"o");
        for r in &rings {
            assert_eq!(r.open(&sealed, b"o").unwrap(), b"portrait");
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary files left: {names:?}");
    }
}
