//! The reproduction report: `report.md`, `results.csv` and SVG plots, rendered from each
//! run's `metrics.json` and JSON-lines log as vt-run reads them, with every model's seeds
//! summarised (mean ± std) and every comparison the paper makes decided by the 95 % interval
//! of the paired difference (vt_run::stats).

use crate::plots::{self, DiffPoint, Marked};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vt_backbones::{preset, ClassifierPreset, Preset};
use vt_run::reproduce::{Level, ModelRuns, Suite};
use vt_run::stats::{PairedDifference, Summary, Verdict};
use vt_train::metrics::{TOP1, TOP5};

/// One classification model of the report: its seeds and the paper row it reproduces.
pub struct Row {
    pub m: ModelRuns,
    pub preset: &'static Preset,
    pub paper: &'static ClassifierPreset,
}

impl Row {
    pub fn new(m: ModelRuns) -> Result<Self> {
        let preset = preset(m.preset)?;
        Ok(Row {
            paper: preset.classifier()?,
            preset,
            m,
        })
    }

    fn top1(&self) -> Option<Summary> {
        self.m.summary(TOP1)
    }

    fn macs_m(&self) -> f64 {
        self.m.mean_of(|r| r.metrics.macs as f64) / 1e6
    }
}

/// `87.12 ± 0.35` (mean ± sample std over seeds), `-` when there is none.
pub fn mean_std(s: Option<Summary>) -> String {
    s.map_or("-".into(), |s| format!("{:.2} ± {:.2}", s.mean, s.std))
}

/// One comparison the paper makes: our paired difference against the paper's.
pub struct Comparison {
    /// The suite whose section lists it.
    pub suite: Suite,
    /// `vt_resnet18 − resnet18`.
    pub label: String,
    /// The paper's table row.
    pub paper_row: String,
    pub metric: &'static str,
    pub ours: Option<PairedDifference>,
    pub paper: f64,
    /// A sentence on cost (MACs) beside the accuracy.
    pub note: String,
}

impl Comparison {
    pub fn verdict(&self) -> Option<Verdict> {
        self.ours.map(|d| d.verdict(self.paper))
    }

    fn interval(&self) -> String {
        self.ours.map_or("one seed: no interval".into(), |d| {
            format!("{:+.2} [{:+.2}, {:+.2}]", d.mean, d.low, d.high)
        })
    }

    pub fn line(&self) -> String {
        format!(
            "- {} ({}): {} {} points, 95 % interval over {} paired seeds (paper {:+.1}) — **{}**{}.",
            self.label,
            self.paper_row,
            self.metric,
            self.interval(),
            self.ours.map_or(1, |d| d.n),
            self.paper,
            self.verdict().map_or("cannot tell".into(), |v| v.to_string()),
            self.note
        )
    }

    fn point(&self) -> DiffPoint {
        DiffPoint {
            label: self.label.clone(),
            ours: self.ours.map(|d| (d.mean, d.low, d.high)),
            paper: self.paper,
        }
    }
}

fn find<'a>(rows: &'a [Row], suite: Suite, name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.m.suite == suite && r.m.name == name)
}

/// VT-ResNet against ResNet at each depth (and recipe), each ablation against the default.
fn comparisons(rows: &[Row]) -> Vec<Comparison> {
    let mut out = vec![];
    let compare = |a: &Row, b: &Row, paper_row: String, note: String| Comparison {
        suite: a.m.suite,
        label: format!("{} − {}", a.m.name, b.m.name),
        paper_row,
        metric: "top-1",
        ours: a.m.paired(&b.m, TOP1),
        paper: a.paper.paper_top1 - b.paper.paper_top1,
        note,
    };
    for vt in rows
        .iter()
        .filter(|r| r.m.suite == Suite::Classification && r.m.name.starts_with("vt_"))
    {
        let Some(base) = find(rows, Suite::Classification, &vt.m.name["vt_".len()..]) else {
            continue;
        };
        let (ours, paper) = (
            vt.macs_m() / base.macs_m(),
            vt.paper.paper_macs_m / base.paper.paper_macs_m,
        );
        let note = format!(
            "; MACs ×{ours:.2} of the ResNet (paper ×{paper:.2}){}",
            if ours < 1.0 {
                ""
            } else {
                ": at this input size the VT stage does not save MACs"
            }
        );
        out.push(compare(vt, base, vt.preset.paper_row.into(), note));
    }
    if let Some(d) = find(rows, Suite::Ablation, "vt_resnet18") {
        for r in rows
            .iter()
            .filter(|r| r.m.suite == Suite::Ablation && r.m.name != "vt_resnet18")
        {
            let note = format!("; MACs ×{:.2} of the default", r.macs_m() / d.macs_m());
            out.push(compare(r, d, r.preset.paper_row.into(), note));
        }
    }
    out
}

/// What a report is written from.
pub struct Inputs<'a> {
    pub rows: &'a [Row],
    /// The segmentation section's comparisons, for the conclusions and the plot.
    pub seg_comparisons: &'a [Comparison],
    /// The segmentation and token sections, markdown.
    pub sections: &'a str,
    pub level: Level,
    pub seeds: usize,
    pub recipe_notes: &'a [String],
}

/// What the level can and cannot decide, in the report's words.
fn scope(level: Level) -> &'static str {
    match level {
        Level::Smoke => "The `smoke` preset checks the pipeline: a few hundred images, one epoch, two seeds. Its numbers decide nothing about the paper.",
        Level::Cpu => "The `cpu` preset runs the paper's geometry scaled down (56 px, width 1/4, small stem: VT sees 14 x 14 maps and costs fewer MACs than its ResNet) on Fashion-MNIST within an hour on 2 cores. It spends most of its budget on the main claim, VT-ResNet-18 against ResNet-18; depth 34, the ablations and segmentation get small budgets, so their intervals are wide and most of the paper's effects (0.3-3 points) fall inside them.",
        Level::Long => "The `long` preset is the `cpu` geometry with overnight budgets: the full training set for the main claim, 15,000 images for depth 34 and the ablations, 800 mosaics at 256 px for segmentation.",
        Level::Paper => "The `paper` preset trains on ImageNet at 224 px with the paper's recipes (and LIP or COCO-stuff for segmentation): the paper's own scale, so our values can be set beside the paper's, not only the directions.",
    }
}

fn conclusions(md: &mut String, all: &[&Comparison]) -> Result<()> {
    writeln!(md, "## Conclusions\n")?;
    let pick = |f: &dyn Fn(Option<Verdict>) -> bool| -> Vec<String> {
        all.iter()
            .filter(|c| f(c.verdict()))
            .map(|c| format!("{} ({}, interval {})", c.label, c.paper_row, c.interval()))
            .collect()
    };
    let groups = [
        ("Confirmed (the interval excludes 0 on the paper's side)", pick(&|v| v == Some(Verdict::SameDirection))),
        ("Contradicted (the interval excludes 0 on the other side, or shows an effect the paper does not report)", pick(&|v| matches!(v, Some(Verdict::Opposite | Verdict::EffectThePaperLacks)))),
        ("Not decided at this scale (the interval contains 0, or one seed gives none)", pick(&|v| matches!(v, None | Some(Verdict::WithinNoise)))),
    ];
    for (title, items) in groups {
        writeln!(
            md,
            "**{title}:** {}\n",
            if items.is_empty() {
                "none.".to_string()
            } else {
                items.join("; ") + "."
            }
        )?;
    }
    Ok(())
}

/// Writes `results.csv`, the plots and `report.md` (with the segmentation and token sections
/// after the ablations).
pub fn write(out: &Path, inp: &Inputs) -> Result<PathBuf> {
    let rows = inp.rows;
    let mut md = format!(
        "# vt reproduction report (preset `{}`)\n\n{}\n\n",
        inp.level.name(),
        scope(inp.level)
    );
    writeln!(md, "Every model is trained with the same {} seeds (seed k: the same training subset, order and augmentation draws for every model; its own initialisation). Tables give mean ± sample standard deviation over seeds; each comparison is the mean of the per-seed differences with its 95 % Student-t interval, and its verdict comes from the interval: \"same direction as the paper\" or \"opposite\" when it excludes 0, \"within noise\" when it contains 0.\n", inp.seeds)?;
    for note in inp.recipe_notes {
        writeln!(md, "{note}\n")?;
    }
    let mut csv = String::from("suite,run,preset,seed,paper_row,top1,top5,loss,macs,params,train_images_per_sec,epochs,train_samples,steps,paper_top1,paper_macs_m,paper_params_m\n");
    for r in rows {
        for (seed, run) in r.m.seeds.iter().zip(&r.m.runs) {
            let m = &run.metrics;
            writeln!(
                csv,
                "{},{},{},{seed},\"{}\",{:.4},{:.4},{:.5},{},{},{:.1},{},{},{},{},{},{}",
                r.m.suite.name(),
                r.m.name,
                r.preset.name,
                r.preset.paper_row,
                m.scalar(TOP1).unwrap_or(f64::NAN),
                m.scalar(TOP5).unwrap_or(f64::NAN),
                m.loss,
                m.macs,
                m.params,
                m.images_per_sec,
                m.epochs,
                m.train_samples,
                m.steps,
                r.paper.paper_top1,
                r.paper.paper_macs_m,
                r.paper.paper_params_m
            )?;
        }
    }
    if !rows.is_empty() {
        std::fs::write(out.join("results.csv"), csv)?;
    }
    let comps = comparisons(rows);
    for suite in [Suite::Classification, Suite::Ablation] {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.m.suite == suite).collect();
        let Some(first) = rs.first() else { continue };
        let m0 = &first.m.runs[0].metrics;
        let (title, table) = match suite {
            Suite::Classification => ("## Classification (Tables 2 / 8)", "| model | top-1 % | top-5 % | MMACs | M params | train img/s | paper top-1 % | paper MMACs | paper M params |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"),
            _ => ("## Ablations on VT-ResNet-18 (Tables 3-7)", "| paper row | run | top-1 % | MMACs | M params | train img/s | paper top-1 % | paper MMACs | paper M params |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"),
        };
        writeln!(md, "{title}\n\nData: {} — {} training images per epoch, {} epoch(s), {} test images; {} seeds per model. MACs and parameters are ours at the input size trained on; the paper's are at 224 px on ImageNet (1000 classes).\n\n{table}", m0.data_source, m0.train_samples, m0.epochs, m0.test_samples, first.m.runs.len())?;
        for r in &rs {
            let first_cols = match suite {
                Suite::Classification => format!(
                    "| {} | {} | {} ",
                    r.m.name,
                    mean_std(r.top1()),
                    mean_std(r.m.summary(TOP5))
                ),
                _ => format!(
                    "| {} | {} | {} ",
                    r.preset.paper_row,
                    r.m.name,
                    mean_std(r.top1())
                ),
            };
            writeln!(
                md,
                "{first_cols}| {:.1} | {:.3} | {:.0} | {} | {:.0} | {} |",
                r.macs_m(),
                r.m.mean_of(|x| x.metrics.params as f64) / 1e6,
                r.m.mean_of(|x| x.metrics.images_per_sec),
                r.paper.paper_top1,
                r.paper.paper_macs_m,
                r.paper.paper_params_m
            )?;
        }
        md.push('\n');
        for c in comps.iter().filter(|c| c.suite == suite) {
            writeln!(md, "{}", c.line())?;
        }
        md.push('\n');
        let name = suite.name();
        let loss: Vec<_> = rs
            .iter()
            .map(|r| (r.m.name.clone(), r.m.band(|x| smoothed_loss(x, 20))))
            .collect();
        plots::band_chart(
            &out.join(format!("{name}_loss.svg")),
            &format!("{name}: training loss (mean ± std over seeds)"),
            "step",
            "loss (moving average)",
            &loss,
        )?;
        let acc: Vec<_> = rs
            .iter()
            .map(|r| (r.m.name.clone(), r.m.band(|x| x.curve(TOP1))))
            .collect();
        plots::band_chart(
            &out.join(format!("{name}_top1.svg")),
            &format!("{name}: test top-1 per epoch (mean ± std over seeds)"),
            "epoch",
            "top-1 %",
            &acc,
        )?;
    }
    let cls: Vec<&Row> = rows
        .iter()
        .filter(|r| r.m.suite == Suite::Classification)
        .collect();
    if !cls.is_empty() {
        let ours: Vec<Marked> = cls
            .iter()
            .filter_map(|r| {
                let s = r.top1()?;
                Some((
                    r.m.name.clone(),
                    r.macs_m(),
                    s.mean,
                    s.mean - s.std,
                    s.mean + s.std,
                ))
            })
            .collect();
        let paper: Vec<Marked> = cls
            .iter()
            .map(|r| {
                let p = r.paper.paper_top1;
                (r.m.name.clone(), r.paper.paper_macs_m, p, p, p)
            })
            .collect();
        plots::accuracy_vs_macs(&out.join("accuracy_vs_macs.svg"), &ours, &paper)?;
    }
    let all: Vec<&Comparison> = comps.iter().chain(inp.seg_comparisons).collect();
    if !all.is_empty() {
        let points: Vec<DiffPoint> = all.iter().map(|c| c.point()).collect();
        plots::paired_differences(
            &out.join("paired_differences.svg"),
            "paired differences: ours (95 % interval) and the paper's",
            &points,
        )?;
    }
    md.push_str(inp.sections);
    if !all.is_empty() {
        conclusions(&mut md, &all)?;
        if inp.level != Level::Paper {
            writeln!(md, "**Not testable at this scale at all:** absolute ImageNet accuracy, and the advanced recipe of Table 8 (it runs only in `paper`).\n")?;
        }
        writeln!(md, "MACs are counted, not measured: fewer MACs need not mean a faster step on this hardware (compare the img/s columns).\n")?;
    }
    writeln!(md, "## Plots\n")?;
    for (f, t) in [
        (
            "paired_differences.svg",
            "paired differences with 95 % intervals",
        ),
        (
            "accuracy_vs_macs.svg",
            "top-1 vs MACs: ours and the paper's",
        ),
        ("classification_loss.svg", "classification: training loss"),
        (
            "classification_top1.svg",
            "classification: test top-1 per epoch",
        ),
        ("ablation_loss.svg", "ablation: training loss"),
        ("ablation_top1.svg", "ablation: test top-1 per epoch"),
    ] {
        if out.join(f).exists() {
            writeln!(md, "![{t}]({f})\n")?;
        }
    }
    write_md(out, md)
}

/// `(step, loss)` as a moving average over `w` steps.
pub fn smoothed_loss(r: &vt_run::RunResult, w: usize) -> Vec<(f64, f64)> {
    let l: Vec<(f64, f64)> = r.train_loss.iter().map(|&(s, l)| (s as f64, l)).collect();
    plots::smooth(&l, w)
}

/// Writes `report.md` atomically.
fn write_md(out: &Path, md: String) -> Result<PathBuf> {
    let path = out.join("report.md");
    let tmp = out.join("report.md.tmp");
    std::fs::write(&tmp, md)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
