//! What a run checks of its data: labels the model cannot output (training and evaluation),
//! and normalisation statistics taken from the data set and kept in the resolved config.

use candle_core::Device;
use std::path::Path;
use vt_data::idx::write_idx;
use vt_run::{evaluate_run, prepare, saved_config, train, RunConfig, RunOptions};

/// An IDX data set of 28 px digits whose pixels are `value` and labels `label(i)`.
fn idx_dir(dir: &Path, value: u8, label: impl Fn(usize) -> u8) {
    for (split, n) in [("train", 32), ("t10k", 16)] {
        let images: Vec<u8> = (0..n * 784)
            .map(|p| value.wrapping_add((p % 7) as u8))
            .collect();
        let labels: Vec<u8> = (0..n).map(&label).collect();
        write_idx(
            &dir.join(format!("{split}-images-idx3-ubyte.gz")),
            &[n, 28, 28],
            &images,
        )
        .unwrap();
        write_idx(
            &dir.join(format!("{split}-labels-idx1-ubyte.gz")),
            &[n],
            &labels,
        )
        .unwrap();
    }
}

fn tiny(data: &Path, classes: Option<usize>) -> RunConfig {
    let mut cfg = RunConfig::small_data("resnet18", 1, 8);
    cfg.model.width = 0.125;
    cfg.model.num_classes = classes;
    cfg.data.path = Some(data.to_path_buf());
    cfg.data.workers = 0;
    cfg
}

#[test]
fn labels_outside_the_model_classes_name_the_sample_in_training_and_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let (data, foreign, run) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("run"),
    );
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&foreign).unwrap();
    idx_dir(&data, 40, |i| (i % 5) as u8);
    idx_dir(&foreign, 40, |i| if i == 3 { 7 } else { (i % 5) as u8 });

    // training: a model of 4 classes on labels 0..5
    let err = train(
        tiny(&data, Some(4)),
        &run,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("train-images-idx3-ubyte.gz record")
            && err.contains("is outside the model's 4 classes"),
        "{err}"
    );

    // evaluation: a 5-class model, then a test set holding a label 7 at sample 3
    let _ = std::fs::remove_dir_all(&run);
    train(
        tiny(&data, Some(5)),
        &run,
        &Device::Cpu,
        &RunOptions::default(),
    )
    .unwrap();
    let err = evaluate_run(&run, Some(&foreign), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "t10k-images-idx3-ubyte.gz record 3: label 7 is outside the model's 5 classes"
        ),
        "{err}"
    );
}

#[test]
fn normalisation_comes_from_the_data_and_is_saved_with_the_run() {
    let dir = tempfile::tempdir().unwrap();
    idx_dir(dir.path(), 200, |i| (i % 10) as u8);
    let p = prepare(tiny(dir.path(), None), &Device::Cpu).unwrap();
    let n = p
        .cfg
        .data
        .normalize
        .clone()
        .expect("resolved normalisation");
    // pixels 200..=206 evenly: mean 203/255, std of a uniform 7-level ramp
    assert!((n.mean[0] - 203.0 / 255.0).abs() < 1e-3, "{n:?}");
    assert!((n.std[0] - 2.0 / 255.0).abs() < 1e-3, "{n:?}");

    // Mosaics know no statistics: estimated from samples, mostly background (dark).
    let mut seg = RunConfig::segmentation("fpn_resnet50", 64, 1, 2);
    seg.data.train_limit = Some(8);
    seg.data.test_limit = Some(2);
    let p = prepare(seg, &Device::Cpu).unwrap();
    let n = p.cfg.data.normalize.clone().unwrap();
    assert!(n.mean[0] > 0.0 && n.mean[0] < 0.2, "{n:?}");

    // A run's saved config carries them, and an explicit one is kept.
    let run = dir.path().join("run");
    let mut cfg = tiny(dir.path(), None);
    cfg.data.normalize = Some(vt_run::NormalizeSection {
        mean: vec![0.5],
        std: vec![0.25],
    });
    cfg.data.train_limit = Some(16);
    train(cfg, &run, &Device::Cpu, &RunOptions::default()).unwrap();
    let saved = saved_config(&run).unwrap().data.normalize.unwrap();
    assert_eq!((saved.mean, saved.std), (vec![0.5], vec![0.25]));
}
