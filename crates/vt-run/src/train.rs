//! One training run: config → data → model → the task's step → vt-train's trainer →
//! `metrics.json`.

use crate::config::RunConfig;
use crate::data::{prepare_shard, Prepared};
use crate::error::{invalid, Result, RunError};
use crate::model::{initial_store, load_teacher, Net, SegNet};
use crate::results::RunMetrics;
use candle_core::Device;
use std::path::Path;
use vt_backbones::Task;
use vt_data::Shard;
use vt_ops::{Cost, Group, VarStore};
use vt_train::{ClassificationStep, Classifier, SegmentationStep, TrainStep, Trainer};

/// How to run: continue or start, show progress, stop early, alone or as one rank of many.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Continue the run in the directory from its newest checkpoint.
    pub resume: bool,
    /// A progress bar on a terminal, plain lines otherwise.
    pub progress: bool,
    /// Stop after this many optimizer steps (no `metrics.json` is written then).
    pub max_steps: Option<u64>,
    /// The ranks of a data-parallel run (default: this process alone). Every rank calls
    /// [`train`] with the same config and directory; `train.batch_size` is the global batch,
    /// each rank loads `batch / world` of it, and rank 0 alone writes the files.
    pub group: Group,
}

/// Trains (or resumes) the run in `out`: writes the resolved `config.toml`, the log and the
/// checkpoints, and `metrics.json` when the run completes. The run's steps run on the CPU
/// kernels' thread pool ([`vt_ops::in_thread_pool`]).
pub fn train(cfg: RunConfig, out: &Path, device: &Device, opts: &RunOptions) -> Result<RunMetrics> {
    vt_ops::in_thread_pool(|| train_here(cfg, out, device, opts))
}

fn train_here(
    cfg: RunConfig,
    out: &Path,
    device: &Device,
    opts: &RunOptions,
) -> Result<RunMetrics> {
    cfg.validate()?; // before the run directory is made
    let group = &opts.group;
    let world = group.world_size();
    if cfg.train.batch_size % world != 0 {
        invalid!(
            "--batch-size {} is the global batch of {world} processes and must be a multiple of {world}",
            cfg.train.batch_size
        );
    }
    std::fs::create_dir_all(out).map_err(|e| RunError::io("create", out, e))?;
    if !opts.resume && out.join("checkpoints/latest").exists() {
        invalid!(
            "{} already holds a run; pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    let shard = Shard {
        rank: group.rank(),
        world_size: world,
    };
    let p = prepare_shard(cfg, device, shard)?;
    if group.is_main() {
        p.cfg.save(&out.join("config.toml"))?;
    }
    let store = initial_store(&p.cfg.model, p.cfg.train.seed, device)?;
    match p.cfg.model.task()? {
        Task::Classification => {
            let net = Net::new(&p.cfg.model, &store)?;
            report_pretrained(&p.cfg.model, &store)?;
            let cost = net.cost(p.cfg.data.image_size);
            announce(&p, cost, opts);
            let teacher = match &p.cfg.train.distillation {
                Some(d) => Some(load_teacher(&p.cfg.model, d, device)?),
                None => None,
            };
            let teacher = teacher.as_ref().map(|t| t as &dyn Classifier);
            let task = ClassificationStep::from_config(&net, &p.cfg.train, teacher)?;
            fit(&p, &store, &task, cost, out, opts)
        }
        Task::Segmentation => {
            let net = SegNet::new(&p.cfg.model, &store)?;
            report_pretrained(&p.cfg.model, &store)?;
            let cost = net.cost(p.cfg.data.image_size);
            announce(&p, cost, opts);
            let classes = net.0.config().num_classes;
            let task = SegmentationStep::from_config(&net, classes, &p.cfg.train)?;
            fit(&p, &store, &task, cost, out, opts)
        }
    }
}

fn announce(p: &Prepared, cost: Cost, opts: &RunOptions) {
    if opts.progress && opts.group.is_main() {
        eprintln!(
            "{}: {:.1} MMACs, {:.3} M params at {}px; data: {} ({} train / {} test samples)",
            p.cfg.model.preset,
            cost.macs as f64 / 1e6,
            cost.params as f64 / 1e6,
            p.cfg.data.image_size,
            p.source,
            p.train_samples,
            p.test_samples
        );
    }
}

/// Fits any task's step and writes its figures.
fn fit(
    p: &Prepared,
    store: &VarStore,
    task: &dyn TrainStep,
    cost: Cost,
    out: &Path,
    opts: &RunOptions,
) -> Result<RunMetrics> {
    let trainer = Trainer {
        cfg: p.cfg.train.clone(),
        run_dir: out.to_path_buf(),
        store,
        max_steps: opts.max_steps,
        progress: opts.progress,
        group: opts.group.clone(),
    };
    let summary = trainer.fit(task, p.train.as_ref(), p.test.as_ref(), opts.resume)?;
    let metrics = RunMetrics {
        model: p.cfg.model.preset.clone(),
        task: p.cfg.model.task()?,
        loss: summary.test.loss,
        test: summary.test.metrics,
        macs: cost.macs,
        params: cost.params,
        images_per_sec: summary.train_images_per_sec,
        epochs: summary.epochs,
        steps: summary.steps,
        train_samples: p.train_samples,
        test_samples: summary.test.samples,
        data_source: p.source.clone(),
        world_size: opts.group.world_size(),
    };
    if !summary.stopped_early && opts.group.is_main() {
        metrics.save(&out.join("metrics.json"))?;
    }
    Ok(metrics)
}

/// For a run starting from pretrained weights: any mismatch outside the fresh keys is the
/// store's one error; what started fresh and what was skipped is printed.
fn report_pretrained(model: &crate::ModelSection, store: &VarStore) -> Result<()> {
    let Some(id) = &model.pretrained else {
        return Ok(());
    };
    store.finish()?;
    let (fresh, skipped) = store.fresh_keys();
    eprintln!(
        "pretrained {id}: {} tensors initialised fresh{}; skipped from the checkpoint: {}",
        fresh.len(),
        match fresh.len() {
            0 => String::new(),
            n if n <= 8 => format!(" ({})", fresh.join(", ")),
            _ => format!(" ({}, ...)", fresh[..8].join(", ")),
        },
        if skipped.is_empty() {
            "none".to_string()
        } else {
            skipped.join(", ")
        }
    );
    Ok(())
}
