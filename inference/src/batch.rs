//! Batched model workers: one long-lived worker per model stage and device
//! runs the requests of many sessions together.
//!
//! - Sessions submit through a bounded queue (a full queue makes the
//!   submitter wait: backpressure) and get their result on their own
//!   channel ([`Ticket`]).
//! - A batch has `slots` places. The worker takes the oldest request, then
//!   waits at most `max_wait` for more requests that can share its batch
//!   (the same [`Batched::key`]: equal shapes), and stops waiting as soon
//!   as no other request is queued, so a lone session never waits.
//! - A session that closes or is interrupted drops its ticket: its request
//!   is skipped (it takes no place), and the place goes to the next one.
//! - A worker may run batches on several threads (`threads`; on the CPU
//!   backend each batch runs on one core, so a CPU worker uses one thread
//!   per core it may use; a GPU worker needs one). Batches are formed one
//!   at a time and run in parallel.
//! - Generic over the stage; the same code runs on the CPU and the CUDA
//!   backend.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A model stage that can run several requests at once.
pub trait Batched: Clone + Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// Requests with equal keys can run in one batch.
    fn key(&self, input: &Self::Input) -> u64;
    /// Runs `inputs` (at least one, all with the same key) as one batch;
    /// one output per input, in order.
    fn run(&mut self, inputs: Vec<Self::Input>) -> Vec<Self::Output>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Most requests in one batch.
    pub slots: usize,
    /// How long the oldest request waits for company.
    pub max_wait: Duration,
    /// Requests queued at most before submitters wait.
    pub queue: usize,
    /// Threads running batches.
    pub threads: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            slots: 8,
            max_wait: Duration::from_millis(3),
            queue: 64,
            threads: 1,
        }
    }
}

/// What a worker has done.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    /// Requests run (the sum of batch sizes).
    pub items: AtomicU64,
    /// Requests skipped because their session gave up on them.
    pub cancelled: AtomicU64,
    /// The largest batch run.
    pub largest: AtomicU64,
    /// Wall time spent running batches, microseconds.
    pub busy_us: AtomicU64,
    /// CPU time the worker's threads spent running batches, microseconds
    /// (for admission by measured capacity).
    pub cpu_us: AtomicU64,
    /// Batches whose stage panicked: their requests got no result (`None`)
    /// and the worker went on with a fresh copy of the stage.
    pub failed: AtomicU64,
}

/// CPU time the calling thread has used, microseconds.
pub fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on
    // Linux. A failure leaves zeros.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Where sequences of `lengths` go when packed along time with `gap`
/// empty places between them: each one's start and length, which places
/// hold a sequence, and (when `attention`) the `[places, places]` additive
/// attention mask keeping each place to its own sequence (gap places to
/// themselves). Shared by the models that pack clauses into one pass.
pub struct PackLayout {
    pub spans: Vec<(usize, usize)>,
    pub valid: Vec<bool>,
    /// Row-major `places × places`, or empty without attention.
    pub attention: Vec<f32>,
}

impl PackLayout {
    pub fn new(lengths: &[usize], gap: usize, attention: bool) -> Self {
        let mut spans = Vec::with_capacity(lengths.len());
        let mut group: Vec<usize> = Vec::new();
        let mut at = 0;
        for (i, &n) in lengths.iter().enumerate() {
            if i > 0 {
                for _ in 0..gap {
                    group.push(usize::MAX - group.len());
                }
                at += gap;
            }
            spans.push((at, n));
            group.extend(std::iter::repeat_n(i, n));
            at += n;
        }
        let total = group.len();
        let valid = group.iter().map(|&g| g < lengths.len()).collect();
        let mut mask = Vec::new();
        if attention {
            mask = vec![0f32; total * total];
            for (r, &g) in group.iter().enumerate() {
                for (c, &h) in group.iter().enumerate() {
                    if g != h {
                        mask[r * total + c] = -1e9;
                    }
                }
            }
        }
        Self {
            spans,
            valid,
            attention: mask,
        }
    }

    /// Places in all (sequences and gaps).
    pub fn len(&self) -> usize {
        self.valid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.valid.is_empty()
    }

    /// 1 on sequence places, 0 on gaps.
    pub fn ones(&self) -> Vec<f32> {
        self.valid
            .iter()
            .map(|&v| if v { 1.0 } else { 0.0 })
            .collect()
    }
}

struct Request<M: Batched> {
    input: M::Input,
    reply: SyncSender<M::Output>,
    alive: Arc<AtomicBool>,
}

/// A submitted request's result, when it comes. Dropping it cancels the
/// request if it has not run yet.
pub struct Ticket<O> {
    rx: Receiver<O>,
    alive: Arc<AtomicBool>,
}

impl<O> Ticket<O> {
    /// Waits for the result; `None` when the worker is gone.
    pub fn wait(self) -> Option<O> {
        self.rx.recv().ok()
    }
}

impl<O> Drop for Ticket<O> {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// A stage's worker threads and their queue.
pub struct BatchWorker<M: Batched> {
    tx: SyncSender<Request<M>>,
    /// Submitted and not yet taken into a batch.
    queued: Arc<AtomicU64>,
    pub stats: Arc<BatchStats>,
    pub config: BatchConfig,
}

impl<M: Batched> BatchWorker<M> {
    /// Starts the worker threads `name-N`, each with a clone of `model`.
    /// They end when the handle is dropped and the queue is empty.
    pub fn start(model: M, config: BatchConfig, name: &str) -> std::io::Result<Self> {
        let config = BatchConfig {
            slots: config.slots.max(1),
            queue: config.queue.max(1),
            threads: config.threads.max(1),
            ..config
        };
        let (tx, rx) = sync_channel(config.queue);
        let stats = Arc::new(BatchStats::default());
        let queued = Arc::new(AtomicU64::new(0));
        let former = Arc::new(Mutex::new(Former {
            rx,
            pending: VecDeque::new(),
        }));
        for i in 0..config.threads {
            let worker = Worker {
                model: model.clone(),
                pristine: model.clone(),
                name: format!("{name}-{i}"),
                former: former.clone(),
                config: config.clone(),
                stats: stats.clone(),
                queued: queued.clone(),
            };
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || worker.run())?;
        }
        Ok(Self {
            tx,
            queued,
            stats,
            config,
        })
    }

    /// Queues `input` (waiting while the queue is full). `None` when the
    /// worker is gone.
    pub fn submit(&self, input: M::Input) -> Option<Ticket<M::Output>> {
        let (reply, rx) = sync_channel(1);
        let alive = Arc::new(AtomicBool::new(true));
        self.queued.fetch_add(1, Ordering::AcqRel);
        let sent = self.tx.send(Request {
            input,
            reply,
            alive: alive.clone(),
        });
        if sent.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Ticket { rx, alive })
    }

    /// Submits and waits.
    pub fn run(&self, input: M::Input) -> Option<M::Output> {
        self.submit(input)?.wait()
    }
}

/// The queue's receiving end and what was received but not yet run; one
/// thread forms a batch at a time.
struct Former<M: Batched> {
    rx: Receiver<Request<M>>,
    pending: VecDeque<Request<M>>,
}

struct Worker<M: Batched> {
    model: M,
    /// The stage as started, to go on with after a panic left `model` in
    /// an unknown state.
    pristine: M,
    name: String,
    former: Arc<Mutex<Former<M>>>,
    config: BatchConfig,
    stats: Arc<BatchStats>,
    queued: Arc<AtomicU64>,
}

impl<M: Batched> Worker<M> {
    fn run(mut self) {
        loop {
            let batch = {
                let mut f = self.former.lock().unwrap_or_else(|p| p.into_inner());
                self.form(&mut f)
            };
            let Some(batch) = batch else { return };
            self.run_batch(batch);
        }
    }

    /// The next batch: `None` when the queue is closed and empty.
    fn form(&self, f: &mut Former<M>) -> Option<Vec<Request<M>>> {
        loop {
            self.drop_cancelled(f);
            if f.pending.is_empty() {
                match f.rx.recv() {
                    Ok(r) => f.pending.push_back(r),
                    Err(_) => return None,
                }
                continue;
            }
            let key = self.model.key(&f.pending[0].input);
            let deadline = Instant::now() + self.config.max_wait;
            loop {
                let same = f
                    .pending
                    .iter()
                    .filter(|r| self.model.key(&r.input) == key)
                    .count();
                let nobody_else = f.pending.len() as u64 >= self.queued.load(Ordering::Acquire);
                if same >= self.config.slots || nobody_else {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match f.rx.recv_timeout(deadline - now) {
                    Ok(r) => f.pending.push_back(r),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.drop_cancelled(f);
            let mut batch = Vec::with_capacity(self.config.slots);
            let mut rest = VecDeque::with_capacity(f.pending.len());
            for r in f.pending.drain(..) {
                if batch.len() < self.config.slots && self.model.key(&r.input) == key {
                    batch.push(r);
                } else {
                    rest.push_back(r);
                }
            }
            f.pending = rest;
            if !batch.is_empty() {
                self.queued.fetch_sub(batch.len() as u64, Ordering::AcqRel);
                return Some(batch);
            }
        }
    }

    fn drop_cancelled(&self, f: &mut Former<M>) {
        let before = f.pending.len();
        f.pending.retain(|r| r.alive.load(Ordering::Acquire));
        let gone = (before - f.pending.len()) as u64;
        if gone > 0 {
            self.stats.cancelled.fetch_add(gone, Ordering::Relaxed);
            self.queued.fetch_sub(gone, Ordering::AcqRel);
        }
    }

    fn run_batch(&mut self, batch: Vec<Request<M>>) {
        let n = batch.len() as u64;
        let (inputs, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.input, r.reply)).unzip();
        let (t, cpu) = (Instant::now(), thread_cpu_us());
        // A stage that panics must not take the worker (and every later
        // request) down with it: that batch's requests get `None` (their
        // senders are dropped) and the worker goes on.
        let model = &mut self.model;
        let outputs = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.run(inputs)
        })) {
            Ok(outputs) => outputs,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(
                    "batch worker {}: the stage panicked on a batch of {n} ({why}); those requests fail, the worker goes on",
                    self.name
                );
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.model = self.pristine.clone();
                Vec::new()
            }
        };
        self.stats
            .busy_us
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.stats
            .cpu_us
            .fetch_add(thread_cpu_us().saturating_sub(cpu), Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.items.fetch_add(n, Ordering::Relaxed);
        self.stats.largest.fetch_max(n, Ordering::Relaxed);
        for (reply, out) in replies.into_iter().zip(outputs) {
            // The session may have gone meanwhile.
            let _ = reply.send(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches a test model was given.
    type Seen = Arc<std::sync::Mutex<Vec<Vec<u64>>>>;

    /// Squares numbers, recording the batches it was given. Inputs are
    /// (key, value).
    #[derive(Clone)]
    struct Squares {
        seen: Seen,
        delay: Duration,
    }

    impl Batched for Squares {
        type Input = (u64, u64);
        type Output = u64;
        fn key(&self, input: &(u64, u64)) -> u64 {
            input.0
        }
        fn run(&mut self, inputs: Vec<(u64, u64)>) -> Vec<u64> {
            std::thread::sleep(self.delay);
            self.seen
                .lock()
                .unwrap()
                .push(inputs.iter().map(|i| i.1).collect());
            inputs.iter().map(|i| i.1 * i.1).collect()
        }
    }

    /// Panics on the value 13.
    #[derive(Clone)]
    struct Fragile;

    impl Batched for Fragile {
        type Input = u64;
        type Output = u64;
        fn key(&self, _: &u64) -> u64 {
            0
        }
        fn run(&mut self, inputs: Vec<u64>) -> Vec<u64> {
            assert!(!inputs.contains(&13), "unlucky input");
            inputs.iter().map(|v| v + 1).collect()
        }
    }

    #[test]
    fn a_panicking_stage_fails_its_batch_and_the_worker_goes_on() {
        let w = BatchWorker::start(
            Fragile,
            BatchConfig {
                slots: 4,
                max_wait: Duration::from_millis(1),
                queue: 8,
                threads: 1,
            },
            "fragile",
        )
        .unwrap();
        assert_eq!(w.run(1), Some(2));
        assert_eq!(w.run(13), None, "the failed request gets no result");
        assert_eq!(w.stats.failed.load(Ordering::Relaxed), 1);
        // The thread survived: later requests are served.
        for v in [2, 3, 4] {
            assert_eq!(w.run(v), Some(v + 1));
        }
    }

    fn worker(slots: usize, wait_ms: u64, delay_ms: u64) -> (BatchWorker<Squares>, Seen) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = BatchWorker::start(
            Squares {
                seen: seen.clone(),
                delay: Duration::from_millis(delay_ms),
            },
            BatchConfig {
                slots,
                max_wait: Duration::from_millis(wait_ms),
                queue: 64,
                threads: 1,
            },
            "test-batch",
        )
        .unwrap();
        (w, seen)
    }

    #[test]
    fn concurrent_requests_share_batches_up_to_the_slots() {
        // Each batch takes 50 ms: requests arriving meanwhile queue up and
        // go together into the next one.
        let (w, seen) = worker(4, 50, 50);
        let results: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..10u64)
                .map(|i| {
                    let w = &w;
                    s.spawn(move || w.run((0, i)).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results, (0..10u64).map(|i| i * i).collect::<Vec<_>>());
        let batches = seen.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert!(batches.iter().any(|b| b.len() > 1), "{batches:?}");
        assert_eq!(w.stats.items.load(Ordering::Relaxed), 10);
        assert!(w.stats.largest.load(Ordering::Relaxed) <= 4);
    }

    #[test]
    fn a_lone_request_does_not_wait_for_company() {
        let (w, _) = worker(8, 2000, 0);
        let t = Instant::now();
        assert_eq!(w.run((0, 3)), Some(9));
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn different_shapes_never_share_a_batch() {
        let (w, seen) = worker(8, 50, 0);
        std::thread::scope(|s| {
            for i in 0..6u64 {
                let w = &w;
                s.spawn(move || assert_eq!(w.run((i % 2, 10 + i)), Some((10 + i) * (10 + i))));
            }
        });
        for b in seen.lock().unwrap().iter() {
            assert!(b.iter().all(|v| v % 2 == b[0] % 2), "{b:?}");
        }
    }

    #[test]
    fn a_cancelled_request_frees_its_slot() {
        // A slow first batch keeps the worker busy while the second
        // request is queued and then given up (its session closed).
        let (w, seen) = worker(1, 0, 100);
        let first = w.submit((0, 1)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let cancelled = w.submit((0, 2)).unwrap();
        drop(cancelled);
        let third = w.submit((0, 3)).unwrap();
        assert_eq!(first.wait(), Some(1));
        assert_eq!(third.wait(), Some(9));
        let batches = seen.lock().unwrap().clone();
        assert_eq!(batches, vec![vec![1], vec![3]]);
        assert_eq!(w.stats.cancelled.load(Ordering::Relaxed), 1);
        // And the worker keeps serving.
        assert_eq!(w.run((0, 4)), Some(16));
    }

    #[test]
    fn several_threads_run_batches_in_parallel() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let w = BatchWorker::start(
            Squares {
                seen: seen.clone(),
                delay: Duration::from_millis(100),
            },
            BatchConfig {
                slots: 1,
                max_wait: Duration::ZERO,
                queue: 8,
                threads: 4,
            },
            "test-pool",
        )
        .unwrap();
        let t = Instant::now();
        std::thread::scope(|s| {
            for i in 0..4u64 {
                let w = &w;
                s.spawn(move || assert_eq!(w.run((0, i)), Some(i * i)));
            }
        });
        // Four 100 ms batches on four threads: well under 400 ms.
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(seen.lock().unwrap().len(), 4);
    }

    #[test]
    fn the_worker_ends_with_its_last_handle() {
        let (w, _) = worker(2, 1, 0);
        assert_eq!(w.run((0, 2)), Some(4));
        drop(w);
    }
}
