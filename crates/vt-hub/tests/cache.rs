//! A hub cache built in a temp dir in hf-hub's real layout (refs, symlinked snapshots, blobs):
//! model files and parquet datasets resolve from it offline; what is not cached is an error
//! naming the repository, the file and the cache directory.

use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;
use vt_hub::{model_file, open_dataset, RepoId};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Puts `bytes` at `snapshots/<COMMIT>/<file>` of `repo_dir`, as a symlink to its blob, and
/// points `refs/main` at the commit.
fn cache_file(repo_dir: &Path, file: &str, bytes: &[u8]) {
    let blob = repo_dir
        .join("blobs")
        .join(format!("{:016x}", bytes.len() * 31 + file.len()));
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(&blob, bytes).unwrap();
    let link = repo_dir.join("snapshots").join(COMMIT).join(file);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&blob, &link).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), COMMIT).unwrap();
}

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

/// A parquet shard as `datasets` writes image data sets: `image {bytes}` and `label`.
fn shard(images: &[Vec<u8>], labels: &[i64]) -> Vec<u8> {
    let schema = Arc::new(
        parse_message_type(
            "message schema { REQUIRED GROUP image { REQUIRED BYTE_ARRAY bytes; } REQUIRED INT64 label; }",
        )
        .unwrap(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(
        &mut out,
        schema,
        Arc::new(WriterProperties::builder().build()),
    )
    .unwrap();
    let mut rg = writer.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    let bytes: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
    col.typed::<ByteArrayType>()
        .write_batch(&bytes, None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int64Type>()
        .write_batch(labels, None, None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    writer.close().unwrap();
    out
}

#[test]
fn models_and_datasets_resolve_from_the_cache_offline() {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY of the test: this is the only test of the binary touching the environment.
    std::env::set_var("HF_HUB_CACHE", cache.path());
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let model = cache.path().join("models--timm--resnet18.tv_in1k");
    cache_file(&model, "model.safetensors", b"weights");
    let repo: RepoId = "timm/resnet18.tv_in1k".parse().unwrap();
    let p = model_file(&repo, "model.safetensors").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"weights");
    let at: RepoId = format!("timm/resnet18.tv_in1k@{COMMIT}").parse().unwrap();
    assert_eq!(
        std::fs::read(model_file(&at, "model.safetensors").unwrap()).unwrap(),
        b"weights"
    );

    // not cached, offline: the error names the repository, the file and the cache searched
    let e = model_file(
        &"timm/resnet50.a1_in1k".parse().unwrap(),
        "model.safetensors",
    )
    .unwrap_err()
    .to_string();
    for part in [
        "timm/resnet50.a1_in1k",
        "model.safetensors",
        &cache.path().display().to_string(),
        "HF_HUB_OFFLINE",
    ] {
        assert!(e.contains(part), "`{e}` lacks `{part}`");
    }

    // a parquet dataset in fashion_mnist's layout: grey 28 px PNGs, train and test shards
    let data = cache
        .path()
        .join("datasets--zalando-datasets--fashion_mnist");
    let train: Vec<Vec<u8>> = (0..12).map(|i| png(28, 28, i as u8 * 10)).collect();
    cache_file(
        &data,
        "fashion_mnist/train-00000-of-00001.parquet",
        &shard(&train, &(0..12).map(|i| i % 10).collect::<Vec<_>>()),
    );
    cache_file(
        &data,
        "fashion_mnist/test-00000-of-00001.parquet",
        &shard(&train[..4], &[3, 1, 4, 1]),
    );
    let d = open_dataset(&"zalando-datasets/fashion_mnist".parse().unwrap()).unwrap();
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
    cache_file(
        &data,
        "fashion_mnist/train-00000-of-00001.parquet",
        &shard(&bad, &[0; 12]),
    );
    let d = open_dataset(&"zalando-datasets/fashion_mnist".parse().unwrap()).unwrap();
    let e = d.train.get(7).unwrap_err().to_string();
    assert!(
        e.contains("train-00000-of-00001.parquet/row-7") && e.contains("cannot decode image"),
        "{e}"
    );

    // a shard cut short is an error naming it
    let whole = shard(&train, &[0; 12]);
    cache_file(
        &data,
        "fashion_mnist/train-00000-of-00001.parquet",
        &whole[..whole.len() / 2],
    );
    let e = open_dataset(&"zalando-datasets/fashion_mnist".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("train-00000-of-00001.parquet"), "{e}");

    // a dataset or revision not in the cache
    let e = open_dataset(&"uoft-cs/cifar10".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("uoft-cs/cifar10: no cached snapshot"), "{e}");
    let e = open_dataset(&"zalando-datasets/fashion_mnist@v9".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("revision `v9`"), "{e}");
}
