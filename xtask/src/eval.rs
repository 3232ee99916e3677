//! `cargo xtask eval`: evaluate a run's latest checkpoint.

use crate::run;
use anyhow::Result;
use std::path::PathBuf;

/// Test loss and metrics (classification: top-1, top-5) of the newest checkpoint of a run
/// directory (its EMA weights when the run keeps an EMA, as training evaluates).
#[derive(clap::Args)]
pub struct Args {
    /// A run directory written by `cargo xtask train` / `reproduce`.
    #[arg(long, required_unless_present = "pretrained")]
    checkpoint: Option<PathBuf>,
    /// Evaluate a hub model's weights as they are instead (ORG/NAME[@REVISION], from the
    /// Hugging Face cache), as preset --model at full width and 224 px, on --data.
    #[arg(long, conflicts_with = "checkpoint", requires = "model")]
    pretrained: Option<String>,
    /// The preset the --pretrained weights fit.
    #[arg(long)]
    model: Option<String>,
    /// Evaluate on other data (default: the run's).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let e = match (&args.checkpoint, &args.pretrained, &args.model) {
        (Some(dir), _, _) => run::evaluate_run(dir, args.data.as_deref(), &device)?,
        (None, Some(id), Some(model)) => {
            let mut cfg = run::RunConfig::small_data(model, 1, 64).with_pretrained(id);
            cfg.data.path = args.data.clone();
            run::evaluate_pretrained(cfg, &device)?
        }
        _ => anyhow::bail!("give --checkpoint RUN, or --pretrained ID with --model"),
    };
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
