//! Process-wide engines, built once at start and passed down to the sessions
//! that use them (no globals): speech (the voices and their batched
//! workers), face analysis, and lip-sync for the host's live voice.
//! Sessions hold `Arc`s; nothing here knows about sessions.

pub mod face;
pub mod lipsync;
pub mod portrait;
pub mod speech;

use std::sync::Arc;
use std::time::Duration;

use huashen_inference::batch::BatchConfig;
use huashen_inference::device::Device;

use crate::config::Config;
use face::FaceEngine;
use lipsync::LipSyncEngine;
use speech::{EngineConfig, SpeechEngine};

/// The engines a server runs with.
#[derive(Clone)]
pub struct Engines {
    pub speech: Arc<SpeechEngine>,
    pub face: Arc<FaceEngine>,
    pub lipsync: Arc<LipSyncEngine>,
}

impl Engines {
    /// Loads every model (blocking: seconds; call off the async runtime).
    /// `device` is where the speech models run (already resolved and
    /// checked); `output_rate` the sample rate sessions play at. A missing
    /// speech or face model is not fatal: those engines answer with the
    /// reason. The lip-sync weights are embedded, so its worker must start.
    pub fn start(config: &Config, device: Device, output_rate: u32) -> std::io::Result<Self> {
        let sessions = config.limits.max_sessions.max(1);
        let speech = SpeechEngine::start(&EngineConfig {
            device,
            models_dir: config.speech.models_dir.clone(),
            workers: config.speech.workers,
            gain: config.speech.gain,
            queue: sessions,
            batch: BatchConfig {
                slots: config.speech.batch_slots,
                max_wait: Duration::from_millis(config.speech.batch_wait_ms),
                queue: sessions * 2,
                // On the CPU a batch runs on one core: as many batch threads
                // as speech workers; a GPU takes a whole batch at once.
                threads: if device == Device::Cpu {
                    config.speech.workers
                } else {
                    1
                },
            },
            output_rate,
        });
        let lipsync = LipSyncEngine::start(BatchConfig {
            slots: config.speech.batch_slots.max(sessions.min(64)),
            max_wait: Duration::from_millis(config.speech.batch_wait_ms),
            queue: sessions * 2,
            threads: 1,
        })?;
        let face = FaceEngine::load(&config.face.models_dir);
        Ok(Self {
            speech: Arc::new(speech),
            face: Arc::new(face),
            lipsync: Arc::new(lipsync),
        })
    }

    /// CPU time the shared workers have used, microseconds (speech and
    /// lip-sync; admission counts it towards the sessions' cost).
    pub fn cpu_us(&self) -> u64 {
        self.speech.cpu_us() + self.lipsync.cpu_us()
    }

    /// Every batched worker's counters, by stage name.
    pub fn batch_stats(&self) -> Vec<(&'static str, Arc<huashen_inference::batch::BatchStats>)> {
        let mut stats = self.speech.batch_stats().to_vec();
        stats.extend(self.lipsync.stats().map(|s| ("lipsync", s)));
        stats
    }
}
