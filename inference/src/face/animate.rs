//! Face parameters over time: lip-sync from a viseme timeline and an idle
//! generator (blinks, breathing, head motion) that never freezes and never
//! repeats.
//!
//! Lip-sync: each viseme has a target mouth shape (table below). At time
//! t the mouth blends the visemes around t + 50 ms (the mouth moves ahead
//! of the sound it makes), each weighted by a Gaussian of its distance
//! from that instant (σ 45 ms) — neighbouring shapes bleed into each other
//! as in real speech (coarticulation) — and closures (p b m) win over
//! their neighbours. A critically damped follower smooths the result.
//!
//! Idle: blinks at random intervals (1.5–8 s, mean ≈ 4 s, one in ten a
//! double blink), shaped 80 ms closing, 40 ms closed, 150 ms opening;
//! breathing at a rate that wanders between 12 and 18 breaths a minute;
//! head yaw/pitch/roll and brows from smooth value noise (sums of
//! incommensurate octaves), livelier while speaking.

use super::rig::FaceParams;
use crate::speech::timeline::Viseme;

/// A viseme on the session clock, seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VisemeSpan {
    pub viseme: Viseme,
    pub start: f64,
    pub end: f64,
}

/// Mouth shape per viseme: jaw, spread, round, upper-lip raise, lower-lip
/// raise.
pub fn viseme_target(v: Viseme) -> [f32; 5] {
    match v {
        Viseme::Sil => [0.0, 0.0, 0.0, 0.0, 0.0],
        Viseme::PP => [0.0, 0.0, 0.0, 0.0, 0.1],
        Viseme::FF => [0.12, 0.1, 0.0, 0.2, 0.9],
        Viseme::TH => [0.25, 0.2, 0.0, 0.1, 0.0],
        Viseme::DD => [0.3, 0.2, 0.0, 0.0, 0.0],
        Viseme::KK => [0.35, 0.1, 0.0, 0.0, 0.0],
        Viseme::CH => [0.25, -0.2, 0.6, 0.3, 0.0],
        Viseme::SS => [0.15, 0.5, 0.0, 0.0, 0.0],
        Viseme::NN => [0.25, 0.1, 0.0, 0.0, 0.0],
        Viseme::RR => [0.25, -0.1, 0.5, 0.0, 0.0],
        Viseme::AA => [0.85, 0.1, 0.0, 0.1, 0.0],
        Viseme::E => [0.5, 0.6, 0.0, 0.0, 0.0],
        Viseme::IH => [0.35, 0.8, 0.0, 0.0, 0.0],
        Viseme::OH => [0.6, -0.2, 0.7, 0.0, 0.0],
        Viseme::OU => [0.35, -0.3, 1.0, 0.0, 0.0],
    }
}

const ANTICIPATION: f64 = 0.05;
const SIGMA: f64 = 0.045;

/// The mouth shape the timeline asks for at `t` (before smoothing).
pub fn mouth_at(t: f64, spans: &[VisemeSpan]) -> [f32; 5] {
    let at = t + ANTICIPATION;
    let mut acc = [0.0f32; 5];
    let mut total = 0.0f32;
    let mut closure = 0.0f32;
    for s in spans {
        let d = if at < s.start {
            s.start - at
        } else if at > s.end {
            at - s.end
        } else {
            0.0
        };
        if d > 4.0 * SIGMA {
            continue;
        }
        let w = (-(d / SIGMA).powi(2)).exp() as f32;
        let target = viseme_target(s.viseme);
        for k in 0..5 {
            acc[k] += w * target[k];
        }
        total += w;
        if s.viseme == Viseme::PP {
            closure = closure.max(w);
        }
    }
    let norm = total.max(1.0);
    let mut out = acc.map(|a| a / norm);
    out[0] *= 1.0 - 0.85 * closure;
    out
}

/// splitmix64: small, seedable, good enough for motion.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(seed: u64, i: i64) -> f64 {
    (mix(seed ^ (i as u64).wrapping_mul(0xd6e8_feb8_6659_fd93)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth value noise in [-1, 1]: cubic interpolation between random
/// values at integer points, three octaves at incommensurate rates.
fn noise(seed: u64, t: f64) -> f64 {
    let octave = |s: u64, x: f64| {
        let i = x.floor();
        let f = x - i;
        let u = f * f * (3.0 - 2.0 * f);
        let a = unit(s, i as i64) * 2.0 - 1.0;
        let b = unit(s, i as i64 + 1) * 2.0 - 1.0;
        a + (b - a) * u
    };
    octave(seed, t) * 0.6
        + octave(mix(seed ^ 1), t * 2.13 + 17.3) * 0.3
        + octave(mix(seed ^ 2), t * 4.71 + 5.1) * 0.1
}

/// Per-session animation state.
pub struct Animator {
    seed: u64,
    next_blink: f64,
    blink_start: f64,
    double_blink: bool,
    breath_phase: f64,
    last_t: Option<f64>,
    smooth: [f32; 5],
    velocity: [f32; 5],
    speaking: f32,
    blink_count: u64,
}

/// Blink shape: closing, closed, opening (seconds).
const BLINK: (f64, f64, f64) = (0.08, 0.04, 0.15);

impl Animator {
    pub fn new(seed: u64) -> Self {
        let mut a = Animator {
            seed: mix(seed),
            next_blink: 0.0,
            blink_start: f64::NEG_INFINITY,
            double_blink: false,
            breath_phase: unit(seed, -1) * std::f64::consts::TAU,
            last_t: None,
            smooth: [0.0; 5],
            velocity: [0.0; 5],
            speaking: 0.0,
            blink_count: 0,
        };
        a.next_blink = 0.8 + 2.5 * unit(a.seed, 0);
        a
    }

    fn blink_amount(&self, t: f64) -> f32 {
        let one = |dt: f64| -> f64 {
            let (c, h, o) = BLINK;
            if dt < 0.0 || dt > c + h + o {
                0.0
            } else if dt < c {
                dt / c
            } else if dt < c + h {
                1.0
            } else {
                1.0 - (dt - c - h) / o
            }
        };
        let dt = t - self.blink_start;
        let mut b = one(dt);
        if self.double_blink {
            b = b.max(one(dt - 0.35));
        }
        (b * b * (3.0 - 2.0 * b)) as f32
    }

    /// Whether, at `t`, the face only drifts slowly (idle head motion and
    /// breathing): no blink under way, mouth at rest, not speaking. A
    /// renderer may then refresh at a lower rate.
    pub fn is_drifting(&self, t: f64) -> bool {
        self.speaking < 0.01
            && self.smooth.iter().all(|v| v.abs() < 1e-3)
            && self.blink_amount(t) == 0.0
            && self.blink_amount(t + 0.08) == 0.0
    }

    /// The face at session time `t` (seconds, increasing) given the visemes
    /// around it (empty when silent).
    pub fn params(&mut self, t: f64, spans: &[VisemeSpan]) -> FaceParams {
        let dt = self.last_t.map_or(0.04, |l| (t - l).clamp(0.0, 0.5)) as f32;
        self.last_t = Some(t);
        // Lip-sync, through a critically damped follower (≈ 30 ms).
        let target = mouth_at(t, spans);
        let omega = 2.0 * std::f32::consts::PI / 0.09;
        let e = (-omega * dt).exp();
        for (k, &goal) in target.iter().enumerate() {
            let x = self.smooth[k] - goal;
            let v = self.velocity[k];
            let tmp = (v + omega * x) * dt;
            self.velocity[k] = (v - omega * tmp) * e;
            self.smooth[k] = goal + (x + tmp) * e;
        }
        let talking = if spans.is_empty() { 0.0 } else { 1.0 };
        self.speaking += (talking - self.speaking) * (dt * 2.0).min(1.0);

        // Blinks.
        while t >= self.next_blink {
            self.blink_count += 1;
            let r = unit(self.seed, self.blink_count as i64);
            let r2 = unit(self.seed ^ 0x55, self.blink_count as i64);
            self.blink_start = self.next_blink;
            self.double_blink = r2 < 0.1;
            // Gamma-ish interval: 1.5 s minimum, long tail, mean ≈ 4 s.
            self.next_blink += 1.5 + (-(1.0 - r).max(1e-9).ln()) * 2.5;
            self.next_blink = self.next_blink.min(self.blink_start + 8.0);
        }
        let blink = self.blink_amount(t);

        // Breathing: rate wanders between 12 and 18 per minute.
        let rate = 0.25 + 0.05 * noise(self.seed ^ 7, t * 0.05);
        self.breath_phase += f64::from(dt) * rate * std::f64::consts::TAU;
        let breath = self.breath_phase.sin() as f32;

        let liveliness = 1.0 + 0.8 * self.speaking;
        let n = |k: u64, rate: f64| noise(self.seed ^ k, t * rate) as f32;
        FaceParams {
            jaw_open: self.smooth[0].max(0.0),
            lip_spread: self.smooth[1],
            lip_round: self.smooth[2].max(0.0),
            upper_lip_raise: self.smooth[3].max(0.0),
            lower_lip_raise: self.smooth[4].max(0.0),
            blink_left: blink,
            blink_right: blink,
            brow: 0.15 * n(11, 0.3) + 0.25 * self.speaking * n(12, 0.9).max(0.0),
            yaw: 0.035 * liveliness * n(13, 0.2),
            pitch: 0.02 * liveliness * n(14, 0.25) + 0.01 * self.speaking * n(15, 1.3),
            roll: 0.02 * liveliness * n(16, 0.15),
            breath,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(v: Viseme, a: f64, b: f64) -> VisemeSpan {
        VisemeSpan {
            viseme: v,
            start: a,
            end: b,
        }
    }

    #[test]
    fn open_vowels_open_the_jaw_and_closures_close_it() {
        let spans = [
            span(Viseme::AA, 0.0, 0.2),
            span(Viseme::PP, 0.2, 0.28),
            span(Viseme::AA, 0.28, 0.5),
        ];
        let open = mouth_at(0.05, &spans)[0];
        let closed = mouth_at(0.24 - ANTICIPATION, &spans)[0];
        assert!(open > 0.7, "{open}");
        assert!(closed < 0.15, "{closed}");
        // Silence far from speech is the neutral face.
        assert_eq!(mouth_at(3.0, &spans), [0.0; 5]);
    }

    #[test]
    fn the_mouth_anticipates_the_sound() {
        let spans = [span(Viseme::AA, 1.0, 1.3)];
        // 50 ms before the vowel sounds, the jaw is already well open.
        assert!(mouth_at(0.97, &spans)[0] > 0.5);
    }

    #[test]
    fn idle_blinks_irregularly_and_keeps_moving() {
        let mut a = Animator::new(42);
        let mut blinks = Vec::new();
        let mut was_closed = false;
        let mut yaws = Vec::new();
        let fps = 25.0;
        for i in 0..(120.0 * fps) as usize {
            let t = i as f64 / fps;
            let p = a.params(t, &[]);
            let closed = p.blink_left > 0.8;
            if closed && !was_closed {
                blinks.push(t);
            }
            was_closed = closed;
            yaws.push(p.yaw);
            assert!(p.jaw_open.abs() < 1e-6);
        }
        // 120 s: about 30 blinks, intervals vary.
        assert!((15..60).contains(&blinks.len()), "{} blinks", blinks.len());
        let gaps: Vec<f64> = blinks.windows(2).map(|w| w[1] - w[0]).collect();
        let min = gaps.iter().cloned().fold(f64::MAX, f64::min);
        let max = gaps.iter().cloned().fold(0.0, f64::max);
        assert!(max - min > 2.0, "blink intervals {min}..{max}");
        // Head motion never stops: every 2-second window moves.
        for w in yaws.chunks(50) {
            let lo = w.iter().cloned().fold(f32::MAX, f32::min);
            let hi = w.iter().cloned().fold(f32::MIN, f32::max);
            assert!(hi - lo > 1e-4, "frozen head");
        }
    }

    #[test]
    fn drifting_only_when_idle_between_blinks() {
        let mut a = Animator::new(5);
        let fps = 25.0;
        let (mut drifting, mut blinking_drift) = (0, 0);
        for i in 0..(30.0 * fps) as usize {
            let t = i as f64 / fps;
            let p = a.params(t, &[]);
            if a.is_drifting(t) {
                drifting += 1;
                if p.blink_left > 0.0 {
                    blinking_drift += 1;
                }
            }
        }
        assert!(drifting > 600, "{drifting} of 750 idle frames drift");
        assert_eq!(blinking_drift, 0, "a blink is never skipped");
        let spans = [span(Viseme::AA, 30.0, 30.5)];
        a.params(30.1, &spans);
        assert!(!a.is_drifting(30.1));
    }
}
