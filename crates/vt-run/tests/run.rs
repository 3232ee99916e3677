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
