//! Bad input through the binary: argument values no run can use, truncated photos in a data
//! set, and corrupt weights, configs, checkpoints and logs. Each is a clear error (exit code
//! 1, the message naming the argument or file), never a panic (exit code 101).

mod common;

use common::{tmp_dir, xtask};
use std::path::Path;

/// Fails unless the command exited with 1 and its stderr holds every part.
fn fails_with(args: &[&str], parts: &[&str]) {
    let out = xtask(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    for p in parts {
        assert!(err.contains(p), "{args:?}: `{err}` lacks `{p}`");
    }
}

#[test]
fn argument_values_no_run_can_use() {
    fails_with(
        &["flops", "--image-size", "0"],
        &["--image-size 0", "smaller than the model's output stride"],
    );
    fails_with(
        &["flops", "--model", "resnet50", "--image-size", "16"],
        &[
            "model `resnet50`",
            "input 16x16 is smaller than the model's output stride 32",
        ],
    );
    let out = tmp_dir("bad-args");
    let out = out.to_str().unwrap();
    let train = |extra: &[&str], parts: &[&str]| {
        let mut args = vec!["train", "--model", "resnet18", "--out", out];
        args.extend_from_slice(extra);
        fails_with(&args, parts);
    };
    train(&["--epochs", "0"], &["train.epochs is 0"]);
    train(&["--batch-size", "0"], &["train.batch_size is 0"]);
    train(&["--image-size", "0"], &["data.image_size is 0"]);
    train(
        &["--width", "0"],
        &["model.width 0 must be a positive number"],
    );
    train(
        &["--width", "NaN"],
        &["model.width NaN must be a positive number"],
    );
    train(
        &["--image-size", "4"],
        &[
            "data.image_size 4 is too small for model `resnet18`",
            "output stride 8",
        ],
    );
    assert!(
        !Path::new(out).join("config.toml").exists(),
        "nothing written for a bad run"
    );
}

#[test]
fn truncated_photos_are_listed_by_data_inspect() {
    let dir = tmp_dir("bad-photos");
    let photo = |path: &Path, seed: u8| {
        let img = image::RgbImage::from_fn(120, 90, |x, y| {
            image::Rgb([(x * 2) as u8 ^ seed, (y * 3) as u8, (x + y) as u8])
        });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        img.save_with_format(path, image::ImageFormat::Jpeg)
            .unwrap();
    };
    for d in ["train/cat", "train/dog", "val/cat", "val/dog"] {
        photo(&dir.join(d).join("whole.jpg"), 1);
    }
    let whole = std::fs::read(dir.join("train/cat/whole.jpg")).unwrap();
    for pct in [10, 50, 90, 99] {
        let p = dir.join(format!("train/dog/cut{pct}.jpg"));
        std::fs::write(&p, &whole[..whole.len() * pct / 100]).unwrap();
    }
    let out = xtask(&["data", "inspect", "--data", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for pct in [10, 50, 90, 99] {
        assert!(
            text.contains(&format!("train/dog/cut{pct}.jpg")),
            "cut{pct} not listed:\n{text}"
        );
    }
    assert!(text.contains("unreadable samples: 4"), "{text}");
    assert!(!text.contains("whole.jpg"), "{text}");
}

#[test]
fn corrupt_run_files_through_the_commands() {
    let dir = tmp_dir("bad-runfiles");
    let run = dir.join("run");
    let run_s = run.to_str().unwrap();
    let mut cfg = vt_run::RunConfig::small_data("resnet18", 1, 16);
    cfg.model.width = 0.125;
    cfg.data.train_limit = Some(32);
    cfg.data.test_limit = Some(16);
    let tiny = dir.join("tiny.toml");
    cfg.save(&tiny).unwrap();
    let out = xtask(&["train", "--config", tiny.to_str().unwrap(), "--out", run_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // a config cut short
    let config = run.join("config.toml");
    let text = std::fs::read(&config).unwrap();
    let cut = dir.join("cut.toml");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    fails_with(
        &[
            "train",
            "--config",
            cut.to_str().unwrap(),
            "--out",
            dir.join("x").to_str().unwrap(),
        ],
        &["cut.toml"],
    );

    // weights cut short, for infer
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let model = run
        .join("checkpoints")
        .join(latest.trim())
        .join("model.safetensors");
    let weights = dir.join("w.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() * 9 / 10]).unwrap();
    std::fs::write(dir.join("x.safetensors"), b"").unwrap();
    fails_with(
        &[
            "infer",
            "--model",
            "resnet18",
            "--weights",
            weights.to_str().unwrap(),
            "--input",
            dir.join("x.safetensors").to_str().unwrap(),
            "--output",
            dir.join("y").to_str().unwrap(),
        ],
        &["w.safetensors"],
    );

    // a checkpoint cut short, for eval
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&["eval", "--checkpoint", run_s], &["model.safetensors"]);
    std::fs::write(&model, &bytes).unwrap();

    // a log with a broken record in the middle, for resume
    let log = run.join("log.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    let mid = text.len() / 2;
    text.replace_range(mid..mid + 1, "\u{1}");
    std::fs::write(&log, text).unwrap();
    fails_with(
        &["train", "--resume", "--out", run_s],
        &["log.jsonl:", "not a log record"],
    );
}
