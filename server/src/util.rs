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

/// TLS for what the server connects to (RTMPS, HTTPS to WHIP endpoints
/// and the moderation webhook): rustls on ring with the web's root
/// certificates.
pub fn tls_client_config() -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth()
}

/// `url` with the value of every query parameter replaced by `***`: what
/// studios paste there (tokens, signatures, keys) is often a secret, and
/// is shown back no more than a stream key is.
pub fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let (query, fragment) = query.split_once('#').unwrap_or((query, ""));
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) => format!("{k}=***"),
            None => p.to_owned(),
        })
        .collect();
    let mut out = format!("{base}?{}", params.join("&"));
    if !fragment.is_empty() {
        out.push_str("#***");
    }
    out
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

#[cfg(test)]
mod redact_tests {
    use super::redact_query;

    #[test]
    fn query_values_are_hidden() {
        assert_eq!(
            redact_query("https://sfu.example/whip"),
            "https://sfu.example/whip"
        );
        assert_eq!(
            redact_query("https://sfu.example/whip?room=a&token=s3cret#x"),
            "https://sfu.example/whip?room=***&token=***#***"
        );
        assert_eq!(redact_query("rtmp://h/live?auth"), "rtmp://h/live?auth");
    }
}
