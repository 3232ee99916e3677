//! `cargo xtask flops`: MACs and parameters per stage of every preset, beside the paper.

use anyhow::Result;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Serialize;
use vt_backbones::{preset, Preset, ResNet, PRESETS};
use vt_ops::CostBreakdown;

/// MACs and parameters (conv/linear/matmul; BN excluded) per stage and in total, next to the
/// paper's Tables 2, 8 and 3-7 with the relative error.
#[derive(clap::Args)]
pub struct Args {
    /// One preset (default: all); its per-stage breakdown is printed.
    #[arg(long)]
    model: Option<String>,
    /// Input side in pixels (the paper's figures are at 224).
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
pub struct Row {
    pub model: &'static str,
    pub paper_row: &'static str,
    pub image_size: usize,
    pub macs: u64,
    pub params: u64,
    pub paper_macs: Option<f64>,
    pub paper_params: Option<f64>,
    pub macs_rel_err: Option<f64>,
    pub params_rel_err: Option<f64>,
    pub mismatch: Option<&'static str>,
    pub stages: CostBreakdown,
}

/// Cost of a preset without allocating random weights.
pub fn cost_of(p: &Preset, image_size: usize) -> Result<CostBreakdown> {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    Ok(ResNet::new(&(p.config)(), vb)?.cost(image_size, image_size))
}

pub fn row(p: &'static Preset, image_size: usize) -> Result<Row> {
    let stages = cost_of(p, image_size)?;
    let t = stages.total();
    let at_paper_size = image_size == 224;
    let paper_macs = at_paper_size.then_some(p.paper_macs_m * 1e6);
    let paper_params = at_paper_size.then_some(p.paper_params_m * 1e6);
    Ok(Row {
        model: p.name,
        paper_row: p.paper_row,
        image_size,
        macs: t.macs,
        params: t.params,
        paper_macs,
        paper_params,
        macs_rel_err: paper_macs.map(|m| t.macs as f64 / m - 1.0),
        params_rel_err: paper_params.map(|m| t.params as f64 / m - 1.0),
        mismatch: p.mismatch,
        stages,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:+.2}%", v * 100.0))
}

pub fn run(args: Args) -> Result<()> {
    let presets: Vec<&'static Preset> = match &args.model {
        Some(name) => vec![preset(name)?],
        None => PRESETS.iter().collect(),
    };
    let rows = presets
        .iter()
        .map(|p| row(p, args.image_size))
        .collect::<Result<Vec<_>>>()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "MACs and params at {0}x{0}, batch 1 (BN parameters excluded, as the paper counts)\n",
        args.image_size
    );
    println!(
        "| model | paper row | MMACs | paper | error | M params | paper | error | note |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {} | {} | {:.3} | {} | {} | {} |",
            r.model,
            r.paper_row,
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
