//! `cargo xtask reproduce --preset smoke` end to end: every model trains with 2 paired seeds,
//! the report has every table, interval and verdict filled, and a second invocation skips the
//! finished runs.

use std::process::Command;

#[test]
fn smoke_reproduction_writes_a_complete_report() {
    let out = std::env::temp_dir().join(format!("vt-reproduce-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "reproduce",
                "--preset",
                "smoke",
                "--out",
                out.to_str().unwrap(),
            ])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // the default VT-ResNet-18 is both a classification and an ablation row: trained once
    assert!(String::from_utf8_lossy(&first.stderr)
        .contains("ablation/vt_resnet18 seed 1: same run as classification/vt_resnet18, reused"));
    let dir = out.join("smoke");
    // the reused run carries the checkpoint too: it evaluates like the one it copies
    let twin = dir.join("ablation/vt_resnet18/seed1");
    assert!(twin.join("checkpoints/latest").is_file());
    vt_run::evaluate_run(&twin, None, &candle_core::Device::Cpu).expect("the reused run evaluates");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    // the §6 token analysis: every VT run, the segmentation one with its foreground ratio
    assert!(report.contains("## What the tokens attend to"), "{report}");
    for run in [
        "classification/vt_resnet18 |",
        "ablation/vt_resnet18_pooling |",
    ] {
        assert!(
            report.contains(run),
            "{run} missing from the token table:\n{report}"
        );
    }
    let seg_row = report
        .lines()
        .find(|l| l.starts_with("| segmentation/vt_fpn_resnet50 |"))
        .expect("the VT-FPN in the token table");
    assert!(!seg_row.trim_end().ends_with("| - |"), "{seg_row}");
    for model in ["resnet18", "vt_resnet18", "resnet34", "vt_resnet34"] {
        assert!(
            report.contains(&format!("| {model} | ")),
            "classification row {model} missing:\n{report}"
        );
    }
    for row in [
        "Table 3: pooling tokenizer",
        "Table 3: clustering tokenizer",
        "Table 4: w/o recurrent tokenizer",
        "Table 5: none",
        "Table 5: GraphConv",
        "Table 6: L = 32",
        "Table 6: L = 64",
        "Table 7: w/o projector",
    ] {
        assert!(
            report.contains(&format!("| {row} | ")),
            "ablation row {row} missing:\n{report}"
        );
    }
    // every comparison has its interval over the 2 seeds and a verdict from it
    assert!(report.contains("## Conclusions"), "{report}");
    assert_eq!(
        report.matches(" − vt_resnet18 (Table ").count(),
        8 + 8, // each ablation's line, and its place in the conclusions
        "{report}"
    );
    assert_eq!(
        report.matches("95 % interval over 2 paired seeds").count(),
        2 + 8 + 1,
        "{report}"
    );
    assert!(report.contains(" ± "), "{report}");
    assert!(!report.contains("NaN"), "{report}");
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2 * (4 + 9));
    for svg in [
        "classification_top1.svg",
        "classification_loss.svg",
        "accuracy_vs_macs.svg",
        "ablation_top1.svg",
        "ablation_loss.svg",
        "paired_differences.svg",
    ] {
        let text = std::fs::read_to_string(dir.join(svg)).unwrap();
        assert!(
            text.starts_with("<svg") && (text.contains("polyline") || text.contains("circle")),
            "{svg}"
        );
    }
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("classification/vt_resnet18/seed0/metrics.json"))
            .unwrap(),
    )
    .unwrap();
    for key in ["top1", "top5", "loss", "macs", "params", "images_per_sec"] {
        assert!(
            metrics[key].as_f64().is_some_and(f64::is_finite),
            "metrics.json {key}: {metrics}"
        );
    }
    // `eval` on a run directory reproduces the run's final test top-1
    let run_dir = dir.join("classification/vt_resnet18/seed0");
    let out_eval = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["eval", "--checkpoint", run_dir.to_str().unwrap()])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        out_eval.status.success(),
        "{}",
        String::from_utf8_lossy(&out_eval.stderr)
    );
    let top1 = format!("test top-1 {:.2}%", metrics["top1"].as_f64().unwrap());
    assert!(
        String::from_utf8_lossy(&out_eval.stdout).contains(&top1),
        "{} vs {top1}",
        String::from_utf8_lossy(&out_eval.stdout)
    );
    // the segmentation section: both models beside Tables 9/10, the ratios, the overlays
    assert!(
        report.contains("## Segmentation (Tables 9 / 10)"),
        "{report}"
    );
    for model in ["fpn_resnet50", "vt_fpn_resnet50"] {
        assert!(
            report.contains(&format!("| {model} | ")),
            "{model}:\n{report}"
        );
        for i in 0..3 {
            let png = dir.join(format!("overlays/{model}_{i}.png"));
            assert!(
                std::fs::read(&png).unwrap().starts_with(b"\x89PNG"),
                "{}",
                png.display()
            );
        }
        let m: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("segmentation/{model}/seed1/metrics.json")))
                .unwrap(),
        )
        .unwrap();
        assert!(m["miou"].as_f64().is_some_and(f64::is_finite), "{m}");
        assert_eq!(m["per_class_iou"].as_array().map(Vec::len), Some(11), "{m}");
    }
    assert!(report.contains("Neck MACs: FPN / VT-FPN = "), "{report}");
    assert!(report.contains("| background |"), "{report}");
    let seg_csv = std::fs::read_to_string(dir.join("segmentation.csv")).unwrap();
    assert_eq!(seg_csv.lines().count(), 1 + 2 * 2);
    // rerunning skips every finished run
    let second = run();
    assert!(second.status.success());
    assert_eq!(
        String::from_utf8_lossy(&second.stderr)
            .matches("finished earlier, skipped")
            .count(),
        2 * 15
    );
}
