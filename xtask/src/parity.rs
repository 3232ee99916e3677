//! `cargo xtask parity`: check a reference fixture.

use anyhow::{bail, Result};
use candle_core::DType;
use std::path::PathBuf;
use vt_backbones::fixture::{fixture_dtype, run_fixture_as};

/// Build the module a fixture file describes (`__metadata__.vt_fixture`), run it, and compare
/// outputs, gradients and BN statistics with the stored reference values. Exits non-zero if
/// any tensor exceeds its tolerance.
#[derive(clap::Args)]
pub struct Args {
    /// Fixture file(s) made by benches/peer/reference/make_fixtures.py or make_seg_fixtures.py.
    #[arg(long, required = true, num_args = 1..)]
    fixture: Vec<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print every compared tensor, not only the worst per file.
    #[arg(long)]
    verbose: bool,
    /// Run every module in float64 (checks the maths without float32 rounding). Without it the
    /// fixtures float32 cannot resolve (`vt_backbones::fixture::FLOAT32_UNRESOLVED`: the
    /// train-mode VT-FPN and tiny VT-ResNet) run in float64 and the rest in float32.
    #[arg(long)]
    f64: bool,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device(&args.device)?;
    let mut failed = 0;
    for f in &args.fixture {
        let dtype = if args.f64 {
            DType::F64
        } else {
            fixture_dtype(f)
        };
        let report = run_fixture_as(f, &device, dtype)?;
        println!(
            "{} ({}, {} mode, {} on {}, {dtype:?})",
            f.display(),
            report.module,
            report.mode,
            report.checks.len(),
            args.device
        );
        for c in &report.checks {
            if args.verbose || !c.passed() {
                println!(
                    "  {:4} {:45} max|err| {:.3e}  tol {:.0e} x {:.3e}  ({:.3} of tolerance)",
                    if c.passed() { "ok" } else { "FAIL" },
                    c.name,
                    c.max_abs_err,
                    c.tolerance,
                    c.scale,
                    c.ratio()
                );
            }
        }
        if let Some(w) = report.worst() {
            println!("  worst: {} at {:.3} of its tolerance", w.name, w.ratio());
        }
        if !report.passed() {
            failed += 1;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} fixture(s) exceed their tolerance",
            args.fixture.len()
        );
    }
    Ok(())
}
