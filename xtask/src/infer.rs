//! `cargo xtask infer`: eval-mode forward of a preset with given weights, or of a trained
//! segmentation run on an image.

use crate::run::{write_class_map, Segmentation};
use anyhow::{Context, Result};
use candle_core::{DType, ModuleT, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vt_backbones::{preset, PresetKind, ResNet, SemanticFpn};
use vt_data::{Image, LabelMap};
use vt_ops::VarStore;

/// Eval-mode forward; writes `logits` to OUTPUT (safetensors) and, for a segmentation model,
/// the class map as a VOC-coloured PNG beside it (OUTPUT with extension `.png`).
///
/// Either `--model M --weights W --input X.safetensors` (a tensor `x` (N, C, H, W); for a
/// segmenter H and W multiples of 32; torchvision ResNet checkpoints load as they are;
/// missing, unexpected or mis-shaped keys are listed in one error), or `--checkpoint RUN
/// --input IMAGE.png|jpg` (a segmentation run's newest weights and its eval pipeline: the
/// image normalised and padded as in evaluation, the class map at the image's size).
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, required_unless_present = "checkpoint")]
    model: Option<String>,
    /// Weights as safetensors with PyTorch names.
    #[arg(long, required_unless_present_any = ["checkpoint", "pretrained"])]
    weights: Option<PathBuf>,
    /// Weights of a hub model instead of --weights: ORG/NAME[@REVISION] (its
    /// model.safetensors from the Hugging Face cache).
    #[arg(long, conflicts_with_all = ["weights", "checkpoint"])]
    pretrained: Option<String>,
    /// A segmentation run directory (from `train` or `reproduce`).
    #[arg(long, conflicts_with_all = ["model", "weights"])]
    checkpoint: Option<PathBuf>,
    /// safetensors file holding `x` (N, C, H, W), or an image with --checkpoint.
    #[arg(long)]
    input: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Classifier size or segmentation classes (default: the preset's).
    #[arg(long)]
    num_classes: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    if let Some(dir) = &args.checkpoint {
        let seg = Segmentation::load(dir, &device)?;
        let image = Image::open_rgb(&args.input)?;
        let image = match seg.channels {
            1 => image.to_grey(),
            _ => image,
        };
        let (map, logits) = seg.predict(&image)?;
        return write_outputs(&args.output, &logits, Some(&map));
    }
    let weights = match (&args.weights, &args.pretrained) {
        (Some(w), _) => w.clone(),
        (None, Some(id)) => vt_hub::model_file(&id.parse()?, "model.safetensors")?,
        (None, None) => {
            anyhow::bail!("give --model and --weights (or --pretrained), or --checkpoint")
        }
    };
    let Some(name) = &args.model else {
        anyhow::bail!("give --model with --weights or --pretrained")
    };
    let store = VarStore::from_safetensors(&weights, DType::F32, &device)?;
    let model: Box<dyn ModuleT> = match &preset(name)?.kind {
        PresetKind::Classifier(c) => {
            let mut cfg = (c.config)();
            cfg.num_classes = args.num_classes.unwrap_or(cfg.num_classes);
            Box::new(ResNet::new(&cfg, store.var_builder())?)
        }
        PresetKind::Segmenter(s) => {
            let mut cfg = (s.config)();
            cfg.num_classes = args.num_classes.unwrap_or(cfg.num_classes);
            Box::new(SemanticFpn::new(&cfg, store.var_builder())?)
        }
    };
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
    let map = match logits.rank() {
        4 => Some(class_map(&logits.get(0)?)?),
        _ => None,
    };
    write_outputs(&args.output, &logits, map.as_ref())
}

/// The argmax over classes of logits `(K, H, W)`.
fn class_map(logits: &Tensor) -> Result<LabelMap> {
    let (_, h, w) = logits.dims3()?;
    let data = logits
        .argmax(0)?
        .flatten_all()?
        .to_dtype(DType::U32)?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|c| c.min(255) as u8)
        .collect();
    Ok(LabelMap::new(w, h, data)?)
}

/// The mean of the colour channels, for a model trained on one channel.
fn write_outputs(output: &Path, logits: &Tensor, map: Option<&LabelMap>) -> Result<()> {
    let tmp = output.with_extension("safetensors.tmp");
    candle_core::safetensors::save(
        &HashMap::from([("logits".to_string(), logits.clone())]),
        &tmp,
    )
    .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "logits {:?} written to {}",
        logits.shape(),
        output.display()
    );
    if let Some(m) = map {
        let png = output.with_extension("png");
        write_class_map(&png, m)?;
        println!(
            "class map {}x{} written to {}",
            m.width,
            m.height,
            png.display()
        );
    }
    Ok(())
}
