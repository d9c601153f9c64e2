//! The lip-sync network's input: streaming log-mel features of 16 kHz
//! audio, 25 ms windows every 10 ms, 40 mel bands.

/// Feature rate.
pub const RATE: u32 = 16_000;
/// Samples between frames (10 ms).
pub const HOP: usize = 160;
/// Analysis window (25 ms).
pub const WINDOW: usize = 400;
const N_FFT: usize = 512;
pub const N_MELS: usize = 40;

/// Streaming log-mel features: push samples, get every frame whose window
/// is complete. The stream starts with half a window of silence so frame 0
/// is centred on the first sample.
pub struct LogMel {
    window: Vec<f32>,
    /// Per band: first FFT bin and weights.
    filters: Vec<(usize, Vec<f32>)>,
    buf: Vec<f32>,
    re: Vec<f32>,
    im: Vec<f32>,
}

impl Default for LogMel {
    fn default() -> Self {
        Self::new()
    }
}

fn hz_to_mel(f: f64) -> f64 {
    2595.0 * (1.0 + f / 700.0).log10()
}

fn mel_to_hz(m: f64) -> f64 {
    700.0 * (10f64.powf(m / 2595.0) - 1.0)
}

impl LogMel {
    pub fn new() -> Self {
        let window = (0..WINDOW)
            .map(|i| (0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / WINDOW as f64).cos()) as f32)
            .collect();
        let (lo, hi) = (hz_to_mel(50.0), hz_to_mel(7600.0));
        let edges: Vec<f64> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
            .collect();
        let bin_hz = f64::from(RATE) / N_FFT as f64;
        let filters = (0..N_MELS)
            .map(|m| {
                let (a, c, b) = (edges[m], edges[m + 1], edges[m + 2]);
                let first = (a / bin_hz).ceil() as usize;
                let last = ((b / bin_hz).floor() as usize).min(N_FFT / 2);
                let w = (first..=last)
                    .map(|k| {
                        let f = k as f64 * bin_hz;
                        let v = if f <= c {
                            (f - a) / (c - a)
                        } else {
                            (b - f) / (b - c)
                        };
                        v.max(0.0) as f32
                    })
                    .collect();
                (first, w)
            })
            .collect();
        Self {
            window,
            filters,
            buf: vec![0.0; WINDOW / 2],
            re: vec![0.0; N_FFT],
            im: vec![0.0; N_FFT],
        }
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.buf.resize(WINDOW / 2, 0.0);
    }

    /// Adds samples (16 kHz, ±1.0) and appends every completed frame.
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<[f32; N_MELS]>) {
        self.buf.extend_from_slice(samples);
        let mut start = 0;
        while start + WINDOW <= self.buf.len() {
            out.push(self.frame(start));
            start += HOP;
        }
        self.buf.drain(..start);
    }

    /// Every frame of a whole recording (frames past the end see silence).
    pub fn all(samples: &[f32]) -> Vec<[f32; N_MELS]> {
        let mut m = Self::new();
        let mut out = Vec::with_capacity(samples.len() / HOP + 1);
        m.push(samples, &mut out);
        let n = samples.len().div_ceil(HOP);
        while out.len() < n {
            m.push(&[0.0; HOP], &mut out);
        }
        out.truncate(n);
        out
    }

    fn frame(&mut self, start: usize) -> [f32; N_MELS] {
        self.re.fill(0.0);
        self.im.fill(0.0);
        for i in 0..WINDOW {
            self.re[i] = self.buf[start + i] * self.window[i];
        }
        fft(&mut self.re, &mut self.im);
        let mut out = [0f32; N_MELS];
        for (o, (first, w)) in out.iter_mut().zip(&self.filters) {
            let mut e = 0f32;
            for (j, wk) in w.iter().enumerate() {
                let k = first + j;
                e += wk * (self.re[k] * self.re[k] + self.im[k] * self.im[k]);
            }
            *o = (e + 1e-8).ln();
        }
        out
    }
}

/// In-place radix-2 complex FFT (length a power of two).
pub(crate) fn fft(re: &mut [f32], im: &mut [f32]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let ang = -std::f64::consts::TAU / len as f64;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (s, c) = (ang * k as f64).sin_cos();
                let (c, s) = (c as f32, s as f32);
                let (a, b) = (start + k, start + k + len / 2);
                let tr = re[b] * c - im[b] * s;
                let ti = re[b] * s + im[b] * c;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}
