//! WebRTC settings from the config, and the allocator of local UDP ports
//! for peers (viewers and publishers).

use crate::config::{IceServerConfig, WebrtcConfig};
use base64::Engine;
use hmac::{Hmac, Mac};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Viewer settings from the config, plus the port allocator.
pub struct RtcSettings {
    pub(super) config: WebrtcConfig,
    next_port: AtomicU32,
}

impl RtcSettings {
    pub fn new(config: WebrtcConfig) -> Arc<Self> {
        Arc::new(Self {
            next_port: AtomicU32::new(u32::from(config.port_min)),
            config,
        })
    }

    /// How long a peer may take to connect.
    pub fn connect_timeout(&self) -> std::time::Duration {
        self.config.connect_timeout
    }

    pub fn max_viewers(&self) -> usize {
        self.config.max_viewers_per_session
    }

    /// ICE servers as WHEP `Link` header values (RFC 9725 §4.6), with
    /// credentials for `peer` (a viewer's or publisher's id).
    pub fn ice_server_links(&self, peer: &str) -> Vec<String> {
        let mut links = vec![];
        for s in &self.config.ice_servers {
            let (username, credential) = credentials(s, peer, crate::store::now_ms() / 1000);
            for url in &s.urls {
                let mut l = format!("<{url}>; rel=\"ice-server\"");
                if !username.is_empty() {
                    l.push_str(&format!(
                        "; username=\"{username}\"; credential=\"{credential}\"; \
                         credential-type=\"password\""
                    ));
                }
                links.push(l);
            }
        }
        links
    }

    /// The ICE servers for this server's own peer connections.
    pub(super) fn own_ice_servers(&self) -> Vec<(Vec<String>, String, String)> {
        let now = crate::store::now_ms() / 1000;
        self.config
            .ice_servers
            .iter()
            .map(|s| {
                let (username, credential) = credentials(s, "huashen", now);
                (s.urls.clone(), username, credential)
            })
            .collect()
    }

    /// The next local UDP address to try for a viewer.
    pub(super) fn next_addr(&self) -> SocketAddr {
        let (lo, hi) = (self.config.port_min, self.config.port_max);
        let port = if lo == 0 {
            0
        } else {
            let span = u32::from(hi - lo) + 1;
            let n = self.next_port.fetch_add(1, Ordering::Relaxed);
            lo + ((n - u32::from(lo)) % span) as u16
        };
        SocketAddr::new(self.config.bind_ip, port)
    }

    pub(super) fn tries(&self) -> u32 {
        if self.config.port_min == 0 {
            1
        } else {
            u32::from(self.config.port_max - self.config.port_min) + 1
        }
    }
}

/// `peer`'s username and credential for server `s` at Unix time `now`:
/// the configured ones, or with a shared secret those of the TURN REST
/// scheme (coturn's `use-auth-secret`): username `<expiry>:<peer>`,
/// credential base64(HMAC-SHA1(secret, username)), good until the expiry.
pub fn credentials(s: &IceServerConfig, peer: &str, now: i64) -> (String, String) {
    if s.shared_secret.0.is_empty() {
        return (s.username.clone(), s.credential.0.clone());
    }
    let expiry = now + s.credential_ttl.as_secs() as i64;
    let username = format!("{expiry}:{peer}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(s.shared_secret.0.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn turn_rest_credentials_follow_the_scheme() {
        let s = IceServerConfig {
            urls: vec!["turn:turn.example:3478".into()],
            shared_secret: Secret("north".into()),
            credential_ttl: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let (user, pass) = credentials(&s, "vw_1", 1_700_000_000);
        assert_eq!(user, "1700003600:vw_1");
        // HMAC-SHA1("north", "1700003600:vw_1"), base64, as coturn checks it.
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"north").unwrap();
        mac.update(user.as_bytes());
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(pass, want);
        assert_ne!(credentials(&s, "vw_2", 1_700_000_000).1, pass);
        let fixed = IceServerConfig {
            username: "u".into(),
            credential: Secret("p".into()),
            ..Default::default()
        };
        assert_eq!(credentials(&fixed, "vw_1", 0), ("u".into(), "p".into()));
        assert!(!format!("{s:?}{fixed:?}").contains("north"));
        assert!(!format!("{fixed:?}").contains("\"p\""));
    }
}
