//! `cargo xtask train`: one training run.

use crate::run::{self, RunConfig, RunOptions};
use anyhow::Result;
use std::path::PathBuf;
use vt_backbones::Task;
use vt_train::Decay;

/// Train a preset (or a config file) on any data vt-data reads; writes the resolved config,
/// a JSON-lines log, checkpoints and `metrics.json` (test loss and metrics: top-1/top-5 for
/// classifiers, mIoU / pixel accuracy / per-class IoU for segmenters; MACs, params, training
/// images/s) to `--out`. The preset decides the task.
#[derive(clap::Args)]
pub struct Args {
    /// Preset name (`cargo xtask list`). A classifier uses the small-data recipe
    /// (`vt_run::RunConfig::small_data`: width 1/4, small-image stem, 28 px, pad+crop+flip,
    /// SGD with Nesterov momentum, cosine decay after one warmup epoch, label smoothing 0.1);
    /// a segmenter the segmentation recipe (`vt_run::RunConfig::segmentation`: width 1/4,
    /// 256 px Fashion-MNIST mosaics or --data, random scale + crop + flip, SGD, poly LR).
    #[arg(long, conflicts_with = "config")]
    model: Option<String>,
    /// A TOML file with `[model] [data] [train]` sections (as written to <out>/config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (IDX, CIFAR binary, image folders; for segmenters VOC, LIP, COCO-stuff
    /// or segmentation folders; detected). Default: Fashion-MNIST (mosaics for segmenters).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    /// Input side (segmentation: the training crop and the mosaic canvas, a multiple of 32).
    #[arg(long)]
    image_size: Option<usize>,
    /// Width multiplier of every channel count.
    #[arg(long)]
    width: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Start from a hub model's weights, ORG/NAME[@REVISION] (its model.safetensors from the
    /// Hugging Face cache; e.g. timm/resnet18.tv_in1k): full width, ImageNet stem, 224 px for
    /// a classifier unless --width / --image-size say otherwise; a head that does not fit
    /// starts fresh. A segmenter takes an ImageNet ResNet into backbone.body.
    #[arg(long, conflicts_with = "config")]
    pretrained: Option<String>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value = "runs/train")]
    out: PathBuf,
    /// Continue the run in --out from its last checkpoint (its saved config is used).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    launch: crate::launch::Launch,
}

pub fn run(args: Args) -> Result<()> {
    let mut cfg = if args.resume && args.out.join("config.toml").exists() {
        run::saved_config(&args.out)?
    } else if let Some(path) = &args.config {
        RunConfig::load(path)?
    } else {
        let Some(model) = &args.model else {
            anyhow::bail!("give --model NAME or --config FILE")
        };
        match vt_backbones::preset(model)?.task() {
            Task::Classification => RunConfig::small_data(model, 5, 64),
            Task::Segmentation => {
                RunConfig::segmentation(model, args.image_size.unwrap_or(256), 5, 8)
            }
        }
    };
    if !args.resume {
        if let Some(id) = &args.pretrained {
            cfg = cfg.with_pretrained(id);
        }
        if let Some(d) = args.data {
            cfg.data.path = Some(d);
        }
        if let Some(e) = args.epochs {
            cfg.train.epochs = e;
            // the decay spans the epochs after the warmup
            let warmup = cfg.train.schedule.warmup_epochs;
            if let Decay::Cosine { epochs, .. } | Decay::Poly { epochs, .. } =
                &mut cfg.train.schedule.decay
            {
                *epochs = (e as f64 - warmup).max(1.0);
            }
        }
        if let Some(b) = args.batch_size {
            cfg.train.batch_size = b;
        }
        if let Some(s) = args.image_size {
            cfg.data.image_size = s;
            if let Some(m) = &mut cfg.data.mosaic {
                m.canvas = s;
            }
        }
        if let Some(w) = args.width {
            cfg.model.width = w;
        }
        if let Some(s) = args.seed {
            cfg.train.seed = s;
        }
    }
    args.launch.run(&args.device, |device, group| {
        let opts = RunOptions {
            resume: args.resume,
            progress: true,
            max_steps: None,
            group: group.clone(),
        };
        let m = run::train(cfg, &args.out, device, &opts)?;
        if group.is_main() {
            print_result(&m, &args.out);
        }
        Ok(())
    })
}

fn print_result(m: &vt_run::RunMetrics, out: &std::path::Path) {
    println!(
        "{}: test {}; {:.1} MMACs, {:.3} M params; {:.0} train images/s; {}",
        m.model,
        run::figures(&m.test, m.loss),
        m.macs as f64 / 1e6,
        m.params as f64 / 1e6,
        m.images_per_sec,
        out.join("metrics.json").display()
    );
}
