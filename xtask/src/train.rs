//! `cargo xtask train`: one training run.

use crate::run::{self, Augment, DataSection, ModelSection, RunConfig};
use anyhow::Result;
use std::path::PathBuf;
use vt_backbones::Stem;
use vt_train::{Decay, LrSchedule, OptimizerConfig, TrainConfig};

/// Train a preset (or a config file) on any data vt-data reads; writes the resolved config,
/// a JSON-lines log, checkpoints and `metrics.json` (test top-1/top-5/loss, MACs, params,
/// training images/s) to `--out`.
#[derive(clap::Args)]
pub struct Args {
    /// Preset name (`cargo xtask list`); used with the small-data recipe below.
    #[arg(long, conflicts_with = "config")]
    model: Option<String>,
    /// A TOML file with `[model] [data] [train]` sections (as written to <out>/config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (IDX, CIFAR binary or image folders; detected). Default: Fashion-MNIST.
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    image_size: Option<usize>,
    /// Width multiplier of every channel count.
    #[arg(long)]
    width: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint (its saved config is used).
    #[arg(long)]
    resume: bool,
}

/// The small-data recipe: small-image stem, pad+crop+flip, SGD with Nesterov momentum and
/// cosine decay after one warmup epoch, label smoothing 0.1.
pub fn small_data_config(preset: &str, epochs: usize, batch_size: usize) -> RunConfig {
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

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let mut cfg = if args.resume && args.out.join("config.toml").exists() {
        run::saved_config(&args.out)?
    } else if let Some(path) = &args.config {
        RunConfig::load(path)?
    } else {
        let Some(model) = &args.model else {
            anyhow::bail!("give --model NAME or --config FILE")
        };
        small_data_config(model, 5, 64)
    };
    if !args.resume {
        if let Some(d) = args.data {
            cfg.data.path = Some(d);
        }
        if let Some(e) = args.epochs {
            cfg.train.epochs = e;
            if let Decay::Cosine { epochs, .. } = &mut cfg.train.schedule.decay {
                *epochs = (e as f64 - cfg.train.schedule.warmup_epochs).max(1.0);
            }
        }
        if let Some(b) = args.batch_size {
            cfg.train.batch_size = b;
        }
        if let Some(s) = args.image_size {
            cfg.data.image_size = s;
        }
        if let Some(w) = args.width {
            cfg.model.width = w;
        }
        if let Some(s) = args.seed {
            cfg.train.seed = s;
        }
    }
    let m = run::train(cfg, &args.out, args.resume, &device, true, None)?;
    println!(
        "{}: test top-1 {:.2}%, top-5 {:.2}%, loss {:.4}; {:.1} MMACs, {:.3} M params; {:.0} train images/s; {}",
        m.model,
        m.top1,
        m.top5,
        m.loss,
        m.macs as f64 / 1e6,
        m.params as f64 / 1e6,
        m.images_per_sec,
        args.out.join("metrics.json").display()
    );
    Ok(())
}
