//! `cargo xtask list`: the preset table.

use anyhow::Result;
use vt_backbones::PRESETS;

/// Every model preset with its task, its MACs and parameters at the paper's first input size
/// (224x224 for classifiers, 800x1216 for segmenters) and its paper row.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> Result<()> {
    println!(
        "{:28} {:14} {:>9} {:>10} {:>9}  paper row",
        "preset", "task", "input", "MMACs", "M params"
    );
    for p in PRESETS {
        let input = crate::flops::paper_inputs(p)[0];
        let t = crate::flops::cost_of(p, input)?.total();
        println!(
            "{:28} {:14} {:>9} {:>10.1} {:>9.3}  {}",
            p.name,
            format!("{:?}", p.task()).to_lowercase(),
            format!("{}x{}", input.0, input.1),
            t.macs as f64 / 1e6,
            t.params as f64 / 1e6,
            p.paper_row
        );
    }
    Ok(())
}
