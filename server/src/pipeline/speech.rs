//! Speech in the session pipeline: TTS worker threads that synthesise one
//! clause at a time per session, and the playback buffer the media thread
//! reads 20 ms at a time.
//!
//! Ordering: a session hands the engine its next clause only when the
//! previous one is fully synthesised, so clauses play in order while
//! synthesis (faster than real time) runs ahead of playback. Bounds: the
//! playback buffer holds at most `max_buffered` of audio; a worker blocks
//! (backpressure) while it is full. Interrupt bumps a generation counter:
//! workers drop stale work at the next chunk, the buffer empties at once.

use super::clock::{AUDIO_FRAME, AUDIO_RATE};
use super::resample::Resampler;
use huashen_inference::Cpu;
use huashen_inference::burn::tensor::backend::Backend;
use huashen_inference::device::Device;
use huashen_inference::speech::timeline::{Timeline, Viseme};
use huashen_inference::speech::tts::VoiceInfo;
use huashen_inference::speech::voices::Voices;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One clause to speak. `text` is personal data: never logged.
#[derive(Debug, Clone)]
pub struct Utterance {
    pub id: String,
    pub text: String,
}

/// What the media thread reports while playing, in samples of the session
/// clock (48 kHz).
#[derive(Debug, Clone, PartialEq)]
pub enum PlaybackEvent {
    Started {
        utterance_id: String,
        text: String,
        sample: u64,
    },
    Word {
        utterance_id: String,
        word: String,
        start: u64,
        end: u64,
    },
    Phoneme {
        utterance_id: String,
        phoneme: String,
        viseme: &'static str,
        start: u64,
        end: u64,
    },
    Finished {
        utterance_id: String,
        interrupted: bool,
        sample: u64,
    },
    /// The host's live voice went on air (see `voice.rs`).
    VoiceStarted { sample: u64 },
    /// The host's voice has been silent for a moment.
    VoiceStopped { sample: u64 },
}

struct Segment {
    id: String,
    text: String,
    /// (word, start, end) in 48 kHz samples from the segment's start.
    words: Vec<(String, u64, u64)>,
    phonemes: Vec<(String, Viseme, u64, u64)>,
    /// Mouth shapes for the face (silence left out).
    visemes: Vec<(Viseme, u64, u64)>,
    pcm: VecDeque<i16>,
    complete: bool,
    played: u64,
    /// Session sample of the first played sample.
    start: Option<u64>,
    next_word: usize,
    next_phoneme: usize,
}

#[derive(Default)]
struct PlayState {
    segments: VecDeque<Segment>,
    buffered: usize,
    generation: u64,
}

/// The audio a session is about to play.
pub struct Playback {
    state: Mutex<PlayState>,
    space: Condvar,
    max_buffered: usize,
    /// Mouth shapes of the host's live voice, on the session clock (the
    /// lip-sync model writes them ahead of the voice's audio).
    voice_visemes: Mutex<VecDeque<(Viseme, u64, u64)>>,
}

impl Playback {
    /// `max_buffered`: most audio held, in 48 kHz samples.
    pub fn new(max_buffered: usize) -> Self {
        Self {
            state: Mutex::new(PlayState::default()),
            space: Condvar::new(),
            max_buffered: max_buffered.max(AUDIO_FRAME as usize * 10),
            voice_visemes: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds a mouth shape of the live voice for clock samples `from..to`
    /// (extending the last one when it is the same shape and adjoins), and
    /// forgets shapes that ended over a second before `from`.
    pub fn push_voice_viseme(&self, viseme: Viseme, from: u64, to: u64) {
        let mut q = self.voice_visemes.lock().unwrap_or_else(|p| p.into_inner());
        match q.back_mut() {
            Some(last) if last.0 == viseme && last.2 >= from => last.2 = last.2.max(to),
            _ => q.push_back((viseme, from, to)),
        }
        let horizon = from.saturating_sub(u64::from(AUDIO_RATE));
        while q.front().is_some_and(|s| s.2 < horizon) {
            q.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlayState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Whether anything is playing or waiting to play.
    pub fn is_active(&self) -> bool {
        !self.lock().segments.is_empty()
    }

    /// Opens a segment for `utt` with its timeline. False when `generation`
    /// is stale (interrupted).
    fn begin(&self, generation: u64, utt: &Utterance, timeline: &Timeline) -> bool {
        let mut s = self.lock();
        if s.generation != generation {
            return false;
        }
        let scale = |v: u64| v * u64::from(AUDIO_RATE) / u64::from(timeline.sample_rate.max(1));
        s.segments.push_back(Segment {
            id: utt.id.clone(),
            text: utt.text.clone(),
            words: timeline
                .words
                .iter()
                .map(|w| (w.value.clone(), scale(w.start), scale(w.end)))
                .collect(),
            phonemes: timeline
                .phonemes
                .iter()
                .map(|p| {
                    let v = timeline.viseme_at((p.start + p.end) / 2);
                    (p.value.clone(), v, scale(p.start), scale(p.end))
                })
                .collect(),
            visemes: timeline
                .visemes
                .iter()
                .filter(|v| v.value != Viseme::Sil)
                .map(|v| (v.value, scale(v.start), scale(v.end)))
                .collect(),
            pcm: VecDeque::new(),
            complete: false,
            played: 0,
            start: None,
            next_word: 0,
            next_phoneme: 0,
        });
        true
    }

    /// Appends audio to the last segment, waiting while the buffer is full.
    /// False when interrupted.
    fn append(&self, generation: u64, pcm: &[i16]) -> bool {
        let mut s = self.lock();
        loop {
            if s.generation != generation {
                return false;
            }
            if s.buffered + pcm.len() <= self.max_buffered || s.buffered == 0 {
                break;
            }
            s = self
                .space
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.buffered += pcm.len();
        if let Some(seg) = s.segments.back_mut() {
            seg.pcm.extend(pcm);
        }
        true
    }

    fn complete(&self, generation: u64) {
        let mut s = self.lock();
        if s.generation == generation
            && let Some(seg) = s.segments.back_mut()
        {
            seg.complete = true;
        }
    }

    /// Reports the visemes of what is playing (and of what follows it
    /// seamlessly) that overlap session samples [`from`, `to`), as
    /// `f(viseme, start, end)` in session samples. Speech not yet started
    /// has no place on the clock and is left out. The live voice's mouth
    /// shapes come first.
    pub fn visemes(&self, from: u64, to: u64, f: &mut dyn FnMut(Viseme, u64, u64)) {
        for &(v, a, b) in self
            .voice_visemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if b > from && a < to {
                f(v, a, b);
            }
        }
        let s = self.lock();
        let mut next_start = None;
        for seg in &s.segments {
            let Some(base) = seg.start.or(next_start) else {
                break;
            };
            for &(v, a, b) in &seg.visemes {
                if base + b > from && base + a < to {
                    f(v, base + a, base + b);
                }
            }
            if !seg.complete {
                break;
            }
            // The next clause starts when this one's audio runs out.
            next_start = Some(base + seg.played + seg.pcm.len() as u64);
        }
    }

    /// Pauses for `samples` (the host is talking): the clause playing
    /// moves later on the clock, so its words and mouth shapes stay with
    /// its audio when it resumes.
    pub fn hold(&self, samples: u64) {
        let mut s = self.lock();
        if let Some(seg) = s.segments.front_mut()
            && let Some(start) = seg.start.as_mut()
        {
            *start += samples;
        }
    }

    /// Drops everything queued and playing. Returns the number of
    /// utterances cut; the one playing is reported finished (interrupted)
    /// at `sample`.
    pub fn interrupt(&self, sample: u64, events: &mut Vec<PlaybackEvent>) -> u32 {
        let mut s = self.lock();
        s.generation += 1;
        let n = s.segments.len() as u32;
        for seg in s.segments.drain(..) {
            if seg.start.is_some() {
                events.push(PlaybackEvent::Finished {
                    utterance_id: seg.id,
                    interrupted: true,
                    sample,
                });
            }
        }
        s.buffered = 0;
        drop(s);
        self.space.notify_all();
        n
    }

    /// Fills one 20 ms frame starting at session sample `sample` (silence
    /// where nothing plays) and reports what started, was said and ended.
    pub fn fill(&self, out: &mut [i16], sample: u64, events: &mut Vec<PlaybackEvent>) {
        out.fill(0);
        let mut s = self.lock();
        let mut pos = 0usize;
        let mut freed = 0usize;
        while pos < out.len() {
            let Some(seg) = s.segments.front_mut() else {
                break;
            };
            if seg.start.is_none() {
                if seg.pcm.is_empty() && !seg.complete {
                    break; // first audio not synthesised yet
                }
                seg.start = Some(sample + pos as u64);
                events.push(PlaybackEvent::Started {
                    utterance_id: seg.id.clone(),
                    text: seg.text.clone(),
                    sample: sample + pos as u64,
                });
            }
            let n = seg.pcm.len().min(out.len() - pos);
            for (o, v) in out[pos..pos + n].iter_mut().zip(seg.pcm.drain(..n)) {
                *o = v;
            }
            pos += n;
            freed += n;
            seg.played += n as u64;
            let base = seg.start.unwrap_or(sample);
            while let Some((w, a, b)) = seg.words.get(seg.next_word)
                && *a < seg.played
            {
                events.push(PlaybackEvent::Word {
                    utterance_id: seg.id.clone(),
                    word: w.clone(),
                    start: base + a,
                    end: base + b,
                });
                seg.next_word += 1;
            }
            while let Some((p, v, a, b)) = seg.phonemes.get(seg.next_phoneme)
                && *a < seg.played
            {
                events.push(PlaybackEvent::Phoneme {
                    utterance_id: seg.id.clone(),
                    phoneme: p.clone(),
                    viseme: v.name(),
                    start: base + a,
                    end: base + b,
                });
                seg.next_phoneme += 1;
            }
            if seg.pcm.is_empty() {
                if seg.complete {
                    events.push(PlaybackEvent::Finished {
                        utterance_id: seg.id.clone(),
                        interrupted: false,
                        sample: sample + pos as u64,
                    });
                    s.segments.pop_front();
                } else {
                    // Synthesis is behind: the rest of the frame is silent.
                    crate::metrics::METRICS
                        .speech_underrun_seconds
                        .inc_by((out.len() - pos) as f64 / f64::from(AUDIO_RATE));
                    break;
                }
            }
        }
        s.buffered = s.buffered.saturating_sub(freed);
        drop(s);
        if freed > 0 {
            self.space.notify_all();
        }
    }
}

/// A synthesis request handed to a worker.
struct Job {
    utterance: Utterance,
    voice: String,
    speed: f32,
    playback: Arc<Playback>,
    generation: u64,
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

    /// Queues synthesis of `utterance` into `playback`; the receiver fires
    /// when all its audio is buffered (or it was dropped by Interrupt).
    pub fn submit(
        &self,
        utterance: Utterance,
        language: &str,
        voice_id: &str,
        speed: f32,
        playback: Arc<Playback>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, String> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| self.unavailable.clone().unwrap_or_default())?;
        let voice = self.resolve_voice(language, voice_id)?;
        let (done, rx) = tokio::sync::oneshot::channel();
        let generation = playback.generation();
        jobs.try_send(Job {
            utterance,
            voice,
            speed,
            playback,
            generation,
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
    if job.playback.generation() != job.generation {
        return Ok(());
    }
    let t = Instant::now();
    let mut clause = voices
        .begin(&job.voice, &job.utterance.text, job.speed)
        .map_err(|e| e.to_string())?;
    if !job
        .playback
        .begin(job.generation, &job.utterance, &clause.timeline)
    {
        return Ok(());
    }
    let mut resampler = Resampler::new(clause.timeline.sample_rate, AUDIO_RATE);
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
        if !job.playback.append(job.generation, &to_pcm(&out)) {
            return Ok(());
        }
        if first {
            first = false;
            crate::metrics::METRICS
                .tts_first_chunk_seconds
                .observe(t.elapsed().as_secs_f64());
        }
    }
    job.playback.complete(job.generation);
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
    use huashen_inference::speech::timeline::Span;

    fn timeline(samples: u64) -> Timeline {
        Timeline {
            sample_rate: 48000,
            samples,
            phonemes: vec![],
            visemes: vec![],
            words: vec![
                Span {
                    value: "a".into(),
                    start: 0,
                    end: 500,
                },
                Span {
                    value: "b".into(),
                    start: 1500,
                    end: 2000,
                },
            ],
        }
    }

    #[test]
    fn plays_in_order_reports_words_and_interrupts() {
        let p = Playback::new(48000);
        let utt = |id: &str| Utterance {
            id: id.into(),
            text: "t".into(),
        };
        let g = p.generation();
        assert!(p.begin(g, &utt("u1"), &timeline(2000)));
        assert!(p.append(g, &vec![1i16; 2000]));
        p.complete(g);
        assert!(p.begin(g, &utt("u2"), &timeline(2000)));
        assert!(p.append(g, &vec![2i16; 1000]));
        let mut frame = vec![0i16; 960];
        let mut ev = vec![];
        p.fill(&mut frame, 0, &mut ev);
        assert!(frame.iter().all(|&v| v == 1));
        assert!(
            matches!(&ev[0], PlaybackEvent::Started { utterance_id, sample: 0, .. } if utterance_id == "u1")
        );
        assert!(matches!(&ev[1], PlaybackEvent::Word { word, .. } if word == "a"));
        ev.clear();
        p.fill(&mut frame, 960, &mut ev);
        ev.clear();
        // u1 ends at 2000: the frame switches to u2 mid-way.
        p.fill(&mut frame, 1920, &mut ev);
        assert_eq!(frame[79], 1);
        assert_eq!(frame[80], 2);
        assert!(ev.iter().any(|e| matches!(e, PlaybackEvent::Finished { utterance_id, interrupted: false, sample: 2000 } if utterance_id == "u1")));
        assert!(ev.iter().any(|e| matches!(e, PlaybackEvent::Started { utterance_id, sample: 2000, .. } if utterance_id == "u2")));
        ev.clear();
        let n = p.interrupt(2880, &mut ev);
        assert_eq!(n, 1);
        assert!(matches!(
            &ev[0],
            PlaybackEvent::Finished {
                interrupted: true,
                ..
            }
        ));
        // Stale work is refused after an interrupt.
        assert!(!p.append(g, &[3; 10]));
        assert!(!p.is_active());
        p.fill(&mut frame, 2880, &mut ev);
        assert!(frame.iter().all(|&v| v == 0));
    }

    #[test]
    fn a_writer_waiting_on_a_full_buffer_is_released_by_interrupt() {
        let p = Arc::new(Playback::new(9600));
        let g = p.generation();
        let utt = Utterance {
            id: "u".into(),
            text: "t".into(),
        };
        assert!(p.begin(g, &utt, &timeline(100_000)));
        assert!(p.append(g, &vec![1i16; 9600]));
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || p.append(g, &[1i16; 960]))
        };
        std::thread::sleep(Duration::from_millis(150));
        assert!(!writer.is_finished(), "the writer waits for space");
        p.interrupt(0, &mut Vec::new());
        assert!(!writer.join().unwrap(), "released, told it was interrupted");
    }

    #[test]
    fn hold_moves_the_clause_playing_later_on_the_clock() {
        let p = Playback::new(48000);
        let g = p.generation();
        let utt = Utterance {
            id: "u".into(),
            text: "t".into(),
        };
        assert!(p.begin(g, &utt, &timeline(2000)));
        assert!(p.append(g, &vec![1i16; 2000]));
        p.complete(g);
        let mut frame = vec![0i16; 960];
        let mut ev = vec![];
        p.fill(&mut frame, 0, &mut ev);
        // The host talks for two frames: nothing plays, the clause waits.
        p.hold(960);
        p.hold(960);
        ev.clear();
        p.fill(&mut frame, 2880, &mut ev);
        assert!(frame.iter().all(|&v| v == 1), "resumes where it paused");
        // Word "b" (1500 samples into the clause) is now 1920 later.
        assert!(
            ev.iter()
                .any(|e| matches!(e, PlaybackEvent::Word { word, start, .. } if word == "b" && *start == 1500 + 1920)),
            "{ev:?}"
        );
        let mut visemes = vec![];
        p.visemes(0, 10_000, &mut |_, a, _| visemes.push(a));
        assert!(visemes.iter().all(|&a| a >= 1920));
    }

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
