//! `cargo xtask list`: the preset table.

use anyhow::Result;
use vt_backbones::PRESETS;

/// Every model preset with its MACs and parameters at 224x224 and its paper row.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_: Args) -> Result<()> {
    println!(
        "{:28} {:>9} {:>9}  paper row",
        "preset", "MMACs", "M params"
    );
    for p in PRESETS {
        let t = crate::flops::cost_of(p, 224)?.total();
        println!(
            "{:28} {:>9.1} {:>9.3}  {}",
            p.name,
            t.macs as f64 / 1e6,
            t.params as f64 / 1e6,
            p.paper_row
        );
    }
    Ok(())
}
