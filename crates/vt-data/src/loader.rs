//! The batch loader: shuffled order per epoch, `drop_last`, N worker threads decoding and
//! augmenting whole batches in parallel, a bounded prefetch window, and batches re-ordered so
//! that the stream is a pure function of `(seed, epoch)`.
//!
//! **Invariant:** the order of epoch `e` comes from `Rng::derive(seed, &[ORDER_STREAM, e])`
//! and sample `i` is augmented with `Rng::derive(seed, &[e, i])`; which worker prepares which
//! batch never matters, so 0, 1 or 4 workers give identical batches.

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::transforms::{Prepare, Prepared, Target};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use vt_ops::Rng;

/// Stream label of the epoch order (sample streams are `[epoch, index]`).
const ORDER_STREAM: u64 = u64::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    /// Drop the last, smaller batch.
    pub drop_last: bool,
    /// Worker threads; 0 prepares batches on the calling thread.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (at least `workers`).
    pub prefetch: usize,
    pub seed: u64,
    /// Skip samples that fail to load or transform (counted in [`Epoch::skipped`]) instead of
    /// ending the epoch with their error.
    pub skip_bad: bool,
    /// This process's share of every batch in a data-parallel run.
    pub shard: Shard,
}

/// The share of each batch one rank of a data-parallel run loads, as PyTorch's
/// `DistributedSampler` deals it: rank `r` of `w` takes positions `r, r + w, r + 2w, ...` of
/// every batch of the epoch's order, so the ranks' batches together are the batch a single
/// process would load (`batch_size` is the global batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world_size: usize,
}

impl Shard {
    /// Everything: a single process.
    pub const WHOLE: Shard = Shard {
        rank: 0,
        world_size: 1,
    };

    fn take(&self, batch: &[usize]) -> Vec<usize> {
        batch
            .iter()
            .skip(self.rank)
            .step_by(self.world_size)
            .copied()
            .collect()
    }
}

impl LoaderConfig {
    /// Shuffled, 2 workers, 4 batches of prefetch, seed 0, keep the last batch, stop on errors.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: true,
            drop_last: false,
            workers: 2,
            prefetch: 4,
            seed: 0,
            skip_bad: false,
            shard: Shard::WHOLE,
        }
    }
}

/// A batch: images `(N, C, H, W)` f32 and labels `(N,)` u32 (classification) or `(N, H, W)`
/// u32 (segmentation; mixed sizes padded to the largest, labels with 255), on the loader's
/// device; `indices` are the data set indices.
#[derive(Clone, Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// A sample skipped under `skip_bad`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadSample {
    pub index: usize,
    pub error: String,
}

pub struct Loader<S> {
    dataset: Arc<dyn Dataset<Sample = S>>,
    prepare: Arc<dyn Prepare<S>>,
    config: LoaderConfig,
    device: Device,
}

impl<S: 'static> Loader<S> {
    pub fn new(
        dataset: Arc<dyn Dataset<Sample = S>>,
        prepare: Arc<dyn Prepare<S>>,
        config: LoaderConfig,
        device: &Device,
    ) -> Result<Self> {
        if config.batch_size == 0 {
            return Err(DataError::Config(
                "loader batch_size must be at least 1".into(),
            ));
        }
        let Shard { rank, world_size } = config.shard;
        if world_size == 0 || rank >= world_size {
            return Err(DataError::Config(format!(
                "loader shard: rank {rank} of a world of {world_size}"
            )));
        }
        Ok(Self {
            dataset,
            prepare,
            config,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// Where sample `index` comes from (its file, for messages).
    pub fn describe(&self, index: usize) -> String {
        self.dataset.describe(index)
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch`.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if self.config.shuffle {
            Rng::derive(self.config.seed, &[ORDER_STREAM, epoch]).shuffle(&mut idx);
        }
        idx
    }

    /// The batches of `epoch`, in order. Dropping the iterator stops its workers.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on (a resumed epoch): the batches before it
    /// are never read, decoded or augmented, and those after it are exactly the ones
    /// [`Loader::epoch`] yields (each sample's augmentation depends on its epoch and index
    /// only).
    pub fn epoch_from(&self, epoch: u64, first: usize) -> Epoch {
        let order = self.order(epoch);
        let plan: Vec<Vec<usize>> = order
            .chunks(self.config.batch_size)
            .take(self.num_batches())
            .skip(first)
            .map(|b| self.config.shard.take(b))
            .collect();
        let job = Arc::new(Job {
            dataset: self.dataset.clone(),
            prepare: self.prepare.clone(),
            plan,
            first,
            epoch,
            seed: self.config.seed,
            skip_bad: self.config.skip_bad,
            device: self.device.clone(),
        });
        Epoch::start(job, self.config.workers, self.config.prefetch)
    }
}

type Outcome = Result<(Option<Batch>, Vec<BadSample>)>;

/// Everything a worker needs to prepare batch `b` of one epoch.
struct Job<S> {
    dataset: Arc<dyn Dataset<Sample = S>>,
    prepare: Arc<dyn Prepare<S>>,
    plan: Vec<Vec<usize>>,
    /// The epoch's batch number of `plan[0]` (for messages).
    first: usize,
    epoch: u64,
    seed: u64,
    skip_bad: bool,
    device: Device,
}

impl<S> Job<S> {
    fn sample(&self, index: usize) -> Result<Prepared> {
        let sample = self.dataset.get(index)?;
        let mut rng = Rng::derive(self.seed, &[self.epoch, index as u64]);
        self.prepare.prepare(sample, &mut rng).map_err(|e| match e {
            // file errors already name their file; transform errors get the sample's origin
            e @ (DataError::Transform { .. } | DataError::Config(_)) => DataError::Format {
                path: self.dataset.describe(index).into(),
                msg: e.to_string(),
            },
            e => e,
        })
    }

    fn batch(&self, b: usize) -> Outcome {
        let mut ok = Vec::with_capacity(self.plan[b].len());
        let mut bad = Vec::new();
        for &i in &self.plan[b] {
            match self.sample(i) {
                Ok(p) => ok.push((i, p)),
                Err(e) if self.skip_bad => bad.push(BadSample {
                    index: i,
                    error: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        if ok.is_empty() {
            return Ok((None, bad));
        }
        let batch = collate(self.first + b, ok, &self.device, &*self.dataset)?;
        Ok((Some(batch), bad))
    }
}

/// Stacks prepared samples. Classification: every image must have the first one's shape.
/// Segmentation (`Target::Map`): images of mixed sizes (evaluation at full resolution) are
/// padded on the right and bottom to the batch's largest height and width, images with 0.0
/// (after normalisation) and label maps with the ignore index 255, as detectron2's
/// `ImageList.from_tensors` pads; their channel counts must agree.
fn collate<S>(
    b: usize,
    samples: Vec<(usize, Prepared)>,
    device: &Device,
    ds: &dyn Dataset<Sample = S>,
) -> Result<Batch> {
    let first = &samples[0].1;
    let maps = matches!(first.target, Target::Map(_));
    let (c, mut h, mut w) = (first.image.channels, first.image.height, first.image.width);
    let (mut mh, mut mw) = (0, 0);
    if maps {
        for (_, p) in &samples {
            (h, w) = (h.max(p.image.height), w.max(p.image.width));
            if let Target::Map(m) = &p.target {
                (mh, mw) = (mh.max(m.height), mw.max(m.width));
            }
        }
    }
    let n = samples.len();
    let mut images = Vec::with_capacity(n * c * h * w);
    let mut labels = Vec::with_capacity(if maps { n * mh * mw } else { n });
    let mut indices = Vec::with_capacity(n);
    for (i, p) in samples {
        let s = (p.image.channels, p.image.height, p.image.width);
        let bad = |msg: String| DataError::Shape {
            path: ds.describe(i).into(),
            msg,
        };
        if maps && s.0 != c {
            return Err(bad(format!(
                "sample {i} has {} channels after its transforms, but batch {b} started with {c}",
                s.0
            )));
        }
        if !maps && s != (c, h, w) {
            return Err(bad(format!("sample {i} is {s:?} (CxHxW) after its transforms, but batch {b} started with {:?}; add a Resize or crop", (c, h, w))));
        }
        match p.target {
            Target::Class(l) if !maps => {
                images.extend_from_slice(&p.image.data);
                labels.push(l as u32);
            }
            Target::Map(m) if maps => {
                images.extend_from_slice(&p.image.pad_to(h, w, 0.0).data);
                let m = m.pad_to(mh, mw, crate::seg::IGNORE_INDEX);
                labels.extend(m.data.iter().map(|&v| u32::from(v)));
            }
            _ => {
                return Err(bad(format!(
                    "sample {i} mixes class and label-map targets in batch {b}"
                )))
            }
        }
        indices.push(i);
    }
    let t = |e| DataError::Tensor {
        batch: b,
        source: e,
    };
    let images = Tensor::from_vec(images, (n, c, h, w), device).map_err(t)?;
    let labels = if maps {
        Tensor::from_vec(labels, (n, mh, mw), device)
    } else {
        Tensor::from_vec(labels, n, device)
    }
    .map_err(t)?;
    Ok(Batch {
        images,
        labels,
        indices,
    })
}

/// Claim/consume bookkeeping shared by the workers and the consumer.
struct Window {
    next: usize,
    consumed: usize,
    stop: bool,
}

/// The batches of one epoch, in order (an iterator of `Result<Batch>`). After an error it
/// ends. Under `skip_bad`, [`Epoch::skipped`] and [`Epoch::bad_samples`] report what was left
/// out so far (all of it once the iterator is exhausted).
pub struct Epoch {
    source: Source,
    total: usize,
    next_out: usize,
    done: bool,
    bad: Vec<BadSample>,
    delivered: Arc<AtomicUsize>,
}

enum Source {
    Inline(Box<dyn Fn(usize) -> Outcome + Send>),
    Workers {
        rx: mpsc::Receiver<(usize, Outcome)>,
        pending: BTreeMap<usize, Outcome>,
        window: Arc<(Mutex<Window>, Condvar)>,
        threads: Vec<JoinHandle<()>>,
    },
}

impl Epoch {
    fn start<S: 'static>(job: Arc<Job<S>>, workers: usize, prefetch: usize) -> Self {
        let total = job.plan.len();
        let source = if workers == 0 {
            Source::Inline(Box::new(move |b| job.batch(b)))
        } else {
            let ahead = prefetch.max(workers);
            let window = Arc::new((
                Mutex::new(Window {
                    next: 0,
                    consumed: 0,
                    stop: false,
                }),
                Condvar::new(),
            ));
            let (tx, rx) = mpsc::channel();
            let threads = (0..workers)
                .map(|_| {
                    let (job, window, tx) = (job.clone(), window.clone(), tx.clone());
                    std::thread::spawn(move || worker(&job, &window, &tx, ahead, total))
                })
                .collect();
            Source::Workers {
                rx,
                pending: BTreeMap::new(),
                window,
                threads,
            }
        };
        Self {
            source,
            total,
            next_out: 0,
            done: false,
            bad: Vec::new(),
            delivered: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Batches in this epoch.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Samples skipped so far under `skip_bad`.
    pub fn skipped(&self) -> usize {
        self.bad.len()
    }

    pub fn bad_samples(&self) -> &[BadSample] {
        &self.bad
    }

    /// A counter of the samples delivered so far, readable from another thread (progress).
    pub fn progress(&self) -> Arc<AtomicUsize> {
        self.delivered.clone()
    }

    fn fetch(&mut self, b: usize) -> Outcome {
        match &mut self.source {
            Source::Inline(f) => f(b),
            Source::Workers {
                rx,
                pending,
                window,
                ..
            } => {
                let out = loop {
                    if let Some(o) = pending.remove(&b) {
                        break o;
                    }
                    match rx.recv() {
                        Ok((i, o)) => {
                            pending.insert(i, o);
                        }
                        Err(_) => {
                            break Err(DataError::Config(
                                "loader workers stopped unexpectedly".into(),
                            ))
                        }
                    }
                };
                let (lock, cv) = &**window;
                lock.lock().unwrap_or_else(|p| p.into_inner()).consumed = b + 1;
                cv.notify_all();
                out
            }
        }
    }
}

fn worker<S>(
    job: &Job<S>,
    window: &(Mutex<Window>, Condvar),
    tx: &mpsc::Sender<(usize, Outcome)>,
    ahead: usize,
    total: usize,
) {
    let (lock, cv) = window;
    loop {
        let b = {
            let mut w = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !w.stop && w.next < total && w.next >= w.consumed + ahead {
                w = cv.wait(w).unwrap_or_else(|p| p.into_inner());
            }
            if w.stop || w.next >= total {
                return;
            }
            w.next += 1;
            w.next - 1
        };
        if tx.send((b, job.batch(b))).is_err() {
            return;
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        while !self.done && self.next_out < self.total {
            let b = self.next_out;
            self.next_out += 1;
            match self.fetch(b) {
                Ok((batch, bad)) => {
                    self.bad.extend(bad);
                    if let Some(batch) = batch {
                        self.delivered
                            .fetch_add(batch.indices.len(), Ordering::Relaxed);
                        return Some(Ok(batch));
                    }
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        if let Source::Workers {
            window, threads, ..
        } = &mut self.source
        {
            let (lock, cv) = &**window;
            lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
            cv.notify_all();
            for t in threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}
