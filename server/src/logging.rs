//! Log filtering. Huashen's own logs carry identifiers, never personal data.
//! The WebRTC stack logs network addresses (viewers' IPs, in ICE candidates)
//! at its debug and info levels, so its crates are held at `warn` unless an
//! operator names them explicitly in `HUASHEN_LOG`.

use tracing_subscriber::EnvFilter;

/// Crates whose verbose logs carry viewers' network addresses.
const MEDIA_STACK: &[&str] = &[
    "webrtc",
    "rtc",
    "rtc_ice",
    "rtc_dtls",
    "rtc_srtp",
    "rtc_sctp",
    "rtc_mdns",
    "rtc_stun",
    "rtc_turn",
    "rtc_interceptor",
    "rtc_datachannel",
    "rtc_rtp",
    "rtc_rtcp",
    "rtc_sdp",
    "rtc_media",
    "rtc_shared",
];

/// The filter for `directives` (the `HUASHEN_LOG` syntax; `None` = `info`),
/// with the media stack capped at `warn` unless a directive names it.
pub fn filter(directives: Option<&str>) -> EnvFilter {
    let user = directives.unwrap_or("info");
    let mut all = user.to_owned();
    for krate in MEDIA_STACK {
        let named = user.split(',').any(|d| {
            let target = d.split('=').next().unwrap_or("").trim();
            target == *krate || target.starts_with(&format!("{krate}::"))
        });
        if !named {
            all.push_str(&format!(",{krate}=warn"));
        }
    }
    EnvFilter::try_new(&all).unwrap_or_else(|e| {
        eprintln!("HUASHEN_LOG {user:?} is not a valid filter ({e}); logging at info");
        EnvFilter::new("info")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_stack_is_capped_unless_named() {
        let f = filter(Some("debug")).to_string();
        assert!(f.contains("rtc_ice=warn") && f.contains("debug"), "{f}");
        let f = filter(Some("debug,rtc_ice=trace")).to_string();
        assert!(
            f.contains("rtc_ice=trace") && !f.contains("rtc_ice=warn"),
            "{f}"
        );
        assert!(filter(None).to_string().contains("info"));
    }
}
