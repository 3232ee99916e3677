//! `cargo xtask visualize`: what each visual token of a trained run attends to on one image.

use anyhow::{Context, Result};
use std::path::PathBuf;
use vt_data::Image;

/// Writes `tokens.png` (the image, then one heatmap panel per token of every VT module: its
/// spatial coefficients over the image, as in the paper's token figure) and `tokens.json`
/// (per module and token the map's entropy, the uniform entropy ln(HW), and the prediction)
/// for a classification or segmentation run with VT modules.
#[derive(clap::Args)]
pub struct Args {
    /// A run directory (from `train` or `reproduce`).
    #[arg(long)]
    checkpoint: PathBuf,
    /// A JPEG or PNG image.
    #[arg(long)]
    image: PathBuf,
    /// Where to write tokens.png and tokens.json (default: <checkpoint>/visualize).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let image = Image::open_rgb(&args.image)?;
    let view = vt_run::token_view(
        &args.checkpoint,
        &image,
        &args.image.display().to_string(),
        &device,
    )?;
    let out = args
        .out
        .unwrap_or_else(|| args.checkpoint.join("visualize"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    vt_run::write_token_png(&out.join("tokens.png"), &image, &view)?;
    let json = out.join("tokens.json");
    std::fs::write(&json, serde_json::to_string_pretty(&view)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    for m in &view.modules {
        let mean = m.tokens.iter().map(|t| t.entropy).sum::<f64>() / m.tokens.len().max(1) as f64;
        println!(
            "{}: {} tokens over {}x{}, mean entropy {mean:.3} nats (uniform {:.3})",
            m.module,
            m.tokens.len(),
            m.hw[0],
            m.hw[1],
            m.uniform_entropy
        );
    }
    println!("prediction: {:?}", view.prediction);
    println!(
        "wrote {} and {}",
        out.join("tokens.png").display(),
        json.display()
    );
    Ok(())
}
