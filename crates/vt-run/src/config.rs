//! One run's config tree, `[model] [data] [train]`, saved fully resolved as `config.toml` in the
//! run directory; and the named recipes.

use crate::error::{invalid, Result, RunError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use vt_backbones::{preset, ResNetConfig, Stem, Task};
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
}

impl ModelSection {
    /// The preset's task. Each `match` on it in vt-run is where a task plugs in (data.rs,
    /// train.rs, results.rs): classification is implemented; segmentation (FPN / VT-FPN,
    /// per-pixel cross entropy, mIoU) is the next arm.
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
            },
            data: DataSection {
                path: None,
                format: None,
                image_size: 28,
                augment: Augment::PadCropFlip,
                train_limit: None,
                test_limit: None,
                workers: 2,
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
        Ok(())
    }
}
