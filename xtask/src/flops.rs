//! `cargo xtask flops`: MACs and parameters per stage of every preset, beside the paper.

use anyhow::Result;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Serialize;
use vt_backbones::{preset, Preset, PresetKind, ResNet, SemanticFpn, Task, PRESETS};
use vt_ops::CostBreakdown;

/// MACs and parameters (conv/linear/matmul; BN excluded) per stage and in total, next to the
/// paper's Tables 2, 8 and 3-7 (classifiers, at 224x224) and Tables 9/10 (segmenters, at
/// 800x1216 and 473x473, with the neck's MACs), with the relative error.
#[derive(clap::Args)]
pub struct Args {
    /// One preset (default: all); its per-stage breakdown is printed.
    #[arg(long)]
    model: Option<String>,
    /// Square input side in pixels (default: the paper's sizes, 224 for classifiers and
    /// 800x1216 / 473x473 for segmenters).
    #[arg(long)]
    image_size: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub struct Row {
    pub model: &'static str,
    pub task: Task,
    pub paper_row: &'static str,
    /// `[H, W]`
    pub input: [usize; 2],
    pub macs: u64,
    pub params: u64,
    /// MACs of the segmentation neck (FPN or VT-FPN): what Tables 9/10 call FPN FLOPs.
    pub neck_macs: Option<u64>,
    pub paper_macs: Option<f64>,
    pub paper_params: Option<f64>,
    pub paper_neck_macs: Option<f64>,
    /// The reference counter's neck MACs (`vt_counter.py`), which ours reproduce.
    pub reference_neck_macs: Option<f64>,
    pub macs_rel_err: Option<f64>,
    pub params_rel_err: Option<f64>,
    pub neck_rel_err: Option<f64>,
    pub mismatch: Option<&'static str>,
    pub stages: CostBreakdown,
}

/// Cost of a preset's model at an `h × w` input, without allocating random weights.
pub fn cost_of(p: &Preset, (h, w): (usize, usize)) -> Result<CostBreakdown> {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    Ok(match &p.kind {
        PresetKind::Classifier(c) => ResNet::new(&(c.config)(), vb)?.cost(h, w),
        PresetKind::Segmenter(s) => SemanticFpn::new(&(s.config)(), vb)?.cost(h, w),
    })
}

/// The input sizes a preset is quoted at in the paper.
pub fn paper_inputs(p: &Preset) -> Vec<(usize, usize)> {
    match &p.kind {
        PresetKind::Classifier(_) => vec![(224, 224)],
        PresetKind::Segmenter(s) => s.rows.iter().map(|r| r.input).collect(),
    }
}

pub fn row(p: &'static Preset, input: (usize, usize)) -> Result<Row> {
    let stages = cost_of(p, input)?;
    let t = stages.total();
    let neck_macs = stages.get("neck").map(|c| c.macs);
    let (mut paper_macs, mut paper_params, mut paper_neck, mut reference_neck) =
        (None, None, None, None);
    match &p.kind {
        PresetKind::Classifier(c) if input == (224, 224) => {
            paper_macs = Some(c.paper_macs_m * 1e6);
            paper_params = Some(c.paper_params_m * 1e6);
        }
        PresetKind::Segmenter(s) => {
            if let Some(r) = s.rows.iter().find(|r| r.input == input) {
                paper_macs = Some(r.total_gmacs * 1e9);
                paper_neck = Some(r.neck_gmacs * 1e9);
                reference_neck = Some(r.reference_neck_gmacs * 1e9);
            }
        }
        _ => {}
    }
    let rel = |ours: Option<u64>, theirs: Option<f64>| Some(ours? as f64 / theirs? - 1.0);
    Ok(Row {
        model: p.name,
        task: p.task(),
        paper_row: p.paper_row,
        input: [input.0, input.1],
        macs: t.macs,
        params: t.params,
        neck_macs,
        paper_macs,
        paper_params,
        paper_neck_macs: paper_neck,
        reference_neck_macs: reference_neck,
        macs_rel_err: rel(Some(t.macs), paper_macs),
        params_rel_err: rel(Some(t.params), paper_params),
        neck_rel_err: rel(neck_macs, paper_neck),
        mismatch: p.mismatch,
        stages,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:+.2}%", v * 100.0))
}

fn giga(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.2}", v / 1e9))
}

pub fn run(args: Args) -> Result<()> {
    let presets: Vec<&'static Preset> = match &args.model {
        Some(name) => vec![preset(name)?],
        None => PRESETS.iter().collect(),
    };
    let mut rows = Vec::new();
    for p in presets {
        let inputs = match args.image_size {
            Some(s) => {
                p.check_input(s, s)
                    .map_err(|e| anyhow::anyhow!("--image-size {s}: {e}"))?;
                vec![(s, s)]
            }
            None => paper_inputs(p),
        };
        for input in inputs {
            rows.push(row(p, input)?);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let (cls, seg): (Vec<&Row>, Vec<&Row>) =
        rows.iter().partition(|r| r.task == Task::Classification);
    println!("MACs and params at batch 1 (BN and GN parameters excluded, as the paper counts)\n");
    if !cls.is_empty() {
        println!(
            "| model | paper row | input | MMACs | paper | error | M params | paper | error | note |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|"
        );
        for r in &cls {
            println!(
                "| {} | {} | {}x{} | {:.1} | {} | {} | {:.3} | {} | {} | {} |",
                r.model,
                r.paper_row,
                r.input[0],
                r.input[1],
                r.macs as f64 / 1e6,
                r.paper_macs
                    .map_or("-".into(), |m| format!("{:.0}", m / 1e6)),
                pct(r.macs_rel_err),
                r.params as f64 / 1e6,
                r.paper_params
                    .map_or("-".into(), |m| format!("{:.1}", m / 1e6)),
                pct(r.params_rel_err),
                r.mismatch
                    .map_or(String::new(), |m| format!("known mismatch: {m}")),
            );
        }
    }
    if !seg.is_empty() {
        println!(
            "\n| model | input | neck GMACs | paper (Tables 9/10) | reference counter | error vs paper | total GMACs | paper | error | M params |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &seg {
            println!(
                "| {} | {}x{} | {} | {} | {} | {} | {:.2} | {} | {} | {:.2} |",
                r.model,
                r.input[0],
                r.input[1],
                giga(r.neck_macs.map(|m| m as f64)),
                giga(r.paper_neck_macs),
                giga(r.reference_neck_macs),
                pct(r.neck_rel_err),
                r.macs as f64 / 1e9,
                giga(r.paper_macs),
                pct(r.macs_rel_err),
                r.params as f64 / 1e6,
            );
        }
        if let Some(m) = seg.iter().find_map(|r| r.mismatch) {
            println!("\nKnown mismatch of the totals: {m}.");
        }
    }
    if let [r] = rows.as_slice() {
        println!("\n| stage | MMACs | M params |\n|---|---:|---:|");
        for (name, c) in &r.stages.parts {
            println!(
                "| {name} | {:.2} | {:.4} |",
                c.macs as f64 / 1e6,
                c.params as f64 / 1e6
            );
        }
    }
    Ok(())
}
