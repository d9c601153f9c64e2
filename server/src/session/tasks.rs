//! The manager's background work: measuring what sessions cost (for
//! admission and metrics), closing sessions whose avatar another server
//! deleted, and the metrics computed from live state.

use super::capacity;
use super::manager::SessionManager;
use super::types::{CloseReason, SessionState};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

impl SessionManager {
    /// Measures what sessions cost once a second (for admission and
    /// metrics) until `stop` fires.
    pub fn spawn_capacity_sampler(&self, stop: CancellationToken) {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut sampler = capacity::Sampler::default();
            let mut tick = tokio::time::interval(capacity::SAMPLE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let sessions = inner
                    .sessions
                    .iter()
                    .map(|h| (h.key().clone(), h.media.stats.cpu.get()))
                    .collect::<Vec<_>>();
                sampler.sample(
                    &inner.capacity,
                    sessions.into_iter(),
                    inner.engines.cpu_us(),
                    std::time::Instant::now(),
                );
                let (load, budget, cost) = inner.capacity.snapshot();
                let m = &crate::metrics::METRICS;
                m.cpu_load_cores.set(load);
                m.cpu_budget_cores.set(budget);
                m.session_cost_cores.set(cost);
            }
        });
    }

    /// With records shared by several servers: once a second, closes the
    /// live sessions whose avatar another server deleted (a deletion or a
    /// consent withdrawal there closes the sessions here too), until
    /// `stop`. Records unreadable for `avatar_check_grace` close every
    /// session (fail closed). Nothing to do with one server: its own deletions close its
    /// sessions directly.
    pub fn spawn_avatar_watch(&self, stop: CancellationToken) {
        if !self.inner.store.liveness().shared {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_read = std::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let mut avatars: Vec<String> = inner
                    .sessions
                    .iter()
                    .map(|h| h.record.avatar_id.clone())
                    .collect();
                if avatars.is_empty() {
                    last_read = std::time::Instant::now();
                    continue;
                }
                avatars.sort();
                avatars.dedup();
                let asked = avatars.clone();
                let present = match inner
                    .store
                    .run(move |b| b.existing_avatar_ids(&asked))
                    .await
                {
                    Ok(p) => {
                        last_read = std::time::Instant::now();
                        p
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot check for avatars deleted elsewhere");
                        // Fail closed: a deletion or a consent withdrawal
                        // elsewhere could go unseen.
                        if last_read.elapsed() >= inner.config.avatar_check_grace {
                            tracing::error!(
                                "the shared records are unreadable; closing this server's sessions"
                            );
                            for h in inner.sessions.iter() {
                                h.request_close(CloseReason::RecordsUnavailable);
                            }
                        }
                        continue;
                    }
                };
                let gone: std::collections::HashSet<&String> =
                    avatars.iter().filter(|a| !present.contains(*a)).collect();
                for h in inner.sessions.iter() {
                    if gone.contains(&h.record.avatar_id) {
                        tracing::info!(
                            session = %h.record.id,
                            avatar = %h.record.avatar_id,
                            "closing a session whose avatar another server deleted"
                        );
                        h.request_close(CloseReason::AvatarDeleted);
                    }
                }
            }
        });
    }

    /// Refreshes the metrics that are computed from live state.
    pub fn refresh_metrics(&self) {
        let m = &crate::metrics::METRICS;
        let mut counts = std::collections::HashMap::new();
        let mut queued = 0;
        for h in self.inner.sessions.iter() {
            *counts.entry(h.snapshot().state).or_insert(0i64) += 1;
            queued += h.commands.max_capacity() - h.commands.capacity();
        }
        for (state, name) in [
            (SessionState::Starting, "starting"),
            (SessionState::Idle, "idle"),
            (SessionState::Speaking, "speaking"),
            (SessionState::Listening, "listening"),
        ] {
            m.sessions_by_state
                .with_label_values(&[name])
                .set(counts.get(&state).copied().unwrap_or(0));
        }
        m.session_queue_depth.set(queued as i64);
        for (stage, stats) in self.inner.engines.batch_stats() {
            let get = |c: &std::sync::atomic::AtomicU64| {
                c.load(std::sync::atomic::Ordering::Relaxed) as i64
            };
            m.batch_runs
                .with_label_values(&[stage])
                .set(get(&stats.batches));
            m.batch_items
                .with_label_values(&[stage])
                .set(get(&stats.items));
            m.batch_largest
                .with_label_values(&[stage])
                .set(get(&stats.largest));
            m.batch_failed
                .with_label_values(&[stage])
                .set(get(&stats.failed));
        }
    }
}
