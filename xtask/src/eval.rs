//! `cargo xtask eval`: evaluate a run's latest checkpoint.

use crate::run;
use anyhow::Result;
use std::path::PathBuf;

/// Test loss and metrics (classification: top-1, top-5) of the newest checkpoint of a run
/// directory (its EMA weights when the run keeps an EMA, as training evaluates).
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
    let e = run::evaluate_run(&args.checkpoint, args.data.as_deref(), &device)?;
    println!(
        "{} (step {}, {}): test {} on {} samples of {}",
        e.model,
        e.step,
        if e.ema { "EMA weights" } else { "weights" },
        run::figures(&e.result.metrics, e.result.loss),
        e.result.samples,
        e.source
    );
    Ok(())
}
