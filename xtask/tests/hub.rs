//! Pretrained weights and data sets from a Hugging Face hub cache built in a temp dir (the
//! real layout, through vt-hub's writer): a classifier and a segmenter start from ImageNet
//! ResNet weights (the head fresh where it does not fit), a run trains on `hf:` data, and the
//! commands read the cache offline or say what is missing.

mod common;

use candle_core::{DType, Device};
use std::path::Path;
use vt_backbones::{preset, ResNet, Stem};
use vt_hub::{image_shard, put_in_cache, RepoKind};
use vt_ops::VarStore;
use vt_run::{initial_store, Net, RunConfig, RunOptions, SegNet};

fn xtask(cache: &Path, args: &[&str]) -> std::process::Output {
    let offline = std::ffi::OsStr::new("1");
    common::xtask_with(
        args,
        &[
            ("HF_HUB_CACHE", cache.as_os_str()),
            ("HF_HUB_OFFLINE", offline),
        ],
    )
}

/// An ImageNet-shaped ResNet checkpoint (1000 classes, ImageNet stem) at width `width`, put in
/// the cache as model repository `id`.
fn resnet_checkpoint(cache: &Path, name: &str, width: f64, id: &str) -> VarStore {
    let cfg = (preset(name).unwrap().classifier().unwrap().config)()
        .with_width(width)
        .with_stem(Stem::Imagenet)
        .with_classes(1000);
    let store = VarStore::seeded(7, DType::F32, &Device::Cpu);
    ResNet::new(&cfg, store.var_builder()).unwrap();
    let file = cache.join("w.safetensors");
    store.save(&file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    put_in_cache(
        cache,
        RepoKind::Model,
        &id.parse().unwrap(),
        "model.safetensors",
        &bytes,
    )
    .unwrap();
    store
}

fn same(a: &VarStore, ka: &str, b: &VarStore, kb: &str) -> bool {
    let (x, y) = (
        a.vars()[ka].as_tensor().clone(),
        b.vars()[kb].as_tensor().clone(),
    );
    x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        == y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn pretrained_weights_and_hub_data_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("hub");
    std::fs::create_dir_all(&cache).unwrap();
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    // 5 classes of colour 32 px photos
    let photo = |i: u32| {
        let img = image::RgbImage::from_fn(32, 32, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 8) as u8, (i * 40) as u8])
        });
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
        bytes.into_inner()
    };
    let data_id = "vt-test/photos".parse().unwrap();
    let images: Vec<Vec<u8>> = (0..24).map(photo).collect();
    let labels: Vec<i64> = (0..24).map(|i| i % 5).collect();
    for (file, n) in [
        ("data/train-00000-of-00001.parquet", 24),
        ("data/test-00000-of-00001.parquet", 8),
    ] {
        let shard = image_shard(&images[..n], &labels[..n]).unwrap();
        put_in_cache(&cache, RepoKind::Dataset, &data_id, file, &shard).unwrap();
    }

    // a classifier from an ImageNet ResNet-18: the trunk as it is, the 1000-class head fresh
    let ckpt = resnet_checkpoint(&cache, "resnet18", 0.125, "vt-test/resnet18-in1k");
    let mut cfg = RunConfig::small_data("resnet18", 1, 8).with_pretrained("vt-test/resnet18-in1k");
    assert_eq!(
        (cfg.model.width, cfg.model.stem, cfg.data.image_size),
        (1.0, Stem::Imagenet, 224)
    );
    cfg.model.width = 0.125;
    cfg.data.image_size = 32;
    cfg.data.path = Some("hf:vt-test/photos".into());
    cfg.model.num_classes = Some(5);
    cfg.model.in_channels = Some(3);
    let store = initial_store(&cfg.model, 0, &Device::Cpu).unwrap();
    Net::new(&cfg.model, &store).unwrap();
    store.finish().unwrap();
    assert!(same(&store, "conv1.weight", &ckpt, "conv1.weight"));
    assert!(same(
        &store,
        "layer4.1.bn2.running_var",
        &ckpt,
        "layer4.1.bn2.running_var"
    ));
    let (fresh, skipped) = store.fresh_keys();
    assert_eq!(fresh, ["fc.bias", "fc.weight"]);
    assert_eq!(skipped, ["fc.bias", "fc.weight"]);
    // ... and it trains on the hub data set
    cfg.model.num_classes = None;
    cfg.model.in_channels = None;
    let run = dir.path().join("run");
    let m = vt_run::train(cfg.clone(), &run, &Device::Cpu, &RunOptions::default()).unwrap();
    assert_eq!((m.train_samples, m.test_samples), (24, 8));

    // a VT-ResNet from the same checkpoint has no layer4 and a VT stage: the one error
    // listing the keys
    let mut vt = cfg.clone();
    vt.model.preset = "vt_resnet18".into();
    vt.model.num_classes = Some(5);
    vt.model.in_channels = Some(3);
    let store = initial_store(&vt.model, 0, &Device::Cpu).unwrap();
    Net::new(&vt.model, &store).unwrap();
    let e = store.finish().unwrap_err().to_string();
    assert!(
        e.contains("vt-test/resnet18-in1k")
            && e.contains("missing    vt.0.")
            && e.contains("unexpected layer4."),
        "{e}"
    );

    // a segmenter takes an ImageNet ResNet-50 into backbone.body; neck and head start fresh
    let ckpt = resnet_checkpoint(&cache, "resnet50", 0.0625, "vt-test/resnet50-in1k");
    let mut seg = RunConfig::segmentation("vt_fpn_resnet50", 64, 1, 2)
        .with_pretrained("vt-test/resnet50-in1k");
    seg.model.width = 0.0625;
    seg.model.num_classes = Some(11);
    seg.model.in_channels = Some(3);
    let store = initial_store(&seg.model, 0, &Device::Cpu).unwrap();
    SegNet::new(&seg.model, &store).unwrap();
    store.finish().unwrap();
    assert!(same(
        &store,
        "backbone.body.layer3.2.conv2.weight",
        &ckpt,
        "layer3.2.conv2.weight"
    ));
    let (fresh, skipped) = store.fresh_keys();
    assert!(
        fresh.iter().any(|k| k.starts_with("backbone.fpn."))
            && fresh.iter().any(|k| k.starts_with("sem_seg_head."))
    );
    assert!(
        !fresh.iter().any(|k| k.starts_with("backbone.body.")),
        "{fresh:?}"
    );
    assert_eq!(
        skipped,
        ["backbone.body.fc.bias", "backbone.body.fc.weight"]
    );

    // evaluating pretrained weights whose head does not fit the data is refused
    let mut eval = cfg.clone();
    eval.model.num_classes = None;
    let e = vt_run::evaluate_pretrained(eval, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("its head does not fit 5 classes"), "{e}");

    // through the commands, offline
    let out = xtask(&cache, &["data", "inspect", "--data", "hf:vt-test/photos"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("format: hub (hub dataset vt-test/photos")
            && text.contains("train: 24 samples"),
        "{text}"
    );
    for args in [
        vec![
            "train",
            "--model",
            "resnet18",
            "--pretrained",
            "timm/resnet18.tv_in1k",
            "--out",
            dir.path().join("x").to_str().unwrap(),
        ],
        vec![
            "infer",
            "--model",
            "resnet18",
            "--pretrained",
            "timm/resnet18.tv_in1k",
            "--input",
            "x",
            "--output",
            "y",
        ],
        vec![
            "eval",
            "--model",
            "resnet18",
            "--pretrained",
            "timm/resnet18.tv_in1k",
        ],
    ] {
        let out = xtask(&cache, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        for part in [
            "timm/resnet18.tv_in1k",
            "model.safetensors",
            &cache.display().to_string(),
        ] {
            assert!(err.contains(part), "{args:?}: `{err}` lacks `{part}`");
        }
    }
}
