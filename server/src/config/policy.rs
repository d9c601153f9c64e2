//! Policy settings: moderation of what sessions would speak, and the rate
//! limits of expensive calls.

use super::service::Secret;
use serde::Deserialize;
use std::time::Duration;

/// Rate limits of the expensive calls, per API key and per client address
/// (each counted on its own), per minute.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateConfig {
    /// EnrollAvatar calls.
    pub enrollments_per_minute: u32,
    /// CreateSession calls.
    pub sessions_per_minute: u32,
    /// WHEP (viewers) and WHIP (publishers) offers. Viewers behind one NAT
    /// share an address: leave room for an audience.
    pub offers_per_minute: u32,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            enrollments_per_minute: 30,
            sessions_per_minute: 60,
            offers_per_minute: 1200,
        }
    }
}

impl RateConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        let all = [
            self.enrollments_per_minute,
            self.sessions_per_minute,
            self.offers_per_minute,
        ];
        if all.iter().any(|n| *n == 0 || *n > 1_000_000) {
            return Err("rate_limits: every budget must be 1..1000000 per minute".into());
        }
        Ok(())
    }
}

/// Moderation of what sessions would speak (see `privacy::moderation`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    pub enabled: bool,
    /// Include the built-in blocklists (gambling, fraud, drugs, weapons).
    pub builtin: bool,
    /// More blocked terms by category, e.g. `brand = ["竞品店铺"]`.
    pub blocklist: std::collections::BTreeMap<String, Vec<String>>,
    /// Optional moderation service, asked about every clause that passes
    /// the blocklists: POST JSON `{"text", "language", "session_id"}`,
    /// answering `{"allow": bool, "category": "…"}`. It receives the text
    /// to be spoken, so it must be `https://` (plain `http://` only to a
    /// loopback address, e.g. a sidecar), and every request is signed.
    pub webhook_url: String,
    /// Key of the requests' signature: `X-Huashen-Signature: sha256=<hex
    /// HMAC-SHA256 of "<X-Huashen-Timestamp>.<body>">`. Required with a
    /// webhook.
    pub webhook_secret: Secret,
    /// How long to wait for the webhook.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Speak when the webhook cannot be reached (default: refuse).
    pub webhook_fail_open: bool,
}

impl Default for ModerationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            builtin: true,
            blocklist: Default::default(),
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
            webhook_timeout: Duration::from_millis(800),
            webhook_fail_open: false,
        }
    }
}

impl ModerationConfig {
    pub(super) fn validate(&self) -> Result<(), String> {
        if !self.webhook_url.is_empty() {
            let loopback = |host: &str| {
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            };
            let ok = self
                .webhook_url
                .parse::<http::Uri>()
                .map(|u| match (u.scheme_str(), u.host()) {
                    (Some("https"), Some(_)) => true,
                    (Some("http"), Some(h)) => loopback(h),
                    _ => false,
                })
                .unwrap_or(false);
            if !ok {
                return Err(
                    "moderation.webhook_url must be an https:// URL (http:// only to a loopback \
                     address): it receives the text to be spoken"
                        .into(),
                );
            }
            if self.webhook_secret.0.len() < 16 {
                return Err(
                    "moderation.webhook_secret (at least 16 characters) is required with a \
                     webhook: every request is signed with it"
                        .into(),
                );
            }
        }
        for (cat, terms) in &self.blocklist {
            let ok_cat = !cat.is_empty()
                && cat.len() <= 32
                && cat
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok_cat {
                return Err(format!(
                    "moderation.blocklist: category {cat:?} must be 1..32 of a-z, 0-9, _"
                ));
            }
            // Matching folds text with NFKC and keeps letters and digits: a
            // term without any could never match.
            if terms.iter().any(|t| !has_letter_or_digit(t)) {
                return Err(format!(
                    "moderation.blocklist.{cat}: a term has no letters or digits"
                ));
            }
        }
        Ok(())
    }
}

/// True when `text`, folded with NFKC, has a letter or digit.
fn has_letter_or_digit(text: &str) -> bool {
    use unicode_normalization::UnicodeNormalization;
    text.nfkc().any(char::is_alphanumeric)
}
