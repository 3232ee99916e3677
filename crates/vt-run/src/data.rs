//! A run's data: opening the data set, class-balanced subsets, the recipe's pipelines, and the
//! vt-data loader as a vt-train [`BatchSource`].

use crate::config::{Augment, DataSection, NormalizeSection, RunConfig};
use crate::error::{invalid, Result};
use candle_core::{Device, Tensor};
use std::sync::Arc;
use vt_backbones::Task;
use vt_data::dataset::{ClassSet, SegSet};
use vt_data::transforms::{Pipeline, Prepare};
use vt_data::{
    AutoAugment, CenterCrop, ChannelStats, Compose, Dataset, Loader, LoaderConfig, MosaicConfig,
    Normalize, RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize, SegPipeline,
    SegmentationData, Shard,
};
use vt_ops::Rng;
use vt_train::BatchSource;

/// The samples `indices` of a data set.
struct Subset<S> {
    inner: Arc<dyn Dataset<Sample = S>>,
    indices: Vec<usize>,
}

impl<S> Dataset for Subset<S> {
    type Sample = S;
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> vt_data::error::Result<S> {
        self.inner.get(self.indices[i])
    }
    fn describe(&self, i: usize) -> String {
        self.inner.describe(self.indices[i])
    }
    fn class_label(&self, i: usize) -> Option<vt_data::error::Result<usize>> {
        self.inner.class_label(self.indices[i])
    }
}

/// At most `n` samples of `set` (all of it when `n` is `None` or not smaller), at most
/// `ceil(n / classes)` per class, drawn in an order fixed by `seed`; kept in index order.
pub fn class_balanced_subset(
    set: ClassSet,
    n: Option<usize>,
    classes: usize,
    seed: u64,
) -> Result<ClassSet> {
    let Some(n) = n.filter(|&n| n < set.len()) else {
        return Ok(set);
    };
    let mut order: Vec<usize> = (0..set.len()).collect();
    Rng::derive(seed, &[0x50b5e7]).shuffle(&mut order);
    let per_class = n.div_ceil(classes.max(1));
    let mut taken = vec![0usize; classes.max(1)];
    let mut indices = Vec::with_capacity(n);
    for i in order {
        // The label alone where the format stores it apart (IDX, CIFAR, folders): a subset of
        // a large folder decodes no image to pick its samples.
        let label = match set.class_label(i) {
            Some(label) => label?,
            None => set.get(i)?.label,
        };
        if label >= taken.len() {
            invalid!(
                "{}: label {label} is outside the data set's {classes} classes",
                set.describe(i)
            )
        }
        if taken[label] < per_class && indices.len() < n {
            taken[label] += 1;
            indices.push(i);
        }
    }
    indices.sort_unstable();
    Ok(Arc::new(Subset {
        inner: set,
        indices,
    }))
}

/// Drives a vt-data loader (classification or segmentation samples) as a vt-train batch
/// source of `(images, labels)`, checking every label against the model's classes (a label
/// map's `ignore_index` pixels aside): a label the model cannot output is an error naming the
/// sample, not an index error deep inside the loss or a metric.
pub struct LoaderSource<S> {
    loader: Loader<S>,
    num_classes: usize,
}

impl<S: 'static> LoaderSource<S> {
    pub fn new(loader: Loader<S>, num_classes: usize) -> Self {
        Self {
            loader,
            num_classes,
        }
    }

    fn check_labels(&self, b: &vt_data::Batch) -> candle_core::Result<()> {
        let labels = b.labels.flatten_all()?.to_vec1::<u32>()?;
        let per_sample = labels.len() / b.indices.len().max(1);
        let ignore = u32::from(vt_data::seg::IGNORE_INDEX);
        let bad = labels
            .iter()
            .position(|&l| l as usize >= self.num_classes && !(per_sample > 1 && l == ignore));
        if let Some(at) = bad {
            let sample = b.indices[at / per_sample.max(1)];
            candle_core::bail!(
                "{}: label {} is outside the model's {} classes (0..{})",
                self.loader.describe(sample),
                labels[at],
                self.num_classes,
                self.num_classes
            );
        }
        Ok(())
    }
}

impl<S: 'static> BatchSource for LoaderSource<S> {
    fn batches_per_epoch(&self) -> usize {
        self.loader.num_batches()
    }
    fn epoch(
        &self,
        epoch: usize,
        skip: usize,
    ) -> Box<dyn Iterator<Item = candle_core::Result<(Tensor, Tensor)>> + '_> {
        // A resumed epoch starts at its first unfinished batch: the finished ones are never
        // decoded or augmented.
        Box::new(self.loader.epoch_from(epoch as u64, skip).map(|b| {
            let b = b.map_err(candle_core::Error::wrap)?;
            self.check_labels(&b)?;
            Ok((b.images, b.labels))
        }))
    }
}

/// The train and test pipelines of a classification recipe; `channels` picks the
/// normalisation (Fashion-MNIST statistics for one channel, ImageNet's for three).
pub fn classification_pipelines(
    data: &DataSection,
    channels: usize,
) -> Result<(Pipeline, Pipeline)> {
    let s = data.image_size;
    let normalize = normalization(data, channels)?;
    // images stored at another size (28 px Fashion-MNIST for a 56 px model) are resized to
    // the input first; for images that already fit both steps are identities
    let fit = || {
        Compose::new()
            .then(Resize { shorter: s })
            .then(CenterCrop { size: (s, s) })
    };
    let train = match data.augment {
        Augment::None => fit(),
        Augment::ScaleCropFlip => {
            invalid!("data.augment scale_crop_flip is a segmentation recipe")
        }
        Augment::PadCropFlip => fit()
            .then(RandomCrop::padded(s, (s / 8).max(1)))
            .then(RandomHorizontalFlip::default()),
        Augment::CropFlip => Compose::new()
            .then(RandomResizedCrop::new(s))
            .then(RandomHorizontalFlip::default()),
        Augment::AutoAugment => Compose::new()
            .then(RandomResizedCrop::new(s))
            .then(RandomHorizontalFlip::default())
            .then(AutoAugment::imagenet()),
    };
    let test = match data.augment {
        Augment::CropFlip | Augment::AutoAugment => Compose::new()
            .then(Resize { shorter: s * 8 / 7 })
            .then(CenterCrop { size: (s, s) }),
        _ => fit(),
    };
    Ok((
        Pipeline::new(train, Some(normalize.clone())),
        Pipeline::new(test, Some(normalize)),
    ))
}

/// Everything a run needs of its data, built from its config.
pub struct Prepared {
    /// The config with the model section completed from the data (classes, channels).
    pub cfg: RunConfig,
    /// Shuffled, `drop_last`.
    pub train: Box<dyn BatchSource>,
    /// In order, every sample.
    pub test: Box<dyn BatchSource>,
    /// Samples seen per training epoch.
    pub train_samples: usize,
    pub test_samples: usize,
    /// Which files or directory the data came from.
    pub source: String,
}

/// Opens the data of the config's task, completes the model section from it, and builds both
/// loaders.
pub fn prepare(cfg: RunConfig, device: &Device) -> Result<Prepared> {
    prepare_shard(cfg, device, Shard::WHOLE)
}

/// [`prepare`] for one rank of a data-parallel run: both loaders yield `shard`'s part of each
/// batch (`train.batch_size` stays the global batch).
pub fn prepare_shard(cfg: RunConfig, device: &Device, shard: Shard) -> Result<Prepared> {
    cfg.validate()?;
    match cfg.model.task()? {
        Task::Classification => prepare_classification(cfg, device, shard),
        Task::Segmentation => prepare_segmentation(cfg, device, shard),
    }
}

/// At most `n` samples of `set`, drawn in an order fixed by `seed`; kept in index order.
fn seeded_subset(set: SegSet, n: Option<usize>, seed: u64) -> SegSet {
    let Some(n) = n.filter(|&n| n < set.len()) else {
        return set;
    };
    let mut indices: Vec<usize> = (0..set.len()).collect();
    Rng::derive(seed, &[0x5e65]).shuffle(&mut indices);
    indices.truncate(n);
    indices.sort_unstable();
    Arc::new(Subset {
        inner: set,
        indices,
    })
}

/// Mosaics per split when a segmentation run on mosaics sets no limit.
const DEFAULT_MOSAICS: (usize, usize) = (1000, 200);

/// The segmentation data of a config: the directory in `data.path` (any layout vt-data
/// detects, or `data.format`), else Fashion-MNIST mosaics as `data.mosaic` describes.
pub fn open_segmentation_data(data: &DataSection, seed: u64) -> Result<SegmentationData> {
    match &data.path {
        Some(p) => {
            let mut d = vt_data::open_segmentation(p, format(data)?)?;
            d.train = seeded_subset(d.train, data.train_limit, seed);
            d.test = seeded_subset(d.test, data.test_limit, seed + 1);
            Ok(d)
        }
        None => {
            let Some(m) = data.mosaic else {
                invalid!("a segmentation run needs data.path or a [data.mosaic] section")
            };
            let cfg = MosaicConfig {
                canvas: m.canvas,
                item_scale: m.item_scale,
                min_items: m.min_items,
                max_items: m.max_items,
                ..MosaicConfig::new(data.train_limit.unwrap_or(DEFAULT_MOSAICS.0), seed)
            };
            let test = data.test_limit.unwrap_or(DEFAULT_MOSAICS.1);
            Ok(vt_data::fashion_mnist_mosaics(None, cfg, test)?)
        }
    }
}

/// The normalisation of a run: its config's statistics ([`resolve_normalization`] fills them
/// for a new run). A config saved before they were recorded normalises as those runs did:
/// Fashion-MNIST's statistics for one channel, ImageNet's for three.
fn normalization(data: &DataSection, channels: usize) -> Result<Normalize> {
    match &data.normalize {
        Some(n) if n.mean.len() != channels => invalid!(
            "data.normalize has {} channel means, the data has {channels} channels",
            n.mean.len()
        ),
        Some(n) => Ok(Normalize::new(n.mean.clone(), n.std.clone())?),
        None if channels == 1 => Ok(Normalize::new(vec![0.2860], vec![0.3530])?),
        None => Ok(Normalize::imagenet()),
    }
}

/// Samples whose pixels estimate the statistics of a data set that knows none.
const STATS_SAMPLES: usize = 256;

/// Fills `data.normalize` of a new run: the data set's statistics, else an estimate from up
/// to [`STATS_SAMPLES`] training images drawn with `seed`.
fn resolve_normalization<S>(
    data: &mut DataSection,
    known: Option<ChannelStats>,
    train: &Arc<dyn Dataset<Sample = S>>,
    image: impl Fn(S) -> vt_data::Image,
    seed: u64,
) -> Result<()> {
    if data.normalize.is_some() {
        return Ok(());
    }
    let stats = match known {
        Some(s) => s,
        None => {
            let mut order: Vec<usize> = (0..train.len()).collect();
            Rng::derive(seed, &[0x57a7]).shuffle(&mut order);
            let images = order
                .into_iter()
                .take(STATS_SAMPLES)
                .map(|i| train.get(i).map(&image))
                .collect::<vt_data::error::Result<Vec<_>>>()?;
            ChannelStats::of_images(&images)
        }
    };
    data.normalize = Some(NormalizeSection {
        mean: stats.mean,
        std: stats.std,
    });
    Ok(())
}

/// The train and test pipelines of a segmentation recipe: `ScaleCropFlip` (or the eval
/// pipeline for `None`) for training; the whole image padded to a multiple of 32 for testing.
pub fn segmentation_pipelines(
    data: &DataSection,
    channels: usize,
) -> Result<(SegPipeline, SegPipeline)> {
    let s = data.image_size;
    let normalize = normalization(data, channels)?;
    let divisor = vt_backbones::SIZE_DIVISIBILITY;
    if s % divisor != 0 {
        invalid!("data.image_size {s}: a segmentation crop must be a multiple of {divisor}")
    }
    let train = match data.augment {
        Augment::ScaleCropFlip => SegPipeline::train((s, s), (0.5, 2.0), Some(normalize.clone()))?,
        Augment::None => SegPipeline::eval(divisor, Some(normalize.clone()))?,
        other => invalid!("data.augment {other:?} is a classification recipe; segmentation uses scale_crop_flip or none"),
    };
    Ok((train, SegPipeline::eval(divisor, Some(normalize))?))
}

fn loader_configs(cfg: &RunConfig, shard: Shard) -> (LoaderConfig, LoaderConfig) {
    let train = LoaderConfig {
        shuffle: true,
        drop_last: true,
        workers: cfg.data.workers,
        seed: cfg.train.seed,
        shard,
        ..LoaderConfig::new(cfg.train.batch_size)
    };
    let test = LoaderConfig {
        batch_size: cfg.data.eval_batch_size.unwrap_or(cfg.train.batch_size),
        shuffle: false,
        drop_last: false,
        ..train.clone()
    };
    (train, test)
}

fn prepare_segmentation(mut cfg: RunConfig, device: &Device, shard: Shard) -> Result<Prepared> {
    let data = open_segmentation_data(&cfg.data, cfg.train.seed)?;
    if data.train.is_empty() || data.test.is_empty() {
        invalid!("{}: the train or test split is empty", data.source);
    }
    let channels = data.train.get(0)?.image.channels;
    cfg.model.num_classes.get_or_insert(data.num_classes);
    cfg.model.in_channels.get_or_insert(channels);
    resolve_normalization(
        &mut cfg.data,
        data.stats,
        &data.train,
        |s| s.image,
        cfg.train.seed,
    )?;
    let (train_p, test_p) = segmentation_pipelines(&cfg.data, channels)?;
    loaders(
        cfg,
        (data.train, Arc::new(train_p)),
        (data.test, Arc::new(test_p)),
        data.source,
        device,
        shard,
    )
}

/// A split and the pipeline its samples go through.
type Split<S> = (Arc<dyn Dataset<Sample = S>>, Arc<dyn Prepare<S>>);

/// Both loaders of a run over prepared splits, as a [`Prepared`].
fn loaders<S: Send + 'static>(
    cfg: RunConfig,
    (train_set, train_pipeline): Split<S>,
    (test_set, test_pipeline): Split<S>,
    source: String,
    device: &Device,
    shard: Shard,
) -> Result<Prepared> {
    let (train_cfg, test_cfg) = loader_configs(&cfg, shard);
    let test_samples = test_set.len();
    let classes = cfg.model.num_classes.unwrap_or(usize::MAX);
    let train = Loader::new(train_set, train_pipeline, train_cfg, device)?;
    let test = Loader::new(test_set, test_pipeline, test_cfg, device)?;
    Ok(Prepared {
        train_samples: train.num_batches() * cfg.train.batch_size,
        cfg,
        train: Box::new(LoaderSource::new(train, classes)),
        test: Box::new(LoaderSource::new(test, classes)),
        test_samples,
        source,
    })
}

/// The format named in `data.format`, if any (detected from the directory otherwise).
fn format(data: &DataSection) -> Result<Option<vt_data::Format>> {
    Ok(data
        .format
        .as_deref()
        .map(str::parse::<vt_data::Format>)
        .transpose()?)
}

/// The prefix of a `data.path` naming a hub dataset: `hf:ORG/NAME[@REVISION]`.
pub const HUB_PREFIX: &str = "hf:";

/// A classification data set: `hf:ORG/NAME[@REVISION]` from the hub cache (vt-hub), else any
/// layout vt-data reads at `path` (`format`, or detected).
pub fn open_classification_data(
    path: &std::path::Path,
    format: Option<vt_data::Format>,
) -> Result<vt_data::ClassificationData> {
    match path.to_str().and_then(|p| p.strip_prefix(HUB_PREFIX)) {
        Some(id) => Ok(vt_hub::open_dataset(&id.parse()?)?),
        None => Ok(vt_data::open_classification(path, format)?),
    }
}

fn prepare_classification(mut cfg: RunConfig, device: &Device, shard: Shard) -> Result<Prepared> {
    let data = match &cfg.data.path {
        None => vt_data::fashion_mnist(None)?,
        Some(p) => open_classification_data(p, format(&cfg.data)?)?,
    };
    cfg.model.num_classes.get_or_insert(data.num_classes);
    cfg.model.in_channels.get_or_insert(data.channels);
    let seed = cfg.train.seed;
    let k = data.num_classes;
    let train_set = class_balanced_subset(data.train.clone(), cfg.data.train_limit, k, seed)?;
    let test_set = class_balanced_subset(data.test.clone(), cfg.data.test_limit, k, seed + 1)?;
    if train_set.is_empty() || test_set.is_empty() {
        invalid!("{}: the train or test split is empty", data.source);
    }
    resolve_normalization(&mut cfg.data, data.stats, &data.train, |s| s.image, seed)?;
    let (train_p, test_p) = classification_pipelines(&cfg.data, data.channels)?;
    loaders(
        cfg,
        (train_set, Arc::new(train_p)),
        (test_set, Arc::new(test_p)),
        data.source,
        device,
        shard,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_balanced_and_seeded() -> Result<()> {
        let fm = vt_data::embedded_fashion_mnist()?;
        let a = class_balanced_subset(fm.train.clone(), Some(50), 10, 3)?;
        let b = class_balanced_subset(fm.train.clone(), Some(50), 10, 3)?;
        assert_eq!(a.len(), 50);
        let labels = |s: &ClassSet| -> Vec<usize> {
            (0..s.len()).map(|i| s.get(i).unwrap().label).collect()
        };
        assert_eq!(labels(&a), labels(&b));
        let mut per_class = [0; 10];
        for l in labels(&a) {
            per_class[l] += 1;
        }
        assert_eq!(per_class, [5; 10]);
        let whole = class_balanced_subset(fm.train.clone(), None, 10, 3)?;
        assert_eq!(whole.len(), fm.train.len());
        Ok(())
    }

    /// A set whose images cannot be decoded but whose labels are known.
    struct LabelsOnly(Vec<usize>);

    impl Dataset for LabelsOnly {
        type Sample = vt_data::ClassSample;
        fn len(&self) -> usize {
            self.0.len()
        }
        fn get(&self, i: usize) -> vt_data::error::Result<vt_data::ClassSample> {
            panic!("sample {i} decoded while picking a subset")
        }
        fn class_label(&self, i: usize) -> Option<vt_data::error::Result<usize>> {
            Some(Ok(self.0[i]))
        }
    }

    #[test]
    fn subsets_read_labels_without_decoding_and_reject_foreign_labels() {
        let set: ClassSet = Arc::new(LabelsOnly((0..1000).map(|i| i % 4).collect()));
        let sub = class_balanced_subset(set, Some(40), 4, 1).unwrap();
        assert_eq!(sub.len(), 40);
        let per_class = (0..40).fold([0; 4], |mut n, i| {
            n[sub.class_label(i).unwrap().unwrap()] += 1;
            n
        });
        assert_eq!(per_class, [10; 4]);
        let set: ClassSet = Arc::new(LabelsOnly(vec![0, 1, 7, 2]));
        let err = class_balanced_subset(set, Some(2), 4, 1).err().unwrap();
        assert!(
            err.to_string()
                .contains("sample 2: label 7 is outside the data set's 4 classes"),
            "{err}"
        );
    }

    #[test]
    fn the_test_loader_batches_by_eval_batch_size() -> Result<()> {
        let mut cfg = RunConfig::small_data("resnet18", 1, 16);
        (cfg.data.train_limit, cfg.data.test_limit) = (Some(40), Some(100));
        let p = prepare(cfg.clone(), &Device::Cpu)?;
        assert_eq!(
            (p.train.batches_per_epoch(), p.test.batches_per_epoch()),
            (2, 7)
        );
        cfg.data.eval_batch_size = Some(64);
        let p = prepare(cfg.clone(), &Device::Cpu)?;
        assert_eq!(
            (p.train.batches_per_epoch(), p.test.batches_per_epoch()),
            (2, 2)
        );
        let sizes: Vec<usize> = p
            .test
            .epoch(0, 0)
            .map(|b| b.unwrap().0.dim(0).unwrap())
            .collect();
        assert_eq!(sizes, [64, 36]);
        cfg.data.eval_batch_size = Some(0);
        let err = prepare(cfg, &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("data.eval_batch_size is 0"), "{err}");
        Ok(())
    }
}
