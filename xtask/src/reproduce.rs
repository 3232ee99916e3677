//! `cargo xtask reproduce`: the CLI over `vt_run::reproduce` (the planned runs, paired seeds)
//! and the report. Finished runs are skipped and interrupted ones resume, so rerunning after
//! Ctrl-C or a kill continues where it stopped.

use crate::report::{self, Row};
use crate::seg_report::SegRow;
use anyhow::Result;
use std::path::PathBuf;
use vt_run::reproduce::{execute, plan, recipe_notes, Level, ModelRuns, Request, Suite};

/// Rerun the paper's experiments: ResNet-18/34 vs VT-ResNet-18/34 (Tables 2/8), the
/// VT-ResNet-18 ablations of Tables 3-7, and FPN vs VT-FPN semantic segmentation on ResNet-50
/// (Tables 9/10), every model with the same seeds; writes <out>/<preset>/report.md (means,
/// paired 95 % intervals, verdicts, conclusions), results.csv, segmentation.csv, SVG plots and
/// PNG overlays of segmentation predictions.
#[derive(clap::Args)]
pub struct Args {
    /// classification, ablation, segmentation or all.
    #[arg(default_value = "all")]
    suite: Suite,
    /// smoke (checks the pipeline), cpu (Fashion-MNIST at 56 px on 2 cores), long (the cpu
    /// geometry, overnight budgets) or paper (ImageNet / LIP at the paper's scale, from --data).
    #[arg(long, default_value = "cpu")]
    preset: Level,
    /// Paired seeds per model (default: 2 for smoke, 3 otherwise); 2 or more give intervals.
    #[arg(long)]
    seeds: Option<usize>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Data directory (required for --preset paper). Default: Fashion-MNIST.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Segmentation data directory (LIP, COCO-stuff, VOC or segmentation folders; required
    /// for --preset paper). Default: Fashion-MNIST mosaics.
    #[arg(long)]
    seg_data: Option<PathBuf>,
    #[arg(long, default_value = "runs/reproduce")]
    out: PathBuf,
    #[command(flatten)]
    launch: crate::launch::Launch,
}

pub fn run(args: Args) -> Result<()> {
    let (launch, device) = (args.launch.clone(), args.device.clone());
    launch.run(&device, |device, group| reproduce(args, device, group))
}

fn reproduce(args: Args, device: &candle_core::Device, group: &vt_ops::Group) -> Result<()> {
    let out = args.out.join(args.preset.name());
    let req = Request {
        suite: args.suite,
        level: args.preset,
        seeds: args.seeds,
        data: args.data,
        seg_data: args.seg_data,
    };
    let runs = plan(&req)?;
    std::fs::create_dir_all(&out)?;
    let mut results = Vec::with_capacity(runs.len());
    for i in 0..runs.len() {
        results.push(execute(&runs, i, &out, device, group)?);
    }
    if !group.is_main() {
        return Ok(()); // rank 0 writes the report
    }
    let models = ModelRuns::group(&runs, results, &out);
    let (mut rows, mut seg_rows) = (vec![], vec![]);
    for m in models {
        match m.suite {
            Suite::Segmentation => seg_rows.push(SegRow::new(m)?),
            _ => rows.push(Row::new(m)?),
        }
    }
    let (seg_section, seg_comparisons) = crate::seg_report::section(&out, &seg_rows, device)?;
    // the token analysis looks at each model's first seed
    let vt_runs: Vec<(String, &str, PathBuf)> = rows
        .iter()
        .map(|r| &r.m)
        .chain(seg_rows.iter().map(|r| &r.m))
        .map(|m| {
            (
                format!("{}/{}", m.suite.name(), m.name),
                m.preset,
                m.dirs[0].clone(),
            )
        })
        .collect();
    let token_section = crate::token_report::section(&vt_runs, device)?;
    let report = report::write(
        &out,
        &report::Inputs {
            rows: &rows,
            seg_comparisons: &seg_comparisons,
            sections: &format!("{seg_section}{token_section}"),
            level: args.preset,
            seeds: req.seeds(),
            recipe_notes: &recipe_notes(&runs),
        },
    )?;
    println!("report: {}", report.display());
    Ok(())
}
