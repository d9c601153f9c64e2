//! Streaming band-limited resampling by a rational factor (e.g. the TTS's
//! 22,050 Hz to Opus' 48,000 Hz: ×320/147), with a Blackman-windowed sinc
//! polyphase filter. Output is exactly `ceil(n_in · up / down)` samples for
//! `n_in` input samples, however the input is chunked.

use std::sync::Arc;

/// Filter half-length in input samples.
const HALF_TAPS: usize = 16;

#[derive(Clone)]
pub struct Resampler {
    up: u64,
    down: u64,
    /// `up` phases × `2 * HALF_TAPS` coefficients.
    table: Arc<Vec<f32>>,
    /// Input samples kept: `buf[0]` is absolute input index `buf_start`.
    buf: Vec<f32>,
    buf_start: u64,
    /// Input samples received so far.
    received: u64,
    /// Next output index.
    next_out: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Resampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Self {
        let g = gcd(u64::from(from_hz), u64::from(to_hz)).max(1);
        let (up, down) = (u64::from(to_hz) / g, u64::from(from_hz) / g);
        // Cut-off just below the lower Nyquist frequency, relative to the
        // input rate.
        let cutoff = 0.95 * (up as f64 / down as f64).min(1.0);
        let taps = 2 * HALF_TAPS;
        let mut table = Vec::with_capacity(up as usize * taps);
        for phase in 0..up {
            let frac = phase as f64 / up as f64;
            let mut row: Vec<f64> = (0..taps)
                .map(|j| {
                    // Distance from the output instant to input tap j.
                    let d = j as f64 - (HALF_TAPS as f64 - 1.0) - frac;
                    let x = cutoff * d;
                    let sinc = if x.abs() < 1e-9 {
                        1.0
                    } else {
                        (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x)
                    };
                    let w = (d + HALF_TAPS as f64) / (2.0 * HALF_TAPS as f64);
                    let blackman = 0.42 - 0.5 * (std::f64::consts::TAU * w).cos()
                        + 0.08 * (2.0 * std::f64::consts::TAU * w).cos();
                    cutoff * sinc * blackman.max(0.0)
                })
                .collect();
            // Unity gain at DC for every phase.
            let sum: f64 = row.iter().sum();
            row.iter_mut().for_each(|c| *c /= sum);
            table.extend(row.into_iter().map(|c| c as f32));
        }
        Self {
            up,
            down,
            table: Arc::new(table),
            buf: Vec::new(),
            buf_start: 0,
            received: 0,
            next_out: 0,
        }
    }

    /// Adds input; appends every output sample whose filter window is
    /// complete.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.buf.extend_from_slice(input);
        self.received += input.len() as u64;
        self.produce(self.received, out);
    }

    /// Ends the stream: appends the remaining output (the input is taken to
    /// be silent after its end) and resets for a new stream.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        let total_out = (self.received * self.up).div_ceil(self.down);
        self.buf.extend(std::iter::repeat_n(0.0, HALF_TAPS + 1));
        let available = self.received + HALF_TAPS as u64 + 1;
        self.produce_until(available, total_out, out);
        self.buf.clear();
        self.buf_start = 0;
        self.received = 0;
        self.next_out = 0;
    }

    fn produce(&mut self, available: u64, out: &mut Vec<f32>) {
        self.produce_until(available, u64::MAX, out);
    }

    fn produce_until(&mut self, available: u64, limit: u64, out: &mut Vec<f32>) {
        let taps = 2 * HALF_TAPS;
        while self.next_out < limit {
            let t = self.next_out * self.down;
            let base = t / self.up; // input sample at or before the instant
            let phase = (t % self.up) as usize;
            // Taps cover input base-(HALF_TAPS-1) ..= base+HALF_TAPS.
            if base + HALF_TAPS as u64 >= available {
                break;
            }
            let coeffs = &self.table[phase * taps..(phase + 1) * taps];
            let mut acc = 0.0f32;
            for (j, c) in coeffs.iter().enumerate() {
                let idx = base as i64 + j as i64 - (HALF_TAPS as i64 - 1);
                if idx >= self.buf_start as i64 {
                    let i = (idx - self.buf_start as i64) as usize;
                    if let Some(v) = self.buf.get(i) {
                        acc += v * c;
                    }
                }
            }
            out.push(acc);
            self.next_out += 1;
        }
        // Drop input no future output needs.
        let next_base = (self.next_out * self.down) / self.up;
        let keep_from = next_base.saturating_sub(HALF_TAPS as u64);
        if keep_from > self.buf_start {
            let drop = ((keep_from - self.buf_start) as usize).min(self.buf.len());
            self.buf.drain(..drop);
            self.buf_start += drop as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: f32, hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (std::f32::consts::TAU * hz * i as f32 / rate).sin() * 0.5)
            .collect()
    }

    #[test]
    fn length_and_tone_survive() {
        let input = sine(22050.0, 440.0, 22050);
        let mut r = Resampler::new(22050, 48000);
        let mut out = Vec::new();
        r.push(&input, &mut out);
        r.finish(&mut out);
        assert_eq!(out.len(), 48000);
        // Compare with the ideal 440 Hz tone at 48 kHz away from the edges.
        let ideal = sine(48000.0, 440.0, 48000);
        let err = out[1000..47000]
            .iter()
            .zip(&ideal[1000..47000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 0.01, "{err}");
    }

    #[test]
    fn chunking_does_not_change_output() {
        let input = sine(22050.0, 1000.0, 5000);
        let mut one = Vec::new();
        let mut r = Resampler::new(22050, 48000);
        r.push(&input, &mut one);
        r.finish(&mut one);
        let mut chunked = Vec::new();
        let mut r = Resampler::new(22050, 48000);
        for c in input.chunks(333) {
            r.push(c, &mut chunked);
        }
        r.finish(&mut chunked);
        assert_eq!(one, chunked);
        // Reusable after finish.
        let mut again = Vec::new();
        r.push(&input, &mut again);
        r.finish(&mut again);
        assert_eq!(one, again);
    }
}
