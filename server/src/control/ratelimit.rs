//! Rate limits of the expensive calls, per API key and per client address:
//! enrollment (decoding and face analysis), session creation (a media
//! thread, models) and WebRTC offers (a peer connection, a UDP port). A
//! caller over its budget gets RESOURCE_EXHAUSTED (gRPC, with `retry-after`)
//! or 429 (HTTP, with `Retry-After`), never a slower server for everyone.
//! Budgets are per minute (GCRA: a minute's budget may come at once, then
//! it refills evenly).

use crate::config::RateConfig;
use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a call costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Costly {
    Enroll,
    CreateSession,
    /// A WHEP or WHIP offer.
    Offer,
}

impl Costly {
    fn what(self) -> &'static str {
        match self {
            Self::Enroll => "enrollments",
            Self::CreateSession => "new sessions",
            Self::Offer => "WebRTC offers",
        }
    }
}

/// Who is counted: an API key, or a client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Who {
    Key(String),
    Ip(IpAddr),
}

/// The client's address as the listener saw it (TCP or TLS), for handlers
/// (`ConnectInfo<PeerAddr>`) and gRPC services (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

pub struct RateLimits {
    limiters: Vec<(Costly, DefaultKeyedRateLimiter<Who>)>,
    checks: AtomicU64,
}

impl RateLimits {
    pub fn new(config: &RateConfig) -> Arc<Self> {
        let quota = |n: u32| Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"));
        let limiters = [
            (Costly::Enroll, config.enrollments_per_minute),
            (Costly::CreateSession, config.sessions_per_minute),
            (Costly::Offer, config.offers_per_minute),
        ]
        .into_iter()
        .map(|(op, n)| (op, DefaultKeyedRateLimiter::dashmap(quota(n))))
        .collect();
        Arc::new(Self {
            limiters,
            checks: AtomicU64::new(0),
        })
    }

    /// Counts one `op` against the API key `key` and the address `peer`
    /// (either may be unknown); an error says how long to wait.
    pub fn check(
        &self,
        op: Costly,
        key: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), ApiError> {
        let Some((_, limiter)) = self.limiters.iter().find(|(o, _)| *o == op) else {
            return Ok(());
        };
        // Forget callers idle long enough to have their whole budget back.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            limiter.retain_recent();
        }
        let clock = DefaultClock::default();
        let subjects = key
            .map(|k| Who::Key(k.to_owned()))
            .into_iter()
            .chain(peer.map(Who::Ip));
        for who in subjects {
            if let Err(not_until) = limiter.check_key(&who) {
                let wait = not_until.wait_time_from(clock.now());
                crate::metrics::METRICS
                    .rate_limited
                    .with_label_values(&[op.what()])
                    .inc();
                let by = match who {
                    Who::Key(_) => "this API key",
                    Who::Ip(_) => "this address",
                };
                return Err(ApiError::RateLimited {
                    message: format!(
                        "too many {} from {by}; retry in {} s",
                        op.what(),
                        wait.as_secs_f64().ceil().max(1.0)
                    ),
                    retry_after: wait.max(Duration::from_secs(1)),
                });
            }
        }
        Ok(())
    }
}

/// The client address of a gRPC request, if the listener recorded it.
pub fn peer_of<T>(request: &tonic::Request<T>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<axum::extract::ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_hold_per_key_and_per_address() {
        let limits = RateLimits::new(&RateConfig {
            enrollments_per_minute: 3,
            sessions_per_minute: 100,
            offers_per_minute: 100,
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            limits.check(Costly::Enroll, Some("k1"), Some(ip)).unwrap();
        }
        let e = limits
            .check(Costly::Enroll, Some("k1"), Some(ip))
            .unwrap_err();
        assert!(
            matches!(e, ApiError::RateLimited { retry_after, .. } if retry_after >= Duration::from_secs(1))
        );
        assert!(e.to_string().contains("too many enrollments"), "{e}");
        // Another key from the same address: the address is spent too.
        assert!(limits.check(Costly::Enroll, Some("k2"), Some(ip)).is_err());
        // Another key from elsewhere, and other calls, go on.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        limits
            .check(Costly::Enroll, Some("k2"), Some(other))
            .unwrap();
        limits
            .check(Costly::CreateSession, Some("k1"), Some(ip))
            .unwrap();
    }
}
