//! `cargo xtask reproduce`: rerun the paper's classification, ablation and segmentation
//! experiments and write a report. Finished runs are skipped and interrupted ones resume, so rerunning after Ctrl-C
//! or a kill continues where it stopped.

use crate::report::{self, Row};
use crate::run::{self, Augment, RunConfig, RunOptions};
use crate::seg_report::SegRow;
use anyhow::Result;
use clap::ValueEnum;
use std::path::{Path, PathBuf};
use vt_backbones::{preset, Stem};
use vt_train::{LrSchedule, TrainConfig};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    Classification,
    Ablation,
    /// FPN vs VT-FPN on ResNet-50 (Tables 9/10).
    Segmentation,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    /// Everything tiny (width 1/8, 256 training images, 1 epoch; segmentation at width 1/16
    /// on 16 mosaics of 64 px): checks the pipeline, < 5 min.
    Smoke,
    /// Fashion-MNIST on 2 CPU cores: width 1/4, 6,000 training images, 2 epochs; segmentation
    /// on Fashion-MNIST mosaics (see `segmentation_template`).
    Cpu,
    /// ImageNet at 224 px from --data with the paper's recipes (90-epoch SGD; 400-epoch
    /// RMSProp); segmentation on LIP or COCO-stuff from --data at full width.
    Paper,
}

/// Rerun the paper's experiments: ResNet-18/34 vs VT-ResNet-18/34 (Tables 2/8), the
/// VT-ResNet-18 ablations of Tables 3-7, all with one recipe, and FPN vs VT-FPN semantic
/// segmentation on ResNet-50 (Tables 9/10); writes <out>/report.md, results.csv,
/// segmentation.csv, SVG plots and PNG overlays of segmentation predictions.
#[derive(clap::Args)]
pub struct Args {
    #[arg(value_enum, default_value = "all")]
    suite: Suite,
    #[arg(long, value_enum, default_value = "cpu")]
    preset: Level,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data directory (required for --preset paper). Default: Fashion-MNIST.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Segmentation data directory (LIP, COCO-stuff, VOC or segmentation folders; required
    /// for --preset paper). Default: Fashion-MNIST mosaics.
    #[arg(long)]
    seg_data: Option<PathBuf>,
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
}

/// One planned run.
pub struct Planned {
    /// Directory name and report label.
    pub name: String,
    pub suite: &'static str,
    pub preset: &'static str,
    pub cfg: RunConfig,
}

const CLASSIFICATION: [&str; 4] = ["resnet18", "vt_resnet18", "resnet34", "vt_resnet34"];
const ABLATION: [&str; 9] = [
    "vt_resnet18",
    "vt_resnet18_pooling",
    "vt_resnet18_clustering",
    "vt_resnet18_no_rt",
    "vt_resnet18_no_relation",
    "vt_resnet18_graphconv",
    "vt_resnet18_l32",
    "vt_resnet18_l64",
    "vt_resnet18_no_projector",
];

fn template(level: Level, data: Option<PathBuf>) -> Result<RunConfig> {
    let mut cfg = RunConfig::small_data("resnet18", 2, 64);
    cfg.data.path = data;
    match level {
        Level::Smoke => {
            cfg.model.width = 0.125;
            cfg.data.train_limit = Some(256);
            cfg.data.test_limit = Some(128);
            cfg.train = TrainConfig {
                epochs: 1,
                batch_size: 32,
                checkpoint_every: 0,
                log_every: 1,
                ..cfg.train
            };
            cfg.train.schedule.warmup_epochs = 0.0;
        }
        Level::Cpu => {
            cfg.data.train_limit = Some(6000);
            cfg.data.test_limit = Some(2000);
        }
        Level::Paper => {
            if cfg.data.path.is_none() {
                anyhow::bail!("--preset paper trains on ImageNet: give its directory with --data (train/<class>/*.JPEG, val/<class>/...)");
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

const SEGMENTATION: [&str; 2] = ["fpn_resnet50", "vt_fpn_resnet50"];

/// The segmentation recipe of each level (vt_run::RunConfig::segmentation: SGD with momentum,
/// poly LR, random scale + crop + flip). `cpu`: width 1/4, 256 px mosaics (where the VT-FPN
/// neck saves 4.5x of the FPN's MACs; at 64 px it would save 1.5x), 3 epochs of 800 mosaics.
fn segmentation_template(level: Level, preset: &str, data: Option<PathBuf>) -> Result<RunConfig> {
    Ok(match level {
        Level::Smoke => {
            let mut cfg = RunConfig::segmentation(preset, 64, 1, 4);
            cfg.model.width = 0.0625;
            cfg.data.train_limit = Some(16);
            cfg.data.test_limit = Some(8);
            cfg.train.checkpoint_every = 0;
            cfg.train.log_every = 1;
            cfg.train.schedule.warmup_epochs = 0.0;
            cfg
        }
        Level::Cpu => {
            let mut cfg = RunConfig::segmentation(preset, 256, 3, 8);
            cfg.data.train_limit = Some(800);
            cfg.data.test_limit = Some(160);
            cfg
        }
        Level::Paper => {
            let Some(dir) = data else {
                anyhow::bail!(
                    "--preset paper segments LIP or COCO-stuff: give its directory with --seg-data"
                );
            };
            // LIP's recipe in the paper: SGD, weight decay 5e-4, LR 0.01 (its batch 96 and
            // schedule length are beyond one GPU; 50 epochs of batch 16 here), 480 px crops
            let mut cfg = RunConfig::segmentation(preset, 480, 50, 16);
            cfg.model.width = 1.0;
            cfg.data.path = Some(dir);
            cfg.data.mosaic = None;
            cfg.data.workers = 8;
            cfg.train.schedule.lr = 0.01;
            cfg.train.optimizer = vt_train::OptimizerConfig::Sgd {
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
/// recipe); bench-peer times the same models and optimizers.
pub fn cpu_recipe(preset_name: &str) -> Result<RunConfig> {
    Ok(match preset(preset_name)?.task() {
        vt_backbones::Task::Classification => {
            let mut cfg = template(Level::Cpu, None)?;
            cfg.model.preset = preset_name.into();
            cfg
        }
        vt_backbones::Task::Segmentation => segmentation_template(Level::Cpu, preset_name, None)?,
    })
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

pub fn plan(
    suite: Suite,
    level: Level,
    data: Option<PathBuf>,
    seg_data: Option<PathBuf>,
) -> Result<Vec<Planned>> {
    let classifying = matches!(suite, Suite::Classification | Suite::Ablation | Suite::All);
    let base = match classifying {
        true => Some(template(level, data)?),
        false => None,
    };
    let base = || base.clone().expect("planned for classification suites");
    let mut runs = Vec::new();
    let mut add =
        |suite_name: &'static str, name: String, preset_name: &'static str, cfg: RunConfig| {
            runs.push(Planned {
                name,
                suite: suite_name,
                preset: preset_name,
                cfg,
            });
        };
    if matches!(suite, Suite::Classification | Suite::All) {
        for p in CLASSIFICATION {
            let mut cfg = base();
            cfg.model.preset = p.into();
            add("classification", p.to_string(), p, cfg.clone());
            if level == Level::Paper {
                // Table 8: the advanced recipe (RMSProp, warmup + exponential decay, label
                // smoothing, EMA, dropout 0.2, stochastic depth)
                // at this batch, with its LR scaled by the linear rule (recipe_notes says so)
                let batch = cfg.train.batch_size;
                cfg.train = vt_train::TrainConfig {
                    batch_size: batch,
                    ..vt_train::TrainConfig::paper_advanced()
                };
                cfg.train.schedule = LrSchedule::paper_advanced()
                    .scaled_for_batch(vt_train::config::PAPER_ADVANCED_BATCH, batch);
                cfg.model.dropout = 0.2;
                cfg.model.drop_path = 0.1;
                cfg.data.augment = Augment::AutoAugment;
                add("classification", format!("{p}_advanced"), p, cfg);
            }
        }
    }
    if matches!(suite, Suite::Ablation | Suite::All) {
        for p in ABLATION {
            let mut cfg = base();
            cfg.model.preset = p.into();
            add("ablation", p.to_string(), p, cfg);
        }
    }
    if matches!(suite, Suite::Segmentation | Suite::All) {
        for p in SEGMENTATION {
            let cfg = segmentation_template(level, p, seg_data.clone())?;
            add("segmentation", p.to_string(), p, cfg);
        }
    }
    for r in &runs {
        preset(r.preset)?; // every name must exist
    }
    Ok(runs)
}

/// Runs (or resumes, or skips) one planned run and reads it back.
fn execute(r: &Planned, dir: &Path, device: &candle_core::Device) -> Result<run::RunResult> {
    let metrics_path = dir.join("metrics.json");
    if metrics_path.exists() {
        eprintln!("{}: finished earlier, skipped", r.name);
    } else {
        let resume = dir.join("checkpoints/latest").exists();
        eprintln!(
            "{}: {}",
            r.name,
            if resume { "resuming" } else { "training" }
        );
        let cfg = if resume {
            run::saved_config(dir)?
        } else {
            r.cfg.clone()
        };
        let opts = RunOptions {
            resume,
            progress: true,
            max_steps: None,
        };
        run::train(cfg, dir, device, &opts)?;
    }
    Ok(run::load_result(dir)?)
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let out = args.out.join(match args.preset {
        Level::Smoke => "smoke",
        Level::Cpu => "cpu",
        Level::Paper => "paper",
    });
    let runs = plan(
        args.suite,
        args.preset,
        args.data.clone(),
        args.seg_data.clone(),
    )?;
    std::fs::create_dir_all(&out)?;
    let (mut results, mut seg_results) = (Vec::with_capacity(runs.len()), vec![]);
    for (i, r) in runs.iter().enumerate() {
        let dir = out.join(r.suite).join(&r.name);
        // a run planned twice with the same config (the default VT-ResNet-18 is both a
        // classification and an ablation row) is trained once and its record shared
        let twin = runs[..i]
            .iter()
            .find(|t| t.name == r.name && t.cfg == r.cfg);
        if let (Some(t), false) = (twin, dir.join("metrics.json").exists()) {
            run::copy_run(&out.join(t.suite).join(&t.name), &dir)?;
            eprintln!("{}: same run as {}/{}, reused", r.name, t.suite, t.name);
        }
        let result = execute(r, &dir, &device)?;
        match r.suite {
            "segmentation" => seg_results.push(SegRow::new(&r.name, r.preset, &dir, result)?),
            _ => results.push(Row::new(&r.name, r.suite, r.preset, result)?),
        }
    }
    let seg_section = crate::seg_report::section(&out, &seg_results, &device)?;
    let planned: Vec<(&str, &str, &str)> = runs
        .iter()
        .map(|r| (r.suite, r.name.as_str(), r.preset))
        .collect();
    let token_section = crate::token_report::section(&out, &planned, &device)?;
    let level = format!("{:?}", args.preset).to_lowercase();
    let notes = recipe_notes(&runs);
    let sections = format!("{seg_section}{token_section}");
    let report = report::write(&out, &results, &sections, &level, &notes)?;
    println!("report: {}", report.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advanced_recipe_scales_its_lr_to_the_batch_and_the_report_says_so() {
        let runs = plan(
            Suite::Classification,
            Level::Paper,
            Some(PathBuf::from("/imagenet")),
            None,
        )
        .unwrap();
        let advanced: Vec<&Planned> = runs
            .iter()
            .filter(|r| r.name.ends_with("_advanced"))
            .collect();
        assert_eq!(advanced.len(), CLASSIFICATION.len());
        for r in &advanced {
            assert_eq!(r.cfg.train.batch_size, 256);
            assert!((r.cfg.train.schedule.lr - 0.16 * 256.0 / 2048.0).abs() < 1e-12);
        }
        let notes = recipe_notes(&runs);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("batch 2048")
                && notes[0].contains("linear scaling rule")
                && notes[0].contains("0.0200"),
            "{}",
            notes[0]
        );
        let cpu = plan(Suite::Classification, Level::Cpu, None, None).unwrap();
        assert!(recipe_notes(&cpu).is_empty());
    }
}
