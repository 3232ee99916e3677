//! The segmentation section of the reproduction report (Tables 9/10): FPN against VT-FPN, the
//! curves, per-class IoU and PNG overlays of predictions, rendered from each run's files.

use crate::report::{line_chart, smooth};
use crate::run::{saved_config, write_overlay, RunResult, Segmentation};
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vt_backbones::{preset, Preset, SegmenterPreset, SemanticFpn};
use vt_train::metrics::{MIOU, PER_CLASS_IOU, PIXEL_ACC};

/// Validation images drawn as overlays per run.
const OVERLAYS: usize = 3;

/// One segmentation run of the report.
pub struct SegRow {
    pub name: String,
    pub preset: &'static Preset,
    pub paper: &'static SegmenterPreset,
    pub result: RunResult,
    pub dir: PathBuf,
    /// Neck and total MACs at the run's input size.
    pub neck_macs: u64,
    pub input: usize,
}

impl SegRow {
    pub fn new(name: &str, preset_name: &str, dir: &Path, result: RunResult) -> Result<Self> {
        let preset = preset(preset_name)?;
        let cfg = saved_config(dir)?;
        let s = cfg.data.image_size;
        let model = SemanticFpn::new(
            &cfg.model.segmentation_config()?,
            VarBuilder::zeros(DType::F32, &Device::Cpu),
        )?;
        Ok(SegRow {
            name: name.into(),
            preset,
            paper: preset.segmenter()?,
            result,
            dir: dir.to_path_buf(),
            neck_macs: model.neck_cost(s, s).macs,
            input: s,
        })
    }

    fn scalar(&self, name: &str) -> f64 {
        self.result.metrics.scalar(name).unwrap_or(f64::NAN)
    }

    fn is_vt(&self) -> bool {
        self.preset.name.starts_with("vt_")
    }
}

/// Writes `segmentation.csv`, `segmentation_miou.svg`, `segmentation_loss.svg` and
/// `overlays/*.png` into `out`; returns the report's markdown section.
pub fn section(out: &Path, rows: &[SegRow], device: &Device) -> Result<String> {
    let mut md = String::new();
    if rows.is_empty() {
        return Ok(md);
    }
    let mut csv = String::from("run,preset,miou,pixel_acc,loss,neck_macs,macs,params,train_images_per_sec,epochs,input,paper_coco_miou,paper_lip_miou,paper_neck_gmacs_800x1216\n");
    for r in rows {
        let m = &r.result.metrics;
        writeln!(
            csv,
            "{},{},{:.4},{:.4},{:.5},{},{},{},{:.2},{},{},{},{},{}",
            r.name,
            r.preset.name,
            r.scalar(MIOU),
            r.scalar(PIXEL_ACC),
            m.loss,
            r.neck_macs,
            m.macs,
            m.params,
            m.images_per_sec,
            m.epochs,
            r.input,
            r.paper.rows[0].miou,
            r.paper.rows[1].miou,
            r.paper.rows[0].neck_gmacs
        )?;
    }
    std::fs::write(out.join("segmentation.csv"), csv)?;
    let series = |f: &dyn Fn(&SegRow) -> Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        rows.iter().map(|r| (r.name.clone(), f(r))).collect()
    };
    line_chart(
        &out.join("segmentation_miou.svg"),
        "segmentation: test mIoU",
        "epoch",
        "mIoU %",
        &series(&|r| r.result.curve(MIOU)),
    )?;
    line_chart(
        &out.join("segmentation_loss.svg"),
        "segmentation: training loss",
        "step",
        "loss (moving average)",
        &series(&|r| {
            let l: Vec<(f64, f64)> = r
                .result
                .train_loss
                .iter()
                .map(|&(s, l)| (s as f64, l))
                .collect();
            smooth(&l, 10)
        }),
    )?;

    let m0 = &rows[0].result.metrics;
    writeln!(md, "## Segmentation (Tables 9 / 10)\n")?;
    writeln!(md, "Data: {} — {} training samples per epoch, {} test images; {} epochs per run, input {s}x{s} (MACs at that size). One recipe, one seed.\n", m0.data_source, m0.train_samples, m0.test_samples, m0.epochs, s = rows[0].input)?;
    writeln!(md, "| model | mIoU % | pixel acc % | test loss | neck GMACs | total GMACs | M params | train img/s | paper mIoU COCO-stuff / LIP | paper neck GMACs (800x1216 / 473x473) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        let m = &r.result.metrics;
        writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.4} | {:.3} | {:.3} | {:.3} | {:.1} | {} / {} | {} / {} |",
            r.name,
            r.scalar(MIOU),
            r.scalar(PIXEL_ACC),
            m.loss,
            r.neck_macs as f64 / 1e9,
            m.macs as f64 / 1e9,
            m.params as f64 / 1e6,
            m.images_per_sec,
            r.paper.rows[0].miou,
            r.paper.rows[1].miou,
            r.paper.rows[0].neck_gmacs,
            r.paper.rows[1].neck_gmacs
        )?;
    }
    md.push('\n');
    for v in verdicts(rows) {
        writeln!(md, "{v}")?;
    }
    md.push('\n');

    // each trained model, loaded once: the class names of its data, then its overlays
    let models = rows
        .iter()
        .map(|r| {
            Segmentation::load(&r.dir, device)
                .with_context(|| format!("cannot load {}", r.dir.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let seg = &models[0];
    let names = &seg.data.class_names;
    write!(
        md,
        "Per-class IoU % (– : class absent from the test ground truth)\n\n| class |"
    )?;
    for r in rows {
        write!(md, " {} |", r.name)?;
    }
    write!(md, "\n|---|{}\n", "---:|".repeat(rows.len()))?;
    for k in 0..seg.num_classes {
        let name = names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"));
        write!(md, "| {name} |")?;
        for r in rows {
            let v = r
                .result
                .metrics
                .per_class(PER_CLASS_IOU)
                .and_then(|p| p.get(k).copied().flatten());
            write!(md, " {} |", v.map_or("–".into(), |v| format!("{v:.2}")))?;
        }
        md.push('\n');
    }
    md.push('\n');

    // overlays: image | ground truth | prediction, for the first validation images
    let dir = out.join("overlays");
    std::fs::create_dir_all(&dir)?;
    writeln!(md, "Predictions on the first {OVERLAYS} test images (image | ground truth | prediction, VOC colours):\n")?;
    for (r, seg) in rows.iter().zip(&models) {
        for (i, p) in seg.predict_test(OVERLAYS)?.iter().enumerate() {
            let file = format!("overlays/{}_{i}.png", r.name);
            write_overlay(&out.join(&file), p)?;
            writeln!(md, "![{} test image {i}]({file})", r.name)?;
        }
        md.push('\n');
    }
    writeln!(md, "![segmentation: test mIoU per epoch](segmentation_miou.svg)\n\n![segmentation: training loss](segmentation_loss.svg)\n")?;
    Ok(md)
}

/// FPN against VT-FPN on the same trunk: mIoU, neck MACs and speed against the paper's.
fn verdicts(rows: &[SegRow]) -> Vec<String> {
    let mut out = vec![];
    for fpn in rows.iter().filter(|r| !r.is_vt()) {
        let Some(vt) = rows
            .iter()
            .find(|r| r.is_vt() && r.preset.name == format!("vt_{}", fpn.preset.name))
        else {
            continue;
        };
        let d = vt.scalar(MIOU) - fpn.scalar(MIOU);
        let (pc, pl) = (
            vt.paper.rows[0].miou - fpn.paper.rows[0].miou,
            vt.paper.rows[1].miou - fpn.paper.rows[1].miou,
        );
        let neck = fpn.neck_macs as f64 / vt.neck_macs as f64;
        let total = fpn.result.metrics.macs as f64 / vt.result.metrics.macs as f64;
        let speed = vt.result.metrics.images_per_sec / fpn.result.metrics.images_per_sec;
        out.push(format!(
            "- {} vs {}: mIoU {d:+.2} points (paper {pc:+.2} on COCO-stuff, {pl:+.2} on LIP) — {}.",
            vt.name,
            fpn.name,
            if d >= -0.5 {
                "equal or better, as the paper claims"
            } else {
                "VT-FPN is **worse** here, unlike the paper"
            }
        ));
        out.push(format!(
            "- Neck MACs: FPN / VT-FPN = {neck:.2}x at {s}x{s} (paper 6.48x at 800x1216, 6.40x at 473x473; the saving grows with the input); total MACs {total:.2}x (paper 1.41x); training images/s VT-FPN / FPN = {speed:.2}x.",
            s = fpn.input
        ));
    }
    out
}
