//! `cargo xtask infer`: eval-mode forward of a preset with given weights.

use anyhow::{Context, Result};
use candle_core::{DType, ModuleT};
use std::collections::HashMap;
use std::path::PathBuf;
use vt_backbones::{preset, ResNet};
use vt_ops::VarStore;

/// Eval-mode forward of tensor `x` from INPUT; writes `logits` to OUTPUT. torchvision ResNet
/// checkpoints load as they are; missing, unexpected or mis-shaped keys are listed in one error.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    model: String,
    /// Weights as safetensors with PyTorch names.
    #[arg(long)]
    weights: PathBuf,
    /// safetensors file holding `x` (N, C, H, W).
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Classifier size (default: the preset's, 1000).
    #[arg(long)]
    num_classes: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let mut cfg = (preset(&args.model)?.classifier()?.config)();
    if let Some(k) = args.num_classes {
        cfg.num_classes = k;
    }
    let store = VarStore::from_safetensors(&args.weights, DType::F32, &device)?;
    let model = ResNet::new(&cfg, store.var_builder())?;
    store.finish()?;
    let inputs = candle_core::safetensors::load(&args.input, &device)
        .with_context(|| format!("cannot read input {}", args.input.display()))?;
    let x = inputs
        .get("x")
        .with_context(|| {
            format!(
                "{} has no tensor `x` (found: {:?})",
                args.input.display(),
                inputs.keys().collect::<Vec<_>>()
            )
        })?
        .to_dtype(DType::F32)?;
    if x.rank() != 4 {
        anyhow::bail!(
            "{}: `x` must be (N, C, H, W), found shape {:?}",
            args.input.display(),
            x.shape()
        );
    }
    let logits = model.forward_t(&x, false)?;
    let tmp = args.output.with_extension("safetensors.tmp");
    candle_core::safetensors::save(
        &HashMap::from([("logits".to_string(), logits.clone())]),
        &tmp,
    )
    .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "logits {:?} written to {}",
        logits.shape(),
        args.output.display()
    );
    Ok(())
}
