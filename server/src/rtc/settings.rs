//! WebRTC settings from the config, and the allocator of local UDP ports
//! for peers (viewers and publishers).

use crate::config::WebrtcConfig;
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

    /// ICE servers as WHEP `Link` header values (RFC 9725 §4.6).
    pub fn ice_server_links(&self) -> Vec<String> {
        let mut links = vec![];
        for s in &self.config.ice_servers {
            for url in &s.urls {
                let mut l = format!("<{url}>; rel=\"ice-server\"");
                if !s.username.is_empty() {
                    l.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        s.username, s.credential
                    ));
                }
                links.push(l);
            }
        }
        links
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
