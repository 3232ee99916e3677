//! One training run: the `[model] [data] [train]` config tree, the model and data it builds,
//! and the adapters that let vt-train (which knows neither) drive them.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, ModuleT, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vt_backbones::{preset, ResNet, ResNetConfig, Stem};
use vt_data::transforms::{Pipeline, Prepare};
use vt_data::{
    AutoAugment, CenterCrop, ClassSample, Compose, Dataset, Loader, LoaderConfig, Normalize,
    RandomCrop, RandomHorizontalFlip, RandomResizedCrop, Resize,
};
use vt_ops::{Rng, VarStore};
use vt_train::{BatchSource, Classifier, TrainConfig, Trainer};

/// The model: a preset, resized and adapted to the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub preset: String,
    /// Width multiplier of every channel count (1.0 = the paper's model).
    pub width: f64,
    pub stem: Stem,
    pub dropout: f64,
    pub drop_path: f64,
    /// Filled from the data when absent.
    pub num_classes: Option<usize>,
    pub in_channels: Option<usize>,
}

impl ModelSection {
    pub fn config(&self) -> Result<ResNetConfig> {
        let mut cfg = (preset(&self.preset)?.config)()
            .with_width(self.width)
            .with_stem(self.stem);
        cfg.num_classes = self.num_classes.context("model.num_classes is not set")?;
        cfg.in_channels = self.in_channels.context("model.in_channels is not set")?;
        cfg.dropout = self.dropout;
        cfg.drop_path = self.drop_path;
        Ok(cfg)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Augment {
    None,
    /// Small images: pad by size/8, random crop back, horizontal flip.
    PadCropFlip,
    /// ImageNet: RandomResizedCrop + flip.
    CropFlip,
    /// ImageNet: RandomResizedCrop + flip + AutoAugment (ImageNet policy).
    AutoAugment,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Any format vt-data reads; absent: Fashion-MNIST (installed, else the embedded subset).
    pub path: Option<PathBuf>,
    /// idx | cifar | folder (detected when absent).
    pub format: Option<String>,
    pub image_size: usize,
    pub augment: Augment,
    /// Class-balanced subsets (seeded), for quick runs.
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub workers: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub train: TrainConfig,
}

impl RunConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// Writes the config atomically (tmp + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// What `metrics.json` holds at the end of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunMetrics {
    pub model: String,
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub macs: u64,
    pub params: u64,
    pub images_per_sec: f64,
    pub epochs: usize,
    pub steps: u64,
    pub train_samples: usize,
    pub test_samples: usize,
    pub data_source: String,
}

/// A seeded, class-balanced subset of a data set.
struct Subset {
    inner: vt_data::dataset::ClassSet,
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

fn limit(
    set: vt_data::dataset::ClassSet,
    n: Option<usize>,
    classes: usize,
    seed: u64,
) -> Result<vt_data::dataset::ClassSet> {
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

/// Drives a vt-data loader as a vt-train batch source.
pub struct LoaderSource(pub Loader<ClassSample>);

impl BatchSource for LoaderSource {
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
                .map_err(|e| candle_core::Error::Msg(e.to_string()))
        }))
    }
}

/// A ResNet / VT-ResNet as a vt-train classifier.
pub struct Net(pub ResNet);

impl Classifier for Net {
    fn logits(&self, images: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.0.forward_t(images, train)
    }
    fn noise(&self) -> Option<&vt_ops::NoiseSource> {
        Some(self.0.noise())
    }
}

/// Everything a run needs, built from its config.
pub struct Prepared {
    pub cfg: RunConfig,
    pub train: LoaderSource,
    pub test: LoaderSource,
    pub test_samples: usize,
    pub source: String,
}

fn pipelines(data: &DataSection, channels: usize) -> Result<(Pipeline, Pipeline)> {
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

/// Opens the data, completes the model section from it, and builds both loaders.
pub fn prepare(mut cfg: RunConfig, device: &Device) -> Result<Prepared> {
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
    let train_set = limit(
        data.train.clone(),
        cfg.data.train_limit,
        data.num_classes,
        seed,
    )?;
    let test_set = limit(
        data.test.clone(),
        cfg.data.test_limit,
        data.num_classes,
        seed + 1,
    )?;
    if train_set.is_empty() || test_set.is_empty() {
        bail!("{}: the train or test split is empty", data.source);
    }
    let (train_p, test_p) = pipelines(&cfg.data, data.channels)?;
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
        cfg,
        train: LoaderSource(train),
        test: LoaderSource(test),
        test_samples,
        source: data.source,
    })
}

/// Trains (or resumes) the run in `out` and writes `metrics.json`.
pub fn train(
    cfg: RunConfig,
    out: &Path,
    resume: bool,
    device: &Device,
    progress: bool,
    max_steps: Option<u64>,
) -> Result<RunMetrics> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if !resume && out.join("checkpoints/latest").exists() {
        bail!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    let p = prepare(cfg, device)?;
    p.cfg.save(&out.join("config.toml"))?;
    let model_cfg = p.cfg.model.config()?;
    let store = VarStore::seeded(p.cfg.train.seed, DType::F32, device);
    let net = Net(ResNet::new(&model_cfg, store.var_builder())?);
    let cost = net
        .0
        .cost(p.cfg.data.image_size, p.cfg.data.image_size)
        .total();
    if progress {
        eprintln!(
            "{}: {:.1} MMACs, {:.3} M params at {}px; data: {} ({} train / {} test samples)",
            p.cfg.model.preset,
            cost.macs as f64 / 1e6,
            cost.params as f64 / 1e6,
            p.cfg.data.image_size,
            p.source,
            p.train.0.num_batches() * p.cfg.train.batch_size,
            p.test_samples
        );
    }
    let teacher = match &p.cfg.train.distillation {
        Some(d) => Some(load_teacher(&p.cfg.model, d, device)?),
        None => None,
    };
    let trainer = Trainer {
        cfg: p.cfg.train.clone(),
        run_dir: out.to_path_buf(),
        model: &net,
        store: &store,
        teacher: teacher.as_ref().map(|t| vt_train::Teacher {
            model: t as &dyn Classifier,
        }),
        max_steps,
        progress,
    };
    let summary = trainer.fit(&p.train, &p.test, resume)?;
    let metrics = RunMetrics {
        model: p.cfg.model.preset.clone(),
        top1: summary.test.top1,
        top5: summary.test.top5,
        loss: summary.test.loss,
        macs: cost.macs,
        params: cost.params,
        images_per_sec: summary.train_images_per_sec,
        epochs: summary.epochs,
        steps: summary.steps,
        train_samples: p.train.0.num_batches() * p.cfg.train.batch_size,
        test_samples: summary.test.samples,
        data_source: p.source.clone(),
    };
    if !summary.stopped_early {
        let tmp = out.join("metrics.json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&metrics)?)?;
        std::fs::rename(&tmp, out.join("metrics.json"))?;
    }
    Ok(metrics)
}

/// The distillation teacher: preset `teacher_model` shaped like the student (width, stem,
/// classes, channels), weights from a run directory (its newest checkpoint, EMA weights when
/// kept) or a safetensors file.
fn load_teacher(
    student: &ModelSection,
    d: &vt_train::DistillConfig,
    device: &Device,
) -> Result<Net> {
    let section = ModelSection {
        preset: d.teacher_model.clone(),
        ..student.clone()
    };
    let path = Path::new(&d.teacher);
    let store = if path.is_dir() {
        let ck = vt_train::checkpoint::load_latest(path, device)?
            .with_context(|| format!("teacher {} has no checkpoint", path.display()))?;
        VarStore::from_tensors(
            ck.ema.unwrap_or(ck.model),
            &ck.dir.display().to_string(),
            DType::F32,
            device,
        )
    } else {
        VarStore::from_safetensors(path, DType::F32, device)?
    };
    let net = Net(ResNet::new(&section.config()?, store.var_builder())?);
    store
        .finish()
        .with_context(|| format!("teacher {}", d.teacher))?;
    Ok(net)
}

/// The run directory's config, for `--resume` and `eval`.
pub fn saved_config(dir: &Path) -> Result<RunConfig> {
    RunConfig::load(&dir.join("config.toml"))
}
