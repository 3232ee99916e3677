//! The xtask commands end to end, through the binary.

mod common;

use common::{tmp_dir, xtask};

use candle_core::{DType, Device, ModuleT, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vt_backbones::{preset, ResNet};
use vt_ops::VarStore;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/vt-backbones/tests/fixtures")
        .join(name)
}

#[test]
fn infer_reproduces_the_in_process_forward() -> candle_core::Result<()> {
    let dir = tmp_dir("infer");
    let dev = Device::Cpu;
    let cfg = (preset("vt_resnet18")?.classifier()?.config)().with_classes(7);
    let store = VarStore::seeded(3, DType::F32, &dev);
    let model = ResNet::new(&cfg, store.var_builder())?;
    store.save(&dir.join("w.safetensors"))?;
    let x = vt_ops::Rng::new(11).normal_tensor((2, 3, 64, 64), &dev)?;
    candle_core::safetensors::save(
        &HashMap::from([("x".to_string(), x.clone())]),
        dir.join("x.safetensors"),
    )?;
    let want = model.forward_t(&x, false)?;
    let w = dir.join("w.safetensors");
    let out = xtask(&[
        "infer",
        "--model",
        "vt_resnet18",
        "--num-classes",
        "7",
        "--weights",
        w.to_str().unwrap(),
        "--input",
        dir.join("x.safetensors").to_str().unwrap(),
        "--output",
        dir.join("y.safetensors").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = candle_core::safetensors::load(dir.join("y.safetensors"), &dev)?["logits"].clone();
    assert!((got - want)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);

    // the same weights with the wrong head: one error naming the key and both shapes
    let out = xtask(&[
        "infer",
        "--model",
        "vt_resnet18",
        "--weights",
        w.to_str().unwrap(),
        "--input",
        dir.join("x.safetensors").to_str().unwrap(),
        "--output",
        dir.join("z.safetensors").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mis-shaped fc.weight: expected [1000, 1024], found [7, 1024]"),
        "{err}"
    );
    assert!(err.contains("mis-shaped fc.bias"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!dir.join("z.safetensors").exists());
    Ok(())
}

#[test]
fn infer_reports_missing_and_unexpected_keys() {
    let dir = tmp_dir("keys");
    let dev = Device::Cpu;
    let t = HashMap::from([
        (
            "conv1.weight".to_string(),
            Tensor::zeros((64, 3, 7, 7), DType::F32, &dev).unwrap(),
        ),
        (
            "head.weight".to_string(),
            Tensor::zeros((3, 3), DType::F32, &dev).unwrap(),
        ),
    ]);
    candle_core::safetensors::save(&t, dir.join("w.safetensors")).unwrap();
    let out = xtask(&[
        "infer",
        "--model",
        "resnet18",
        "--weights",
        dir.join("w.safetensors").to_str().unwrap(),
        "--input",
        "none.safetensors",
        "--output",
        "none-out.safetensors",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("missing    layer4.1.bn2.running_var: expected [512]"),
        "{err}"
    );
    assert!(
        err.contains("unexpected head.weight: found [3, 3]"),
        "{err}"
    );
    assert!(!err.contains(" conv1.weight"), "{err}");
}

#[test]
fn parity_passes_on_a_fixture_and_fails_on_a_corrupted_one() -> candle_core::Result<()> {
    let good = fixture("transformer.safetensors");
    let out = xtask(&["parity", "--fixture", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("worst:"));

    // perturb one stored output by 1e-3 of its scale, keeping the metadata
    let bytes = std::fs::read(&good).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors = candle_core::safetensors::load(&good, &Device::Cpu)?;
    let o = tensors["output.tokens"].clone();
    let scale = o.abs()?.max_all()?.to_scalar::<f32>()? as f64;
    tensors.insert("output.tokens".into(), o.affine(1.0, 1e-3 * scale)?);
    let dir = tmp_dir("parity");
    let bad = dir.join("bad.safetensors");
    let views: Vec<(String, Tensor)> = tensors.into_iter().collect();
    safetensors::serialize_to_file(
        views.iter().map(|(k, v)| (k.as_str(), v)),
        meta.metadata().clone(),
        &bad,
    )
    .unwrap();
    let out = xtask(&["parity", "--fixture", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL output.tokens"), "{text}");
    Ok(())
}

#[test]
fn flops_json_has_every_preset_within_target() {
    let out = xtask(&["flops", "--json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    // a row per classifier (224x224) and two per segmenter (Tables 9 and 10)
    let segmenters = vt_backbones::PRESETS
        .iter()
        .filter(|p| p.task() == vt_backbones::Task::Segmentation)
        .count();
    assert_eq!(segmenters, 4);
    assert_eq!(rows.len(), vt_backbones::PRESETS.len() + segmenters);
    let find = |m: &str| rows.iter().find(|r| r["model"] == m).unwrap();
    // the reference counter's neck MACs (docs/decisions.md, S-decisions): R50 FPN / VT-FPN at both sizes
    for (m, input, neck) in [
        ("fpn_resnet50", [800, 1216], 55.10e9),
        ("vt_fpn_resnet50", [800, 1216], 8.57e9),
        ("fpn_resnet50", [473, 473], 12.89e9),
        ("vt_fpn_resnet50", [473, 473], 2.09e9),
    ] {
        let r = rows
            .iter()
            .find(|r| r["model"] == m && r["input"] == serde_json::json!(input))
            .unwrap_or_else(|| panic!("no {m} row at {input:?}"));
        let ours = r["neck_macs"].as_f64().unwrap();
        assert!((ours / neck - 1.0).abs() < 0.002, "{m} {input:?}: {ours}");
        assert!(r["macs"].as_f64().unwrap() > ours && r["params"].as_f64().unwrap() > 0.0);
    }
    for m in ["resnet18", "resnet34", "resnet50", "resnet101"] {
        assert!(
            find(m)["macs_rel_err"].as_f64().unwrap().abs() < 0.005,
            "{m}"
        );
    }
    for m in ["vt_resnet18", "vt_resnet34"] {
        assert!(
            find(m)["macs_rel_err"].as_f64().unwrap().abs() < 0.02,
            "{m}"
        );
        assert!(find(m)["mismatch"].is_null());
    }
    assert!(find("vt_resnet50")["mismatch"]
        .as_str()
        .unwrap()
        .contains("VT-R50"));
    let stages: Vec<&str> = find("vt_resnet18")["stages"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["stem", "layer1", "layer2", "layer3", "vt.0", "vt.1", "fc"]
    );
}

#[test]
fn unknown_model_suggests_names() {
    let out = xtask(&["flops", "--model", "vt_resnt18"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("closest presets: vt_resnet18"), "{err}");
}

#[test]
fn data_inspect_lists_unreadable_files_and_fails_unless_skip_bad() {
    let dir = tmp_dir("inspect");
    let png = |path: &Path, truncate: bool| {
        let img = image::RgbImage::from_pixel(8, 6, image::Rgb([100, 150, 200]));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        let mut b = bytes.into_inner();
        if truncate {
            b.truncate(40);
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b).unwrap();
    };
    for d in ["train/cat", "train/dog", "val/cat", "val/dog"] {
        png(&dir.join(d).join("a.png"), false);
    }
    png(&dir.join("train/dog/broken.png"), true);
    let out = xtask(&["data", "inspect", "--data", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("format: folder"), "{text}");
    assert!(text.contains("train/dog/broken.png"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--skip-bad"));
    let out = xtask(&[
        "data",
        "inspect",
        "--data",
        dir.to_str().unwrap(),
        "--skip-bad",
    ]);
    assert!(out.status.success());
}

/// Segmentation through the commands: `train --config` of a tiny VT-FPN on mosaics, `eval` of
/// the run reproducing its mIoU, `infer --checkpoint` on a PNG writing logits and a class map.
#[test]
fn segmentation_trains_evaluates_and_infers_through_the_cli() {
    let dir = tmp_dir("seg");
    let run = dir.join("run");
    let _ = std::fs::remove_dir_all(&run);
    let mut cfg = vt_run::RunConfig::segmentation("vt_fpn_resnet50", 64, 1, 4);
    cfg.model.width = 0.0625;
    cfg.data.train_limit = Some(8);
    cfg.data.test_limit = Some(4);
    cfg.data.workers = 1;
    let config = dir.join("seg.toml");
    cfg.save(&config).unwrap();
    let out = xtask(&[
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let miou = format!("mIoU {:.2}%", m["miou"].as_f64().unwrap());
    let out = xtask(&["eval", "--checkpoint", run.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&miou) && text.contains("pixel accuracy"),
        "{text} vs {miou}"
    );

    // an RGB image of a size that is not a multiple of 32: the class map keeps its size
    let img = dir.join("in.png");
    image::RgbImage::from_fn(50, 40, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    })
    .save(&img)
    .unwrap();
    let logits = dir.join("out.safetensors");
    let out = xtask(&[
        "infer",
        "--checkpoint",
        run.to_str().unwrap(),
        "--input",
        img.to_str().unwrap(),
        "--output",
        logits.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = candle_core::safetensors::load(&logits, &Device::Cpu).unwrap();
    assert_eq!(t["logits"].dims(), &[11, 40, 50]);
    let map = image::open(logits.with_extension("png")).unwrap();
    assert_eq!((map.width(), map.height()), (50, 40));
}
