//! An output's figures at `/metrics`: what its task counted
//! ([`Counters`](crate::rtc::forward::Counters)), published under its own
//! `output` label once a second with its bitrate, and removed when the
//! output is forgotten.

use crate::metrics::METRICS;
use crate::rtc::forward::Sent;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How far back the bitrate looks.
const WINDOW: Duration = Duration::from_secs(2);

pub struct Meter {
    kind: &'static str,
    id: String,
    counters: Sent,
    /// What the counter series show now: bytes, dropped, reconnects.
    published: [u64; 3],
    /// (when, bytes) over the last [`WINDOW`].
    recent: VecDeque<(Instant, u64)>,
}

impl Meter {
    /// Meters `counters` of output `id` (its series start at zero).
    pub fn new(kind: &'static str, id: &str, counters: Sent) -> Self {
        let mut meter = Self {
            kind,
            id: id.to_owned(),
            counters,
            published: [0; 3],
            recent: VecDeque::new(),
        };
        meter.tick();
        meter
    }

    /// Publishes what was counted since the last tick, and the bitrate.
    pub fn tick(&mut self) {
        let now = Instant::now();
        let c = &self.counters;
        let bytes = c.bytes.load(Ordering::Relaxed);
        self.recent.push_back((now, bytes));
        while self.recent.len() > 2 && now - self.recent[1].0 >= WINDOW {
            self.recent.pop_front();
        }
        let (then, before) = self.recent[0];
        let secs = (now - then).as_secs_f64();
        let bitrate = if secs >= 0.5 {
            ((bytes - before) as f64 * 8.0 / secs) as u64
        } else {
            0
        };
        self.set_bitrate(bitrate);
        let counts = [
            bytes,
            c.dropped.load(Ordering::Relaxed),
            c.reconnects.load(Ordering::Relaxed),
        ];
        let series = [
            &METRICS.output_bytes,
            &METRICS.output_dropped_frames,
            &METRICS.output_reconnects,
        ];
        let labels = [self.kind, self.id.as_str()];
        for ((now, shown), vec) in counts.iter().zip(&mut self.published).zip(series) {
            vec.with_label_values(&labels).inc_by(now - *shown);
            *shown = *now;
        }
    }

    fn set_bitrate(&self, bitrate: u64) {
        self.counters.bitrate.store(bitrate, Ordering::Relaxed);
        METRICS
            .output_bitrate
            .with_label_values(&[self.kind, self.id.as_str()])
            .set(bitrate as i64);
    }

    /// The output ended: its last counts, and no bitrate.
    pub fn end(&mut self) {
        self.tick();
        self.set_bitrate(0);
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        let labels = [self.kind, self.id.as_str()];
        let _ = METRICS.output_bytes.remove_label_values(&labels);
        let _ = METRICS.output_dropped_frames.remove_label_values(&labels);
        let _ = METRICS.output_reconnects.remove_label_values(&labels);
        let _ = METRICS.output_bitrate.remove_label_values(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, id: &str) -> Option<f64> {
        METRICS
            .registry
            .gather()
            .iter()
            .find(|f| f.name() == name)?
            .get_metric()
            .iter()
            .find(|m| m.get_label().iter().any(|l| l.value() == id))
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
    }

    #[test]
    fn an_outputs_series_follow_its_counters_and_go_with_it() {
        let counters = Sent::default();
        let id = "ou_meter_test";
        let mut meter = Meter::new("rtmp", id, counters.clone());
        assert_eq!(series("huashen_output_bytes_total", id), Some(0.0));
        counters.add_bytes(250_000);
        counters.add_dropped(3);
        counters.reconnects.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(600));
        meter.tick();
        assert_eq!(series("huashen_output_bytes_total", id), Some(250_000.0));
        assert_eq!(series("huashen_output_dropped_frames_total", id), Some(3.0));
        assert_eq!(series("huashen_output_reconnects_total", id), Some(1.0));
        // 2 Mbit over a little more than 0.6 s.
        let bitrate = series("huashen_output_bitrate_bits", id).unwrap();
        assert!((2.0e6..3.4e6).contains(&bitrate), "{bitrate}");
        assert_eq!(counters.bitrate.load(Ordering::Relaxed) as f64, bitrate);
        meter.end();
        assert_eq!(series("huashen_output_bitrate_bits", id), Some(0.0));
        drop(meter);
        assert_eq!(series("huashen_output_bytes_total", id), None);
    }
}
