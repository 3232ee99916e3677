//! `xtask visualize` on a classification and a segmentation run, and the §6 statistics.

mod common;

use common::{tmp_dir, xtask};
use std::path::Path;

fn visualize(run: &Path, image: &Path, out: &Path) -> serde_json::Value {
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (run, image, out_s) = (path(run), path(image), path(out));
    let o = xtask(&[
        "visualize",
        "--checkpoint",
        &run,
        "--image",
        &image,
        "--out",
        &out_s,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = image::open(out.join("tokens.png")).unwrap();
    assert!(
        png.width() >= 256 && png.height() >= 256,
        "{}x{}",
        png.width(),
        png.height()
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("tokens.json")).unwrap()).unwrap()
}

/// Every token's entropy lies in [0, ln HW].
fn check_modules(v: &serde_json::Value, modules: &[&str], tokens: usize) {
    let ms = v["modules"].as_array().unwrap();
    let names: Vec<&str> = ms.iter().map(|m| m["module"].as_str().unwrap()).collect();
    assert_eq!(names, modules);
    for m in ms {
        let uniform = m["uniform_entropy"].as_f64().unwrap();
        let hw = m["hw"].as_array().unwrap();
        let cells = hw[0].as_f64().unwrap() * hw[1].as_f64().unwrap();
        assert!((uniform - cells.ln()).abs() < 1e-9);
        let ts = m["tokens"].as_array().unwrap();
        assert_eq!(ts.len(), tokens);
        for t in ts {
            let e = t["entropy"].as_f64().unwrap();
            assert!(e > 0.0 && e <= uniform + 1e-6, "{e} vs {uniform}");
        }
    }
}

#[test]
fn tokens_of_a_classifier_and_a_segmenter() {
    let dir = tmp_dir("vis-runs");
    let dev = candle_core::Device::Cpu;
    let image = dir.join("digit.png");
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([((x * 9 + y * 3) % 256) as u8]))
        .save(&image)
        .unwrap();

    let run = dir.join("cls");
    let mut cfg = vt_run::RunConfig::small_data("vt_resnet18", 1, 16);
    cfg.model.width = 0.125;
    cfg.data.train_limit = Some(32);
    cfg.data.test_limit = Some(16);
    vt_run::train(cfg, &run, &dev, &vt_run::RunOptions::default()).unwrap();
    let v = visualize(&run, &image, &dir.join("cls-vis"));
    check_modules(&v, &["vt.0", "vt.1"], 16);
    assert!(
        v["prediction"]["class"].as_u64().unwrap() < 10,
        "{}",
        v["prediction"]
    );
    let s = vt_run::token_statistics(&run, 16, &dev).unwrap();
    assert_eq!(s.samples, 16);
    assert!(
        s.mean_entropy > 0.0 && s.mean_entropy <= s.uniform_entropy + 1e-9,
        "{s:?}"
    );
    assert!(s.foreground_ratio.is_none());

    let run = dir.join("seg");
    let mut cfg = vt_run::RunConfig::segmentation("vt_fpn_resnet50", 64, 1, 4);
    cfg.model.width = 0.0625;
    cfg.data.train_limit = Some(8);
    cfg.data.test_limit = Some(4);
    vt_run::train(cfg, &run, &dev, &vt_run::RunOptions::default()).unwrap();
    let photo = dir.join("mosaic.png");
    image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 0]))
        .save(&photo)
        .unwrap();
    let v = visualize(&run, &photo, &dir.join("seg-vis"));
    let levels: Vec<String> = (0..4)
        .map(|i| format!("backbone.fpn.tokenizers.{i}"))
        .collect();
    check_modules(
        &v,
        &levels.iter().map(String::as_str).collect::<Vec<_>>(),
        8,
    );
    assert!(
        v["prediction"]["class_map"].is_array(),
        "{}",
        v["prediction"]
    );
    let s = vt_run::token_statistics(&run, 4, &dev).unwrap();
    let r = s
        .foreground_ratio
        .expect("a foreground ratio for segmentation");
    assert!(r.is_finite() && r > 0.0, "{s:?}");

    // a plain ResNet has no tokens to show
    let run = dir.join("plain");
    let mut cfg = vt_run::RunConfig::small_data("resnet18", 1, 16);
    cfg.model.width = 0.125;
    cfg.data.train_limit = Some(16);
    cfg.data.test_limit = Some(8);
    vt_run::train(cfg, &run, &dev, &vt_run::RunOptions::default()).unwrap();
    let err = vt_run::token_view(&run, &vt_data::Image::open_rgb(&image).unwrap(), "x", &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("has no VT module"), "{err}");
}
