//! One run's config tree, `[model] [data] [train]`, saved fully resolved as `config.toml` in the
//! run directory; and the named recipes.

use crate::error::{invalid, Result, RunError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vt_backbones::{preset, ResNetConfig, SemanticFpnConfig, Stem, Task};
use vt_train::{Decay, LrSchedule, OptimizerConfig, TrainConfig};

/// The model: a preset, resized and adapted to the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A preset name (`cargo xtask list`); its task (classification or segmentation) decides
    /// the head, loss, metrics and data of the run.
    pub preset: String,
    /// Width multiplier of every channel count (1.0 = the paper's model).
    pub width: f64,
    pub stem: Stem,
    pub dropout: f64,
    pub drop_path: f64,
    /// Filled from the data when absent.
    pub num_classes: Option<usize>,
    pub in_channels: Option<usize>,
    /// Start from a hub model's `model.safetensors` (`ORG/NAME[@REVISION]`, from the hub
    /// cache): a classifier takes every tensor and starts its head fresh where it does not
    /// fit; a segmenter takes an ImageNet ResNet into `backbone.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
}

impl ModelSection {
    /// The preset's task. Each `match` on it in vt-run is where a task plugs in (data.rs,
    /// train.rs, results.rs).
    pub fn task(&self) -> Result<Task> {
        Ok(preset(&self.preset)?.task())
    }

    /// The backbone config of a classification run (classes and channels must be filled).
    pub fn config(&self) -> Result<ResNetConfig> {
        let mut cfg = (preset(&self.preset)?.classifier()?.config)()
            .with_width(self.width)
            .with_stem(self.stem);
        let Some(classes) = self.num_classes else {
            invalid!("model.num_classes is not set")
        };
        let Some(channels) = self.in_channels else {
            invalid!("model.in_channels is not set")
        };
        cfg.num_classes = classes;
        cfg.in_channels = channels;
        cfg.dropout = self.dropout;
        cfg.drop_path = self.drop_path;
        Ok(cfg)
    }

    /// [`RunConfig::validate`] of this section with the run's data and training sections.
    fn validate(&self, data: &DataSection, train: &TrainConfig) -> Result<()> {
        if !(self.width.is_finite() && self.width > 0.0) {
            invalid!("model.width {} must be a positive number", self.width)
        }
        for (what, v) in [
            ("model.num_classes", self.num_classes),
            ("model.in_channels", self.in_channels),
            ("data.train_limit", data.train_limit),
            ("data.test_limit", data.test_limit),
            ("data.image_size", Some(data.image_size)),
            ("train.batch_size", Some(train.batch_size)),
            ("data.eval_batch_size", data.eval_batch_size),
            ("train.epochs", Some(train.epochs)),
        ] {
            if v == Some(0) {
                invalid!("{what} is 0; it must be at least 1")
            }
        }
        let trunk = match self.task()? {
            Task::Classification => (preset(&self.preset)?.classifier()?.config)()
                .with_width(self.width)
                .with_stem(self.stem),
            Task::Segmentation => {
                let mut trunk = (preset(&self.preset)?.segmenter()?.config)().trunk;
                trunk.stem = self.stem;
                trunk
            }
        };
        let s = data.image_size;
        if let Err(e) = trunk.check_input(s, s) {
            invalid!(
                "data.image_size {s} is too small for model `{}`: {e}",
                self.preset
            )
        }
        Ok(())
    }

    /// The model config of a segmentation run (classes and channels must be filled); `stem`
    /// must be `imagenet` (the FPN levels are at strides 4..32) and `dropout` 0.
    pub fn segmentation_config(&self) -> Result<SemanticFpnConfig> {
        let mut cfg = (preset(&self.preset)?.segmenter()?.config)().with_width(self.width);
        let (Some(classes), Some(channels)) = (self.num_classes, self.in_channels) else {
            invalid!("model.num_classes and model.in_channels must be set")
        };
        if self.dropout != 0.0 {
            invalid!(
                "model.dropout is {} but a segmentation model has no dropout",
                self.dropout
            )
        }
        cfg.num_classes = classes;
        cfg.trunk.in_channels = channels;
        cfg.trunk.stem = self.stem;
        cfg.trunk.drop_path = self.drop_path;
        if let Err(e) = cfg.validate() {
            invalid!("model `{}`: {e}", self.preset)
        }
        Ok(cfg)
    }
}

/// A data recipe's augmentation.
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
    /// Segmentation: random scale (0.5-2.0), crop to `image_size` (padded with the ignore
    /// label), horizontal flip; evaluation on the whole image padded to a multiple of 32.
    ScaleCropFlip,
}

/// The Fashion-MNIST mosaics a segmentation run trains on when `data.path` is absent
/// (`train_limit` / `test_limit` mosaics, 1000 / 200 by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MosaicSection {
    /// Canvas side in pixels.
    pub canvas: usize,
    /// Integer upscaling of each 28 px item.
    pub item_scale: usize,
    pub min_items: usize,
    pub max_items: usize,
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
    /// Batch of the evaluation passes (absent: `train.batch_size`). Results do not depend on
    /// it; a small training batch evaluates faster in larger ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<usize>,
    pub workers: usize,
    /// The mosaics of a segmentation run without `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mosaic: Option<MosaicSection>,
    /// Per-channel statistics the pipelines normalise with. Absent in a new config: taken from
    /// the data set (its training pixels, or the known constants of its kind of images) and
    /// saved in the run's resolved config, so evaluation and inference use the same ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<NormalizeSection>,
}

/// `mean` and `std` per channel, of pixel values in `[0, 1]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeSection {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub model: ModelSection,
    pub data: DataSection,
    pub train: TrainConfig,
}

impl RunConfig {
    /// This run starting from hub model `id` (ImageNet weights): the model at full width with
    /// the ImageNet stem, and a classifier's data at 224 px with ImageNet's crop recipe, the
    /// geometry those weights were trained for (set afterwards what should differ).
    pub fn with_pretrained(mut self, id: &str) -> Self {
        self.model.pretrained = Some(id.to_string());
        self.model.width = 1.0;
        self.model.stem = Stem::Imagenet;
        if self.model.task().is_ok_and(|t| t == Task::Classification) {
            self.data.image_size = 224;
            self.data.augment = Augment::CropFlip;
        }
        self
    }

    /// Checks what no run can use, before any data is read: zero or non-finite widths,
    /// classes, channels, sizes, batches, epochs and limits, and an image smaller than the
    /// model's output stride.
    pub fn validate(&self) -> Result<()> {
        self.model.validate(&self.data, &self.train)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| RunError::io("read config", path, e))?;
        toml::from_str(&text).map_err(|source| RunError::Config {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Writes the config atomically (tmp + rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, toml::to_string_pretty(self)?)
            .map_err(|e| RunError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| RunError::io("write", path, e))
    }

    /// The small-data recipe for a classification preset: width 1/4, small-image stem, 28 px
    /// with pad+crop+flip, SGD with Nesterov momentum and cosine decay after one warmup epoch,
    /// label smoothing 0.1. Data: Fashion-MNIST unless `data.path` is set.
    pub fn small_data(preset: &str, epochs: usize, batch_size: usize) -> Self {
        RunConfig {
            model: ModelSection {
                preset: preset.into(),
                width: 0.25,
                stem: Stem::Small,
                dropout: 0.0,
                drop_path: 0.0,
                num_classes: None,
                in_channels: None,
                pretrained: None,
            },
            data: DataSection {
                path: None,
                format: None,
                image_size: 28,
                augment: Augment::PadCropFlip,
                train_limit: None,
                test_limit: None,
                eval_batch_size: None,
                workers: 2,
                mosaic: None,
                normalize: None,
            },
            train: TrainConfig {
                epochs,
                batch_size,
                seed: 0,
                optimizer: OptimizerConfig::Sgd {
                    momentum: 0.9,
                    nesterov: true,
                    weight_decay: 5e-4,
                },
                schedule: LrSchedule {
                    lr: 0.1,
                    decay: Decay::Cosine {
                        min_lr: 0.0,
                        epochs: (epochs.max(2) - 1) as f64,
                    },
                    warmup_epochs: 1.0,
                    warmup_start_lr: 0.01,
                },
                label_smoothing: 0.1,
                ema_decay: None,
                grad_clip: None,
                checkpoint_every: 200,
                log_every: 10,
                distillation: None,
            },
        }
    }

    /// The small-data segmentation recipe for a segmentation preset: width 1/4, Fashion-MNIST
    /// mosaics of `canvas` px (items scaled x2 at 128 px and more) unless `data.path` is set,
    /// random scale + crop + flip, SGD with momentum 0.9 and weight decay 1e-4, LR 0.02 with
    /// a short linear warmup and poly decay (power 0.9), as detectron2 / mmseg train semantic
    /// FPNs; no label smoothing.
    pub fn segmentation(preset: &str, canvas: usize, epochs: usize, batch_size: usize) -> Self {
        let item_scale = if canvas >= 128 { 2 } else { 1 };
        // the mosaics' grid has one cell per item size that fits on each side
        let cells = (canvas / (28 * item_scale)).pow(2);
        let mut cfg = Self::small_data(preset, epochs, batch_size);
        cfg.model.stem = Stem::Imagenet;
        cfg.data.image_size = canvas;
        cfg.data.augment = Augment::ScaleCropFlip;
        cfg.data.mosaic = Some(MosaicSection {
            canvas,
            item_scale,
            min_items: 2.min(cells),
            max_items: 6.min(cells),
        });
        let train = &mut cfg.train;
        train.optimizer = OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 1e-4,
        };
        train.schedule = LrSchedule {
            lr: 0.02,
            decay: Decay::Poly {
                power: 0.9,
                min_lr: 0.0,
                epochs: (epochs as f64 - 0.25).max(0.25),
            },
            warmup_epochs: 0.25,
            warmup_start_lr: 0.002,
        };
        train.label_smoothing = 0.0;
        train.checkpoint_every = 100;
        train.log_every = 5;
        cfg
    }
}

/// The run directory's config (`<dir>/config.toml`), for resuming and evaluating.
pub fn saved_config(dir: &Path) -> Result<RunConfig> {
    RunConfig::load(&dir.join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_names_its_errors() -> Result<()> {
        let cfg = RunConfig::small_data("vt_resnet18", 3, 16);
        let text = toml::to_string_pretty(&cfg)?;
        let back: RunConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(cfg.model.task()?, Task::Classification);
        let dir = std::env::temp_dir().join(format!("vt-run-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.toml"), text.replace("width", "widht")).unwrap();
        let err = saved_config(&dir).unwrap_err();
        assert!(err.to_string().starts_with("invalid config"), "{err}");
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(cause.contains("widht"), "{cause}");
        let err = cfg.model.config().unwrap_err().to_string();
        assert_eq!(err, "model.num_classes is not set");
        let mut seg = cfg.model.clone();
        seg.preset = "fpn_resnet50".into();
        assert_eq!(seg.task()?, Task::Segmentation);
        let err = seg.config().unwrap_err().to_string();
        assert!(err.contains("is a segmentation model"), "{err}");
        // a segmentation recipe round-trips too, and its model needs the ImageNet stem
        let sc = RunConfig::segmentation("vt_fpn_resnet50", 128, 2, 8);
        let back: RunConfig = toml::from_str(&toml::to_string_pretty(&sc)?).unwrap();
        assert_eq!(back, sc);
        let mut m = sc.model.clone();
        (m.num_classes, m.in_channels) = (Some(11), Some(1));
        assert_eq!(m.segmentation_config()?.num_classes, 11);
        m.stem = Stem::Small;
        let err = m.segmentation_config().unwrap_err().to_string();
        assert!(err.contains("ImageNet stem"), "{err}");
        Ok(())
    }
}
