//! Every committed fixture of the PyTorch reference: outputs, input gradients, parameter
//! gradients and updated BN statistics within the fixtures README's tolerances.

use candle_core::Device;
use std::path::PathBuf;
use vt_backbones::fixture::{fixture_dtype, run_fixture_as};

/// Runs every `.safetensors` file in `tests/<folder>` (expecting `count` of them) and fails
/// with every tensor outside its tolerance.
fn check_folder(folder: &str, count: usize) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        count,
        "expected the {count} public fixtures in {}",
        dir.display()
    );
    let mut failures = vec![];
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        let dtype = fixture_dtype(f);
        let report = run_fixture_as(f, &Device::Cpu, dtype)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            report.checks.iter().any(|c| c.name.starts_with("output.")),
            "{}: nothing compared",
            f.display()
        );
        assert!(
            report.checks.iter().any(|c| c.name.starts_with("grad.")),
            "{}: no gradient compared",
            f.display()
        );
        let worst = report.worst().unwrap();
        println!(
            "{:45} {:28} {dtype:?} worst {:38} {:.3} of tolerance",
            name,
            report.module,
            worst.name,
            worst.ratio()
        );
        for c in report.checks.iter().filter(|c| !c.passed()) {
            failures.push(format!(
                "{}: {} error {:.3e} > {:.1e} x {:.3e}",
                f.display(),
                c.name,
                c.max_abs_err,
                c.tolerance,
                c.scale
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_matches_the_reference() {
    check_folder("fixtures", 20);
}

/// FPN, VT-FPN, the semantic head and both whole models (eval and train) of
/// `vt_seg_reference.py` (the reference's public set, committed in `tests/seg_fixtures`).
#[test]
fn every_segmentation_fixture_matches_the_reference() {
    check_folder("seg_fixtures", 7);
}
