//! Small helpers every layer may use: private files, random tokens and
//! comparing secrets in constant time.

use base64::Engine;
use rand::RngCore;
use std::path::Path;

/// A random bearer token (256 bits, base64url) for viewers.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// True when `a` and `b` are equal, in time that does not depend on where
/// they differ (for comparing secrets).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Writes `bytes` to `path` readable by the owner only (mode 0600),
/// atomically: a temporary file of its own, synced, then renamed.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    // A name of its own: writers sharing the directory never share it.
    let tmp = path.with_extension(format!("tmp-{:016x}", rand::random::<u64>()));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
