//! The reproduction report: `report.md`, `results.csv` and SVG plots, all rendered from each
//! run's `metrics.json` and JSON-lines log (the runs' single record), as vt-run reads them.

use crate::run::{RunMetrics, RunResult};
use anyhow::Result;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use vt_backbones::{preset, ClassifierPreset, Preset};
use vt_train::metrics::{TOP1, TOP5};

/// One run of the report: a finished run (read by vt-run) and the paper row it reproduces.
pub struct Row {
    pub name: String,
    pub suite: &'static str,
    pub preset: &'static Preset,
    /// The paper's figures for the preset.
    pub paper: &'static ClassifierPreset,
    pub result: RunResult,
}

impl Row {
    pub fn new(
        name: &str,
        suite: &'static str,
        preset_name: &str,
        result: RunResult,
    ) -> Result<Self> {
        let preset = preset(preset_name)?;
        Ok(Row {
            name: name.into(),
            suite,
            preset,
            paper: preset.classifier()?,
            result,
        })
    }

    fn metrics(&self) -> &RunMetrics {
        &self.result.metrics
    }

    /// Test top-1 (NaN, printed as such, if the run did not report it).
    fn top1(&self) -> f64 {
        self.metrics().scalar(TOP1).unwrap_or(f64::NAN)
    }

    fn top5(&self) -> f64 {
        self.metrics().scalar(TOP5).unwrap_or(f64::NAN)
    }

    /// (step, training loss)
    fn loss_curve(&self) -> Vec<(f64, f64)> {
        self.result
            .train_loss
            .iter()
            .map(|&(s, l)| (s as f64, l))
            .collect()
    }
}

pub(crate) fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let pts = series.iter().flat_map(|(_, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-3);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (i, (name, s)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 15, y)], color.stroke_width(2))
            });
        chart
            .draw_series(s.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

/// Moving average over `w` points, so step losses read as curves.
pub(crate) fn smooth(s: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    (0..s.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let win = &s[lo..=i];
            (
                s[i].0,
                win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64,
            )
        })
        .collect()
}

fn pct(x: f64) -> String {
    format!("{x:.2}")
}

fn find<'a>(rs: &'a [Row], suite: &str, name: &str) -> Option<&'a Row> {
    rs.iter().find(|r| r.suite == suite && r.name == name)
}

/// The generated "what matches the paper" paragraph: signs of our differences against the
/// paper's, one line per comparison.
fn verdicts(results: &[Row]) -> Vec<String> {
    let mut out = vec![];
    for (vt, base) in [("vt_resnet18", "resnet18"), ("vt_resnet34", "resnet34")] {
        if let (Some(v), Some(b)) = (
            find(results, "classification", vt),
            find(results, "classification", base),
        ) {
            let ours = v.top1() - b.top1();
            let paper = v.paper.paper_top1 - b.paper.paper_top1;
            let macs = v.metrics().macs as f64 / b.metrics().macs as f64;
            let paper_macs = v.paper.paper_macs_m / b.paper.paper_macs_m;
            out.push(format!(
                "- {vt} vs {base}: top-1 {ours:+.2} points (paper {paper:+.1}) — {}; MACs ×{macs:.2} of the ResNet (paper ×{paper_macs:.2} at 224 px){}.",
                if ours > 0.0 { "same direction as the paper" } else { "does **not** reproduce the paper's gain" },
                if macs < 1.0 { "" } else { "; at this input size the VT stage does not save MACs" }
            ));
        }
    }
    if let Some(d) = find(results, "ablation", "vt_resnet18") {
        for r in results
            .iter()
            .filter(|r| r.suite == "ablation" && r.name != "vt_resnet18")
        {
            let ours = r.top1() - d.top1();
            let paper = r.paper.paper_top1 - d.paper.paper_top1;
            let verdict = if paper.abs() < 0.5 {
                if ours.abs() < 1.0 {
                    "no clear effect, as in the paper"
                } else {
                    "the paper shows no clear effect"
                }
            } else if ours.signum() == paper.signum() {
                "same direction as the paper"
            } else {
                "opposite to the paper"
            };
            out.push(format!(
                "- {} ({}): {ours:+.2} points vs the default (paper {paper:+.1}) — {verdict}.",
                r.name, r.preset.paper_row
            ));
        }
    }
    out
}

/// Writes `results.csv`, the classification plots and `report.md` (with `sections`, the
/// segmentation and token sections in markdown, after the ablations).
pub fn write(
    out: &Path,
    results: &[Row],
    sections: &str,
    level: &str,
    recipe_notes: &[String],
) -> Result<PathBuf> {
    // results.csv
    if results.is_empty() {
        return write_md(
            out,
            format!("# vt reproduction report (preset `{level}`)\n\n{sections}"),
        );
    }
    let mut csv = String::from("suite,run,preset,paper_row,top1,top5,loss,macs,params,train_images_per_sec,epochs,steps,paper_top1,paper_macs_m,paper_params_m\n");
    for r in results {
        let m = r.metrics();
        writeln!(
            csv,
            "{},{},{},\"{}\",{:.4},{:.4},{:.5},{},{},{:.1},{},{},{},{},{}",
            r.suite,
            r.name,
            r.preset.name,
            r.preset.paper_row,
            r.top1(),
            r.top5(),
            m.loss,
            m.macs,
            m.params,
            m.images_per_sec,
            m.epochs,
            m.steps,
            r.paper.paper_top1,
            r.paper.paper_macs_m,
            r.paper.paper_params_m
        )?;
    }
    std::fs::write(out.join("results.csv"), csv)?;

    // plots
    for suite in ["classification", "ablation"] {
        let rs: Vec<&Row> = results.iter().filter(|r| r.suite == suite).collect();
        if rs.is_empty() {
            continue;
        }
        let loss: Vec<_> = rs
            .iter()
            .map(|r| (r.name.clone(), smooth(&r.loss_curve(), 20)))
            .collect();
        line_chart(
            &out.join(format!("{suite}_loss.svg")),
            &format!("{suite}: training loss"),
            "step",
            "loss (moving average)",
            &loss,
        )?;
        let acc: Vec<_> = rs
            .iter()
            .map(|r| (r.name.clone(), r.result.curve(TOP1)))
            .collect();
        line_chart(
            &out.join(format!("{suite}_top1.svg")),
            &format!("{suite}: test top-1"),
            "epoch",
            "top-1 %",
            &acc,
        )?;
    }
    let cls: Vec<&Row> = results
        .iter()
        .filter(|r| r.suite == "classification")
        .collect();
    if !cls.is_empty() {
        let ours: Vec<(f64, f64)> = cls
            .iter()
            .map(|r| (r.metrics().macs as f64 / 1e6, r.top1()))
            .collect();
        let paper: Vec<(f64, f64)> = cls
            .iter()
            .map(|r| (r.paper.paper_macs_m, r.paper.paper_top1))
            .collect();
        let mut series = vec![];
        for (label, pts) in [
            ("ours (this input size)", ours),
            ("paper (ImageNet 224 px)", paper),
        ] {
            let mut pts = pts;
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push((label.to_string(), pts));
        }
        line_chart(
            &out.join("accuracy_vs_macs.svg"),
            "top-1 vs MACs",
            "MMACs",
            "top-1 %",
            &series,
        )?;
    }

    // report.md
    let mut md = format!("# vt reproduction report (preset `{level}`)\n\n");
    if let Some(r) = results.first() {
        let m = r.metrics();
        writeln!(md, "Data: {} — {} training samples seen per epoch, {} test samples; {} epochs per run. One recipe, one seed, for every run.\n", m.data_source, m.train_samples, m.test_samples, m.epochs)?;
        for note in recipe_notes {
            writeln!(md, "{note}\n")?;
        }
        writeln!(md, "MACs and parameters are ours at the input size trained on; the paper's are at 224 px ImageNet (1000 classes). Top-1 of the paper is ImageNet; ours is the data above, so compare directions, not values.\n")?;
    }
    if !cls.is_empty() {
        writeln!(md, "## Classification (Tables 2 / 8)\n\n| model | top-1 % | top-5 % | test loss | MMACs | M params | train img/s | paper top-1 % | paper MMACs | paper M params |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &cls {
            let m = r.metrics();
            writeln!(
                md,
                "| {} | {} | {} | {:.4} | {:.1} | {:.3} | {:.0} | {} | {:.0} | {} |",
                r.name,
                pct(r.top1()),
                pct(r.top5()),
                m.loss,
                m.macs as f64 / 1e6,
                m.params as f64 / 1e6,
                m.images_per_sec,
                r.paper.paper_top1,
                r.paper.paper_macs_m,
                r.paper.paper_params_m
            )?;
        }
        md.push('\n');
    }
    let abl: Vec<&Row> = results.iter().filter(|r| r.suite == "ablation").collect();
    if !abl.is_empty() {
        let base = find(results, "ablation", "vt_resnet18");
        writeln!(md, "## Ablations on VT-ResNet-18 (Tables 3-7)\n\n| paper row | run | top-1 % | Δ vs default | paper top-1 % | paper Δ | MMACs | M params | paper MMACs | paper M params |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for r in &abl {
            let m = r.metrics();
            let (d, pd) = match base {
                Some(b) => (
                    format!("{:+.2}", r.top1() - b.top1()),
                    format!("{:+.1}", r.paper.paper_top1 - b.paper.paper_top1),
                ),
                None => ("-".into(), "-".into()),
            };
            writeln!(
                md,
                "| {} | {} | {} | {d} | {} | {pd} | {:.1} | {:.3} | {:.0} | {} |",
                r.preset.paper_row,
                r.name,
                pct(r.top1()),
                r.paper.paper_top1,
                m.macs as f64 / 1e6,
                m.params as f64 / 1e6,
                r.paper.paper_macs_m,
                r.paper.paper_params_m
            )?;
        }
        md.push('\n');
    }
    md.push_str(sections);
    if !results.is_empty() {
        writeln!(md, "## What matches the paper and what doesn't\n")?;
        for v in verdicts(results) {
            writeln!(md, "{v}")?;
        }
    }
    writeln!(md, "\nEvery comparison above is a single seed at a small budget; differences of about one point are within run-to-run noise.\n")?;
    writeln!(md, "## Plots\n")?;
    for (f, t) in [
        (
            "classification_top1.svg",
            "classification: test top-1 per epoch",
        ),
        ("classification_loss.svg", "classification: training loss"),
        ("accuracy_vs_macs.svg", "top-1 vs MACs"),
        ("ablation_top1.svg", "ablation: test top-1 per epoch"),
        ("ablation_loss.svg", "ablation: training loss"),
    ] {
        if out.join(f).exists() {
            writeln!(md, "![{t}]({f})\n")?;
        }
    }
    write_md(out, md)
}

/// Writes `report.md` atomically.
fn write_md(out: &Path, md: String) -> Result<PathBuf> {
    let path = out.join("report.md");
    let tmp = out.join("report.md.tmp");
    std::fs::write(&tmp, md)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
