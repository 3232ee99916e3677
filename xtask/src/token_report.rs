//! The report's token analysis (the paper's §6): for every run with VT modules, the mean
//! entropy of its tokens' spatial coefficients against a uniform map, and for segmentation
//! runs the attention on labelled foreground per pixel over that on background.

use anyhow::Result;
use candle_core::Device;
use std::fmt::Write;
use std::path::PathBuf;
use vt_backbones::{preset, NeckConfig, PresetKind};

/// Test samples the statistics are taken over, per run.
const SAMPLES: usize = 256;

/// Whether the preset's model has VT modules with spatial coefficients.
fn has_tokens(name: &str) -> bool {
    match preset(name).map(|p| p.kind) {
        Ok(PresetKind::Classifier(c)) => !(c.config)().vt.is_empty(),
        Ok(PresetKind::Segmenter(s)) => matches!((s.config)().neck, NeckConfig::VtFpn(_)),
        Err(_) => false,
    }
}

/// The markdown section over the runs `(label, preset, directory)`.
pub fn section(runs: &[(String, &str, PathBuf)], device: &Device) -> Result<String> {
    let mut md = String::from("## What the tokens attend to (§6)\n\n");
    writeln!(md, "Over the first {SAMPLES} test samples of each model's first seed with VT modules: the mean entropy of each token's spatial coefficients (nats; mean over heads) against that of a uniform map, ln(HW), averaged over modules and tokens. A ratio below 1 means the tokens concentrate on parts of the map, as the paper's token figure shows. For segmentation, the foreground ratio is the attention per labelled-foreground pixel over that per background pixel (the paper: +28.3 % on LIP, i.e. 1.283). `cargo xtask visualize --checkpoint RUN --image FILE` draws the maps.\n")?;
    writeln!(md, "| run | samples | mean entropy | uniform | ratio | foreground / background |\n|---|---:|---:|---:|---:|---:|")?;
    let mut any = false;
    for (label, preset_name, dir) in runs {
        if !has_tokens(preset_name) {
            continue;
        }
        let s = vt_run::token_statistics(dir, SAMPLES, device)?;
        any = true;
        writeln!(
            md,
            "| {label} | {} | {:.3} | {:.3} | {:.3} | {} |",
            s.samples,
            s.mean_entropy,
            s.uniform_entropy,
            s.mean_entropy / s.uniform_entropy,
            s.foreground_ratio.map_or("-".into(), |r| format!("{r:.3}"))
        )?;
    }
    Ok(if any { md + "\n" } else { String::new() })
}
