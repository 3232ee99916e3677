//! The segmentation section of the reproduction report (Tables 9/10): FPN against VT-FPN, the
//! curves, per-class IoU and PNG overlays of predictions, rendered from each run's files.

use crate::plots::band_chart;
use crate::report::{mean_std, smoothed_loss, Comparison};
use crate::run::{saved_config, write_overlay, Segmentation};
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use std::fmt::Write as _;
use std::path::Path;
use vt_backbones::{preset, Preset, SegmenterPreset, SemanticFpn};
use vt_run::reproduce::ModelRuns;
use vt_train::metrics::{MIOU, PER_CLASS_IOU, PIXEL_ACC};

/// Validation images drawn as overlays per run.
const OVERLAYS: usize = 3;

/// One segmentation model of the report over its seeds.
pub struct SegRow {
    pub m: ModelRuns,
    pub preset: &'static Preset,
    pub paper: &'static SegmenterPreset,
    /// Neck MACs at the run's input size.
    pub neck_macs: u64,
    pub input: usize,
}

impl SegRow {
    pub fn new(m: ModelRuns) -> Result<Self> {
        let preset = preset(m.preset)?;
        let cfg = saved_config(&m.dirs[0])?;
        let s = cfg.data.image_size;
        let model = SemanticFpn::new(
            &cfg.model.segmentation_config()?,
            VarBuilder::zeros(DType::F32, &Device::Cpu),
        )?;
        Ok(SegRow {
            preset,
            paper: preset.segmenter()?,
            neck_macs: model.neck_cost(s, s).macs,
            input: s,
            m,
        })
    }

    fn mean_of(&self, f: impl Fn(&vt_run::RunResult) -> f64) -> f64 {
        self.m.mean_of(f)
    }

    fn is_vt(&self) -> bool {
        self.preset.name.starts_with("vt_")
    }
}

/// Writes `segmentation.csv`, `segmentation_miou.svg`, `segmentation_loss.svg` and
/// `overlays/*.png` into `out`; returns the report's markdown section and the comparisons of
/// VT-FPN against FPN.
pub fn section(out: &Path, rows: &[SegRow], device: &Device) -> Result<(String, Vec<Comparison>)> {
    let mut md = String::new();
    if rows.is_empty() {
        return Ok((md, vec![]));
    }
    let mut csv = String::from("run,preset,seed,miou,pixel_acc,loss,neck_macs,macs,params,train_images_per_sec,epochs,input,paper_coco_miou,paper_lip_miou,paper_neck_gmacs_800x1216\n");
    for r in rows {
        for (seed, run) in r.m.seeds.iter().zip(&r.m.runs) {
            let m = &run.metrics;
            writeln!(
                csv,
                "{},{},{seed},{:.4},{:.4},{:.5},{},{},{},{:.2},{},{},{},{},{}",
                r.m.name,
                r.preset.name,
                m.scalar(MIOU).unwrap_or(f64::NAN),
                m.scalar(PIXEL_ACC).unwrap_or(f64::NAN),
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
    }
    std::fs::write(out.join("segmentation.csv"), csv)?;
    let miou: Vec<_> = rows
        .iter()
        .map(|r| (r.m.name.clone(), r.m.band(|x| x.curve(MIOU))))
        .collect();
    band_chart(
        &out.join("segmentation_miou.svg"),
        "segmentation: test mIoU (mean ± std over seeds)",
        "epoch",
        "mIoU %",
        &miou,
    )?;
    let loss: Vec<_> = rows
        .iter()
        .map(|r| (r.m.name.clone(), r.m.band(|x| smoothed_loss(x, 10))))
        .collect();
    band_chart(
        &out.join("segmentation_loss.svg"),
        "segmentation: training loss (mean ± std over seeds)",
        "step",
        "loss (moving average)",
        &loss,
    )?;

    let m0 = &rows[0].m.runs[0].metrics;
    writeln!(md, "## Segmentation (Tables 9 / 10)\n")?;
    writeln!(md, "Data: {} — {} training samples per epoch, {} test images; {} epochs per run, input {s}x{s} (MACs at that size); {} seeds per model, mean ± std.\n", m0.data_source, m0.train_samples, m0.test_samples, m0.epochs, rows[0].m.runs.len(), s = rows[0].input)?;
    writeln!(md, "| model | mIoU % | pixel acc % | neck GMACs | total GMACs | M params | train img/s | paper mIoU COCO-stuff / LIP | paper neck GMACs (800x1216 / 473x473) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in rows {
        writeln!(
            md,
            "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.1} | {} / {} | {} / {} |",
            r.m.name,
            mean_std(r.m.summary(MIOU)),
            mean_std(r.m.summary(PIXEL_ACC)),
            r.neck_macs as f64 / 1e9,
            r.mean_of(|x| x.metrics.macs as f64) / 1e9,
            r.mean_of(|x| x.metrics.params as f64) / 1e6,
            r.mean_of(|x| x.metrics.images_per_sec),
            r.paper.rows[0].miou,
            r.paper.rows[1].miou,
            r.paper.rows[0].neck_gmacs,
            r.paper.rows[1].neck_gmacs
        )?;
    }
    md.push('\n');
    let comparisons = comparisons(rows);
    for c in &comparisons {
        writeln!(md, "{}", c.line())?;
    }
    md.push('\n');

    // each trained model, loaded once: the class names of its data, then its overlays
    let models = rows
        .iter()
        .map(|r| {
            Segmentation::load(&r.m.dirs[0], device)
                .with_context(|| format!("cannot load {}", r.m.dirs[0].display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let seg = &models[0];
    let names = &seg.data.class_names;
    write!(
        md,
        "Per-class IoU %, mean over seeds (– : class absent from the test ground truth)\n\n| class |"
    )?;
    for r in rows {
        write!(md, " {} |", r.m.name)?;
    }
    write!(md, "\n|---|{}\n", "---:|".repeat(rows.len()))?;
    for k in 0..seg.num_classes {
        let name = names
            .get(k)
            .cloned()
            .unwrap_or_else(|| format!("class {k}"));
        write!(md, "| {name} |")?;
        for r in rows {
            let per_seed: Vec<f64> =
                r.m.runs
                    .iter()
                    .filter_map(|x| {
                        x.metrics
                            .per_class(PER_CLASS_IOU)?
                            .get(k)
                            .copied()
                            .flatten()
                    })
                    .collect();
            let v = (!per_seed.is_empty())
                .then(|| per_seed.iter().sum::<f64>() / per_seed.len() as f64);
            write!(md, " {} |", v.map_or("–".into(), |v| format!("{v:.2}")))?;
        }
        md.push('\n');
    }
    md.push('\n');

    // overlays: image | ground truth | prediction, for the first validation images
    let dir = out.join("overlays");
    std::fs::create_dir_all(&dir)?;
    writeln!(md, "Predictions of seed 0 on the first {OVERLAYS} test images (image | ground truth | prediction, VOC colours):\n")?;
    for (r, seg) in rows.iter().zip(&models) {
        for (i, p) in seg.predict_test(OVERLAYS)?.iter().enumerate() {
            let file = format!("overlays/{}_{i}.png", r.m.name);
            write_overlay(&out.join(&file), p)?;
            writeln!(md, "![{} test image {i}]({file})", r.m.name)?;
        }
        md.push('\n');
    }
    writeln!(md, "![segmentation: test mIoU per epoch](segmentation_miou.svg)\n\n![segmentation: training loss](segmentation_loss.svg)\n")?;
    Ok((md, comparisons))
}

/// VT-FPN against FPN on the same trunk: mIoU paired by seed against the paper's COCO-stuff
/// difference, with the neck and total MAC ratios and the speed ratio.
fn comparisons(rows: &[SegRow]) -> Vec<Comparison> {
    let mut out = vec![];
    for fpn in rows.iter().filter(|r| !r.is_vt()) {
        let Some(vt) = rows
            .iter()
            .find(|r| r.is_vt() && r.preset.name == format!("vt_{}", fpn.preset.name))
        else {
            continue;
        };
        let (pc, pl) = (
            vt.paper.rows[0].miou - fpn.paper.rows[0].miou,
            vt.paper.rows[1].miou - fpn.paper.rows[1].miou,
        );
        let neck = fpn.neck_macs as f64 / vt.neck_macs as f64;
        let macs = |r: &SegRow| r.mean_of(|x| x.metrics.macs as f64);
        let speed = |r: &SegRow| r.mean_of(|x| x.metrics.images_per_sec);
        out.push(Comparison {
            suite: vt_run::reproduce::Suite::Segmentation,
            label: format!("{} − {}", vt.m.name, fpn.m.name),
            paper_row: "Tables 9/10".into(),
            metric: "mIoU",
            ours: vt.m.paired(&fpn.m, MIOU),
            paper: pc,
            note: format!(
                " (paper {pl:+.2} on LIP). Neck MACs: FPN / VT-FPN = {neck:.2}x at {s}x{s} (paper 6.48x at 800x1216, 6.40x at 473x473; the saving grows with the input); total MACs {:.2}x (paper 1.41x); training images/s VT-FPN / FPN = {:.2}x",
                macs(fpn) / macs(vt),
                speed(vt) / speed(fpn),
                s = fpn.input
            ),
        });
    }
    out
}
