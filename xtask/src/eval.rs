//! `cargo xtask eval`: evaluate a run's latest checkpoint.

use crate::run;
use anyhow::{Context, Result};
use candle_core::DType;
use std::path::PathBuf;
use vt_backbones::ResNet;
use vt_ops::VarStore;

/// Test loss, top-1 and top-5 of the newest checkpoint of a run directory (its EMA weights
/// when the run keeps an EMA, as training evaluates).
#[derive(clap::Args)]
pub struct Args {
    /// A run directory written by `cargo xtask train` / `reproduce`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate on other data (default: the run's).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let mut cfg = run::saved_config(&args.checkpoint)?;
    if let Some(d) = args.data {
        cfg.data.path = Some(d);
    }
    let p = run::prepare(cfg, &device)?;
    let ck = vt_train::checkpoint::load_latest(&args.checkpoint, &device)?
        .with_context(|| format!("{} has no checkpoint", args.checkpoint.display()))?;
    let weights = ck.ema.clone().unwrap_or_else(|| ck.model.clone());
    let store = VarStore::from_tensors(weights, &ck.dir.display().to_string(), DType::F32, &device);
    let net = run::Net(ResNet::new(&p.cfg.model.config()?, store.var_builder())?);
    store.finish()?;
    let r = vt_train::evaluate(&net, &p.test)?;
    println!(
        "{} (step {}, {}): test top-1 {:.2}%, top-5 {:.2}%, loss {:.4} on {} samples of {}",
        p.cfg.model.preset,
        ck.state.step,
        if ck.ema.is_some() {
            "EMA weights"
        } else {
            "weights"
        },
        r.top1,
        r.top5,
        r.loss,
        r.samples,
        p.source
    );
    Ok(())
}
