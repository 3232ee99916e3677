//! A run's data: opening the data set, class-balanced subsets, the recipe's pipelines, and the
//! vt-data loader as a vt-train [`BatchSource`].

use crate::config::{Augment, DataSection, RunConfig};
use crate::error::{invalid, Result};
use crate::unsupported;
use candle_core::{Device, Tensor};
use std::sync::Arc;
use vt_backbones::Task;
use vt_data::dataset::ClassSet;
use vt_data::transforms::{Pipeline, Prepare};
use vt_data::{
    AutoAugment, CenterCrop, ClassSample, Compose, Dataset, Loader, LoaderConfig, Normalize,
    RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize,
};
use vt_ops::Rng;
use vt_train::BatchSource;

/// A seeded, class-balanced subset of a data set.
struct Subset {
    inner: ClassSet,
    indices: Vec<usize>,
}

impl Dataset for Subset {
    type Sample = ClassSample;
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> vt_data::error::Result<ClassSample> {
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
    let normalize = if channels == 1 {
        Normalize::new(vec![0.2860], vec![0.3530])? // Fashion-MNIST statistics
    } else {
        Normalize::imagenet()
    };
    let train = match data.augment {
        Augment::None => Compose::new(),
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
        Task::Segmentation => Err(unsupported(&cfg.model.preset)),
    }
}

fn prepare_classification(mut cfg: RunConfig, device: &Device) -> Result<Prepared> {
    let data = match &cfg.data.path {
        None => vt_data::fashion_mnist(None)?,
        Some(p) => {
            let format = cfg
                .data
                .format
                .as_deref()
                .map(str::parse::<vt_data::Format>)
                .transpose()?;
            vt_data::open_classification(p, format)?
        }
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
    let train_cfg = LoaderConfig {
        shuffle: true,
        drop_last: true,
        workers: cfg.data.workers,
        seed,
        ..LoaderConfig::new(cfg.train.batch_size)
    };
    let test_cfg = LoaderConfig {
        shuffle: false,
        drop_last: false,
        ..train_cfg.clone()
    };
    let train = Loader::new(
        train_set,
        Arc::new(train_p) as Arc<dyn Prepare<ClassSample>>,
        train_cfg,
        device,
    )?;
    let test_samples = test_set.len();
    let test = Loader::new(
        test_set,
        Arc::new(test_p) as Arc<dyn Prepare<ClassSample>>,
        test_cfg,
        device,
    )?;
    Ok(Prepared {
        train_samples: train.num_batches() * cfg.train.batch_size,
        cfg,
        train: Box::new(LoaderSource(train)),
        test: Box::new(LoaderSource(test)),
        test_samples,
        source: data.source,
    })
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
