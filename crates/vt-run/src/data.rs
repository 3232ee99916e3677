//! A run's data: opening the data set, class-balanced subsets, the recipe's pipelines, and the
//! vt-data loader as a vt-train [`BatchSource`].

use crate::config::{Augment, DataSection, RunConfig};
use crate::error::{invalid, Result};
use candle_core::{Device, Tensor};
use std::sync::Arc;
use vt_backbones::Task;
use vt_data::dataset::{ClassSet, SegSet};
use vt_data::transforms::{Pipeline, Prepare};
use vt_data::{
    AutoAugment, CenterCrop, Compose, Dataset, Loader, LoaderConfig, MosaicConfig, Normalize,
    RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize, SegPipeline, SegmentationData,
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
        let label = set.get(i)?.label;
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
/// source of `(images, labels)`.
pub struct LoaderSource<S>(pub Loader<S>);

impl<S: 'static> BatchSource for LoaderSource<S> {
    fn batches_per_epoch(&self) -> usize {
        self.0.num_batches()
    }
    fn epoch(
        &self,
        epoch: usize,
        skip: usize,
    ) -> Box<dyn Iterator<Item = candle_core::Result<(Tensor, Tensor)>> + '_> {
        Box::new(self.0.epoch(epoch as u64).skip(skip).map(|b| {
            b.map(|b| (b.images, b.labels))
                .map_err(candle_core::Error::wrap)
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
    let normalize = normalization(channels)?;
    let train = match data.augment {
        Augment::None => Compose::new(),
        Augment::ScaleCropFlip => {
            invalid!("data.augment scale_crop_flip is a segmentation recipe")
        }
        Augment::PadCropFlip => Compose::new()
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
        _ => Compose::new(),
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
    match cfg.model.task()? {
        Task::Classification => prepare_classification(cfg, device),
        Task::Segmentation => prepare_segmentation(cfg, device),
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

/// Normalisation by channel count: Fashion-MNIST's statistics for one, ImageNet's for three.
fn normalization(channels: usize) -> Result<Normalize> {
    Ok(match channels {
        1 => Normalize::new(vec![0.2860], vec![0.3530])?,
        _ => Normalize::imagenet(),
    })
}

/// The train and test pipelines of a segmentation recipe: `ScaleCropFlip` (or the eval
/// pipeline for `None`) for training; the whole image padded to a multiple of 32 for testing.
pub fn segmentation_pipelines(
    data: &DataSection,
    channels: usize,
) -> Result<(SegPipeline, SegPipeline)> {
    let s = data.image_size;
    let normalize = normalization(channels)?;
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

fn loader_configs(cfg: &RunConfig) -> (LoaderConfig, LoaderConfig) {
    let train = LoaderConfig {
        shuffle: true,
        drop_last: true,
        workers: cfg.data.workers,
        seed: cfg.train.seed,
        ..LoaderConfig::new(cfg.train.batch_size)
    };
    let test = LoaderConfig {
        shuffle: false,
        drop_last: false,
        ..train.clone()
    };
    (train, test)
}

fn prepare_segmentation(mut cfg: RunConfig, device: &Device) -> Result<Prepared> {
    let data = open_segmentation_data(&cfg.data, cfg.train.seed)?;
    if data.train.is_empty() || data.test.is_empty() {
        invalid!("{}: the train or test split is empty", data.source);
    }
    let channels = data.train.get(0)?.image.channels;
    cfg.model.num_classes.get_or_insert(data.num_classes);
    cfg.model.in_channels.get_or_insert(channels);
    let (train_p, test_p) = segmentation_pipelines(&cfg.data, channels)?;
    loaders(
        cfg,
        data.train,
        data.test,
        Arc::new(train_p),
        Arc::new(test_p),
        data.source,
        device,
    )
}

/// Both loaders of a run over prepared splits, as a [`Prepared`].
fn loaders<S: Send + 'static>(
    cfg: RunConfig,
    train_set: Arc<dyn Dataset<Sample = S>>,
    test_set: Arc<dyn Dataset<Sample = S>>,
    train_pipeline: Arc<dyn Prepare<S>>,
    test_pipeline: Arc<dyn Prepare<S>>,
    source: String,
    device: &Device,
) -> Result<Prepared> {
    let (train_cfg, test_cfg) = loader_configs(&cfg);
    let test_samples = test_set.len();
    let train = Loader::new(train_set, train_pipeline, train_cfg, device)?;
    let test = Loader::new(test_set, test_pipeline, test_cfg, device)?;
    Ok(Prepared {
        train_samples: train.num_batches() * cfg.train.batch_size,
        cfg,
        train: Box::new(LoaderSource(train)),
        test: Box::new(LoaderSource(test)),
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

fn prepare_classification(mut cfg: RunConfig, device: &Device) -> Result<Prepared> {
    let data = match &cfg.data.path {
        None => vt_data::fashion_mnist(None)?,
        Some(p) => vt_data::open_classification(p, format(&cfg.data)?)?,
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
    let (train_p, test_p) = classification_pipelines(&cfg.data, data.channels)?;
    loaders(
        cfg,
        train_set,
        test_set,
        Arc::new(train_p),
        Arc::new(test_p),
        data.source,
        device,
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
}
