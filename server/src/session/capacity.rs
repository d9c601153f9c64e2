//! Admission by measured capacity: the server knows what its sessions cost
//! on this machine and refuses a new one (RESOURCE_EXHAUSTED) when it would
//! not fit, instead of letting every session fall behind real time.
//!
//! Cost is CPU time, measured where the work happens: each session's media
//! thread (animation, rendering, encoding) and the shared TTS workers read
//! their own thread CPU clocks. A sampler turns those counters into loads
//! (cores, smoothed over a few seconds) once a second. A session not yet
//! measured counts at the configured estimate; the mean measured cost of a
//! session (TTS included) is what a new one is expected to add.

pub use crate::metrics::{CpuCounter, thread_cpu_us};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a session was refused, in cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Full {
    pub load: f64,
    pub budget: f64,
    pub cost: f64,
    /// Sessions admitted since the last sample (starting, counted at `cost`).
    pub starting: u64,
}

/// The admission side: the budget and the latest sample.
#[derive(Debug)]
pub struct Capacity {
    budget_mc: u64,
    estimate_mc: u64,
    /// Load of everything running, in millicores (unmeasured sessions at
    /// the estimate).
    load_mc: AtomicU64,
    /// Mean measured cost of a session, millicores; 0 = none measured yet.
    cost_mc: AtomicU64,
    /// Sessions admitted since the last sample.
    reserved: AtomicU64,
}

impl Capacity {
    /// `budget` and `estimate` in cores.
    pub fn new(budget: f64, estimate: f64) -> Self {
        Self {
            budget_mc: (budget * 1000.0) as u64,
            estimate_mc: (estimate * 1000.0) as u64,
            load_mc: AtomicU64::new(0),
            cost_mc: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
        }
    }

    /// What a new session is expected to cost, millicores.
    fn cost(&self) -> u64 {
        match self.cost_mc.load(Ordering::Relaxed) {
            0 => self.estimate_mc,
            c => c,
        }
    }

    /// Reserves room for one more session, or says why there is none.
    pub fn admit(&self) -> Result<(), Full> {
        let cost = self.cost();
        let starting = self.reserved.load(Ordering::Relaxed);
        let load = self.load_mc.load(Ordering::Relaxed) + starting * cost;
        if load + cost > self.budget_mc {
            return Err(Full {
                load: load as f64 / 1000.0,
                budget: self.budget_mc as f64 / 1000.0,
                cost: cost as f64 / 1000.0,
                starting,
            });
        }
        self.reserved.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// (load, budget, mean session cost) in cores, for metrics.
    pub fn snapshot(&self) -> (f64, f64, f64) {
        (
            self.load_mc.load(Ordering::Relaxed) as f64 / 1000.0,
            self.budget_mc as f64 / 1000.0,
            self.cost() as f64 / 1000.0,
        )
    }
}

/// Smoothing of the loads: about a 5 s memory at one sample a second.
const ALPHA: f64 = 0.3;

/// Turns CPU counters into loads, one sample at a time.
#[derive(Default)]
pub struct Sampler {
    /// Per session: last counter, when, smoothed load (cores).
    sessions: std::collections::HashMap<String, (u64, Instant, Option<f64>)>,
    tts: Option<(u64, Instant, Option<f64>)>,
}

fn smooth(prev: &mut (u64, Instant, Option<f64>), cpu_us: u64, now: Instant) {
    let dt = now.duration_since(prev.1).as_secs_f64();
    if dt <= 0.0 {
        return;
    }
    let load = cpu_us.saturating_sub(prev.0) as f64 / 1e6 / dt;
    prev.2 = Some(match prev.2 {
        Some(old) => old + ALPHA * (load - old),
        None => load,
    });
    prev.0 = cpu_us;
    prev.1 = now;
}

impl Sampler {
    /// Takes one sample: `sessions` are (id, media thread CPU µs) of the
    /// live sessions, `tts_us` the TTS workers' total. Updates `capacity`.
    pub fn sample(
        &mut self,
        capacity: &Capacity,
        sessions: impl Iterator<Item = (String, u64)>,
        tts_us: u64,
        now: Instant,
    ) {
        let mut seen = std::collections::HashSet::new();
        for (id, cpu) in sessions {
            seen.insert(id.clone());
            match self.sessions.get_mut(&id) {
                Some(prev) => smooth(prev, cpu, now),
                None => {
                    self.sessions.insert(id, (cpu, now, None));
                }
            }
        }
        self.sessions.retain(|id, _| seen.contains(id));
        match self.tts.as_mut() {
            Some(prev) => smooth(prev, tts_us, now),
            None => self.tts = Some((tts_us, now, None)),
        }
        let measured: Vec<f64> = self.sessions.values().filter_map(|s| s.2).collect();
        let unmeasured = self.sessions.len() - measured.len();
        let tts = self.tts.and_then(|t| t.2).unwrap_or(0.0);
        let media: f64 = measured.iter().sum();
        let estimate = capacity.estimate_mc as f64 / 1000.0;
        let load = media + tts + unmeasured as f64 * estimate;
        // A session's share of the TTS work belongs to its cost.
        let cost = (!measured.is_empty()).then(|| (media + tts) / measured.len() as f64);
        capacity
            .load_mc
            .store((load * 1000.0) as u64, Ordering::Relaxed);
        capacity.cost_mc.store(
            cost.map_or(0, |c| ((c * 1000.0) as u64).max(1)),
            Ordering::Relaxed,
        );
        capacity.reserved.store(0, Ordering::Relaxed);
    }
}

/// How often the sampler runs.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_would_not_fit_and_learns_the_cost() {
        let cap = Capacity::new(1.0, 0.3);
        // Nothing measured: the estimate counts, reservations add up.
        assert!(cap.admit().is_ok());
        assert!(cap.admit().is_ok());
        assert!(cap.admit().is_ok());
        let full = cap.admit().unwrap_err();
        assert_eq!(full.cost, 0.3);
        assert!((full.load - 0.9).abs() < 1e-9);

        // Three sessions measured at 0.1 core each, TTS idle: room again,
        // and a new session is expected to cost 0.1.
        let mut s = Sampler::default();
        let t0 = Instant::now();
        let ids = |cpu: u64| (0..3).map(move |i| (format!("se_{i}"), cpu));
        s.sample(&cap, ids(0), 0, t0);
        s.sample(&cap, ids(100_000), 0, t0 + Duration::from_secs(1));
        let (load, budget, cost) = cap.snapshot();
        assert!((load - 0.3).abs() < 1e-3, "{load}");
        assert_eq!(budget, 1.0);
        assert!((cost - 0.1).abs() < 1e-3, "{cost}");
        for _ in 0..7 {
            assert!(cap.admit().is_ok());
        }
        assert!(cap.admit().is_err());

        // Speech doubles the cost; a closed session stops counting.
        s.sample(&cap, ids(400_000), 300_000, t0 + Duration::from_secs(2));
        let (_, _, cost) = cap.snapshot();
        assert!(cost > 0.1, "{cost}");
        s.sample(
            &cap,
            std::iter::once(("se_0".to_string(), 500_000)),
            300_000,
            t0 + Duration::from_secs(3),
        );
        assert_eq!(s.sessions.len(), 1);
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let a = thread_cpu_us();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_us() > a);
    }
}
