//! The recipe of each level: data budget, input size, schedule and guards of a planned run
//! (`cpu` and `long` at the paper's geometry scaled by 1/4), and Table 8's advanced recipe.

use super::{is_main_claim, Level, Planned, Suite};
use crate::config::{Augment, RunConfig};
use crate::error::{invalid, Result};
use std::path::PathBuf;
use vt_backbones::{preset, Stem, Task};
use vt_train::{Decay, LrSchedule, OptimizerConfig, TrainConfig};

/// Training images per epoch (`None`: all), test images and epochs of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub epochs: usize,
}

impl Budget {
    /// The classification budget of a level; `main` for the main claim's two models.
    pub fn classification(level: Level, main: bool) -> Self {
        let b = |train, test, epochs| Budget {
            train_limit: train,
            test_limit: test,
            epochs,
        };
        match (level, main) {
            (Level::Smoke, _) => b(Some(256), Some(128), 1),
            (Level::Cpu, true) => b(Some(30_000), Some(5_000), 1),
            (Level::Cpu, false) => b(Some(2_000), Some(2_000), 1),
            (Level::Long, true) => b(None, None, 3),
            (Level::Long, false) => b(Some(15_000), Some(5_000), 2),
            (Level::Paper, _) => b(None, None, 90),
        }
    }
}

/// Warmup over the first 30 % of a short run, cosine decay to 0 over the rest: a whole warmup
/// epoch (the `train` default) would be all of a one-epoch run, and 15 % let one VT-ResNet-18
/// seed at 56 px diverge (NaN loss 35 steps after reaching LR 0.1).
fn short_schedule(epochs: usize) -> LrSchedule {
    let warmup = 0.3 * epochs as f64;
    LrSchedule {
        lr: 0.1,
        decay: Decay::Cosine {
            min_lr: 0.0,
            epochs: epochs as f64 - warmup,
        },
        warmup_epochs: warmup,
        warmup_start_lr: 0.01,
    }
}

pub(super) fn classification_template(
    level: Level,
    preset_name: &str,
    main: bool,
    data: Option<PathBuf>,
) -> Result<RunConfig> {
    let budget = Budget::classification(level, main);
    let mut cfg = RunConfig::small_data(preset_name, budget.epochs, 64);
    cfg.data.path = data;
    cfg.data.train_limit = budget.train_limit;
    cfg.data.test_limit = budget.test_limit;
    match level {
        Level::Smoke => {
            cfg.model.width = 0.125;
            cfg.train.batch_size = 32;
            cfg.train.checkpoint_every = 0;
            cfg.train.log_every = 1;
            cfg.train.schedule.warmup_epochs = 0.0;
        }
        Level::Cpu | Level::Long => {
            // the paper's geometry scaled by 1/4: 56 px through the small stem gives VT the
            // 14 x 14 maps it sees at 224 px (Fashion-MNIST's 28 px images are resized)
            cfg.data.image_size = 56;
            cfg.train.schedule = short_schedule(budget.epochs);
            // a guard against the rare spike that sends a short, hot run to NaN: the logged
            // norms of the cpu main runs stay under 3.5 but for one step of 11.5 (VT seed 2)
            cfg.train.grad_clip = Some(5.0);
            if budget.epochs == 1 {
                // one epoch never shows an image twice: augmentation has nothing to regularise
                // and only slows what a single pass can learn
                cfg.data.augment = Augment::None;
            }
            if level == Level::Cpu && !main {
                // 2,000 images: 125 steps of 16 learn what 31 steps of 64 cannot (ResNet-34,
                // seed 0: 71.5 % against 27.5 % top-1) at about the same images/s
                cfg.train.batch_size = 16;
                cfg.train.schedule.lr = 0.05;
                // evaluating in batches of 64 takes 2.1 s less of a 25 s run (VT-ResNet-18)
                cfg.data.eval_batch_size = Some(64);
            }
            cfg.train.log_every = 5;
        }
        Level::Paper => {
            if cfg.data.path.is_none() {
                invalid!("--preset paper trains on ImageNet: give its directory with --data (train/<class>/*.JPEG, val/<class>/...)");
            }
            cfg.model.width = 1.0;
            cfg.model.stem = Stem::Imagenet;
            cfg.data.image_size = 224;
            cfg.data.augment = Augment::CropFlip;
            cfg.data.workers = 8;
            cfg.train = TrainConfig::paper_default();
        }
    }
    Ok(cfg)
}

/// The segmentation recipe of each level (`RunConfig::segmentation`: SGD with momentum, poly
/// LR, random scale + crop + flip). `cpu`: width 1/4, 128 px mosaics, 3 epochs of 240 (the
/// VT-FPN neck's saving grows with the input: 4.5x of the FPN's MACs at 256 px, 1.5x at 64 px;
/// the report prints it at the size trained); `long`: 256 px, 3 epochs of 800.
pub(super) fn segmentation_template(
    level: Level,
    preset_name: &str,
    data: Option<PathBuf>,
) -> Result<RunConfig> {
    Ok(match level {
        Level::Smoke => {
            let mut cfg = RunConfig::segmentation(preset_name, 64, 1, 4);
            cfg.model.width = 0.0625;
            cfg.data.train_limit = Some(16);
            cfg.data.test_limit = Some(8);
            cfg.train.checkpoint_every = 0;
            cfg.train.log_every = 1;
            cfg.train.schedule.warmup_epochs = 0.0;
            cfg
        }
        Level::Cpu => {
            let mut cfg = RunConfig::segmentation(preset_name, 128, 3, 8);
            cfg.data.train_limit = Some(240);
            cfg.data.test_limit = Some(80);
            cfg
        }
        Level::Long => {
            let mut cfg = RunConfig::segmentation(preset_name, 256, 3, 8);
            cfg.data.train_limit = Some(800);
            cfg.data.test_limit = Some(160);
            cfg
        }
        Level::Paper => {
            let Some(dir) = data else {
                invalid!(
                    "--preset paper segments LIP or COCO-stuff: give its directory with --seg-data"
                )
            };
            // LIP's recipe in the paper: SGD, weight decay 5e-4, LR 0.01 (its batch 96 and
            // schedule length are beyond one GPU; 50 epochs of batch 16 here), 480 px crops
            let mut cfg = RunConfig::segmentation(preset_name, 480, 50, 16);
            cfg.model.width = 1.0;
            cfg.data.path = Some(dir);
            cfg.data.mosaic = None;
            cfg.data.workers = 8;
            cfg.train.schedule.lr = 0.01;
            cfg.train.optimizer = OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 5e-4,
            };
            cfg.train.checkpoint_every = 1000;
            cfg
        }
    })
}

/// The run config `reproduce --preset cpu` trains `preset_name` with (its model, data and
/// recipe, seed 0); bench-peer times the same models and optimizers.
pub fn cpu_recipe(preset_name: &str) -> Result<RunConfig> {
    match preset(preset_name)?.task() {
        Task::Classification => classification_template(
            Level::Cpu,
            preset_name,
            is_main_claim(Suite::Classification, preset_name),
            None,
        ),
        Task::Segmentation => segmentation_template(Level::Cpu, preset_name, None),
    }
}

/// What the report must say of the recipes as planned: the advanced recipe is written for
/// batch 2048, and a run at another batch has its learning rates scaled.
pub fn recipe_notes(runs: &[Planned]) -> Vec<String> {
    let reference = vt_train::config::PAPER_ADVANCED_BATCH;
    let mut notes: Vec<String> = runs
        .iter()
        .filter(|r| r.name.ends_with("_advanced") && r.cfg.train.batch_size != reference)
        .map(|r| {
            let s = &r.cfg.train.schedule;
            format!(
                "The advanced recipe (Table 8) is written for batch {reference} (LR {} after warmup, from {}); these runs use batch {}, so by the linear scaling rule its LR is {:.4} after warmup, from {:.5}.",
                LrSchedule::paper_advanced().lr,
                LrSchedule::paper_advanced().warmup_start_lr,
                r.cfg.train.batch_size,
                s.lr,
                s.warmup_start_lr
            )
        })
        .collect();
    notes.dedup();
    notes
}

/// Table 8's advanced recipe (RMSProp, warmup + exponential decay, label smoothing, EMA,
/// dropout 0.2, stochastic depth, AutoAugment) at the run's batch, its LR scaled by the linear
/// rule (`recipe_notes` says so).
pub(super) fn advanced(mut cfg: RunConfig) -> RunConfig {
    let batch = cfg.train.batch_size;
    cfg.train = TrainConfig {
        batch_size: batch,
        seed: cfg.train.seed,
        ..TrainConfig::paper_advanced()
    };
    cfg.train.schedule = LrSchedule::paper_advanced()
        .scaled_for_batch(vt_train::config::PAPER_ADVANCED_BATCH, batch);
    cfg.model.dropout = 0.2;
    cfg.model.drop_path = 0.1;
    cfg.data.augment = Augment::AutoAugment;
    cfg
}
