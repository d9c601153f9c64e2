//! The text-to-speech engine, one per process: the voices loaded once (on
//! the CPU or a GPU), their batched workers, and synthesis threads that
//! render one clause at a time into a session's [`SpeechSink`].
//!
//! Ordering: a session hands the engine its next clause only when the
//! previous one is fully synthesised, so clauses play in order while
//! synthesis (faster than real time) runs ahead of playback. Bounds: the
//! sink holds a bounded amount of audio and a worker blocks (backpressure)
//! while it is full. Interrupt bumps the sink's generation: workers drop
//! stale work at the next chunk.

use huashen_inference::Cpu;
use huashen_inference::burn::tensor::backend::Backend;
use huashen_inference::device::Device;
use huashen_inference::resample::Resampler;
use huashen_inference::speech::timeline::Timeline;
use huashen_inference::speech::tts::VoiceInfo;
use huashen_inference::speech::voices::Voices;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One clause to speak. `text` is personal data: never logged.
#[derive(Debug, Clone)]
pub struct Utterance {
    pub id: String,
    pub text: String,
}

/// Where a clause's audio goes while it is synthesised: a session's
/// playback buffer. Interrupt bumps its generation; work for an older
/// generation is dropped.
pub trait SpeechSink: Send + Sync + 'static {
    /// The generation now playing.
    fn generation(&self) -> u64;
    /// Opens a clause with its timeline (at the voice's sample rate).
    /// False when `generation` is stale (interrupted).
    fn begin(&self, generation: u64, utterance: &Utterance, timeline: &Timeline) -> bool;
    /// Appends audio at the engine's output rate, waiting while the sink is
    /// full. False when interrupted.
    fn append(&self, generation: u64, pcm: &[i16]) -> bool;
    /// The clause's audio is all there.
    fn complete(&self, generation: u64);
}

/// A synthesis request handed to a worker.
struct Job {
    utterance: Utterance,
    voice: String,
    speed: f32,
    sink: Arc<dyn SpeechSink>,
    generation: u64,
    rate: u32,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The text-to-speech engine: loaded voices and their worker threads.
pub struct SpeechEngine {
    /// CPU time the synthesis workers have used (admission by capacity);
    /// see [`Self::cpu_us`].
    pub cpu: Arc<crate::metrics::CpuCounter>,
    /// The batched workers' counters by stage (their CPU time counts too).
    batch: Vec<(&'static str, Arc<huashen_inference::batch::BatchStats>)>,
    /// The voices loaded (on whichever device).
    voices: Vec<VoiceInfo>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    /// Why no voice is available, for the error clients get.
    unavailable: Option<String>,
    /// Sample rate of the audio handed to sinks.
    output_rate: u32,
}

/// Speech settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub models_dir: std::path::PathBuf,
    pub workers: usize,
    pub gain: f32,
    /// Jobs waiting for a worker at most (one per speaking session).
    pub queue: usize,
    /// Where the models run (resolved and checked: see `inference::device`).
    pub device: Device,
    /// The vocoders' batched workers (slots 1: none).
    pub batch: huashen_inference::batch::BatchConfig,
    /// Sample rate of the audio handed to sinks (the session clock's).
    pub output_rate: u32,
}

impl SpeechEngine {
    /// Loads the voices found under `models_dir` and starts the workers. A
    /// missing model is not fatal: the server runs, and Speak explains what
    /// to install.
    pub fn start(config: &EngineConfig) -> Self {
        match config.device {
            Device::Cpu => Self::start_on::<Cpu>(config, &Default::default()),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                Self::start_on::<huashen_inference::Gpu>(config, &huashen_inference::cuda_device(n))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => Self::unavailable(
                "this build has no CUDA backend (device resolution should have refused it)".into(),
            ),
        }
    }

    fn start_on<B: Backend>(config: &EngineConfig, device: &B::Device) -> Self {
        let t = Instant::now();
        let (voices, errors) = Voices::<B>::load(&config.models_dir, device);
        for e in &errors {
            tracing::warn!(error = %e, "a voice did not load");
        }
        let list = voices.list();
        if list.is_empty() {
            let why: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            return Self::unavailable(format!(
                "no voice is installed on this server ({}); run scripts/fetch-models.sh",
                why.join("; ")
            ));
        }
        let mut voices = voices;
        if config.batch.slots > 1
            && let Err(e) = voices.batch(&config.batch)
        {
            tracing::warn!(error = %e, "cannot start the batched vocoder workers; each clause vocodes alone");
        }
        let batch = voices.batch_stats();
        let voices = Arc::new(voices);
        let loaded = t.elapsed();
        let t = Instant::now();
        // Warm-up: the first synthesis pays one-off allocations (and, on a
        // GPU, kernel compilation).
        for (v, text) in list.iter().map(|v| {
            let text = if v.language.starts_with("zh") {
                "好。"
            } else {
                "Ready."
            };
            (v, text)
        }) {
            let warm = voices
                .begin(&v.id, text, 1.0)
                .map(|mut c| while voices.next_chunk(&mut c).is_some() {});
            if let Err(e) = warm {
                tracing::warn!(voice = %v.id, error = %e, "speech warm-up failed");
            }
        }
        let ids: Vec<&str> = list.iter().map(|v| v.id.as_str()).collect();
        tracing::info!(
            voices = %ids.join(","),
            device = %config.device,
            load_ms = loaded.as_millis() as u64,
            warm_up_ms = t.elapsed().as_millis() as u64,
            workers = config.workers,
            batch_slots = config.batch.slots,
            batch_wait_ms = config.batch.max_wait.as_millis() as u64,
            "speech engine ready"
        );
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let cpu = Arc::new(crate::metrics::CpuCounter::default());
        for i in 0..config.workers.max(1) {
            let rx = rx.clone();
            let voices = voices.clone();
            let gain = config.gain;
            let cpu = cpu.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tts-{i}"))
                .spawn(move || worker(rx, voices, gain, cpu));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a speech worker");
            }
        }
        Self {
            cpu,
            batch,
            voices: list,
            jobs: Some(tx),
            unavailable: None,
            output_rate: config.output_rate,
        }
    }

    /// An engine with no voices (tests of the control plane, missing models).
    pub fn unavailable(reason: String) -> Self {
        Self {
            cpu: Default::default(),
            batch: Vec::new(),
            voices: Vec::new(),
            jobs: None,
            unavailable: Some(reason),
            output_rate: 48_000,
        }
    }

    /// CPU time speech has used, microseconds: the synthesis threads and
    /// the batched vocoders.
    pub fn cpu_us(&self) -> u64 {
        self.cpu.get()
            + self
                .batch
                .iter()
                .map(|(_, b)| b.cpu_us.load(std::sync::atomic::Ordering::Relaxed))
                .sum::<u64>()
    }

    /// The batched workers' counters, by stage (`en_clauses`, `en_vocoder`,
    /// `zh_acoustic`, `zh_vocoder`).
    pub fn batch_stats(&self) -> &[(&'static str, Arc<huashen_inference::batch::BatchStats>)] {
        &self.batch
    }

    /// Voices clients can pick.
    pub fn voices(&self) -> Vec<VoiceInfo> {
        self.voices.clone()
    }

    /// The voice that speaks `language` (as `voice_id`, when set).
    pub fn resolve_voice(&self, language: &str, voice_id: &str) -> Result<String, String> {
        if let Some(reason) = &self.unavailable {
            return Err(reason.clone());
        }
        let voices = self.voices();
        let found = voices.iter().find(|v| {
            v.language.eq_ignore_ascii_case(language) && (voice_id.is_empty() || v.id == voice_id)
        });
        if let Some(v) = found {
            Ok(v.id.clone())
        } else {
            let list: Vec<String> = voices
                .iter()
                .map(|v| format!("{} ({})", v.id, v.language))
                .collect();
            Err(format!(
                "no installed voice speaks {language}{}; installed: {}",
                if voice_id.is_empty() {
                    String::new()
                } else {
                    format!(" as {voice_id:?}")
                },
                list.join(", ")
            ))
        }
    }

    /// Checks that `language` (and `voice_id`, when set) can be spoken.
    pub fn check_voice(&self, language: &str, voice_id: &str) -> Result<(), String> {
        self.resolve_voice(language, voice_id).map(|_| ())
    }

    /// Queues synthesis of `utterance` into `sink` (a session's playback); the receiver fires
    /// when all its audio is buffered (or it was dropped by Interrupt).
    pub fn submit(
        &self,
        utterance: Utterance,
        language: &str,
        voice_id: &str,
        speed: f32,
        sink: Arc<dyn SpeechSink>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| self.unavailable.clone().unwrap_or_default())?;
        let voice = self.resolve_voice(language, voice_id)?;
        let (done, rx) = tokio::sync::oneshot::channel();
        let generation = sink.generation();
        jobs.try_send(Job {
            utterance,
            voice,
            speed,
            sink,
            generation,
            rate: self.output_rate,
            done,
        })
        .map_err(|_| "the speech engine is overloaded; try again shortly".to_string())?;
        Ok(rx)
    }
}

fn worker<B: Backend>(
    rx: Arc<Mutex<std::sync::mpsc::Receiver<Job>>>,
    voices: Arc<Voices<B>>,
    gain: f32,
    cpu: Arc<crate::metrics::CpuCounter>,
) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        // All senders gone: the engine was dropped (server shutdown).
        let Ok(job) = job else { return };
        let before = crate::metrics::thread_cpu_us();
        let result = run_job(&voices, &job, gain);
        cpu.add(crate::metrics::thread_cpu_us().saturating_sub(before));
        let _ = job.done.send(result);
    }
}

fn run_job<B: Backend>(voices: &Voices<B>, job: &Job, gain: f32) -> Result<(), String> {
    if job.sink.generation() != job.generation {
        return Ok(());
    }
    let t = Instant::now();
    let mut clause = voices
        .begin(&job.voice, &job.utterance.text, job.speed)
        .map_err(|e| e.to_string())?;
    if !job
        .sink
        .begin(job.generation, &job.utterance, &clause.timeline)
    {
        return Ok(());
    }
    let mut resampler = Resampler::new(clause.timeline.sample_rate, job.rate);
    let mut out = Vec::new();
    let mut first = true;
    let to_pcm = |v: &[f32]| -> Vec<i16> {
        v.iter()
            .map(|s| (soft_clip(s * gain) * 32767.0) as i16)
            .collect()
    };
    while let Some(chunk) = voices.next_chunk(&mut clause) {
        out.clear();
        resampler.push(&chunk, &mut out);
        if clause.done() {
            resampler.finish(&mut out);
        }
        if !job.sink.append(job.generation, &to_pcm(&out)) {
            return Ok(());
        }
        if first {
            first = false;
            crate::metrics::METRICS
                .tts_first_chunk_seconds
                .observe(t.elapsed().as_secs_f64());
        }
    }
    job.sink.complete(job.generation);
    let secs = clause.timeline.samples as f64 / f64::from(clause.timeline.sample_rate.max(1));
    crate::metrics::METRICS
        .tts_seconds_per_audio_second
        .observe(t.elapsed().as_secs_f64() / secs.max(1e-3));
    Ok(())
}

/// Gentle limiter: linear up to 0.8, then a tanh knee to 1.0.
fn soft_clip(x: f32) -> f32 {
    const KNEE: f32 = 0.8;
    if x.abs() <= KNEE {
        x
    } else {
        let over = (x.abs() - KNEE) / (1.0 - KNEE);
        x.signum() * (KNEE + (1.0 - KNEE) * over.tanh())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_clip_is_bounded_and_monotonic() {
        let mut last = -2.0;
        for i in -300..=300 {
            let y = soft_clip(i as f32 / 100.0);
            assert!(y.abs() <= 1.0 && y >= last);
            last = y;
        }
    }
}
