//! The lip-sync engine, one per process: the audio → viseme network's
//! weights, loaded once, and the batched worker that runs every talking
//! session's frames together. Sessions open a stream on it
//! ([`LipSyncEngine::stream`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use huashen_inference::Cpu;
use huashen_inference::batch::{BatchConfig, BatchStats, BatchWorker};
use huashen_inference::face::lipsync::{LipStage, LipSync, LipWeights};

pub struct LipSyncEngine {
    weights: LipWeights<Cpu>,
    worker: Option<Arc<BatchWorker<LipStage<Cpu>>>>,
}

impl LipSyncEngine {
    /// Loads the embedded weights and starts the batched worker. Blocking
    /// (the weights load in tens of milliseconds): call off the runtime.
    pub fn start(config: BatchConfig) -> std::io::Result<Self> {
        let weights = LipWeights::embedded(&Default::default());
        let worker = BatchWorker::start(
            LipStage::new(weights.clone(), Default::default()),
            config,
            "batch-lipsync",
        )?;
        Ok(Self {
            weights,
            worker: Some(Arc::new(worker)),
        })
    }

    /// An engine without a worker: each stream runs the network on the
    /// caller's thread (tests, tools).
    pub fn unbatched() -> Self {
        Self {
            weights: LipWeights::embedded(&Default::default()),
            worker: None,
        }
    }

    /// A new stream for one session's voice.
    pub fn stream(&self) -> LipSync<Cpu> {
        match &self.worker {
            Some(worker) => LipSync::batched(worker.clone(), &self.weights),
            None => LipSync::new(self.weights.clone(), Default::default()),
        }
    }

    /// CPU time the worker has used, microseconds (talking sessions' share
    /// of it counts towards their cost).
    pub fn cpu_us(&self) -> u64 {
        self.worker
            .as_ref()
            .map_or(0, |w| w.stats.cpu_us.load(Ordering::Relaxed))
    }

    /// The worker's counters, when it runs.
    pub fn stats(&self) -> Option<Arc<BatchStats>> {
        self.worker.as_ref().map(|w| w.stats.clone())
    }
}
