//! Viewer tokens: a random value sealed by the data keyring for one
//! session. The server running the session compares the token it issued;
//! every other server sharing the records (and so the keyring) can still
//! tell a genuine token for a session it does not run, and checks it before
//! it redirects a viewer there (so a redirect reveals nothing to a caller
//! without the token).

use crate::store::crypto::Keyring;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

fn aad(session_id: &str) -> Vec<u8> {
    format!("viewer-token:{session_id}").into_bytes()
}

/// A new viewer token for `session_id`.
pub fn issue(keys: &Keyring, session_id: &str) -> String {
    let random: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(keys.seal(&random, &aad(session_id)))
}

/// True when `token` was issued for `session_id` by a server holding these
/// keys.
pub fn genuine(keys: &Keyring, session_id: &str, token: &str) -> bool {
    token.len() <= 256
        && URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|sealed| keys.open(&sealed, &aad(session_id)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_keys() -> Keyring {
        let dir = tempfile::tempdir().unwrap();
        Keyring::local(dir.path()).unwrap()
    }

    #[test]
    fn a_token_is_good_for_its_session_only() {
        let keys = new_keys();
        let t = issue(&keys, "se_1");
        assert!(genuine(&keys, "se_1", &t));
        assert!(!genuine(&keys, "se_2", &t));
        assert!(!genuine(&keys, "se_1", "AAAA"));
        assert!(!genuine(&new_keys(), "se_1", &t));
        assert_ne!(issue(&keys, "se_1"), t);
    }
}
