//! A hub cache built in a temp dir in hf-hub's real layout (refs, symlinked snapshots, blobs):
//! model files and parquet datasets resolve from it offline; what is not cached is an error
//! naming the repository, the file and the cache directory.

use vt_hub::{image_shard, model_file, open_dataset, put_in_cache, RepoId, RepoKind, LOCAL_COMMIT};

fn png(w: u32, h: u32, v: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let data: Vec<u8> = (0..w * h).map(|i| v.wrapping_add(i as u8)).collect();
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

fn id(s: &str) -> RepoId {
    s.parse().unwrap()
}

#[test]
fn models_and_datasets_resolve_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path();
    // the only test of this binary: nothing else reads the environment meanwhile
    std::env::set_var("HF_HUB_CACHE", c);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let repo = id("timm/resnet18.tv_in1k");
    let link = put_in_cache(c, RepoKind::Model, &repo, "model.safetensors", b"weights").unwrap();
    assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    let p = model_file(&repo, "model.safetensors").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"weights");
    let at = id(&format!("timm/resnet18.tv_in1k@{LOCAL_COMMIT}"));
    assert_eq!(
        std::fs::read(model_file(&at, "model.safetensors").unwrap()).unwrap(),
        b"weights"
    );

    // not cached, offline: the error names the repository, the file and the cache searched
    let e = model_file(&id("timm/resnet50.a1_in1k"), "model.safetensors")
        .unwrap_err()
        .to_string();
    for part in [
        "timm/resnet50.a1_in1k",
        "model.safetensors",
        &c.display().to_string(),
        "HF_HUB_OFFLINE",
    ] {
        assert!(e.contains(part), "`{e}` lacks `{part}`");
    }

    // a parquet dataset in fashion_mnist's layout: grey 28 px PNGs, train and test shards
    let fm = id("zalando-datasets/fashion_mnist");
    let train: Vec<Vec<u8>> = (0..12).map(|i| png(28, 28, i as u8 * 10)).collect();
    let labels: Vec<i64> = (0..12).map(|i| i % 10).collect();
    let put =
        |file: &str, bytes: &[u8]| put_in_cache(c, RepoKind::Dataset, &fm, file, bytes).unwrap();
    put(
        "fashion_mnist/train-00000-of-00001.parquet",
        &image_shard(&train, &labels).unwrap(),
    );
    put(
        "fashion_mnist/test-00000-of-00001.parquet",
        &image_shard(&train[..4], &[3, 1, 4, 1]).unwrap(),
    );
    let d = open_dataset(&fm).unwrap();
    assert_eq!(
        (
            d.train.len(),
            d.test.len(),
            d.num_classes,
            d.channels,
            d.image_size
        ),
        (12, 4, 10, 1, (28, 28))
    );
    let s = d.train.get(5).unwrap();
    assert_eq!((s.label, s.image.channels, s.image.data[0]), (5, 1, 50));
    assert_eq!(d.test.class_label(2).unwrap().unwrap(), 4);
    assert!(
        d.test
            .describe(3)
            .contains("test-00000-of-00001.parquet row 3"),
        "{}",
        d.test.describe(3)
    );

    // a truncated image inside a shard is that sample's error, naming shard and row
    let mut bad = train.clone();
    bad[7].truncate(40);
    put(
        "fashion_mnist/train-00000-of-00001.parquet",
        &image_shard(&bad, &[0; 12]).unwrap(),
    );
    let d = open_dataset(&fm).unwrap();
    let e = d.train.get(7).unwrap_err().to_string();
    assert!(
        e.contains("train-00000-of-00001.parquet/row-7") && e.contains("cannot decode image"),
        "{e}"
    );

    // a shard cut short is an error naming it
    let whole = image_shard(&train, &[0; 12]).unwrap();
    put(
        "fashion_mnist/train-00000-of-00001.parquet",
        &whole[..whole.len() / 2],
    );
    let e = open_dataset(&fm).unwrap_err().to_string();
    assert!(e.contains("train-00000-of-00001.parquet"), "{e}");

    // a dataset or revision not in the cache
    let e = open_dataset(&id("uoft-cs/cifar10"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("uoft-cs/cifar10: no cached snapshot"), "{e}");
    let e = open_dataset(&id("zalando-datasets/fashion_mnist@v9"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("revision `v9`"), "{e}");
}
