//! Every committed fixture of the PyTorch reference: outputs, input gradients, parameter
//! gradients and updated BN statistics within the fixtures README's tolerances.

use candle_core::Device;
use std::path::PathBuf;
use vt_backbones::fixture::run_fixture;

#[test]
fn every_fixture_matches_the_reference() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        20,
        "expected the 20 public fixtures in {}",
        dir.display()
    );
    let mut failures = vec![];
    for f in &files {
        let report =
            run_fixture(f, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert!(
            report.checks.iter().any(|c| c.name.starts_with("output.")),
            "{}: nothing compared",
            f.display()
        );
        let worst = report.worst().unwrap();
        println!(
            "{:45} {:28} worst {:38} {:.3} of tolerance",
            f.file_name().unwrap().to_string_lossy(),
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
