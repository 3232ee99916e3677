//! One tiny run end to end through the library: train, the files it leaves, the result read
//! back, the checkpoint evaluated again, and the refusal to overwrite a run.

use candle_core::Device;
use vt_run::{evaluate_run, load_result, saved_config, train, RunConfig, RunOptions};
use vt_train::metrics::{TOP1, TOP5};

fn tiny() -> RunConfig {
    let mut cfg = RunConfig::small_data("vt_resnet18", 2, 16);
    cfg.model.width = 0.125;
    cfg.data.train_limit = Some(48);
    cfg.data.test_limit = Some(20);
    cfg.data.workers = 1;
    cfg.train.log_every = 1;
    cfg
}

#[test]
fn a_tiny_run_trains_reads_back_and_evaluates() -> vt_run::Result<()> {
    let out = std::env::temp_dir().join(format!("vt-run-tiny-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dev = Device::Cpu;
    let m = train(tiny(), &out, &dev, &RunOptions::default())?;
    assert_eq!((m.epochs, m.steps), (2, 6));
    assert_eq!((m.train_samples, m.test_samples), (48, 20));
    assert_eq!(m.model, "vt_resnet18");
    let top1 = m.scalar(TOP1).unwrap();
    assert!(m.scalar(TOP5).unwrap() >= top1);
    // metrics.json keeps the keys that scripts read
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for key in ["top1", "top5", "loss", "macs", "params", "images_per_sec"] {
        assert!(v[key].as_f64().is_some_and(f64::is_finite), "{key}: {v}");
    }
    // the resolved config: classes and channels filled from the data
    let cfg = saved_config(&out)?;
    assert_eq!(cfg.model.num_classes, Some(10));
    assert_eq!(cfg.model.in_channels, Some(1));

    let r = load_result(&out)?;
    assert_eq!(r.metrics, m);
    assert_eq!(
        r.train_loss.iter().map(|l| l.0).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<_>>()
    );
    assert_eq!(r.curve(TOP1).len(), 2);
    assert_eq!(r.curve(TOP1)[1], (2.0, top1));

    let e = evaluate_run(&out, None, &dev)?;
    assert_eq!((e.step, e.ema), (6, false));
    assert_eq!(e.result.scalar(TOP1), Some(top1));
    assert_eq!(e.result.samples, 20);

    let err = train(tiny(), &out, &dev, &RunOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("already holds a run; pass --resume"),
        "{err}"
    );
    // resuming a finished run trains nothing more and gives the same figures
    let resumed = RunOptions {
        resume: true,
        ..Default::default()
    };
    let again = train(saved_config(&out)?, &out, &dev, &resumed)?;
    assert_eq!(again.scalar(TOP1), Some(top1));
    assert_eq!(again.steps, 6);

    let err = evaluate_run(&out.join("nope"), None, &dev).unwrap_err();
    assert!(err.to_string().starts_with("cannot read config"), "{err}");
    Ok(())
}

/// The same for segmentation: VT-FPN on 64 px mosaics, metrics.json with mIoU, pixel accuracy
/// and per-class IoU, the evaluation reproducing them, resume after a kill.
#[test]
fn a_tiny_segmentation_run_trains_evaluates_and_resumes() -> vt_run::Result<()> {
    use vt_train::metrics::{MIOU, PER_CLASS_IOU, PIXEL_ACC};
    let out = std::env::temp_dir().join(format!("vt-run-seg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let dev = Device::Cpu;
    let mut cfg = RunConfig::segmentation("vt_fpn_resnet50", 64, 2, 4);
    cfg.model.width = 0.0625;
    cfg.data.train_limit = Some(8);
    cfg.data.test_limit = Some(6);
    cfg.data.workers = 1;
    cfg.train.log_every = 1;
    cfg.train.checkpoint_every = 1;
    // killed after 3 of its 4 steps, then resumed: the same figures as one uninterrupted run
    let killed = RunOptions {
        max_steps: Some(3),
        ..Default::default()
    };
    let partial = train(cfg.clone(), &out, &dev, &killed)?;
    assert_eq!(partial.steps, 3);
    assert!(!out.join("metrics.json").exists());
    let resumed = RunOptions {
        resume: true,
        ..Default::default()
    };
    let m = train(saved_config(&out)?, &out, &dev, &resumed)?;
    assert_eq!((m.epochs, m.steps, m.test_samples), (2, 4, 6));
    let miou = m.scalar(MIOU).unwrap();
    let acc = m.scalar(PIXEL_ACC).unwrap();
    assert!((0.0..=100.0).contains(&miou) && (0.0..=100.0).contains(&acc));
    assert_eq!(m.per_class(PER_CLASS_IOU).unwrap().len(), 11);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    for key in ["miou", "pixel_acc", "loss", "images_per_sec"] {
        assert!(v[key].as_f64().is_some_and(f64::is_finite), "{key}: {v}");
    }
    assert_eq!(v["task"], "segmentation");
    assert!(v["per_class_iou"].is_array());
    let e = evaluate_run(&out, None, &dev)?;
    assert_eq!(e.result.scalar(MIOU), Some(miou));
    assert_eq!(e.result.scalar(PIXEL_ACC), Some(acc));

    let other = std::env::temp_dir().join(format!("vt-run-seg-whole-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    let whole = train(cfg, &other, &dev, &RunOptions::default())?;
    assert_eq!(whole.scalar(MIOU), Some(miou), "resume is bit-identical");
    assert_eq!(load_result(&out)?.curve(MIOU).len(), 2);
    Ok(())
}
